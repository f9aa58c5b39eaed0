"""Stopping under a storm: how long SIGINT, SIGTERM and SIGHUP take to end
`watch`, `capture` and `serve` while drops pour in.

Run as root: scripts/bench --stop ROUNDS [--generators K] [--markdown]

README promises 2 s from the signal to the exit, drop storms included; the
tests allow more (tests/timing.py: a busy machine keeps a process from
running for seconds), so this is where the figure is measured. In a network
namespace of its own (loopback only, removed at the end), each round starts
one command, waits until it traces, starts K bounded senders of UDP to a
closed port (every datagram a NO_SOCKET drop), lets the storm run 2.5 s (the
reader is well behind by then: --max-event-rate 0), sends the round's signal
(SIGINT, SIGTERM, SIGHUP in turn) and times it until the process has exited
(waitpid: its files closed, its programs detached).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
NETDROP = [str(Path(PY).with_name("netdrop"))]
PROMISE = 2.0
STORM_SECONDS = 2.5         # of storm before the signal
SENDER_SECONDS = 20         # each sender's own bound, should a round go wrong
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class Stop:
    command: str
    signal: str
    seconds: float
    status: int
    said: bool        # its end-of-run line ("drops counted", or serve's own end) was printed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(name: str, ns: str, workdir: Path) -> tuple[list[str], str]:
    """netdrop's arguments for one round, and the line that says it is running."""
    if name == "watch":
        return ["watch", "--json", "--max-event-rate", "0", "--netns", ns], "netdrop: tracing"
    if name == "capture":
        return (["capture", "--max-event-rate", "0", "--netns", ns, "--duration", "60",
                 "--output", str(workdir / "capture")], "netdrop: tracing")
    return ["serve", "--listen", f"127.0.0.1:{free_port()}"], "netdrop: serving"


def one_round(name: str, sig: int, ns: str, generators: int) -> Stop:
    workdir = Path(tempfile.mkdtemp(prefix="netdrop-stop-"))     # 0700: root's own
    args, ready = command(name, ns, workdir)
    nd = subprocess.Popen([*NETDROP, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:         # drained to the end: a full pipe would hold netdrop's exit
        for line in nd.stderr or ():
            lines.append(line)
            if line.startswith(ready):
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    senders: list[subprocess.Popen[bytes]] = []
    try:
        if not started.wait(300):          # five minutes: compiling under emulation takes one
            raise RuntimeError(f"netdrop {name} did not start: {''.join(lines)}")
        senders = [subprocess.Popen(["ip", "netns", "exec", ns, PY, "-m", "tracer.lab.traffic", "udp",
                                     "--dst", "127.0.0.1", "--port", "9", "--count", "100000000",
                                     "--seconds", str(SENDER_SECONDS)],
                                    cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for _ in range(generators)]
        time.sleep(STORM_SECONDS)
        t0 = time.monotonic()
        nd.send_signal(sig)
        status = nd.wait(timeout=60)
        took = time.monotonic() - t0
    finally:
        for p in [*senders, nd]:
            if p.poll() is None:
                p.kill()
                p.wait()
        reader.join(5)
        shutil.rmtree(workdir, ignore_errors=True)
    said = any("drops counted" in line or "stopped" in line for line in lines)
    return Stop(name, signal.Signals(sig).name, took, status, said)


def run(rounds: int, generators: int, commands: tuple[str, ...] = ("watch", "capture", "serve")) -> list[Stop]:
    ns = f"ndstop{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        stops = []
        for i in range(rounds):
            for name in commands:
                stops.append(one_round(name, SIGNALS[i % len(SIGNALS)], ns, generators))
                print(f"bench-stop: {stops[-1]}", file=sys.stderr, flush=True)
        return stops
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def report(stops: list[Stop], generators: int, markdown: bool) -> str:
    rows = [("command", "rounds", "median", "max", f"over {PROMISE:g} s", "exit 0 with its last lines")]
    for name in dict.fromkeys(s.command for s in stops):
        mine = [s for s in stops if s.command == name]
        took = [s.seconds for s in mine]
        rows.append((name, str(len(mine)), f"{statistics.median(took):.2f} s", f"{max(took):.2f} s",
                     str(sum(t > PROMISE for t in took)), f"{sum(s.status == 0 and s.said for s in mine)}"))
    load = os.getloadavg()
    note = (f"storm: {generators} sender(s) of UDP to a closed port, {STORM_SECONDS:g} s before the signal; "
            f"SIGINT, SIGTERM, SIGHUP in turn; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
            f"on {os.cpu_count()} CPUs")
    if markdown:
        table = "\n".join("| " + " | ".join(r) + " |" for r in rows)
        return table.replace("\n", "\n|" + " --- |" * len(rows[0]) + "\n", 1) + "\n\n" + note
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
    return "\n".join(lines) + "\n" + note
