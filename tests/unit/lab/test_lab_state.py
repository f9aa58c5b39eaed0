"""The lab's prefix, state file and namespace identities, on plain data: what the
lab may ever remove is decided here, so a damaged or hostile state file must name
nothing that is not the lab's, a prefix must never leave the lab's own names, and
lo's alias read back from a namespace must be the lab's stamp or nothing."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracer.lab.ownership import (LOOPBACK_IFINDEX, STAMP_RE, LabState, Made, NetnsId, check_prefix, parse_stamp,
                                  parse_state)
from tracer.lab.shell import LabError
from tracer.node import rtnl

PREFIX = "nd-demo"

entries = st.one_of(
    st.from_regex(r"nd-demo-[a-z0-9-]{1,40}", fullmatch=True),
    st.integers(1, 4_194_304).map(lambda pid: f"/proc/{pid}/ns/net"),
)
stamps = st.from_regex(STAMP_RE, fullmatch=True)
ids = st.one_of(st.builds(NetnsId, st.integers(1, 2**32 - 1), cookie=st.integers(1, 2**64 - 1)),
                st.builds(NetnsId, st.integers(1, 2**32 - 1), stamp=stamps))
states = st.lists(st.tuples(entries, ids), unique_by=lambda t: t[0], max_size=12).map(
    lambda made: LabState(tuple(Made(e, i) for e, i in made)))


@given(states)
def test_state_round_trips(state: LabState) -> None:
    assert parse_state(state.to_json(), PREFIX) == state


@given(st.text(max_size=300))
def test_any_text_is_a_state_or_one_clear_error(text: str) -> None:
    try:
        state = parse_state(text, PREFIX)
    except LabError as exc:
        assert "\n" not in str(exc) and "damaged" in str(exc)
    else:
        assert all(m.entry.startswith(PREFIX + "-") or m.holder_pid for m in state.made)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                     max_size=4), max_leaves=20)


@given(st.dictionaries(st.sampled_from(["namespaces", "ids", "holders"]), json_values))
def test_any_json_is_a_state_or_one_clear_error(data: dict[str, object]) -> None:
    try:
        parse_state(json.dumps(data), PREFIX)
    except LabError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize("entry", ["cni-3f1e0c9a-1111-2222-3333-444455556666", "other-node1", "nd-demo",
                                   "nd-demo-../../etc", "nd-demo-A", "/run/netns/nd-demo-node1",
                                   "/proc/self/ns/net", "/proc/0/ns/net", "/proc/12/ns/net/../x", "nd-demo-node1\n"])
def test_entries_the_lab_cannot_have_made_are_refused(entry: str) -> None:
    text = json.dumps({"namespaces": [entry], "ids": {entry: {"inode": 4026531840, "cookie": 1}}})
    with pytest.raises(LabError, match="damaged"):
        parse_state(text, PREFIX)


STAMP = "netdrop-lab-" + "0123456789abcdef" * 2


@pytest.mark.parametrize("ident", [None, {}, {"inode": 0, "cookie": 1}, {"inode": True, "cookie": 1},
                                   {"inode": "4026531840", "cookie": 1}, {"inode": 1, "cookie": -1},
                                   {"inode": 1, "cookie": 2**64}, {"inode": 1}, {"inode": 1, "cookie": None},
                                   {"inode": 1, "cookie": 1, "stamp": STAMP}, {"inode": 1, "stamp": None},
                                   {"inode": 1, "cookie": -1, "stamp": STAMP}, {"inode": 1, "cookie": 1, "x": 1},
                                   {"inode": 1, "stamp": STAMP.upper()}, {"inode": 1, "stamp": STAMP + "\n"},
                                   {"inode": 1, "stamp": STAMP[:-1]}, {"inode": 1, "stamp": "lo"},
                                   {"inode": 1, "stamp": ""}, {"inode": 1, "stamp": 7}])
def test_an_entry_without_a_sound_identity_is_refused(ident: object) -> None:
    text = json.dumps({"namespaces": ["nd-demo-node1"], "ids": {"nd-demo-node1": ident}})
    with pytest.raises(LabError, match="damaged"):
        parse_state(text, PREFIX)


@given(st.text(max_size=40))
def test_a_prefix_is_accepted_only_as_short_lowercase_letters_digits_and_dashes(prefix: str) -> None:
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-")
    valid = 1 <= len(prefix) <= 15 and prefix[0].isascii() and prefix[0].isalpha() and prefix[0].islower() \
        and set(prefix) <= allowed
    try:
        assert check_prefix(prefix) == prefix and valid
    except LabError as exc:
        assert not valid and "\n" not in str(exc)


@pytest.mark.parametrize("prefix", ["nd-demo", "ndt4194304", "ndbench4194304", "a"])
def test_prefixes_in_use_are_valid(prefix: str) -> None:
    assert check_prefix(prefix) == prefix


def test_state_files_of_earlier_netdrops_still_read() -> None:
    text = '{"namespaces": ["nd-demo-node1"], "ids": {"nd-demo-node1": {"inode": 4026532174, "cookie": 4097}}}'
    assert parse_state(text, PREFIX) == LabState((Made("nd-demo-node1", NetnsId(4026532174,
                                                                                                 cookie=4097)),))


@pytest.mark.parametrize(("cookie", "stamp"), [(None, None), (1, STAMP)])
def test_an_identity_is_an_inode_with_a_cookie_or_a_stamp_never_both_nor_neither(cookie: int | None,
                                                                                    stamp: str | None) -> None:
    with pytest.raises(ValueError):
        NetnsId(1, cookie, stamp)


# ------------------------------------------------------------------ lo's alias, read back (read_stamp)

IFLA_IFALIAS = 20        # include/uapi/linux/if_link.h


def rtattr(kind: int, payload: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + bytes(-len(data) % 4)


def link_reply(alias: bytes | None, index: int = LOOPBACK_IFINDEX, kind: int = rtnl.RTM_NEWLINK) -> bytes:
    """The kernel's answer to RTM_GETLINK (rtnl_fill_ifinfo(), net/core/rtnetlink.c): ifinfomsg, then
    attributes, IFLA_IFALIAS among them when an alias is set (without its NUL, as nla_put_string
    gives it one: both are read)."""
    body = struct.pack("=BxHiII", 0, 772, index, 0x49, 0) + rtattr(3, b"lo\0") + rtattr(4, struct.pack("=I", 65536))
    if alias is not None:
        body += rtattr(IFLA_IFALIAS, alias)
    body += rtattr(23, bytes(200))          # IFLA_STATS64 after it, as the kernel puts it
    data = struct.pack("=IHHII", 16 + len(body), kind, 0, 1, 0) + body
    return data + bytes(-len(data) % 4)


@pytest.mark.parametrize("nul", [b"", b"\0"])
def test_the_stamp_is_read_from_los_alias(nul: bytes) -> None:
    assert parse_stamp(link_reply(STAMP.encode() + nul)) == STAMP


@pytest.mark.parametrize("reply", [
    link_reply(None),                                        # no alias: a namespace someone else made
    link_reply(b"their own alias"),
    link_reply(STAMP.upper().encode()),
    link_reply(STAMP.encode() + b"0"),
    link_reply(STAMP.encode()[:-1]),
    link_reply(STAMP.encode() + b"\n"),
    link_reply(STAMP.encode(), index=2),                      # another device's alias
    link_reply(STAMP.encode(), kind=2),                       # NLMSG_ERROR
    link_reply(STAMP.encode())[:40],                          # cut short
    b"",
])
def test_anything_but_the_stamp_on_lo_is_no_stamp(reply: bytes) -> None:
    assert parse_stamp(reply) is None


@st.composite
def replies(draw: st.DrawFn) -> bytes:
    """Answers near the real one: any alias, any index, then bytes changed and the end cut."""
    alias = draw(st.one_of(st.none(), st.binary(max_size=300), stamps.map(str.encode)))
    data = bytearray(link_reply(alias, index=draw(st.sampled_from([1, 1, 2, -1]))))
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[:draw(st.integers(0, len(data)))])


@given(st.one_of(st.binary(max_size=600), replies()))
def test_any_reply_is_a_stamp_or_none(reply: bytes) -> None:
    stamp = parse_stamp(reply)
    assert stamp is None or STAMP_RE.fullmatch(stamp)
