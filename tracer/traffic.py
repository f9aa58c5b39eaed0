"""traffic: bounded test traffic, run inside a namespace by the simulated node.

    ip netns exec NS python -m tracer.traffic udp --dst 10.244.1.11 --port 9999 --count 5

Every loop here is bounded in count and in time. Prints how many packets it
sent, so callers can compare with what netdrop counted.
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys
import time

IP_MTU_DISCOVER = 10     # include/uapi/linux/in.h
IP_PMTUDISC_PROBE = 3    # DF set, and the route's learnt PMTU ignored: every packet goes out at full size
MAX_SECONDS = 30.0


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def udp(dst: str, port: int, count: int, size: int, df: bool, seconds: float) -> int:
    fam = _family(dst)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if df and fam == socket.AF_INET:
        s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
    payload = b"\0" * size
    deadline = time.monotonic() + seconds
    sent = 0
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        try:
            s.sendto(payload, (dst, port))
            sent += 1
        except OSError as exc:
            # ICMP errors from earlier packets surface on later sends: not ours to count.
            if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                raise
    s.close()
    return sent


def tcp(dst: str, port: int, count: int, seconds: float) -> int:
    """Connection attempts; each sends one SYN (no retries: the timeout is short)."""
    deadline = time.monotonic() + seconds
    sent = 0
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        s = socket.socket(_family(dst), socket.SOCK_STREAM)
        s.settimeout(0.5)
        try:
            s.connect((dst, port))
        except OSError:
            pass
        finally:
            s.close()
        sent += 1
    return sent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tracer.traffic")
    p.add_argument("kind", choices=("udp", "tcp"))
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--size", type=int, default=64, help="UDP payload bytes")
    p.add_argument("--df", action="store_true", help="IPv4: set DF on every packet")
    p.add_argument("--seconds", type=float, default=5.0)
    a = p.parse_args(argv)
    seconds = min(a.seconds, MAX_SECONDS)
    count = max(0, min(a.count, 10_000_000))
    if a.kind == "udp":
        sent = udp(a.dst, a.port, count, a.size, a.df, seconds)
    else:
        sent = tcp(a.dst, a.port, count, seconds)
    print(sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
