"""Shutdown and start-up as an operator meets them: SIGINT, SIGTERM and SIGHUP
end netdrop within 2 s at any moment (start-up and drop storms included), with
the usual end-of-run lines; a closed terminal leaves no demo behind; an API
server that never answers does not hold tracing back.

Storms are bounded (count and seconds) UDP senders to a closed port inside the
simulated node's namespaces; nothing here touches the host's namespace."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tracer.lab.node import SimNode

from tracer.lab.ownership import HOLDER_CMDLINE, NETNS_DIR, STATE_DIR, Ownership

from tracer.lab.shell import in_netns

from ...timing import SLACK, allowed
from ..conftest import NETDROP, Netdrop

REPO = Path(__file__).resolve().parents[3]
STOP_WITHIN = allowed(2.0)     # the promise is 2 s (scripts/bench --stop measures it); tests/timing.py
END_LINE = "drops counted"


@pytest.fixture(autouse=True)
def signals_not_ignored() -> Iterator[None]:
    """netdrop keeps ignoring what its starter ignores (nohup, a background job
    of a script, which may be how this test runs): here it must not."""
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM)}
    for s, h in old.items():
        if h == signal.SIG_IGN:
            signal.signal(s, signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def storm(node: SimNode, seconds: float = 12, senders: int = 2) -> Iterator[None]:
    """UDP to a closed port in db's namespace as fast as Python sends it, for at
    most `seconds` (and stopped on leaving the block)."""
    db = node.pods["db"]
    procs = [subprocess.Popen([*in_netns(db.netns), sys.executable, "-m", "tracer.lab.traffic", "udp",
                               "--dst", "127.0.0.1", "--port", "9999", "--count", "50000000",
                               "--seconds", str(seconds)],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(senders)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def stopped_in(nd: Netdrop, sig: int) -> float:
    """Send sig, wait for the exit; how long it took."""
    t0 = time.monotonic()
    nd.stop(settle=0, sig=sig, timeout=30)
    return time.monotonic() - t0


def db_netns(node: SimNode) -> str:
    return str(NETNS_DIR / node.pods["db"].netns)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_during_a_drop_storm_ends_watch_within_2s(netdrop, node, sig):
    nd = netdrop("watch", "--json", "--max-event-rate", "0", "--duration", "60",
                 "--netns", db_netns(node)).wait_ready()
    with storm(node):
        time.sleep(2.5)                      # the reader is well behind by now
        took = stopped_in(nd, sig)
    assert took < STOP_WITHIN, f"{signal.Signals(sig).name} took {took:.1f} s"
    assert nd.proc.returncode == 0, nd.stderr
    assert "Traceback" not in nd.stderr
    end = [line for line in nd.stderr.splitlines() if END_LINE in line]
    assert len(end) == 1, nd.stderr
    counted = int(end[0].split("netdrop: ")[1].split(" drops counted")[0].replace(",", ""))
    delivered = int(end[0].split("drops counted, ")[1].split(" events delivered")[0].replace(",", ""))
    # A storm indeed: far more drops than the reader took, and its lines say so.
    assert counted > 50_000 and delivered < counted
    # What was still in the ring buffer at the stop is not waited for.
    assert 0 < len(nd.records()) <= delivered


def catches(pid: int, sig: int) -> bool:
    """Has the process a handler for sig (SigCgt in /proc/PID/status)?"""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught >> (sig - 1) & 1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_during_start_up_ends_it_within_2s(netdrop, sig):
    nd = netdrop("watch", "--json", "--duration", "60")
    # From its handler's installation (the first thing main() does; before it
    # the interpreter itself is starting) on, 0.3 s: bcc is compiling.
    deadline = time.monotonic() + 10
    # (SIGHUP: Python itself catches SIGINT from its start.)
    while not catches(nd.proc.pid, signal.SIGHUP) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    took = stopped_in(nd, sig)
    assert took < STOP_WITHIN, f"{signal.Signals(sig).name} took {took:.1f} s"
    assert "Traceback" not in nd.stderr
    assert nd.proc.returncode in (128 + sig, 0), nd.stderr
    if nd.proc.returncode:
        assert nd.stderr.strip().splitlines()[-1] == \
            f"netdrop: stopped by {signal.Signals(sig).name} before tracing began"


def test_capture_stopped_during_a_storm_writes_its_summary(netdrop, node, tmp_path):
    out = tmp_path / "incident"
    nd = netdrop("capture", "--output", str(out), "--max-event-rate", "0", "--duration", "60",
                 "--netns", db_netns(node)).wait_ready()
    with storm(node):
        time.sleep(2.5)
        took = stopped_in(nd, signal.SIGTERM)
    assert took < STOP_WITHIN, f"capture took {took:.1f} s"
    assert nd.proc.returncode == 0, nd.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert "stopped early" in json.dumps(summary)
    assert "wrote " in nd.stderr and "Traceback" not in nd.stderr
    lines = (out / "events.jsonl").read_text().splitlines()
    # The storm's drops; db's own benign ones (router solicitations nobody joined) may come too.
    storm_events = [e for e in map(json.loads, lines) if not e["benign"]]
    assert storm_events and all(e["dport"] == 9999 for e in storm_events)


def _holders(prefix: str) -> list[int]:
    """Processes that hold a namespace of the lab with this prefix (its state file
    names the namespaces they hold as /proc/PID/ns/net)."""
    state = STATE_DIR / f"lab-{prefix}.json"
    try:
        names = json.loads(state.read_text()).get("namespaces", [])
    except (OSError, ValueError):
        return []
    return [int(n.split("/")[2]) for n in names if n.startswith("/proc/")]


def _running(pid: int) -> bool:
    """Alive and not a zombie (tmux reaps its panes' processes in its own time)."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() == HOLDER_CMDLINE
    except OSError:
        return False


def _lab_namespaces(prefix: str) -> list[str]:
    return [e.name for e in NETNS_DIR.iterdir() if e.name.startswith(prefix + "-")] \
        if NETNS_DIR.is_dir() else []


@pytest.mark.parametrize("when", ["tracing", "building"])
def test_closing_the_demos_terminal_leaves_nothing_behind(when):
    prefix = f"ndh{os.getpid() % 100000}{when[0]}"
    session = f"netdrop-test-{prefix}"
    cmd = " ".join([*NETDROP, "demo", "--duration", "60", "--cases", "udp-closed", "--prefix", prefix])
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", f"exec {cmd}"],
                   check=True, cwd=REPO, timeout=10)
    holders: list[int] = []
    try:
        pid = int(subprocess.run(["tmux", "display-message", "-p", "-t", session, "#{pane_pid}"],
                                 capture_output=True, text=True, check=True, timeout=10).stdout)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            holders = holders or _holders(prefix)
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                    capture_output=True, text=True, timeout=10).stdout
            if when == "building" and holders and "simulated node" not in screen:
                break                        # mid-build: the cache pod's holder is running
            if when == "tracing" and "simulated node" in screen and holders:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the demo did not get to {when}: {screen}")
        t0 = time.monotonic()
        subprocess.run(["tmux", "kill-session", "-t", session], check=True, timeout=10)
        while _running(pid) and time.monotonic() - t0 < 10:
            time.sleep(0.02)
        took = time.monotonic() - t0
        # The lab build cannot be cut in half; it is removed right after it.
        assert took < (STOP_WITHIN if when == "tracing" else 8), f"the demo took {took:.1f} s to end"
        assert not _running(pid)
        assert _lab_namespaces(prefix) == []
        holders = holders or _holders(prefix)
        assert not [h for h in holders if _alive(h)], "a process still holds the cache pod's namespace"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, timeout=10)
        Ownership(prefix).cleanup_leftovers()


