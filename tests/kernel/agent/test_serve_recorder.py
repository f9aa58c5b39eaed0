"""The flight recorder on the real kernel: what serve keeps of the past is what
the kernel dropped. A program loaded as serve loads it (headers kept, events
sampled at serve's rate) feeds a FlightRecorder as serve's loop does; drops
made before a point in time are in the recorder, and a window's counts equal
what the pod's namespace itself counted (UdpNoPorts). serve itself, under a
drop storm, records and still stops within 2 s of any stop signal."""

import signal
import subprocess
import sys
import time

import pytest

from tracer.commands.serve import RECORD_SNAPLEN
from tracer.history.recorder import FlightRecorder
from tracer.kernel import loader
from tracer.kernel.decode import Decoder
from tracer.kernel.facts import Kallsyms, find_tracefs, probe_kernel
from tracer.kernel.filters import Filters
from tracer.lab.shell import in_netns
from tracer.options import RecorderOptions

from ...timing import allowed
from ..conftest import Netdrop
from ..helpers import nstat
from ..prometheus import free_port

PORT = 9999         # nothing listens there: every datagram is one NO_SOCKET drop, counted in UdpNoPorts


class Agent(Netdrop):
    READY = "netdrop: serving"


def pump(tracer, recorder, seconds: float) -> None:
    """serve's loop for a while: every poll's records kept, the counters read when due."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        recorder.record(tracer.poll_records(100, 256))
        if recorder.due():
            recorder.tick(tracer.counts())


def until_edge_after(tracer, recorder, t: float) -> None:
    """Pump until a counter reading later than t."""
    while recorder.counts.at(float("inf"))[0] <= t:
        pump(tracer, recorder, 0.1)


def no_socket(counts, ino, reason):
    return sum(c.packets for (ns, r, _loc, _pod, _facts), c in counts.items() if ns == ino and r == reason)


def test_drops_before_a_point_in_time_are_in_the_recorder_with_the_kernels_own_counts(node):
    db = node.pods["db"]
    facts = probe_kernel(find_tracefs())
    ino = node.netns_inodes()[db.netns]
    reason = next(n for n, name in facts.reasons.items() if name == "NO_SOCKET")
    settings = loader.TracerSettings(max_event_rate=RecorderOptions.rate, snaplen=RECORD_SNAPLEN, headers_only=True)
    with loader.Tracer(facts, Filters(netns=frozenset({ino})), settings) as tracer:
        recorder = FlightRecorder(interval=1.0)
        decode = Decoder(facts.reasons, Kallsyms([], []), mono_to_wall=recorder.mono_to_wall).decode_record
        pump(tracer, recorder, 1.5)                 # the first edges: the window below starts after them
        before = recorder.now()
        k0 = nstat(db.netns, "UdpNoPorts")
        sent = node.traffic(db.netns, "udp", "--dst", "127.0.0.1", "--port", str(PORT), "--count", "300")
        done = recorder.now()
        until_edge_after(tracer, recorder, done)    # an edge holds every one of them
        k1 = nstat(db.netns, "UdpNoPorts")
        later = recorder.now()
        sent2 = node.traffic(db.netns, "udp", "--dst", "127.0.0.1", "--port", str(PORT), "--count", "500")
        pump(tracer, recorder, 1.5)
        now = tracer.counts()
        k2 = nstat(db.netns, "UdpNoPorts")

    assert (sent, sent2) == (300, 500) and k1 - k0 == 300 and k2 - k1 == 500
    # From before the first storm: both storms, exactly as the kernel counted them.
    w = recorder.window(before)
    assert w is not None and not w.cut and w.start <= before
    assert no_socket(w.counts(now), ino, reason) == k2 - k0 == 800
    drops = [decode(r) for r in w.records]
    ours = [d for d in drops if d.dport == PORT and d.reason == "NO_SOCKET"]
    # Sampled (200 events/s), but some of each storm, with the headers kept (IPv4 + UDP).
    first = [d for d in ours if d.time.timestamp() < done]
    second = [d for d in ours if d.time.timestamp() >= later]
    assert first and second and len(ours) <= 800
    assert all(len(d.packet) == 28 for d in ours)
    assert all(before - 1 <= d.time.timestamp() <= time.time() + 1 for d in ours)
    # From between the storms: the second alone, counts and events.
    w2 = recorder.window(later)
    assert w2 is not None and done < w2.start <= later
    assert no_socket(w2.counts(now), ino, reason) == k2 - k1 == 500
    assert [decode(r).time for r in w2.records if decode(r).dport == PORT] == [d.time for d in second]
    assert w2.events_from == w2.start           # the ring let nothing go


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_serve_records_a_drop_storm_and_a_stop_signal_still_ends_it_within_2s(node, sig):
    db = node.pods["db"]
    agent = Agent("serve", "--listen", f"127.0.0.1:{free_port()}", "--kubeconfig", str(node.kubeconfig),
                  "--node-netns", node.node1)
    flood = None
    try:
        agent.wait_ready()
        flood = subprocess.Popen([*in_netns(node.client), sys.executable, "-m", "tracer.lab.traffic", "udp",
                                  "--dst", db.ipv4, "--port", str(PORT), "--count", "100000000", "--seconds", "20"],
                                 stdout=subprocess.DEVNULL)
        time.sleep(3)
        t0 = time.monotonic()
        agent.stop(settle=0, sig=sig)
        took = time.monotonic() - t0
    finally:
        if flood is not None:
            flood.kill()
            flood.wait()
        agent.kill()
    assert took < allowed(2.0), f"{signal.Signals(sig).name} took {took:.1f} s"
    assert agent.proc.returncode == 0 and "Traceback" not in agent.stderr, agent.stderr
    stopped = next(line for line in agent.stderr.splitlines() if line.startswith("netdrop: stopped:"))
    events = int(stopped.split("recorder: ")[1].split(" events")[0].replace(",", ""))
    assert events > 0, stopped
