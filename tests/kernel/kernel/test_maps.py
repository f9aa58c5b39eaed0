"""Kernel maps that fill up: netdrop says so once, keeps running, and catches up when room frees."""

import ctypes

import pytest

from tracer.errors import UserError
from tracer.kernel.facts import find_tracefs, probe_kernel
from tracer.kernel.filters import Filters, KernelPods
from tracer.kernel.loader import Tracer, TracerSettings


def pods(inodes) -> KernelPods:
    return KernelPods(node_netns=1, netns={i: (i << 2, True) for i in inodes}, veth={}, ips={}, hostports={},
                      node_ips=frozenset(), filter=False)


def in_map(tracer: Tracer) -> set[int]:
    return {k.value for k in tracer.bpf[b"pod_netns"]}   # a bcc table iterates over its keys


def test_a_full_pod_map_is_told_once_and_filled_when_room_frees():
    facts = probe_kernel(find_tracefs())
    said: list[str] = []
    with Tracer(facts, settings=TracerSettings(map_entries=4), warn=said.append) as tracer:
        tracer.set_pods(pods(range(100, 106)))
        assert len(in_map(tracer)) == 4
        assert len(said) == 1 and "pod_netns map is full (4 entries): 2 pod entries are not in it" in said[0]
        tracer.set_pods(pods(range(100, 107)))          # still full: not said again
        assert len(said) == 1 and len(in_map(tracer)) == 4
        # Pods went away: those that did not fit before are written now.
        tracer.set_pods(pods(range(103, 107)))
        assert in_map(tracer) == {103, 104, 105, 106}
        assert tracer.bpf[b"pod_netns"][ctypes.c_uint32(106)].tag == 106 << 2


def test_more_filter_values_than_the_map_holds_is_one_clear_error():
    facts = probe_kernel(find_tracefs())
    with pytest.raises(UserError, match="at most 4 values per filter kind"):
        Tracer(facts, Filters(ports=frozenset(range(1, 6))), TracerSettings(map_entries=4))
