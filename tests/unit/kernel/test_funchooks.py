"""Function hooks on plain data: events whose cause a hook noted (bpf/funchooks.c)
classified, the symbols the loader asks kallsyms for, and the attach step's
answers (its kernel side is tests/kernel/kernel/test_funchooks.py)."""

import dataclasses
import json
import re
import socket
import string

import pytest
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tracer.explain.classify import classify
from tracer.explain.functionhooks import hook_verdict
from tracer.kernel import bpfsource, decode, event, hooks, registry
from tracer.kernel.facts import Kallsyms, KernelFacts, kernel_symbols, reasons_from_format

CT_INSERT_FAILED, CT_TABLE_FULL, FWD_TOO_BIG = (registry.CAUSE_CODES[name] for name in
                                                ("ct-insert-failed", "ct-table-full", "fwd-too-big"))
GOLDEN = Path(__file__).resolve().parents[2] / "golden"
CASES = {(c["expected"]["reason"], c["expected"]["location"]): c
         for c in map(json.loads, (GOLDEN / "events.jsonl").read_text().splitlines())}
KALLSYMS = Kallsyms.load(GOLDEN / "kallsyms")
REASONS = reasons_from_format((GOLDEN / "kfree_skb.format").read_text())


def raw_event(base=("NETFILTER_DROP", "nft_do_chain"), **fields) -> event.NdEvent:
    raw = event.NdEvent.from_buffer_copy(bytes.fromhex(CASES[base]["raw_hex"]))
    for name, value in fields.items():
        setattr(raw, name, value)
    return raw


def decoded(raw: event.NdEvent, has_reason=True) -> decode.Drop:
    return decode.Decoder(REASONS, KALLSYMS, has_reason=has_reason, mono_to_wall=0).decode(raw)


def a_dns_query_to_the_service() -> event.NdEvent:
    """web's AAAA query to the DNS Service, as the kfree_skb event after
    __nf_conntrack_confirm returned NF_DROP: a NETFILTER_DROP in nf_hook_slow."""
    raw = raw_event(cause_raw=CT_INSERT_FAILED, sport=41234, dport=53)
    raw.saddr_raw[:4] = socket.inet_aton("10.244.1.10")
    raw.daddr_raw[:4] = socket.inet_aton("10.96.0.10")
    return raw


def test_an_insert_race_lost_names_the_flow_that_lost_it():
    drop = decoded(a_dns_query_to_the_service())
    assert drop.cause == "ct-insert-failed"
    v = hook_verdict(drop)
    assert v is not None and v.category == "conntrack" and not v.benign
    assert v.hint.startswith("conntrack insert race lost for 10.244.1.10:41234 -> 10.96.0.10:53 udp (two packets")
    assert "A and AAAA" in v.hint
    assert v.detail == {"by": "conntrack", "state": "insert_failed", "hook": "__nf_conntrack_confirm"}


def test_a_full_table_says_count_and_max_when_the_kernel_shows_max():
    raw = raw_event(cause_raw=CT_TABLE_FULL, ct_status_raw=262144,
                    flags_raw=raw_event().flags_raw & ~event.ND_F_CT)
    drop = decoded(raw)
    assert (drop.cause, drop.ct_max) == ("ct-table-full", 262144)
    v = hook_verdict(drop)
    assert v is not None and v.category == "conntrack"
    assert v.hint.startswith(f"conntrack table full (count = max = 262144): packet {drop.flow} dropped")
    assert v.detail == {"by": "conntrack", "state": "table_full", "hook": "__nf_conntrack_alloc", "max": 262144}
    # nf_conntrack_max not readable (no data symbols in kallsyms): no number made up.
    drop = decoded(raw_event(cause_raw=CT_TABLE_FULL, ct_status_raw=0, flags_raw=0))
    assert drop.ct_max is None
    assert hook_verdict(drop).hint.startswith("conntrack table full (count reached nf_conntrack_max): packet")


