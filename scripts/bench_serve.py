"""bench-serve: what a scrape of netdrop serve costs with N drop series (no root, no kernel).

The collector's work per scrape beyond reading the BPF map: labels for every
counter key (memoized), folding and expiry, and the Prometheus text rendering.
N counter keys of N pods (in-pod NO_SOCKET), scraped repeatedly, counters growing.
    .venv/bin/python scripts/bench_serve.py [N]
"""

import statistics
import sys
import time

from tracer.pods.attribute import Attribution, PodRef
from tracer.serve import Agent
from tracer.sinks.metrics import AgentState, DropCollector, Series


class Names:
    def reason_name(self, code: int) -> str:
        return "NO_SOCKET"

    def location_name(self, addr: int) -> str:
        return "__udp4_lib_rcv"


def main(n: int) -> None:
    refs = {i: PodRef("default", f"web-7d9f8c6b5-{i:05d}", f"u{i}", "node-a") for i in range(1, n + 1)}
    counts = {(4026531840 + i, 2, 0x10, i << 2 | 1): 1 for i in range(1, n + 1)}
    series = Series(Names(), lambda tag: Attribution(refs[tag >> 2], "in-pod"), lambda who: "web",
                    max_series=n)
    live = set(refs)
    c = DropCollector("node-a", series, lambda: counts, lambda k: AgentState(0, 0, (), None), lambda: live,
                      "bench", "bench")
    agent = Agent()
    agent.collector = c
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"   # Prometheus's
    times = []
    for round_ in range(12):
        for k in counts:
            counts[k] += round_
        t = time.perf_counter()
        body, _ = agent.scrape(accept)
        times.append(time.perf_counter() - t)
    median = statistics.median(times[1:])
    print(f"{n} series: first scrape {times[0] * 1000:.0f} ms, then median {median * 1000:.0f} ms "
          f"(max {max(times[1:]) * 1000:.0f} ms), {len(body) / 1e6:.1f} MB of text")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10000)
