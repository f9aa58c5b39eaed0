from pathlib import Path

import pytest

from tracer.errors import UserError
from tracer.kernel import facts

GOLDEN = Path(__file__).resolve().parent.parent / "golden"


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