def test_ct_status_is_the_entrys_status_whenever_the_packet_had_an_entry():
    raw = raw_event(cause_raw=CT_TABLE_FULL, ct_status_raw=0x1a8,
                    flags_raw=event.ND_F_CT | event.ND_F_NFCT_READ)
    drop = decoded(raw)
    assert drop.ct_max is None and drop.cause == "ct-table-full"


def test_a_forwarded_packet_over_its_routes_mtu_is_mtu_on_a_kernel_without_reasons():
    # Kernel without reasons nor icmp:icmp_send: the location alone says little;
    # the ip_forward hook's note makes it an MTU drop with the route's numbers.
    raw = raw_event(("PKT_TOO_BIG", "ip_forward"), reason_raw=0, cause_raw=FWD_TOO_BIG,
                    flags_raw=raw_event(("PKT_TOO_BIG", "ip_forward")).flags_raw & ~event.ND_F_ICMP_SENT)
    drop = decoded(raw, has_reason=False)
    assert drop.reason is None and drop.icmp_sent is None and drop.cause == "fwd-too-big"
    v = hook_verdict(drop)
    assert v is not None and v.category == "mtu"
    assert v.hint.startswith("1500-byte packet with DF set is larger than the MTU 1450 of flannel.1")


def test_no_cause_no_hook_verdict_and_classification_as_before():
    for case in CASES.values():
        drop = decoded(event.NdEvent.from_buffer_copy(bytes.fromhex(case["raw_hex"])))
        assert drop.cause is None and drop.ct_max is None
        assert hook_verdict(drop) is None
        assert classify(drop).category == case["expected"]["category"]


@given(st.integers(0, 255), st.integers(0, 2**32 - 1), st.integers(0, 255))
def test_any_cause_byte_decodes_to_a_known_cause_or_none(cause, ct_status, flags):
    drop = decoded(raw_event(cause_raw=cause, ct_status_raw=ct_status, flags_raw=flags))
    assert drop.cause in (None, *decode.CAUSES.values())
    assert (drop.cause is None) == (cause not in decode.CAUSES)
    v = hook_verdict(drop)
    assert (v is None) == (drop.cause is None)


def test_kernel_symbols_finds_text_and_data_and_skips_the_rest(tmp_path):
    f = tmp_path / "kallsyms"
    f.write_text("ffffffff81ff7890 T ip_forward\n"
                 "0000000000000000 T __nf_conntrack_alloc\n"          # kptr_restrict: no address
                 "ffffffff83a1b2c0 D nf_conntrack_max\tnf_conntrack\n"
                 "zzzz T __nf_conntrack_confirm\n"
                 "ffffffff81f35260\n")
    got = kernel_symbols(["ip_forward", "__nf_conntrack_alloc", "nf_conntrack_max", "__nf_conntrack_confirm"], f)
    assert got == {"ip_forward": 0xffffffff81ff7890, "nf_conntrack_max": 0xffffffff83a1b2c0}
    assert kernel_symbols(["ip_forward"], tmp_path / "missing") == {}


@given(st.binary(max_size=2000))
def test_kernel_symbols_survives_any_file(tmp_path_factory, data):
    f = tmp_path_factory.mktemp("ks") / "kallsyms"
    f.write_bytes(b"ffffffff81ff7890 T ip_forward\n" + data)
    got = kernel_symbols(["ip_forward", "nf_conntrack_max"], f)
    assert set(got) <= {"ip_forward", "nf_conntrack_max"} and all(v > 0 for v in got.values())


FACTS = KernelFacts("6.18", Path("/nonexistent-tracefs"), True, True, {})


def test_ip_forward_is_hooked_only_on_kernels_without_reasons():
    wanted = [h.func for h in hooks.wanted_hooks(FACTS)]
    assert wanted[:2] == ["__nf_conntrack_confirm", "__nf_conntrack_alloc"]
    assert "ip_forward" not in wanted and "__icmp_send" not in wanted
    old = dataclasses.replace(FACTS, has_reason=False)
    assert "ip_forward" in [h.func for h in hooks.wanted_hooks(old)]
    no_icmp_tp = dataclasses.replace(FACTS, has_icmp_tp=False)
    assert "__icmp_send" in [h.func for h in hooks.wanted_hooks(no_icmp_tp)]


