"""btf_tracepoint_ids: the tp_btf attach target read from the kernel's BTF."""

import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tracer.kernel import facts
from tracer.kernel.facts import BTF_VMLINUX, _btf_typedef_ids, btf_tracepoint_ids


def btf_blob(types: list[tuple[str, int, int, bytes]]) -> bytes:
    """A BTF blob (include/uapi/linux/btf.h) of (name, kind, vlen, tail) records."""
    strings = bytearray(b"\0")
    body = bytearray()
    for name, kind, vlen, tail in types:
        off = 0
        if name:
            off = len(strings)
            strings += name.encode() + b"\0"
        body += struct.pack("<III", off, kind << 24 | vlen, 4) + tail
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body), len(body), len(strings))
    return header + bytes(body) + bytes(strings)


# Ids count from 1 in file order; every kind's tail length has to be walked
# right for the typedef after it to get its id.
TYPES = [
    ("int", 1, 0, b"\0" * 4),                          # 1 INT
    ("sk_buff", 4, 2, b"\0" * 24),                     # 2 STRUCT, two members
    ("", 13, 3, b"\0" * 24),                           # 3 FUNC_PROTO, three params
    ("skb_drop_reason", 6, 2, b"\0" * 16),             # 4 ENUM
    ("btf_trace_icmp_send", 8, 0, b""),                # 5 TYPEDEF
    ("", 3, 0, b"\0" * 12),                            # 6 ARRAY
    ("kfree_skb", 12, 0, b""),                         # 7 FUNC: same name, not a typedef
    ("btf_trace_kfree_skb", 8, 0, b""),                # 8 TYPEDEF
]


def test_typedef_ids_are_found_after_every_kind_of_record():
    blob = btf_blob(TYPES)
    wanted = {"btf_trace_kfree_skb": "kfree_skb", "btf_trace_icmp_send": "icmp_send", "btf_trace_nope": "nope"}
    assert _btf_typedef_ids(blob, wanted) == {"kfree_skb": 8, "icmp_send": 5}


def test_an_unknown_kind_stops_the_walk_rather_than_misnumbering():
    blob = btf_blob([*TYPES[:4], ("", 31, 1, b"\0" * 4), *TYPES[4:]])
    assert _btf_typedef_ids(blob, {"btf_trace_kfree_skb": "kfree_skb"}) == {}


def test_a_missing_or_foreign_file_gives_no_ids(tmp_path: Path):
    assert btf_tracepoint_ids(["kfree_skb"], tmp_path / "absent") == {}
    (tmp_path / "elf").write_bytes(b"\x7fELF" + b"\0" * 100)
    assert btf_tracepoint_ids(["kfree_skb"], tmp_path / "elf") == {}


def test_the_running_kernels_btf_names_the_drop_tracepoint_when_it_has_btf():
    if BTF_VMLINUX.exists():
        assert btf_tracepoint_ids(["kfree_skb"]).get("kfree_skb", 0) > 0


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_any_bytes_give_a_dict_never_an_exception(data: bytes):
    assert isinstance(_btf_typedef_ids(data, {"btf_trace_kfree_skb": "kfree_skb"}), dict)


@settings(max_examples=300)
@given(st.integers(0, 300), st.binary(min_size=1, max_size=8), st.booleans())
def test_a_damaged_blob_gives_a_dict_never_an_exception(at: int, junk: bytes, cut: bool):
    blob = btf_blob(TYPES)
    at %= len(blob)
    damaged = blob[:at] if cut else blob[:at] + junk + blob[at + len(junk):]
    found = _btf_typedef_ids(damaged, {"btf_trace_kfree_skb": "kfree_skb"})
    assert set(found) <= {"kfree_skb"}


def split_blob(types: list[tuple[str, int, int, bytes]], base_str_len: int) -> bytes:
    """A module's split BTF: its names' offsets continue the base's string section."""
    strings = bytearray()
    body = bytearray()
    for name, kind, vlen, tail in types:
        off = 0
        if name:
            off = base_str_len + len(strings)
            strings += name.encode() + b"\0"
        body += struct.pack("<III", off, kind << 24 | vlen, 4) + tail
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body), len(body), len(strings))
    return header + bytes(body) + bytes(strings)


def test_a_module_function_id_continues_vmlinux_ids():
    """A module's BTF (/sys/kernel/btf/nf_conntrack) numbers its types after vmlinux's
    last; its names are offsets past vmlinux's strings, or vmlinux's own strings."""
    base = btf_blob(TYPES)              # 8 types
    base_str_len = struct.unpack_from("<I", base, 20)[0]
    split = split_blob([("nf_conn", 4, 0, b""),                    # 9 STRUCT
                        ("", 13, 1, b"\0" * 8),                     # 10 FUNC_PROTO
                        ("__nf_conntrack_alloc", 12, 0, b""),       # 11 FUNC
                        ("__nf_conntrack_confirm", 12, 0, b"")],    # 12 FUNC
                       base_str_len)
    got = facts._btf_ids(split, {"__nf_conntrack_confirm": "c", "__nf_conntrack_alloc": "a"}, 12, base=base)
    assert got == {"a": 11, "c": 12}
    # a name the module shares with vmlinux (deduplicated into vmlinux's strings)
    shared = bytearray(split_blob([("x", 4, 0, b""), ("kfree_skb", 12, 0, b"")], base_str_len))
    at = base[24 + struct.unpack_from("<I", base, 16)[0]:].find(b"\0kfree_skb\0") + 1
    struct.pack_into("<I", shared, 24 + 12, at)                     # record 2's name_off -> vmlinux's string
    assert facts._btf_ids(bytes(shared), {"kfree_skb": "k"}, 12, base=base) == {"k": 10}
    # a base this reader cannot count gives nothing rather than wrong ids
    assert facts._btf_ids(split, {"__nf_conntrack_alloc": "a"}, 12, base=base[:30]) == {}


@settings(max_examples=200)
@given(st.binary(max_size=512), st.binary(max_size=512))
def test_split_btf_of_any_bytes_never_raises(split, base):
    assert isinstance(facts._btf_ids(split, {"f": "f"}, 12, base=base), dict)
    assert isinstance(facts._btf_ids(split, {"f": "f"}, 12, base=btf_blob(TYPES)), dict)


def test_btf_function_finds_vmlinux_then_the_module(tmp_path):
    base = btf_blob(TYPES)
    (tmp_path / "vmlinux").write_bytes(base)
    (tmp_path / "nf_conntrack").write_bytes(split_blob([("__nf_conntrack_confirm", 12, 0, b"")],
                                                       struct.unpack_from("<I", base, 20)[0]))
    assert facts.btf_function("kfree_skb", None, tmp_path) == facts.BtfFunction(7, None)
    assert facts.btf_function("__nf_conntrack_confirm", "nf_conntrack", tmp_path) == \
        facts.BtfFunction(9, "nf_conntrack")
    assert facts.btf_function("__nf_conntrack_confirm", None, tmp_path) is None
    assert facts.btf_function("__nf_conntrack_confirm", "../etc", tmp_path) is None
