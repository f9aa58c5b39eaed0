"""traffic: bounded test traffic, run inside a namespace by the simulated node.

    ip netns exec NS python -m tracer.lab.traffic udp --dst 10.244.1.11 --port 9999 --count 5

Every loop here is bounded in count and in time. Prints how many packets it
sent, so callers can compare with what netdrop counted.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import socket
import struct
import sys
import time
from collections.abc import Callable

IP_MTU_DISCOVER = 10     # include/uapi/linux/in.h
IP_PMTUDISC_PROBE = 3    # DF set, and the route's learnt PMTU ignored: every packet goes out at full size
MAX_SECONDS = 30.0


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def udp(dst: str, port: int, count: int, size: int, df: bool, seconds: float, ports: int = 1) -> int:
    """count datagrams to dst:port; ports > 1: to port, port+1, ... in turn, each
    a new flow to conntrack (the benchmark of its hooks)."""
    fam = _family(dst)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if df and fam == socket.AF_INET:
        s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
    payload = b"\0" * size
    deadline = time.monotonic() + seconds
    sent = 0
    for i in range(count):
        if time.monotonic() > deadline:
            break
        try:
            s.sendto(payload, (dst, port + i % ports))
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


# DNS (RFC 1035 section 4.1), just enough for a resolver's A/AAAA pair and its answers.
DNS_QR, DNS_RD, DNS_RA = 0x8000, 0x0100, 0x0080
DNS_A, DNS_AAAA, DNS_IN = 1, 28, 1
DNS_NAME = "db.default.svc.cluster.local"
MAX_DNS = 512             # a UDP DNS message without EDNS


def dns_query(qid: int, qtype: int, name: str = DNS_NAME) -> bytes:
    """A recursive query for name, as glibc's resolver sends it."""
    labels = b"".join(len(p).to_bytes(1, "big") + p for p in (x.encode() for x in name.split(".")))
    return struct.pack("!HHHHHH", qid, DNS_RD, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", qtype, DNS_IN)


def parse_dns_query(msg: bytes) -> tuple[int, int, bytes] | None:
    """(id, qtype, question) of a one-question query, None for anything else: the
    question is read label by label within the message (no compression in a query)."""
    if len(msg) < 12 or len(msg) > MAX_DNS:
        return None
    qid, flags, qd, an, ns, _ar = struct.unpack("!HHHHHH", msg[:12])
    if flags & DNS_QR or qd != 1 or an or ns:
        return None
    i = 12
    while True:
        if i >= len(msg):
            return None
        n = msg[i]
        if n == 0:
            break
        if n > 63:                       # a pointer or a reserved label type
            return None
        i += 1 + n
    end = i + 1 + 4
    if end > len(msg):
        return None
    qtype = int.from_bytes(msg[i + 1:i + 3], "big")
    return qid, qtype, msg[12:end]


def dns_answer(query: bytes, address: str) -> bytes | None:
    """The reply to a query: for A, one record with address; for other types, no
    records (NOERROR, no data: a cluster DNS has no AAAA for an IPv4 Service)."""
    parsed = parse_dns_query(query)
    if parsed is None:
        return None
    qid, qtype, question = parsed
    answer = b""
    if qtype == DNS_A:
        # The name as a pointer to the question (offset 12), TTL 30, the address.
        answer = struct.pack("!HHHIH", 0xC00C, DNS_A, DNS_IN, 30, 4) + socket.inet_aton(address)
    header = struct.pack("!HHHHHH", qid, DNS_QR | DNS_RD | DNS_RA, 1, 1 if answer else 0, 0, 0)
    return header + question + answer


def dns_server(port: int, seconds: float, address: str) -> int:
    """A DNS server for a while: answers every query it can parse (see
    dns_answer), ignores anything else."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))

    def answer() -> bool:
        msg, peer = s.recvfrom(MAX_DNS + 1)
        reply = dns_answer(msg, address)
        if reply is None:
            return False
        try:
            s.sendto(reply, peer)
        except OSError:
            return False
        return True
    return _serve(s, seconds, answer)


def _serve(s: socket.socket, seconds: float, once: Callable[[], bool]) -> int:
    """A bound server socket, served for `seconds` by once() (which may time out:
    s is polled every 0.2 s), then closed; prints "listening" when it begins, and
    returns how many times once() did its work."""
    s.settimeout(0.2)
    print("listening", flush=True)
    deadline = time.monotonic() + seconds
    done = 0
    try:
        while time.monotonic() < deadline:
            try:
                done += once()
            except TimeoutError:
                continue
    finally:
        s.close()
    return done


def udp_race(dst: str, port: int, count: int, seconds: float, wait: float = 0.0) -> int:
    """Two threads send on one UDP socket at the same moment, count times (a
    new socket each time): the DNS A/AAAA pattern that races conntrack's insert
    when the destination is DNAT'd. wait > 0: then, like a resolver, wait up to
    that long for both answers before the socket is closed (an answer to a
    closed socket would be dropped as NO_SOCKET)."""
    import threading

    def fire(go: threading.Barrier, s: socket.socket, query: bytes) -> None:
        go.wait()
        with contextlib.suppress(OSError):   # test traffic: a failed send is one packet fewer, no more
            s.send(query)

    deadline = time.monotonic() + seconds
    sent = 0
    for i in range(count):
        if time.monotonic() > deadline:
            break
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((dst, port))
        go = threading.Barrier(2)
        qid = (2 * i) & 0xFFFF
        threads = [threading.Thread(target=fire, args=(go, s, dns_query(qid + k, qtype)))
                   for k, qtype in enumerate((DNS_A, DNS_AAAA))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sent += 2
        if wait > 0:
            _answers(s, 2, min(wait, max(0.0, deadline - time.monotonic())))
        s.close()
    return sent


def _answers(s: socket.socket, want: int, seconds: float) -> int:
    """Read up to `want` datagrams from s within `seconds`."""
    got, end = 0, time.monotonic() + seconds
    while got < want:
        left = end - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            s.recv(MAX_DNS + 1)
        except (TimeoutError, OSError):
            break
        got += 1
    return got


def listen(port: int, seconds: float) -> int:
    """A TCP server that accepts and closes connections for a while."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(64)

    def accept() -> bool:
        conn, _ = s.accept()
        conn.close()
        return True
    return _serve(s, seconds, accept)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tracer.lab.traffic")
    p.add_argument("kind", choices=("udp", "tcp", "tcp-flags", "udp-race", "listen", "dns-server"))
    p.add_argument("--dst")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--flags", type=lambda x: int(x, 0), default=0x03, help="tcp-flags: the flags byte")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--size", type=int, default=64, help="UDP payload bytes")
    p.add_argument("--df", action="store_true", help="IPv4: set DF on every packet")
    p.add_argument("--ports", type=int, default=1, help="udp: to --port and the next ones in turn")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--wait", type=float, default=0.0, help="udp-race: wait this long for the answers")
    p.add_argument("--answer", default="10.244.1.11", type=lambda x: str(ipaddress.IPv4Address(x)),
                   help="dns-server: the address of A answers")
    a = p.parse_args(argv)
    seconds = min(a.seconds, MAX_SECONDS)
    count = max(0, min(a.count, 10_000_000))
    if a.kind not in ("listen", "dns-server") and not a.dst:
        p.error("--dst is required")
    if a.kind == "udp":
        sent = udp(a.dst, a.port, count, a.size, a.df, seconds, max(1, min(a.ports, 65536 - a.port)))
    elif a.kind == "tcp":
        sent = tcp(a.dst, a.port, count, seconds)
    elif a.kind == "tcp-flags":
        sent = tcp_flags(a.dst, a.port, count, a.flags, seconds)
    elif a.kind == "udp-race":
        sent = udp_race(a.dst, a.port, count, seconds, min(a.wait, 1.0))
    elif a.kind == "dns-server":
        sent = dns_server(a.port, seconds, a.answer)
    else:
        sent = listen(a.port, seconds)
    print(sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
