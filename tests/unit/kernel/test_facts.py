from pathlib import Path
from hypothesis import given
from hypothesis import strategies as st

import pytest

from tracer.errors import UserError
from tracer.kernel import facts

GOLDEN = Path(__file__).resolve().parents[2] / "golden"


def test_reasons_come_from_the_tracepoint_format():
    reasons = facts.reasons_from_format((GOLDEN / "kfree_skb.format").read_text())
    # Numbers as this 6.18 kernel defines them; other kernels have other numbers.
    assert reasons[93] == "PKT_TOO_BIG"
    assert reasons[12] == "NETFILTER_DROP"
    assert reasons[3] == "NO_SOCKET"
    assert len(reasons) == 127


def test_format_fields_tell_whether_reason_exists():
    fields = facts.format_fields((GOLDEN / "kfree_skb.format").read_text())
    assert fields["reason"] == "enum skb_drop_reason"
    old = ("\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n"
           "\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;\n")
    assert "reason" not in facts.format_fields(old)
    assert facts.reasons_from_format(old) == {}


def test_reasons_from_btf_dump():
    dump = ("enum skb_drop_reason {\n\tSKB_NOT_DROPPED_YET = 0,\n\tSKB_CONSUMED = 1,\n"
            "\tSKB_DROP_REASON_NOT_SPECIFIED = 2,\n\tSKB_DROP_REASON_NO_SOCKET = 3,\n};")
    assert facts.reasons_from_btf_dump(dump) == {0: "NOT_DROPPED_YET", 1: "CONSUMED", 2: "NOT_SPECIFIED",
                                                 3: "NO_SOCKET"}


def test_kallsyms_names_the_function_containing_an_address(tmp_path):
    ks = facts.Kallsyms.load(GOLDEN / "kallsyms")
    assert ks.lookup(0xffffffff81ff7890) == "ip_forward"
    assert ks.lookup(0xffffffff81ff7890 + 0x1d4) == "ip_forward"
    assert ks.lookup(0xffffffff81f62a50 + 0x300) == "nft_do_chain"
    assert ks.lookup(0x1000) is None
    hidden = tmp_path / "kallsyms"
    hidden.write_text("0000000000000000 T ip_forward\n")
    assert not facts.Kallsyms.load(hidden).usable


def test_missing_tracefs_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="tracefs is not mounted.*mount -t tracefs"):
        facts.find_tracefs((tmp_path / "a", tmp_path / "b"))


def test_missing_tracepoint_is_none(tmp_path):
    (tmp_path / "events").mkdir()
    assert facts.tracepoint_format(tmp_path, "skb", "kfree_skb") is None


def test_missing_btf_says_what_is_missing(tmp_path):
    with pytest.raises(UserError, match="no kernel types.*CONFIG_DEBUG_INFO_BTF"):
        facts.btf_include_tree(tmp_path, "6.18.0", btf=tmp_path / "vmlinux")


def test_kernel_version_code():
    assert facts.kernel_version_code("6.18.44-fc-v595") == (6 << 16) + (18 << 8) + 44
    assert facts.kernel_version_code("5.4.300") == (5 << 16) + (4 << 8) + 255


# The helper list as libbcc carries it (its copy of the UAPI bpf.h, Linux 6.2+ style),
# amid the library's other bytes.
BCC_MAPPER = (b"\x00\x7fELF junk\x00 * Return\n *\t\t0 on success.\n"
              b"#define ___BPF_FUNC_MAPPER(FN, ctx...)\t\t\t\\\n"
              b"\tFN(unspec, 0, ##ctx)\t\t\t\t\\\n"
              b"\tFN(map_lookup_elem, 1, ##ctx)\t\t\t\\\n"
              b"\tFN(cgrp_storage_get, 210, ##ctx)\t\t\\\n"
              b"\tFN(cgrp_storage_delete, 211, ##ctx)\t\t\\\n"
              b"/* backwards-compatibility macros */\n\x00more")
# bcc before 0.26: ids by position in __BPF_FUNC_MAPPER.
OLD_BCC_MAPPER = (b"#define __BPF_FUNC_MAPPER(FN)\t\t\\\n\tFN(unspec),\t\t\t\\\n"
                  b"\tFN(map_lookup_elem),\t\t\\\n\tFN(get_attach_cookie),\t\t\\\n\n")


def test_bcc_helper_ids_from_the_library():
    assert facts.bcc_helper_ids(BCC_MAPPER) == {"unspec": 0, "map_lookup_elem": 1,
                                                 "cgrp_storage_get": 210, "cgrp_storage_delete": 211}
    assert facts.bcc_helper_ids(OLD_BCC_MAPPER) == {"unspec": 0, "map_lookup_elem": 1, "get_attach_cookie": 2}
    assert facts.bcc_helper_ids(b"no mapper here") == {}


def test_only_the_ids_the_kernel_lacks_are_declared():
    """6.1's enum bpf_func_id ends before cgrp_storage_get (6.2): only those two are
    added, with bcc's numbers, in an enum of their own."""
    dump = "enum bpf_func_id {\n\tBPF_FUNC_unspec = 0,\n\tBPF_FUNC_map_lookup_elem = 1,\n\t__BPF_FUNC_MAX_ID = 2,\n};\n"
    text = facts.missing_helper_ids(dump, facts.bcc_helper_ids(BCC_MAPPER))
    assert "BPF_FUNC_cgrp_storage_get = 210," in text and "BPF_FUNC_cgrp_storage_delete = 211," in text
    assert "map_lookup_elem" not in text and "unspec" not in text
    assert text.startswith("enum netdrop_bcc_helper_ids {")
    full = dump.replace("__BPF_FUNC_MAX_ID = 2",
                        "BPF_FUNC_cgrp_storage_get = 210,\n\tBPF_FUNC_cgrp_storage_delete = 211")
    assert "enum" not in facts.missing_helper_ids(full, facts.bcc_helper_ids(BCC_MAPPER))


@given(st.binary(max_size=4096), st.integers(0, 4096))
def test_bcc_helper_ids_survive_any_library(noise, at):
    """A library of any content gives a dict of names and ids, never an exception."""
    data = noise[:at] + BCC_MAPPER + noise[at:]
    ids = facts.bcc_helper_ids(data)
    assert all(isinstance(k, str) and isinstance(v, int) for k, v in ids.items())
    facts.bcc_helper_ids(noise)
