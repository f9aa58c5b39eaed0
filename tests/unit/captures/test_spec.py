"""A NetdropCapture read as an agent reads it: what it selects, its bounds, one line for what is wrong."""

import json

import pytest
from hypothesis import given, settings

from tracer.captures.spec import (CaptureSpec, NodeSelection, PodSelection, SpecError, capture_object,
                                  format_duration, parse_capture, parse_duration)
from tracer.pods.objects import PodInfo

from ..strategies import json_values


def obj(spec: dict, namespace: str = "shop") -> dict:
    return {"apiVersion": "netdrop.io/v1alpha1", "kind": "NetdropCapture",
            "metadata": {"name": "web-drops", "namespace": namespace, "uid": "u-1",
                         "creationTimestamp": "2026-12-07T11:00:00Z"},
            "spec": spec}


def pod(name: str, labels: dict[str, str], namespace: str = "shop") -> PodInfo:
    return PodInfo(namespace, name, "uid-" + name, "node-1", ("10.244.1.5",), False, (), tuple(labels.items()),
                   "Running")


def test_a_pod_capture_selects_by_name_or_label_in_its_own_namespace_only():
    c = parse_capture(obj({"pods": {"names": ["db-0"], "selector": "app=web,tier!=cache"},
                           "duration": "2m", "since": "10m"}))
    sel = c.spec.pods
    assert sel is not None and c.spec.duration == 120 and c.spec.since == 600
    assert sel.matches(pod("web-1", {"app": "web"}), "shop")
    assert sel.matches(pod("db-0", {}), "shop")
    assert not sel.matches(pod("web-2", {"app": "web", "tier": "cache"}), "shop")
    assert not sel.matches(pod("web-1", {"app": "web"}, namespace="other"), "shop")
    assert c.starts_at() == c.created.timestamp() - 600 and c.ends_at() == c.created.timestamp() + 120
    assert not c.node_scope


def test_node_captures_only_in_the_agents_namespace():
    with pytest.raises(SpecError, match="only be created in the agents' namespace 'netdrop'"):
        parse_capture(obj({"nodes": {"all": True}, "duration": "30s"}, namespace="shop"))
    c = parse_capture(obj({"nodes": {"names": ["node-1"]}, "duration": "30s"}, namespace="netdrop"))
    assert c.node_scope and c.spec.nodes == NodeSelection(("node-1",), False)


@pytest.mark.parametrize("spec, says", [
    ({"duration": "30s"}, "exactly one of pods and nodes"),
    ({"pods": {"names": ["a"]}, "nodes": {"all": True}, "duration": "30s"}, "exactly one of pods and nodes"),
    ({"pods": {}, "duration": "30s"}, "names, a selector, or both"),
    ({"pods": {"names": ["a"]}, "duration": "2h"}, "duration: 1s to 1h"),
    ({"pods": {"names": ["a"]}, "duration": "soon"}, "not a duration"),
    ({"pods": {"names": ["a"]}, "duration": "30s", "since": "3h"}, "since: at most 1h"),
    ({"pods": {"names": ["A B"]}, "duration": "30s"}, "is not a name"),
    ({"pods": {"selector": "=x"}, "duration": "30s"}, "not a label selector"),
    ({"pods": {"names": ["a"]}, "duration": "30s", "filters": {"ports": [0]}}, "each port is 1-65535"),
    ({"pods": {"names": ["a"]}, "duration": "30s", "filters": {"ips": ["10.0.0.300"]}}, "not an IP address"),
    ({"pods": {"names": ["a"]}, "duration": "30s", "filters": {"categories": ["bogus"]}}, "is not one of"),
    ({"pods": {"names": ["a"]}, "duration": "30s", "packets": "yes"}, "packets: expected true or false"),
])
def test_what_is_wrong_is_said_in_one_line(spec, says):
    with pytest.raises(SpecError, match=says) as err:
        parse_capture(obj(spec))
    assert "\n" not in str(err.value)


def test_durations_read_and_written_as_kubectl_users_write_them():
    assert [parse_duration(t, "d") for t in ("30s", "2m", "1h30m", "90s")] == [30, 120, 5400, 90]
    assert [format_duration(s) for s in (30, 120, 5400, 90, 0)] == ["30s", "2m", "1h30m", "1m30s", "0s"]


def test_a_spec_written_by_the_plugin_reads_back_the_same():
    spec = CaptureSpec(PodSelection(("web-0",), "app=web"), None, 90.0, 600.0, packets=True)
    o = capture_object("shop", spec)
    assert o["metadata"] == {"namespace": "shop", "generateName": "netdrop-"}
    o["metadata"].update(name="netdrop-x1", uid="u", creationTimestamp="2026-12-07T11:00:00Z")
    assert parse_capture(json.loads(json.dumps(o))).spec == spec


@settings(max_examples=400, deadline=None)
@given(json_values(["metadata", "spec", "name", "namespace", "uid", "creationTimestamp", "pods", "nodes",
                    "names", "selector", "all", "duration", "since", "filters", "ports", "ips", "categories",
                    "packets"]))
def test_any_object_is_a_capture_or_one_line_why_not(value):
    try:
        parse_capture(value)
    except SpecError as exc:
        assert "\n" not in str(exc)
