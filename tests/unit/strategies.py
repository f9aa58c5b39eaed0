"""Hypothesis strategies shared by the parsers' property tests: JSON documents, and text files mutated."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st


def json_values(keys: Sequence[str], max_leaves: int = 40) -> st.SearchStrategy[Any]:
    """Any JSON document whose objects use `keys` (the fields a parser looks for,
    so that it meets them holding every type), nested, lists and scalars included."""
    return st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                        lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.sampled_from(list(keys)), inner, max_size=6),
                        max_leaves=max_leaves)


# Junk as rulesets hold it: quotes, escapes, huge numbers, control and non-UTF-8 characters.
junk_text = st.one_of(
    st.text(max_size=80),
    st.sampled_from(['"', "\\", '"\\"', "-j DROP", "-j", "--dport", "--dport 99999999:", "! -s", "[1:2]",
                     "[" + "9" * 5000 + ":0]", ":FORWARD DROP [" + "1" * 30 + ":0]", "*filter", "*", "\x00",
                     "\udcff", "\x1b[31m", "entries", "fffffffffffffffffffff", "-1", "0x10"]),
)


@st.composite
def mutated_lines(draw: st.DrawFn, text: str) -> str:
    """Lines deleted, duplicated, swapped for or joined with junk, characters
    deleted and inserted, the whole truncated."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(0, 6))):
        if not lines:
            lines.append(draw(junk_text))
            continue
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(("delete", "duplicate", "insert", "replace", "join", "chars", "cut")))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "insert":
            lines.insert(i, draw(junk_text))
        elif op == "replace":
            lines[i] = draw(junk_text)
        elif op == "join":
            lines[i] = lines[i] + draw(junk_text)
        elif op == "chars":
            j = draw(st.integers(0, len(lines[i])))
            k = draw(st.integers(j, min(len(lines[i]), j + 8)))
            lines[i] = lines[i][:j] + draw(junk_text) + lines[i][k:]
        else:
            lines[i] = lines[i][:draw(st.integers(0, len(lines[i])))]
    out = "\n".join(lines)
    return out[:draw(st.integers(0, len(out)))] if draw(st.booleans()) else out
