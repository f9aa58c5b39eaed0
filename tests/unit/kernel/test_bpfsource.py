"""The one text bcc compiles: every header of bpf/ pasted in once, lines still pointing home."""

import re

from tracer.kernel import bpfsource


def test_every_local_header_is_pasted_once_and_no_local_include_is_left():
    text = bpfsource.program_text()
    headers = sorted(p.name for p in bpfsource.BPF_DIR.glob("*.h"))
    for name in headers:
        assert len(re.findall(rf'^#line 1 "[^"]*/{re.escape(name)}"$', text, re.M)) == 1, name
    assert not [line for line in text.splitlines()
                if (m := re.match(r'#include "([\w.]+)"', line)) and (bpfsource.BPF_DIR / m.group(1)).exists()]


def test_line_markers_name_the_line_that_follows():
    # After each #line N "file", the next line is line N of that file: compiler messages point home.
    lines = bpfsource.program_text().split("\n")
    sources = {p: p.read_text().split("\n") for p in bpfsource.BPF_DIR.glob("*.[ch]")}
    checked = 0
    for i, line in enumerate(lines[:-1]):
        m = re.fullmatch(r'#line (\d+) "(.+)"', line)
        if m and not lines[i + 1].startswith("#line"):
            path = next(p for p in sources if str(p) == m.group(2))
            assert lines[i + 1] == sources[path][int(m.group(1)) - 1]
            checked += 1
    assert checked >= len(bpfsource.SOURCES)


def test_each_source_alone_pastes_what_it_includes():
    alone = bpfsource.program_text([bpfsource.FUNCHOOKS_SOURCE])
    assert "static __always_inline int drop_passes(" in alone     # filters.h, for the conntrack hooks
    assert "TRACEPOINT_PROBE(skb, kfree_skb)" not in alone          # netdrop.c's own
