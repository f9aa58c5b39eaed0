"""Filters hold from the first drop the program sees.

bcc attaches a tracepoint program as it loads it, before netdrop can write
its filter map: a program that counted and reported until then sent every
drop of the machine for that moment (seen: 2,600 events of other namespaces
in `watch --netns X` during a storm elsewhere)."""

import json
import os
import subprocess
import sys
import time

from tracer.lab.shell import in_netns, run

from ..conftest import NETDROP


def test_a_storm_elsewhere_never_reaches_a_netns_filtered_watch():
    mine, other = f"ndfa{os.getpid()}", f"ndfb{os.getpid()}"
    for ns in (mine, other):
        run("ip", "netns", "add", ns)
        run("ip", "-n", ns, "link", "set", "lo", "up")
    storm = None
    try:
        inode = os.stat(f"/run/netns/{mine}").st_ino
        storm = subprocess.Popen([*in_netns(other), sys.executable, "-m", "tracer.lab.traffic", "udp", "--dst",
                                  "127.0.0.1", "--port", "9", "--count", "5000000", "--seconds", "25"],
                                 stdout=subprocess.DEVNULL)
        time.sleep(1.0)     # the storm is on before netdrop loads
        res = subprocess.run([*NETDROP, "watch", "--json", "--netns", mine, "--duration", "2"],
                             capture_output=True, text=True, timeout=60)
    finally:
        if storm is not None:
            storm.kill()
            storm.wait()
        for ns in (mine, other):
            run("ip", "netns", "del", ns, check=False)
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert {r["netns"] for r in records} <= {inode}, {r["netns"] for r in records}
    assert "netdrop: 0 drops counted" in res.stderr, res.stderr


def test_a_storm_in_another_pod_never_reaches_a_pod_filtered_watch(node):
    """--pod filters through the pod maps, written once the API has answered (which
    may take seconds): until then the program counts nothing at all."""
    web, db = node.pods["web"], node.pods["db"]
    storm = subprocess.Popen([*in_netns(web.netns), sys.executable, "-m", "tracer.lab.traffic", "udp", "--dst",
                              "127.0.0.1", "--port", "9", "--count", "5000000", "--seconds", "25"],
                             stdout=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        res = subprocess.run([*NETDROP, "watch", "--json", "--pod", db.name, "--kubeconfig", str(node.kubeconfig),
                              "--node-netns", node.node1, "--duration", "2"],
                             capture_output=True, text=True, timeout=60)
    finally:
        storm.kill()
        storm.wait()
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert all((r["pod"] or {}).get("name") == db.name for r in records), {r["netns"] for r in records}
    # db may drop a packet of its own meanwhile (IPv6 multicast nobody joined): counted, and db's.
    counted = [line for line in res.stderr.splitlines() if line.startswith("netdrop: counted ")]
    assert all(f"{db.namespace}/{db.name}" in line for line in counted), res.stderr