class AttachAnswers:
    """Stands for bcc.BPF at the kprobe attach calls: refuses the functions in `refuse`."""

    def __init__(self, refuse=()):
        self.refuse, self.attached, self.detached = set(refuse), [], []

    def attach_kprobe(self, event, fn_name):
        self._answer("kprobe", event, fn_name)

    def attach_kretprobe(self, event, fn_name, maxactive):
        self._answer("kretprobe", event, fn_name)

    def _answer(self, kind, event, fn_name):
        if (kind, event.decode()) in self.refuse:
            raise Exception(f"Failed to attach BPF program {fn_name} to {kind} {event}")
        self.attached.append((kind, event.decode()))

    def detach_kprobe(self, event, fn_name):
        self.detached.append(("kprobe", event.decode()))

    def detach_kretprobe(self, event, fn_name):
        self.detached.append(("kretprobe", event.decode()))


def no_program(name):
    raise AssertionError(f"no BTF form can be loaded here: {name} must not be asked for")


@pytest.fixture
def node(tmp_path):
    """A node as the hooks see it: tracefs with kprobe_events, a BTF directory whose
    vmlinux lacks the functions (so the BTF form is never tried), /sys/module."""
    tracefs, btf, mods = tmp_path / "tracefs", tmp_path / "btf", tmp_path / "module"
    for d in (tracefs, btf, mods):
        d.mkdir()
    (tracefs / "kprobe_events").write_text("")
    (btf / "vmlinux").write_bytes(b"")
    return tracefs, btf, mods


def load_module(mods, name="nf_conntrack"):
    (mods / name).mkdir(exist_ok=True)
    (mods / name / "initstate").write_text("live\n")


def test_a_hook_half_attached_is_detached_and_says_why_in_one_line(node):
    tracefs, btf, mods = node
    load_module(mods)
    bpf = AttachAnswers(refuse={("kretprobe", "__nf_conntrack_alloc")})
    got = hooks.FunctionHooks(bpf, hooks.wanted_hooks(FACTS), tracefs, no_program, btf, mods).hooks
    assert [(h.name, h.attached) for h in got] == [("kretprobe __nf_conntrack_confirm", True),
                                                   ("kretprobe __nf_conntrack_alloc", False)]
    assert bpf.detached == [("kprobe", "__nf_conntrack_alloc")]
    assert got[1].detail.startswith("refused by the kernel: Failed to attach") and "\n" not in got[1].detail
    # why not the BTF form: this node has no BTF for the module (as 5.10, without module BTF)
    assert got[1].detail.endswith("; fexit: no BTF for module nf_conntrack "
                                  "(kernel built without CONFIG_DEBUG_INFO_BTF_MODULES)")
    assert got[0].detail == ("which flow lost a conntrack insert race (fexit: no BTF for module nf_conntrack "
                             "(kernel built without CONFIG_DEBUG_INFO_BTF_MODULES))")


def test_without_config_kprobes_every_hook_says_so(node):
    tracefs, btf, mods = node
    load_module(mods)
    (tracefs / "kprobe_events").unlink()
    bpf = AttachAnswers(refuse={("kprobe", "__nf_conntrack_confirm"), ("kprobe", "__nf_conntrack_alloc")})
    got = hooks.FunctionHooks(bpf, hooks.wanted_hooks(FACTS), tracefs, no_program, btf, mods).hooks
    assert all(not h.attached and h.detail.startswith("unavailable: kernel built without CONFIG_KPROBES; fexit")
               for h in got)
    assert bpf.detached == []


# The hooks the attach tests follow: two of a module, one built in. Other hooks of the registry
# attach beside them; these tests say nothing of those.
THESE = ("__nf_conntrack_confirm", "__nf_conntrack_alloc", "ip_forward")


def these(wanted):
    return tuple(h for h in wanted if h.func in THESE)


