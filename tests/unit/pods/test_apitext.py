"""Values from the API made safe where they enter (pods/apitext, pods/objects): any
text, pushed through pod_info into the /metrics exposition, parses back with the
real exposition parsers (prometheus_client's and promtool) as exactly the safe
value: no control, bidi or separator character, never over Kubernetes' limit for
the field, two different values never one."""

import shutil
import subprocess
import unicodedata

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tracer.pods import apitext
from tracer.pods.attribute import Attribution, PodRef
from tracer.pods.objects import pod_info, service_info
from tracer.pods.workload import workload_of
from tracer.sinks.metrics import AgentState, DropCollector, Series

PROMTOOL = shutil.which("promtool")
RULES = [apitext.DNS_LABEL, apitext.DNS_SUBDOMAIN, apitext.LABEL_KEY, apitext.LABEL_VALUE, apitext.KIND,
         apitext.WORD, apitext.UID]
NASTY = ["\x1b]0;owned\x07", "\x1b[2J\x1b[H", "a\rb", "a\x0bb", "a\x85b", "a\u2028b", "a\u2029b",
         "admin\u202etxt.exe", "\u2066x\u2069", "\ud800", "x\udfffy", "web\u200b", "\ufeffweb", "caf\u00e9",
         "a\\x1bb", "a~0123456789abcdef", "", " ", "x" * 254, "x" * 64]
# Any code point: surrogates, controls, private use and unassigned too (Hypothesis leaves
# surrogates out unless asked).
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=400) | st.sampled_from(NASTY)


def unsafe(text: str) -> list[str]:
    """The characters a terminal or a reader would not see as text."""
    return [c for c in text if unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp")]


@given(ANY_TEXT, st.sampled_from(RULES))
@example("a" * 2_000_000, apitext.DNS_SUBDOMAIN)
def test_any_text_becomes_visible_text_within_the_fields_limit(text, rule):
    out = apitext.safe(text, rule)
    assert unsafe(out) == []
    assert len(out) <= rule.limit and len(out.encode("utf-8")) <= rule.limit
    assert (out == text) is rule.accepts(text)      # what Kubernetes accepts stays as it is
    if out != text:
        assert not rule.accepts(out)                # and nothing else takes the text of such a value


@given(ANY_TEXT, ANY_TEXT, st.sampled_from(RULES))
@example("a\x1bb", "a\\x1bb", apitext.DNS_SUBDOMAIN)          # the escape and the text of the escape
@example("x" * 300 + "1", "x" * 300 + "2", apitext.DNS_SUBDOMAIN)   # same prefix, cut at the limit
@example("web", "w\u0435b", apitext.DNS_LABEL)                # a Cyrillic e
def test_two_values_never_become_the_same_text(a, b, rule):
    if a != b:
        assert apitext.safe(a, rule) != apitext.safe(b, rule)


def test_names_kubernetes_accepts_are_kept_and_others_keep_a_readable_prefix():
    assert apitext.safe("web-7d9f8c6b5-x2k4q", apitext.DNS_SUBDOMAIN) == "web-7d9f8c6b5-x2k4q"
    assert apitext.safe("app.kubernetes.io/name", apitext.LABEL_KEY) == "app.kubernetes.io/name"
    assert apitext.safe("", apitext.LABEL_VALUE) == ""
    evil = apitext.safe("web\x1b]0;owned\x07", apitext.DNS_SUBDOMAIN)
    assert evil.startswith("web\\x1b]0;owned\\x07~") and len(evil) == len("web\\x1b]0;owned\\x07~") + 16
    long = apitext.safe("a" * 1_400_000, apitext.DNS_SUBDOMAIN)
    assert long.startswith("a" * 200) and len(long) == 253
    too_long = apitext.safe("a" * 64, apitext.LABEL_VALUE)
    assert too_long != "a" * 63 and len(too_long) == 63


def test_messages_from_the_server_are_one_short_visible_line():
    line = apitext.message("Forbidden\r\n\x1b[31mred\u202e" + "x" * 1000, 80)
    assert line.startswith("Forbidden \\x1b[31mred\\u202exxx") and line.endswith("x\u2026") and len(line) == 80


def test_addresses_are_addresses():
    assert [apitext.ip(v) for v in ("10.0.0.1", "FD00::A", "10.0.0.1\n", "999.1.1.1", "x", 5, "1" * 100)] == \
        ["10.0.0.1", "fd00::a", None, None, None, None, None]
    assert apitext.cidr("10.244.1.5/24") == "10.244.1.0/24" and apitext.cidr("10.244.1.0/24\x1b") is None


def hostile_pod(name, namespace, owner_kind, owner, label_key, label_value):
    return {"metadata": {"name": name, "namespace": namespace, "uid": "u-1",
                         "labels": {label_key: label_value, "pod-template-hash": label_value},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind, "name": owner,
                                              "uid": "o-1", "controller": True}]},
            "spec": {"nodeName": name}, "status": {"phase": label_value, "podIP": "10.0.0.1"}}


