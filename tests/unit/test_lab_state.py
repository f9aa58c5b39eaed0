"""The lab's prefix and state file, on plain data: what the lab may ever remove
is decided here, so a damaged or hostile state file must name nothing that is
not the lab's, and a prefix must never leave the lab's own names."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracer.lab import node as lab

PREFIX = "nd-demo"

entries = st.one_of(
    st.from_regex(r"nd-demo-[a-z0-9-]{1,40}", fullmatch=True),
    st.integers(1, 4_194_304).map(lambda pid: f"/proc/{pid}/ns/net"),
)
ids = st.builds(lab.NetnsId, st.integers(1, 2**32 - 1), st.integers(1, 2**64 - 1))
states = st.lists(st.tuples(entries, ids), unique_by=lambda t: t[0], max_size=12).map(
    lambda made: lab.LabState(tuple(lab.Made(e, i) for e, i in made)))


@given(states)
def test_state_round_trips(state: lab.LabState) -> None:
    assert lab.parse_state(state.to_json(), PREFIX) == state


@given(st.text(max_size=300))
def test_any_text_is_a_state_or_one_clear_error(text: str) -> None:
    try:
        state = lab.parse_state(text, PREFIX)
    except lab.LabError as exc:
        assert "\n" not in str(exc) and "damaged" in str(exc)
    else:
        assert all(m.entry.startswith(PREFIX + "-") or m.holder_pid for m in state.made)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                     max_size=4), max_leaves=20)


@given(st.dictionaries(st.sampled_from(["namespaces", "ids", "holders"]), json_values))
def test_any_json_is_a_state_or_one_clear_error(data: dict[str, object]) -> None:
    try:
        lab.parse_state(json.dumps(data), PREFIX)
    except lab.LabError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize("entry", ["cni-3f1e0c9a-1111-2222-3333-444455556666", "other-node1", "nd-demo",
                                   "nd-demo-../../etc", "nd-demo-A", "/run/netns/nd-demo-node1",
                                   "/proc/self/ns/net", "/proc/0/ns/net", "/proc/12/ns/net/../x", "nd-demo-node1\n"])
def test_entries_the_lab_cannot_have_made_are_refused(entry: str) -> None:
    text = json.dumps({"namespaces": [entry], "ids": {entry: {"inode": 4026531840, "cookie": 1}}})
    with pytest.raises(lab.LabError, match="damaged"):
        lab.parse_state(text, PREFIX)


@pytest.mark.parametrize("ident", [None, {}, {"inode": 0, "cookie": 1}, {"inode": True, "cookie": 1},
                                   {"inode": "4026531840", "cookie": 1}, {"inode": 1, "cookie": -1},
                                   {"inode": 1, "cookie": 2**64}])
def test_an_entry_without_a_sound_identity_is_refused(ident: object) -> None:
    text = json.dumps({"namespaces": ["nd-demo-node1"], "ids": {"nd-demo-node1": ident}})
    with pytest.raises(lab.LabError, match="damaged"):
        lab.parse_state(text, PREFIX)


@given(st.text(max_size=40))
def test_a_prefix_is_accepted_only_as_short_lowercase_letters_digits_and_dashes(prefix: str) -> None:
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-")
    valid = 1 <= len(prefix) <= 15 and prefix[0].isascii() and prefix[0].isalpha() and prefix[0].islower() \
        and set(prefix) <= allowed
    try:
        assert lab.check_prefix(prefix) == prefix and valid
    except lab.LabError as exc:
        assert not valid and "\n" not in str(exc)


@pytest.mark.parametrize("prefix", ["nd-demo", "ndt4194304", "ndbench4194304", "a"])
def test_prefixes_in_use_are_valid(prefix: str) -> None:
    assert lab.check_prefix(prefix) == prefix