def test_a_module_loaded_later_gets_its_hooks_and_loses_them_when_it_goes(node):
    """nf_conntrack is a module on distribution kernels, loaded by kube-proxy, often
    after netdrop started: its hooks wait for it, attach when it comes, and are
    detached (and wait again) when it goes; ip_forward, built in, is not waited for."""
    tracefs, btf, mods = node
    bpf = AttachAnswers()
    old = dataclasses.replace(FACTS, has_reason=False)
    fh = hooks.FunctionHooks(bpf, these(hooks.wanted_hooks(old)), tracefs, no_program, btf, mods)
    assert [(h.name, h.attached) for h in fh.hooks] == [("fexit __nf_conntrack_confirm", False),
                                                        ("fexit __nf_conntrack_alloc", False),
                                                        ("kprobe ip_forward", True)]
    assert fh.hooks[0].detail == "waiting for module nf_conntrack: attached when it is loaded"
    assert not fh.maintain() and bpf.attached == [("kprobe", "ip_forward")]
    load_module(mods)
    listed = fh.hooks
    assert fh.maintain()
    assert fh.hooks is listed, "replaced in place: whoever holds the list sees the change"
    assert [(h.name, h.attached) for h in fh.hooks][:2] == [("kretprobe __nf_conntrack_confirm", True),
                                                            ("kretprobe __nf_conntrack_alloc", True)]
    assert not fh.maintain()
    (mods / "nf_conntrack" / "initstate").unlink()
    assert fh.maintain()
    assert [h.attached for h in fh.hooks] == [False, False, True]
    assert fh.hooks[0].detail.startswith("waiting for module nf_conntrack: it was unloaded")
    assert ("kretprobe", "__nf_conntrack_confirm") in bpf.detached and ("kprobe", "ip_forward") not in bpf.detached
    fh.close()
    assert ("kprobe", "ip_forward") in bpf.detached


def test_support_says_per_hook_what_the_node_allows_as_watch_would_attach_it(node):
    """doctor's question, answered as FunctionHooks chooses, without attaching."""
    tracefs, btf, mods = node
    old = dataclasses.replace(FACTS, tracefs=tracefs, has_reason=False)
    got = [h for h in hooks.support(old, btf, mods) if h.name.split()[-1] in THESE]
    assert [(h.name, h.attached) for h in got] == [("fexit __nf_conntrack_confirm", False),
                                                   ("fexit __nf_conntrack_alloc", False),
                                                   ("kprobe ip_forward", True)]
    assert got[0].detail == "module nf_conntrack is not loaded: netdrop attaches the hook when it is"
    assert got[2].detail == ("allowed: the MTU of forwarded packets' routes, for drops without a reason "
                             "(fentry: ip_forward is not in the kernel's BTF)")
    load_module(mods)
    (tracefs / "kprobe_events").unlink()
    got = [h for h in hooks.support(old, btf, mods) if h.name.split()[-1] in THESE]
    assert [(h.name, h.attached) for h in got][0] == ("kretprobe __nf_conntrack_confirm", False)
    assert got[0].detail.startswith("unavailable: kernel built without CONFIG_KPROBES; fexit: no BTF for module")


class Collect:
    def __init__(self):
        self.got = []

    def emit(self, drop, verdict, who):
        self.got.append((drop.cause, verdict))

    def flush(self):
        pass


def test_the_pipeline_takes_the_hooks_verdict_first_even_after_the_same_drop_without_one():
    from tracer.groups import Groups
    from tracer.watch import Pipeline

    dec = decode.Decoder(REASONS, KALLSYMS, mono_to_wall=0)
    sink = Collect()
    pipeline = Pipeline(dec, Groups(dec), [sink])
    plain = bytes(raw_event(sport=41234, dport=53))
    raced = bytes(a_dns_query_to_the_service())
    pipeline.deliver([plain, raced, plain])     # the plain verdict is remembered after the first
    (c1, v1), (c2, v2), (c3, v3) = sink.got
    assert (c1, c3) == (None, None) and v1 == v3 and "insert race" not in v1.hint
    assert c2 == "ct-insert-failed" and v2.category == "conntrack" and v2.hint.startswith("conntrack insert race lost")


