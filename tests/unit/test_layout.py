"""layout.wrap: prose wraps at spaces to the width, a command is never broken nor cut."""

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len

from tracer.layout import MIN_WIDTH, quoted_commands, wrap

WORDS = st.text(st.characters(codec="utf-8", exclude_characters=" ", exclude_categories=("Cs", "Cc")),
                min_size=1, max_size=30)
COMMANDS = st.lists(WORDS, min_size=1, max_size=12).map(" ".join).map(lambda c: f"<{c}>")


@st.composite
def prose_with_commands(draw: st.DrawFn) -> tuple[str, list[str]]:
    """Words and commands (each <...>, so that none is part of another) in any order."""
    parts = draw(st.lists(st.one_of(WORDS.map(lambda w: (w.replace("<", "").replace(">", "") or "x", False)),
                                    COMMANDS.map(lambda c: (c, True))), min_size=1, max_size=40))
    return " ".join(p for p, _ in parts), [p for p, is_command in parts if is_command]


@settings(max_examples=300, deadline=None)
@given(case=prose_with_commands(), width=st.integers(MIN_WIDTH, 200), indent=st.integers(0, 12))
def test_each_command_whole_on_one_line_and_no_other_line_past_the_width(case, width, indent):
    text, commands = case
    lines = wrap(text, width, whole=commands, first="> " + " " * indent, rest=" " * (indent + 2))
    for cmd in commands:
        assert any(cmd in line for line in lines), (cmd, lines)
    for line in lines:
        if cell_len(line) > width:       # only a command too long for any line of its own
            rest = line[indent + 2:]
            assert rest in commands and cell_len(rest) > width - indent - 2, (line, width)
    # Nothing lost, nothing added: the words in order (long words may fold).
    assert "".join("".join(line[indent + 2:].split(" ")) for line in lines) == "".join(text.split(" "))


@settings(max_examples=200, deadline=None)
@given(case=prose_with_commands(), width=st.integers(MIN_WIDTH, 120), most=st.integers(1, 4))
def test_cut_between_words_never_inside_a_command(case, width, most):
    text, commands = case
    lines = wrap(text, width, whole=commands, first="  ", rest="  ", max_lines=most)
    assert 1 <= len(lines) <= most
    full = wrap(text, width, whole=commands, first="  ", rest="  ")
    if len(full) <= most:
        assert lines == full
        return
    assert lines[-1].endswith("…")
    shown = " ".join(line[2:] for line in lines).removesuffix("…").rstrip()
    assert text.startswith(shown)
    # A command is shown whole or not at all.
    for cmd in commands:
        start = text.find(cmd)
        assert start + len(cmd) <= len(shown) or start >= len(shown), (cmd, shown)


def test_a_command_longer_than_the_width_gets_a_line_of_its_own():
    rm = "rm " + " ".join(f"/var/lib/cni/networks/cbr0/10.244.1.{i}" for i in range(70, 75))
    lines = wrap(f"after checking the containers are gone: {rm}", 80, whole=[rm], first="fix: ", rest="     ")
    assert lines == ["fix: after checking the containers are gone:", "     " + rm]


def test_punctuation_stays_with_its_command_and_a_long_word_folds():
    kubectl = "kubectl -n kube-system get pods -o wide | grep kube-proxy"
    lines = wrap(f"check that kube-proxy runs on this node ({kubectl})", 60, whole=[kubectl])
    assert lines == ["check that kube-proxy runs on this node", f"({kubectl})"]
    assert wrap("x" * 100, 40) == ["x" * 40, "x" * 40, "x" * 20]


def test_commands_quoted_in_a_hint():
    hint = ("a firewall rule discarded it: check 'iptables -S' and 'nft list ruleset' in the pod's "
            "namespace (the runtime's 'ip netns'), rule `-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP`")
    assert quoted_commands(hint) == ["'iptables -S'", "'nft list ruleset'", "'ip netns'",
                                     "`-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP`"]
    lines = wrap(hint, 40, quoted=True)
    assert all(any(c in line for line in lines) for c in quoted_commands(hint))
    assert "rule" in lines[-2] and lines[-1] == "`-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP`"


@pytest.mark.parametrize("text", ["a " * 2_000_000, "x" * 4_000_000, "'" * 1_000_000 + " 'a b'",
                                  "'a b' " * 1_000_000, "`" * 1_000_001])
def test_anyones_megabytes_are_cut_quickly(text):
    started = time.monotonic()
    lines = wrap(text, 80, quoted=True, max_lines=4)
    assert len(lines) <= 4 and lines[-1].endswith("…")
    assert time.monotonic() - started < 10          # generous: the suite runs on a busy machine
