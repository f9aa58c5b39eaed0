"""traffic: bounded test traffic, run inside a namespace by the simulated node.

    ip netns exec NS python -m tracer.lab.traffic udp --dst 10.244.1.11 --port 9999 --count 5

Every loop here is bounded in count and in time. Prints how many packets it
sent, so callers can compare with what netdrop counted.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import socket
import struct
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


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_flags(dst: str, port: int, count: int, flags: int, seconds: float) -> int:
    """Hand-made IPv4 TCP segments with the given flags (raw socket): SYN+FIN,
    say, which conntrack calls INVALID. IPv4 only; the kernel fills in the IP
    header's checksum and ID."""
    src = _route_source(dst)
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    deadline = time.monotonic() + seconds
    sent = 0
    for i in range(count):
        if time.monotonic() > deadline:
            break
        sport = 40000 + i % 20000
        tcp = struct.pack("!HHIIBBHHH", sport, port, 1000 + i, 0, 5 << 4, flags, 65535, 0, 0)
        pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
        tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
        s.sendto(ip + tcp, (dst, 0))
        sent += 1
    s.close()
    return sent


def _route_source(dst: str) -> str:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect((dst, 9))
    src: str = probe.getsockname()[0]
    probe.close()
    return src


def udp_race(dst: str, port: int, count: int, seconds: float) -> int:
    """Two threads send on one UDP socket at the same moment, count times (a
    new socket each time): the DNS A/AAAA pattern that races conntrack's insert
    when the destination is DNAT'd."""
    import threading

    def fire(go: threading.Barrier, s: socket.socket) -> None:
        go.wait()
        with contextlib.suppress(OSError):   # test traffic: a failed send is one packet fewer, no more
            s.send(b"q" * 32)

    deadline = time.monotonic() + seconds
    sent = 0
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((dst, port))
        go = threading.Barrier(2)
        threads = [threading.Thread(target=fire, args=(go, s)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        s.close()
        sent += 2
    return sent


def listen(port: int, seconds: float) -> int:
    """A TCP server that accepts and closes connections for a while."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(64)
    s.settimeout(0.2)
    print("listening", flush=True)
    deadline = time.monotonic() + seconds
    accepted = 0
    while time.monotonic() < deadline:
        try:
            conn, _ = s.accept()
            conn.close()
            accepted += 1
        except TimeoutError:
            continue
    s.close()
    return accepted


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tracer.lab.traffic")
    p.add_argument("kind", choices=("udp", "tcp", "tcp-flags", "udp-race", "listen"))
    p.add_argument("--dst")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--flags", type=lambda x: int(x, 0), default=0x03, help="tcp-flags: the flags byte")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--size", type=int, default=64, help="UDP payload bytes")
    p.add_argument("--df", action="store_true", help="IPv4: set DF on every packet")
    p.add_argument("--seconds", type=float, default=5.0)
    a = p.parse_args(argv)
    seconds = min(a.seconds, MAX_SECONDS)
    count = max(0, min(a.count, 10_000_000))
    if a.kind != "listen" and not a.dst:
        p.error("--dst is required")
    if a.kind == "udp":
        sent = udp(a.dst, a.port, count, a.size, a.df, seconds)
    elif a.kind == "tcp":
        sent = tcp(a.dst, a.port, count, seconds)
    elif a.kind == "tcp-flags":
        sent = tcp_flags(a.dst, a.port, count, a.flags, seconds)
    elif a.kind == "udp-race":
        sent = udp_race(a.dst, a.port, count, seconds)
    else:
        sent = listen(a.port, seconds)
    print(sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