def test_doctor_reports_each_hook_allowed_or_why_not():
    from tracer.doctor.kernel import check_hooks

    found = check_hooks([("fexit __nf_conntrack_confirm", True, "allowed: insert races per flow"),
                                ("kprobe ip_forward", False, "no kprobes")])
    assert [(f.check, f.severity) for f in found] == [("hook: fexit __nf_conntrack_confirm", "ok"),
                                                      ("hook: kprobe ip_forward", "info")]
    assert "cannot attach here: no kprobes" in found[1].summary
    assert check_hooks([])[0].severity == "info"


def test_waiting_costs_a_stat_per_tick_not_a_btf_walk(node, monkeypatch):
    """maintain() runs twice a second for the whole run: while a module is awaited it
    asks /sys/module only (vmlinux's BTF is ~5 MB, a walk of ~150,000 records)."""
    tracefs, btf, mods = node
    fh = hooks.FunctionHooks(AttachAnswers(), hooks.wanted_hooks(FACTS), tracefs, no_program, btf, mods)
    walks = []
    monkeypatch.setattr(hooks, "btf_function", lambda *a: walks.append(a))
    for _ in range(10):
        assert not fh.maintain()
    assert walks == []


def test_a_module_still_coming_is_not_loaded_yet_and_a_built_in_one_needs_no_wait(node):
    """initstate says "coming" while the module's init runs (its BTF not usable yet);
    a module compiled in has a /sys/module directory without initstate."""
    tracefs, btf, mods = node
    (mods / "nf_conntrack").mkdir()
    (mods / "nf_conntrack" / "initstate").write_text("coming\n")
    assert not hooks.module_loaded("nf_conntrack", mods)
    fh = hooks.FunctionHooks(AttachAnswers(), hooks.wanted_hooks(FACTS), tracefs, no_program, btf, mods)
    assert not fh.hooks[0].attached and fh.hooks[0].detail.startswith("waiting")
    (mods / "nf_conntrack" / "initstate").write_text("live\n")
    assert fh.due() and fh.maintain() and fh.hooks[0].attached
    (mods / "nf_conntrack" / "initstate").unlink()      # now as if built in: no waiting, nothing detached
    bpf = AttachAnswers()
    built_in = hooks.FunctionHooks(bpf, hooks.wanted_hooks(FACTS), tracefs, no_program, btf, mods)
    assert [h.attached for h in built_in.hooks] == [True, True]
    assert not built_in.due()


def test_the_c_names_only_causes_of_the_registry_and_each_hook_with_a_cause_notes_it():
    # The codes reach the C as -D flags (registry.cflags): a name the registry lacks would not compile,
    # and a cause no C notes would never be seen.
    c_sources = {p.name: p.read_text() for p in bpfsource.BPF_DIR.glob("*.[ch]")}
    named = {m for text in c_sources.values() for m in re.findall(r"\bND_CAUSE_[A-Z0-9_]+\b", text)}
    defines = {c.define for c in registry.CAUSES.values()}
    assert named <= defines
    noted = set(re.findall(r"fn_note\([^;]*?\b(ND_CAUSE_[A-Z0-9_]+)\b", c_sources["funchooks.c"]))
    assert noted == defines
    assert registry.cflags() == [f"-D{c.define}={c.code}" for c in registry.CAUSES.values()]


def test_every_hook_verdict_template_uses_only_words_explain_fills():
    words = {"flow", "race", "ct_size", "hint"}
    for hook in registry.FUNCTION_HOOKS:
        if hook.cause is not None:
            used = {field for _, field, _, _ in string.Formatter().parse(hook.cause.verdict.text) if field}
            assert used <= words, hook.func
            drop = decoded(raw_event(cause_raw=hook.cause.code))
            v = hook_verdict(drop)
            assert v is not None and v.category == hook.cause.verdict.category and "{" not in v.hint
            assert v.detail is not None and v.detail["hook"] == hook.func