@contextmanager
def silent_api() -> Iterator[str]:
    """An "API server" on 127.0.0.1 that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not done.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        done.set()
        t.join(2)
        for c in held:
            c.close()
        srv.close()


def time_to_trace(netdrop, *args: str) -> tuple[float, Netdrop]:
    t0 = time.monotonic()
    nd = netdrop("watch", "--json", "--duration", "60", *args).wait_ready(timeout=60)
    return time.monotonic() - t0, nd


def test_an_api_that_never_answers_does_not_hold_tracing_back(netdrop, node, tmp_path):
    # The same start without any API, for scale: other tests loading this
    # machine slow bcc's compile down, which is not what this test is about.
    baseline, nd = time_to_trace(netdrop, "--node-netns", node.node1)
    stopped_in(nd, signal.SIGTERM)
    with silent_api() as url:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": url}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
        kubeconfig.chmod(0o600)
        started, nd = time_to_trace(netdrop, "--kubeconfig", str(kubeconfig), "--node-netns", node.node1)
        took = stopped_in(nd, signal.SIGTERM)
    # At most kube.START_SECONDS (3 s) of waiting for the API, overlapping the compile (and
    # SLACK for a busy machine: an API that held the start would hold it 40 s).
    assert started < max(5.0, baseline + 3.0) + SLACK, \
        f"tracing started after {started:.1f} s (without API: {baseline:.1f} s)"
    assert took < STOP_WITHIN, f"stopping took {took:.1f} s"
    assert nd.proc.returncode == 0 and "Traceback" not in nd.stderr, nd.stderr
    assert f"pods: no Kubernetes API yet (the API server at {url} did not answer in time)" in nd.stderr


def test_closing_the_captures_terminal_still_writes_its_summary(node, tmp_path):
    """Its progress line can no longer be written (EIO): the summary is, all the same."""
    out = tmp_path / "incident"
    session = f"netdrop-test-cap{os.getpid()}"
    cmd = " ".join([*NETDROP, "capture", "--output", str(out), "--duration", "60", "--netns", db_netns(node)])
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "24", f"exec {cmd}"],
                   check=True, cwd=REPO, timeout=10)
    try:
        pid = int(subprocess.run(["tmux", "display-message", "-p", "-t", session, "#{pane_pid}"],
                                 capture_output=True, text=True, check=True, timeout=10).stdout)
        deadline = time.monotonic() + 60
        while "capture:" not in subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                                               text=True, timeout=10).stdout:
            assert time.monotonic() < deadline, "the capture did not start"
            time.sleep(0.05)
        node.traffic(node.pods["db"].netns, "udp", "--dst", "127.0.0.1", "--port", "9999", "--count", "5")
        time.sleep(1)                                # a tick: the progress line shows them
        t0 = time.monotonic()
        subprocess.run(["tmux", "kill-session", "-t", session], check=True, timeout=10)
        while _running(pid) and time.monotonic() - t0 < 10:
            time.sleep(0.02)
        took = time.monotonic() - t0
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, timeout=10)
    assert took < STOP_WITHIN, f"the capture took {took:.1f} s to end"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["window"]["ended"] == "stopped early (signal)"
    assert len((out / "events.jsonl").read_text().splitlines()) >= 5
