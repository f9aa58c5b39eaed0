"""btf_tracepoint_ids: the tp_btf attach target read from the kernel's BTF."""

import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

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
