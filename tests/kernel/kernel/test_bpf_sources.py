"""Each BPF source of bpf/ compiles alone, with only the headers it includes."""

import bcc
import pytest

from tracer.kernel import bccload, bpfsource, loader
from tracer.kernel.facts import find_tracefs, probe_kernel


@pytest.mark.parametrize("source", bpfsource.SOURCES, ids=lambda p: p.name)
def test_each_source_compiles_alone(source):
    facts = probe_kernel(find_tracefs())
    include, flags = bccload.kernel_types(facts, bccload.DEFAULT_CACHE)
    bccload.use_kernel_types(include)
    # tp_btf form: its programs are plain functions, so bcc compiles without attaching anything.
    flags += [*loader.compile_flags(facts, loader.TracerSettings(), include), "-DND_TP_BTF=1"]
    b = bcc.BPF(text=bpfsource.program_text([source]).encode(), cflags=flags)
    try:
        programs = {"netdrop.c": [b"nd_kfree_skb", *([b"nd_icmp_send"] if facts.has_icmp_tp else [])],
                    "funchooks.c": [b"nd_ct_confirm_entry", b"nd_ct_alloc_fexit", b"nd_ip_forward"]}
        for name in programs[source.name]:
            assert bcc.lib.bpf_function_size(b.module, name) > 0, name
    finally:
        b.cleanup()
