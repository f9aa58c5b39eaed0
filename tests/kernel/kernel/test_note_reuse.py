"""A drop netdrop does not report must not lend what was noted of it to the next packet.

The ICMP error icmp_send() answers a packet with is noted per CPU under the skb's kernel
address, for the kfree_skb event of that packet (bpf/notes.h). The slab allocator hands a
freed skb's address to the next skb allocated on the same CPU (its per-CPU freelist is LIFO),
so a note the drop left behind because it sent no event (outside the watched namespaces, over
the event rate limit) would be read as the next packet's: a packet a DROP rule took would
show as REJECTed with ICMP, or a refused 37-byte datagram as too big for the path MTU.

The test plays that on one CPU, in namespaces of its own: in A (not watched) UDP to a closed
port on loopback, answered with ICMP port unreachable (A's OUTPUT drops the answer, so it is
freed before the packet it answers and the packet's address is the next one handed out);
right after, from the same thread, UDP in the watched B that B's INPUT chain DROPs, which
the kernel answers with nothing. Every such drop of B must come without ICMP."""

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
for _ in range({ROUNDS}):
    a.sendto(b"noted", ("127.0.0.1", 9))                   # closed port: ICMP 3/3, freed unreported
    b.sendto(b"dropped", ("127.0.0.1", {DROPPED_PORT}))    # B's DROP rule: no ICMP
    time.sleep(0.002)
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
    tag = f"ndn{os.getpid() % 100000}"
    a, b = f"{tag}a", f"{tag}b"
    with namespaces(a, b):
        iptables(a, "-A", "OUTPUT", "-p", "icmp", "-j", "DROP")
        iptables(b, "-A", "INPUT", "-p", "udp", "--dport", str(DROPPED_PORT), "-j", "DROP")
        yield a, b


def test_a_filtered_drop_lends_no_icmp_note_to_the_next_packet(pair):
    a, b = pair
    cpu = max(os.sched_getaffinity(0))
    with tracing("watch", "--json", "--netns", b, "--duration", "60") as proc:
        subprocess.run([sys.executable, "-c", SEND, a, b, str(cpu)], check=True, timeout=60)
        status, out, err = finish(proc)
    assert status == 0, err
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    dropped = [e for e in events if e.get("dport") == DROPPED_PORT]
    # Every DROP of B reported (no rate limit reached at this pace), none of A's.
    assert len(dropped) == ROUNDS, (len(dropped), events[:3])
    assert not [e for e in events if e.get("dport") == 9]
    noted = [e for e in dropped if "ICMP" in json.dumps(e) or e["category"] == "mtu"]
    assert not noted, f"{len(noted)} of {ROUNDS} DROPs carried another packet's ICMP note: {noted[0]}"
