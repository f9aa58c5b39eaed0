"""bpfsource: where netdrop's BPF C source is, and the one text bcc compiles.

bcc makes programs only of the main file's functions, and rewrites its map
syntax (`counts.lookup(&key)`) only there, so the loader hands it netdrop.c and
funchooks.c as one text. #line keeps the compiler's messages pointing at the
right file and line. Both are fixed files of netdrop's, never user text.
"""

from __future__ import annotations

from pathlib import Path

# bpf/ is at the repository's top: this file is tracer/kernel/bpfsource.py.
BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"
HEADER = BPF_DIR / "netdrop.h"
BPF_SOURCE = BPF_DIR / "netdrop.c"
FUNCHOOKS_SOURCE = BPF_DIR / "funchooks.c"
SOURCES = (BPF_SOURCE, FUNCHOOKS_SOURCE)


def program_text() -> str:
    """The sources as one text, each from its own #line 1."""
    return "\n".join(f'#line 1 "{src}"\n{src.read_text()}' for src in SOURCES)
