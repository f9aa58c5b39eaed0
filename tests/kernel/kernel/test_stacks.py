"""Kernel stacks from the real kernel: a capture's summary.json names the
function that dropped each packet at the top of its group's stacks, and
`watch --json` carries a stack per line only when asked (both attach forms).
Part of the kernel matrix: whether a tracepoint's stack reaches the dropping
function depends on the kernel's unwinder."""

import json
import subprocess

import pytest

from tracer.lab.cases import CASES

from ..conftest import NETDROP
from ..helpers import finish, start_capture

pytestmark = pytest.mark.portable

N = 4


def groups_at(s, location, pod=None):
    return [g for g in s["groups"] if g["location"] == location
            and (pod is None or (g["pod"] or {}).get("name") == pod)]


def test_capture_summary_carries_each_groups_stacks_from_the_dropping_function(node, tmp_path):
    web, db = node.pods["web"], node.pods["db"]
    proc = start_capture(node, tmp_path, "-A")
    for case in ("udp-closed", "mtu"):
        CASES[case].play(node, N)
    rc, _, err = finish(proc)
    assert rc == 0 and "Traceback" not in err, err
    s = json.loads((tmp_path / "summary.json").read_text())
    # UDP to a closed port: NO_SOCKET freed in __udp4_lib_rcv, reached from IP's local delivery.
    udp = groups_at(s, "__udp4_lib_rcv", db.name)
    assert udp and udp[0]["stacks"], udp
    frames = udp[0]["stacks"][0]["frames"]
    assert frames[0].startswith("__udp4_lib_rcv+0x"), frames
    assert any(f.startswith("ip_local_deliver") or f.startswith("ip_protocol_deliver_rcu") for f in frames), frames
    assert sum(st["events"] for st in udp[0]["stacks"]) <= udp[0]["events"]
    # A forwarded packet too big for its route: dropped in ip_forward, reached from ip_rcv.
    mtu = groups_at(s, "ip_forward", web.name)
    assert mtu and mtu[0]["stacks"][0]["frames"][0].startswith("ip_forward+0x"), mtu
    assert any(f.startswith("ip_rcv") or f.startswith("ip_sublist_rcv") or f.startswith("__netif_receive_skb")
               for f in mtu[0]["stacks"][0]["frames"])
    # No kernel address travels in the file: frames are names and offsets.
    text = (tmp_path / "summary.json").read_text()
    assert "0xffff" not in text
    # The renderings for people list them.
    md = subprocess.run([*NETDROP, "summary", str(tmp_path), "--format", "markdown"], capture_output=True,
                        text=True, check=True).stdout
    assert "### Kernel stacks" in md and "\\_\\_udp4_lib_rcv+0x" in md


@pytest.mark.parametrize("form", ["tp_btf", "classic"])
def test_watch_json_lines_carry_a_stack_only_with_stacks(node, netdrop, form):
    db = node.pods["db"]
    extra = ["--classic-tracepoints"] if form == "classic" else []
    runs = {}
    for flag in ("--stacks", None):
        nd = netdrop("watch", "--json", "--netns", db.netns, *extra, *([flag] if flag else [])).wait_ready()
        CASES["udp-closed"].play(node, N)
        runs[flag] = nd.stop().records()
        assert nd.proc.returncode == 0, nd.stderr
    with_stacks = [r for r in runs["--stacks"] if r["location"] == "__udp4_lib_rcv"]
    assert len(with_stacks) == N
    # The stack budget (bpf/netdrop.c: 2 per location slot, CPU and 100 ms) lets the
    # first events of a quiet namespace through: at least the first has its stack.
    stacked = [r["stack"] for r in with_stacks if r["stack"]]
    assert stacked and all(st[0].startswith("__udp4_lib_rcv+0x") for st in stacked)
    assert all(list(r)[-1] == "stack" for r in with_stacks)
    assert runs[None] and all("stack" not in r for r in runs[None])
