"""flightmem: what the flight recorder (tracer/history/) really costs in memory and time.

    .venv/bin/python scripts/flightmem.py [--budget MIB] [--keys N] [--minutes M] [--markdown]

No root, no kernel. Two parts, each run twice: once under tracemalloc (the
bytes Python allocated for what is kept, against what the recorder charges
and its budget), once without it (the whole process's resident memory
growth, after malloc_trim, and the time per call: tracemalloc slows Python).

- Events: the EventRing filled to its budget (--budget, serve's default 32 MiB)
  and as much again past it, with records as the kernel writes them: golden
  events (tests/golden/events.jsonl) carrying the headers serve keeps (IPv4
  UDP 28 bytes, TCP with options 60, IPv6 UDP 48), in polls of 1 to 256
  records as serve reads them.
- Counts: the CounterHistory with --keys counter keys (10,000) all changing
  every 5 s interval for --minutes (30): serve's default history; then what a
  capture's window costs (at() 10 and 30 minutes back).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import random
import re
import struct
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tracer.history.counts import CounterHistory  # noqa: E402
from tracer.history.events import EventRing  # noqa: E402
from tracer.kernel import event as ev  # noqa: E402
from tracer.kernel.loader import Count  # noqa: E402

MIB = 1024 * 1024
HEADS = [bytes.fromhex(json.loads(line)["raw_hex"])
         for line in (ROOT / "tests" / "golden" / "events.jsonl").read_text().splitlines()]
PACKETS = [bytes(28), bytes(60), bytes(48), bytes(40)]     # what headers_only keeps: UDP/IPv4, TCP, UDP/IPv6, TCP
POLLS = [1, 3, 17, 256, 64, 200, 5, 128]                   # records per poll (serve reads at most 256)


def rss() -> int:
    ctypes.CDLL(None).malloc_trim(0)
    m = re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(m.group(1)) * 1024 if m else 0


def record(ts: int, i: int) -> bytes:
    head = bytearray(HEADS[i % len(HEADS)])
    packet = PACKETS[i % len(PACKETS)]
    struct.pack_into("=Q", head, 0, ts)
    struct.pack_into("=H", head, ev.NdEvent.caplen.offset, len(packet))
    return bytes(head) + packet


def measured(work: Callable[[], object]) -> tuple[object, int, int, float]:
    """work() run twice: (its result, resident growth, bytes tracemalloc saw it keep,
    seconds). The resident growth first, before anything else was freed to reuse."""
    gc.collect()
    r0 = rss()
    t0 = time.perf_counter()
    kept = work()
    took = time.perf_counter() - t0
    gc.collect()
    grown = rss() - r0
    del kept
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = work()
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return kept, traced, grown, took


def events(budget: int) -> list[str]:
    base = time.monotonic_ns()
    # Enough polls to fill the budget twice over, built before the clock starts.
    polls: list[list[bytearray]] = []
    n = size = 0
    while size < 2 * budget:
        k = POLLS[len(polls) % len(POLLS)]
        batch = [bytearray(record(base + (n + i) * 1000, n + i)) for i in range(k)]
        polls.append(batch)
        n += k
        size += sum(len(r) + 50 for r in batch)

    spent = [0.0]

    def fill() -> EventRing:
        ring = EventRing(budget)
        timed = not tracemalloc.is_tracing()        # times without tracemalloc's own cost
        for batch in polls:
            records = [bytes(r) for r in batch]     # new objects in a new list, as poll_records() gives them
            t0 = time.perf_counter()
            ring.record(records)
            if timed:
                spent[0] += time.perf_counter() - t0
        return ring

    ring, traced, grown, _ = measured(fill)
    assert isinstance(ring, EventRing)
    per = spent[0] / n * 1e9
    t0 = time.perf_counter()
    got = ring.since(ring.mono_to_wall + (base + (n - len(ring) // 2) * 1000) / 1e9)
    since = time.perf_counter() - t0
    mean = sum(map(len, polls[0])) / len(polls[0])
    return [
        f"events: budget {budget / MIB:.0f} MiB; {n:,} records polled ({mean:.0f} bytes each on average), "
        f"{len(ring):,} kept, {ring.evicted:,} let go",
        f"  charged {ring.bytes / MIB:.2f} MiB; tracemalloc {traced / MIB:.2f} MiB "
        f"({100 * ring.bytes / max(1, traced):.0f} % of it charged); resident growth {grown / MIB:.2f} MiB",
        f"  record(): {per:.0f} ns per record (filling and evicting); since() of half the ring "
        f"({len(got):,} records): {since * 1000:.1f} ms",
    ]


def counts(nkeys: int, minutes: float) -> list[str]:
    rng = random.Random(23)
    keys = [(4026532000 + k % 500, rng.choice((2, 5, 7, 16, 77)), 0xFFFFFFFF81000000 + rng.randrange(1 << 24) * 16,
             k << 2 | 1, 0x81) for k in range(nkeys)]
    edges = int(minutes * 60 / 5)
    steps = [[rng.randrange(1, 2000) for _ in range(nkeys)] for _ in range(8)]
    mtu = [rng.choice((60, 128, 576, 1500)) for _ in range(nkeys)]
    tick_times: list[float] = []

    def run() -> CounterHistory:
        h = CounterHistory()
        packets = [0] * nkeys
        timed = not tracemalloc.is_tracing()
        for e in range(edges):
            step = steps[e % len(steps)]
            # A reading as Tracer.counts() gives it: new key tuples and Counts every time.
            reading = {}
            for k, key in enumerate(keys):
                packets[k] += step[k]
                reading[tuple(list(key))] = Count(packets[k], packets[k] * mtu[k])
            t0 = time.perf_counter()
            h.tick(reading, 5.0 * e)
            if timed:
                tick_times.append(time.perf_counter() - t0)
            del reading
        return h

    h, traced, grown, _ = measured(run)
    assert isinstance(h, CounterHistory)
    now = 5.0 * (edges - 1)
    ats = []
    for back in (10, 30):
        t0 = time.perf_counter()
        got = h.at(now - back * 60)
        ats.append(f"{back} min back: {(time.perf_counter() - t0) * 1000:.0f} ms"
                   f"{' (cut to the oldest edge)' if got and got[0] > now - back * 60 else ''}")
    oldest = h.oldest or 0.0
    tick_times.sort()
    return [
        f"counts: {nkeys:,} keys changing every 5 s for {minutes:.0f} min ({edges} edges); budget "
        f"{h.budget / MIB:.0f} MiB; kept {len(h)} edges, {(now - oldest) / 60:.1f} min back",
        f"  charged {h.bytes / MIB:.2f} MiB; tracemalloc {traced / MIB:.2f} MiB "
        f"({100 * h.bytes / max(1, traced):.0f} % of it charged); resident growth {grown / MIB:.2f} MiB",
        f"  tick(): median {tick_times[len(tick_times) // 2] * 1000:.1f} ms, "
        f"max {tick_times[-1] * 1000:.1f} ms; at(): {', '.join(ats)}",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/flightmem.py", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--budget", type=int, default=32, metavar="MIB", help="the event ring's budget (default 32)")
    p.add_argument("--keys", type=int, default=10_000, help="counter keys changing every interval (default 10000)")
    p.add_argument("--minutes", type=float, default=30.0, help="history filled (default 30)")
    p.add_argument("--markdown", action="store_true", help="as an indented block for docs/performance.md")
    args = p.parse_args(argv)
    lines = [*events(args.budget * MIB), *counts(args.keys, args.minutes)]
    print("\n".join(("    " if args.markdown else "") + line for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
