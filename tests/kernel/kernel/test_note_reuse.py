"""A drop netdrop does not report must not lend what was noted of it to the next packet.

The ICMP error icmp_send() answers a packet with is noted per CPU under the skb's kernel
address, for the kfree_skb event of that packet (bpf/notes.h). The slab allocator hands a
freed skb's address to the next skb allocated on the same CPU (its per-CPU freelist is LIFO),
so a note the drop left behind because it sent no event (outside the watched namespaces, over
the event rate limit) would be read as the next packet's: a packet a DROP rule took would
show as REJECTed with ICMP, or a refused 37-byte datagram as too big for the path MTU.

The tests play that on one CPU, in namespaces of their own: UDP to a closed port on loopback,
answered with ICMP port unreachable (OUTPUT drops the answer, so it is freed before the packet
it answers and the packet's address is the next one handed out), and right after, from the
same thread, UDP that an INPUT rule DROPs, which the kernel answers with nothing. The first
packet sends no event because its namespace is not watched, or because the event rate limit
is spent. Every DROP reported must come without ICMP."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tracer.lab.shell import in_netns

from ..helpers import finish, ip, tracing

ROUNDS = 200
DROPPED_PORT = 7009
STORM_SECONDS = 1.5     # of the rate-limited test: ~15 event windows (ND_EVENT_WINDOW_NS)
SEND = f"""
import ctypes, os, socket, sys, time
os.sched_setaffinity(0, {{int(sys.argv[3])}})
libc = ctypes.CDLL(None, use_errno=True)

def sock_in(ns):
    fd = os.open("/run/netns/" + ns, os.O_RDONLY)
    assert libc.setns(fd, 0x40000000) == 0, ctypes.get_errno()    # CLONE_NEWNET
    os.close(fd)
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

a, b = sock_in(sys.argv[1]), sock_in(sys.argv[2])
rounds, seconds = int(sys.argv[4]), float(sys.argv[5])
end = time.monotonic() + seconds
for i in range(rounds):
    a.sendto(b"noted", ("127.0.0.1", 9))                   # closed port: ICMP 3/3, freed unreported
    b.sendto(b"dropped", ("127.0.0.1", {DROPPED_PORT}))    # the DROP rule: no ICMP
    if seconds == 0:
        time.sleep(0.002)
    elif time.monotonic() > end:
        break
print(i + 1)
"""


@contextlib.contextmanager
def namespaces(*names: str) -> Iterator[None]:
    made: list[str] = []
    try:
        for ns in names:
            ip("netns", "add", ns)
            made.append(ns)
            ip("link", "set", "lo", "up", ns=ns)
        yield
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def iptables(ns: str, *rule: str) -> None:
    subprocess.run([*in_netns(ns), "iptables", *rule], check=True, capture_output=True, timeout=20)


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    """(a, b): in both, OUTPUT drops ICMP and INPUT drops UDP to DROPPED_PORT."""
    tag = f"ndn{os.getpid() % 100000}"
    a, b = f"{tag}a", f"{tag}b"
    with namespaces(a, b):
        for ns in (a, b):
            iptables(ns, "-A", "OUTPUT", "-p", "icmp", "-j", "DROP")
            iptables(ns, "-A", "INPUT", "-p", "udp", "--dport", str(DROPPED_PORT), "-j", "DROP")
        yield a, b


def watch(b: str, a: str, rounds: int, seconds: float, *extra: str) -> tuple[int, list[dict[str, object]], str]:
    """Rounds sent (the noted packet in a, the DROPped one in b, on one CPU) and the events of
    `netdrop watch --json --netns b`."""
    cpu = max(os.sched_getaffinity(0))
    with tracing("watch", "--json", "--netns", b, "--duration", "60", *extra) as proc:
        sent = subprocess.run([sys.executable, "-c", SEND, a, b, str(cpu), str(rounds), str(seconds)],
                              check=True, timeout=60, capture_output=True, text=True).stdout
        status, out, err = finish(proc)
    assert status == 0, err
    return int(sent), [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


def with_icmp(events: list[dict[str, object]]) -> list[dict[str, object]]:
    """The DROPs reported as answered with ICMP: REJECTed, or too big for the path (mtu)."""
    return [e for e in events if e.get("dport") == DROPPED_PORT and ("ICMP" in json.dumps(e) or e["category"] == "mtu")]


def test_a_drop_outside_the_watched_namespaces_lends_no_icmp_note(pair):
    a, b = pair
    sent, events, _ = watch(b, a, ROUNDS, 0)
    dropped = [e for e in events if e.get("dport") == DROPPED_PORT]
    # Every DROP of B reported (no rate limit reached at this pace), none of A's.
    assert sent == ROUNDS and len(dropped) == ROUNDS, (sent, len(dropped), events[:3])
    assert not [e for e in events if e.get("dport") == 9]
    noted = with_icmp(dropped)
    assert not noted, f"{len(noted)} of {ROUNDS} DROPs carried another packet's ICMP note: {noted[0]}"


def test_a_drop_over_the_event_rate_limit_lends_no_icmp_note(pair):
    # Both packets in the watched namespace, as fast as one thread sends them, one event per
    # window: each window's first drop past the limit that checks the clock is reported, and
    # when it is a DROP, the drop before it was a closed port's, sampled out with its note.
    a, _ = pair
    sent, events, _ = watch(a, a, 1_000_000, STORM_SECONDS, "--max-event-rate", "10")
    dropped = [e for e in events if e.get("dport") == DROPPED_PORT]
    closed = [e for e in events if e.get("dport") == 9]
    # The storm went past the limit (far fewer events than drops) and both kinds were reported.
    assert len(events) < sent and dropped and closed, (sent, len(events), len(dropped), len(closed))
    assert all("ICMP 3/3" in json.dumps(e) or "port unreachable" in json.dumps(e) for e in closed), closed[0]
    noted = with_icmp(dropped)
    assert not noted, f"{len(noted)} of {len(dropped)} DROPs reported carried another packet's ICMP note: {noted[0]}"
