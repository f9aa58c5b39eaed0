"""netdrop capture and netdrop summary on the simulated node: real files, the
kernel's own counters, tshark reading the pcapng, Chromium opening the HTML."""

import csv
import io
import json
import re
import signal
import subprocess
import sys
import time

import pytest

from tracer.lab.cases import CASES

from tracer.lab.shell import in_netns

from ..conftest import NETDROP
from ..helpers import finish, nstat, start_capture

N = 4


def group_count(summary, category, reason, pod, direction):
    return sum(g["count"] for g in summary["groups"] if g["category"] == category and g["reason"] == reason
               and (g["pod"] or {}).get("name") == pod and g["direction"] == direction)


def test_capture_files_counts_and_pcap(node, tmp_path):
    web, db = node.pods["web"], node.pods["db"]
    before = {"frag": nstat(node.node1, "IpFragFails"), "noroute": nstat(node.node1, "IpExtInNoRoutes"),
              "noport": nstat(db.netns, "UdpNoPorts")}
    proc = start_capture(node, tmp_path, "-A", "--pcap")
    for case in ("mtu", "no-route", "udp-closed", "tcp-closed"):
        CASES[case].play(node, N)
    rc, _, err = finish(proc)
    assert rc == 0 and "Traceback" not in err, err
    kernel = {"frag": nstat(node.node1, "IpFragFails") - before["frag"],
              "noroute": nstat(node.node1, "IpExtInNoRoutes") - before["noroute"],
              "noport": nstat(db.netns, "UdpNoPorts") - before["noport"]}
    s = json.loads((tmp_path / "summary.json").read_text())
    # The window's exact counts equal the kernel's own counters.
    assert group_count(s, "mtu", "PKT_TOO_BIG", web.name, "from-pod") == kernel["frag"] == N
    assert group_count(s, "no-route", "IP_INNOROUTES", web.name, "from-pod") == kernel["noroute"] == N
    udp = sum(g["count"] for g in s["groups"] if g["location"] == "__udp4_lib_rcv" and g["pod"]
              and g["pod"]["name"] == db.name)
    assert udp == kernel["noport"] == N
    assert s["window"]["ended"] == "stopped early (signal)" and s["node"]["kubernetes_node"] == "sim-node1"
    assert s["totals"]["drops"] == sum(g["count"] for g in s["groups"])
    assert {v["category"] for v in s["verdicts"]} >= {"mtu", "no-route", "no-socket"}
    assert s["top_flows"] and s["timeline"]
    # events.jsonl: one object per delivered event, the keys of watch --json.
    events = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert len(events) == s["totals"]["events_written"] == s["totals"]["events_delivered"]
    assert {"pod", "direction", "hint", "mtu"} <= set(events[0])
    # drops.pcapng: tshark reads it and shows why each packet was dropped; headers only.
    tshark = subprocess.run(["tshark", "-r", str(tmp_path / "drops.pcapng"), "-T", "fields", "-E", "separator=|",
                             "-e", "ip.dst", "-e", "frame.cap_len", "-e", "frame.len", "-e", "frame.comment"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(tshark) == s["totals"]["pcap_packets"] == len([e for e in events if e["src"]])
    mtu = [line.split("|") for line in tshark if line.startswith(node.pods["api"].ipv4 + "|")]
    assert len(mtu) == N
    for _dst, caplen, length, comment in mtu:
        assert (int(caplen), int(length)) == (28, 1500)          # IP + UDP header: no payload
        assert comment == (f"netdrop: PKT_TOO_BIG at ip_forward (mtu); pod default/{web.name} from-pod; "
                           f"netns {node.netns_inodes()[node.node1]} on cni0")


def test_snaplen_records_payload_on_request(node, tmp_path):
    proc = start_capture(node, tmp_path, "--pod", node.pods["web"].name, "--pcap", "--snaplen", "2048")
    CASES["mtu"].play(node, 2)
    finish(proc)
    rows = subprocess.run(["tshark", "-r", str(tmp_path / "drops.pcapng"), "-T", "fields", "-e", "frame.cap_len",
                           "-e", "udp.dstport"], capture_output=True, text=True, check=True).stdout.split("\n")
    assert [r for r in rows if r.endswith("\t5000")] == ["1500\t5000"] * 2


def test_killed_capture_leaves_valid_events(node, tmp_path):
    db = node.pods["db"]
    proc = start_capture(node, tmp_path, "--pod", db.name)
    storm = subprocess.Popen([*in_netns(node.client), sys.executable, "-m", "tracer.lab.traffic", "udp",
                              "--dst", db.ipv4, "--port", "9999", "--count", "200000", "--seconds", "10"],
                             stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while (tmp_path / "events.jsonl").stat().st_size < 100_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.kill()                                  # no chance to clean up or write the summary
        proc.wait()
    finally:
        storm.kill()
        storm.wait()
    lines = (tmp_path / "events.jsonl").read_text().split("\n")
    assert lines[-1] == ""                           # ends with a whole line
    assert len(lines) > 100 and all(json.loads(x)["pod"]["name"] == db.name for x in lines[:-1])
    assert not (tmp_path / "summary.json").exists()


def test_max_events_bounds_the_file_not_the_counts(node, tmp_path):
    db = node.pods["db"]
    proc = start_capture(node, tmp_path, "--pod", db.name, "--max-events", "5")
    CASES["udp-closed"].play(node, 20)
    rc, _, err = finish(proc, signal.SIGTERM)
    assert rc == 0, err
    s = json.loads((tmp_path / "summary.json").read_text())
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == 5 == s["totals"]["events_written"]
    assert group_count(s, "no-socket", "NO_SOCKET", db.name, "in-pod") == 20


@pytest.mark.parametrize("output,message", [
    ("/proc/netdrop-capture", "cannot write to output directory /proc/netdrop-capture"),
    ("/etc/hostname/capture", "cannot write to output directory /etc/hostname/capture: Not a directory"),
])
def test_unwritable_output_fails_first(output, message):
    res = subprocess.run([*NETDROP, "capture", "--duration", "5", "--output", output], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]        # before any tracing line: nothing was loaded


def test_summary_formats_and_html_in_chromium(node, tmp_path):
    cap = tmp_path / "cap"
    proc = start_capture(node, cap, "-A")
    for case in ("mtu", "udp-closed", "forward-drop"):
        CASES[case].play(node, 3)
    finish(proc)
    out = {}
    for fmt in ("table", "markdown", "json", "csv", "html"):
        res = subprocess.run([*NETDROP, "summary", str(cap), "--format", fmt], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        out[fmt] = res.stdout
    assert "What to check first" in out["table"] and "PKT_TOO_BIG" in out["table"]
    assert "| default/web-7d9f8c6b5-x2k4q | from-pod |" in out["markdown"]
    assert json.loads(out["json"])["by_category"]["mtu"] == 3
    rows = list(csv.DictReader(io.StringIO(out["csv"])))
    assert any(r["reason"] == "NETFILTER_DROP" for r in rows), [(r["reason"], r["location"], r["drops"]) for r in rows]
    page = tmp_path / "summary.html"
    page.write_text(out["html"])
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium'}"]
    dom = subprocess.run(["chromium", *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert '<svg id="timeline"' in dom and dom.count('class="bar"') >= 3
    assert 'data-category="mtu"' in dom and 'data-category="netfilter"' in dom
    assert dom.count("<tr>") >= 4 and "PKT_TOO_BIG" in dom
    # The heat map of pods by category, above the verdicts: web's MTU drops counted in it.
    assert dom.index('id="heatmap"') < dom.index('id="verdicts"')
    assert re.search(r'<tr><th>default/web-7d9f8c6b5-x2k4q[^<]*</th>.*?data-count="3"', dom)
    shot = tmp_path / "summary.png"
    subprocess.run(["chromium", *flags, f"--screenshot={shot}", "--window-size=1200,1000", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.stat().st_size > 20_000