class Names:
    def reason_name(self, code):
        return "NO_SOCKET"

    def location_name(self, addr):
        return "__udp4_lib_rcv"


def exposition(info) -> tuple[str, str]:
    """/metrics for one drop of the pod, as netdrop renders it and as prometheus_client does."""
    ref = PodRef(info.namespace, info.name, info.uid, info.node)
    series = Series(Names(), lambda tag: Attribution(ref, "in-pod"), lambda who: workload_of(info).name)
    collector = DropCollector("node-a", series, lambda: {(1, 2, 0x10, 1 << 2 | 1, 0): 3},
                              lambda counts: AgentState(0, 0, (("tracepoint skb:kfree_skb", True),), None),
                              lambda: None, "0.1.0", "6.1.0")
    drops, others = collector.render()

    class Families:
        def collect(self):
            return iter(others)
    rest = CollectorRegistry(auto_describe=False)
    rest.register(Families())
    ours = drops.decode("utf-8") + generate_latest(rest).decode("utf-8")
    reference = CollectorRegistry(auto_describe=False)
    reference.register(collector)
    return ours, generate_latest(reference).decode("utf-8")


def drop_labels(text: str) -> list[dict[str, str]]:
    return [s.labels for f in text_string_to_metric_families(text) if f.name == "netdrop_drops" for s in f.samples]


def promtool_check(text: str) -> None:
    res = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode("utf-8"), capture_output=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr.decode() + res.stdout.decode()


@pytest.mark.skipif(PROMTOOL is None, reason="Debian's promtool is not installed (scripts/setup installs it)")
@settings(max_examples=150)
@given(ANY_TEXT, ANY_TEXT, st.sampled_from(["ReplicaSet", "StatefulSet", "Job", "\x1bKind"]), ANY_TEXT, ANY_TEXT,
       ANY_TEXT)
@example("web-1", "default", "StatefulSet", "web\x1b]0;owned\x07\r\x0b\x85\u2028\u202e", "app", "v")
@example("p", "default", "StatefulSet", "a\ud800b", "app", "v")
def test_any_api_text_reaches_metrics_as_its_safe_value(name, namespace, kind, owner, label_key, label_value):
    info = pod_info(hostile_pod(name, namespace, kind, owner, label_key, label_value))
    for text in exposition(info):
        promtool_check(text)
        [labels] = drop_labels(text)
        if info.namespace and info.name:
            assert (labels["namespace"], labels["pod"], labels["workload"]) == \
                (info.namespace, info.name, workload_of(info).name)
        assert len(labels["namespace"]) <= 63 and len(labels["pod"]) <= 253 and len(labels["workload"]) <= 253
        for value in labels.values():
            assert unsafe(value) == []


@pytest.mark.skipif(PROMTOOL is None, reason="Debian's promtool is not installed (scripts/setup installs it)")
@settings(max_examples=60)
@given(ANY_TEXT, ANY_TEXT)
@example("web\x1b", "web\\x1b")
def test_two_owners_stay_two_workloads_in_metrics(a, b):
    if a == b:
        return
    workloads = []
    for owner in (a, b):
        text = exposition(pod_info(hostile_pod("web-0", "default", "StatefulSet", owner, "app", "web")))[0]
        promtool_check(text)
        workloads.append(drop_labels(text)[0]["workload"])
    assert workloads[0] != workloads[1]


@given(ANY_TEXT, ANY_TEXT, ANY_TEXT)
def test_services_are_read_safe_too(name, key, value):
    s = service_info({"metadata": {"name": name, "namespace": name}, "spec": {
        "selector": {key: value}, "ipFamilyPolicy": value, "ipFamilies": [value], "clusterIPs": [value, "None"]}})
    for text in (s.name, s.namespace, *[t for kv in s.selector for t in kv], s.ip_family_policy or "",
                 *s.ip_families, *s.cluster_ips):
        assert unsafe(text) == []
    assert s.cluster_ips[-1] == "None" and len(s.name) <= 63
