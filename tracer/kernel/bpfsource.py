"""bpfsource: where netdrop's BPF C source is, and the one text bcc compiles from it.

bpf/netdrop.c (the kfree_skb and icmp_send programs) and bpf/funchooks.c (the
function hooks) each include the headers of bpf/ they need, and each compiles
alone. The loader compiles them as one text, with every header of bpf/
pasted in where it is first included: bcc makes programs only of the main
file's functions and rewrites its map syntax (`counts.lookup(&key)`) only
there, so text in an included file would not be rewritten. #line keeps the
compiler's messages pointing at the right file and line. All of it is fixed
files of netdrop's, never user text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

# bpf/ is at the repository's top: this file is tracer/kernel/bpfsource.py.
BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"
HEADER = BPF_DIR / "netdrop.h"          # the records shared with Python (event.py mirrors them)
BPF_SOURCE = BPF_DIR / "netdrop.c"
FUNCHOOKS_SOURCE = BPF_DIR / "funchooks.c"
SOURCES = (BPF_SOURCE, FUNCHOOKS_SOURCE)

_LOCAL_INCLUDE = re.compile(r'^#include "([\w.]+\.h)"\s*$')


def program_text(sources: Iterable[Path] = SOURCES) -> str:
    """The sources as one text, each header of bpf/ pasted in once, where first included."""
    pasted: set[Path] = set()
    return "\n".join(_expand(src, pasted) for src in sources)


def _expand(path: Path, pasted: set[Path]) -> str:
    out = [f'#line 1 "{path}"']
    for number, line in enumerate(path.read_text().split("\n"), start=1):
        m = _LOCAL_INCLUDE.match(line)
        if m is None or not (BPF_DIR / m.group(1)).is_file():
            out.append(line)
            continue
        header = BPF_DIR / m.group(1)
        if header not in pasted:
            pasted.add(header)
            out.append(_expand(header, pasted))
        out.append(f'#line {number + 1} "{path}"')
    return "\n".join(out)
