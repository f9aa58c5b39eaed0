"""bench-serve: what a scrape of netdrop serve costs with N drop series.

    .venv/bin/python scripts/bench_serve.py [N]           # no root, no kernel
    .venv/bin/python scripts/bench_serve.py --kernel [N]  # root: the real BPF map
    .venv/bin/python scripts/bench_serve.py --agent       # root: agent CPU and memory, idle and in a storm

Without --kernel, the collector's work per scrape beyond reading the BPF map:
labels for every counter key (memoized), folding and expiry, and the
exposition text. N counter keys of N pods (in-pod NO_SOCKET), scraped
repeatedly, counters growing. With --kernel, the program is loaded and its
counter map filled with N keys (one per pod tag, a value on every CPU), and a
scrape reads them from the kernel (Tracer.counts()) as netdrop serve does.
With --agent, `netdrop serve` on a simulated node (tracer.lab, removed at
the end), scraped every 15 s: its CPU (utime+stime) and VmRSS idle for 60 s,
then during two UDP floods to a closed port of pod db (40 s at most).
"""

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tracer.pods.attribute import Attribution, PodRef
from tracer.agent.endpoints import Agent
from tracer.sinks.metrics import AgentState, DropCollector, Series


class Names:
    def reason_name(self, code: int) -> str:
        return "NO_SOCKET"

    def location_name(self, addr: int) -> str:
        return "__udp4_lib_rcv"


def kernel_counts(n: int) -> Callable[[], dict[tuple[int, int, int, int], int]]:
    from tracer.kernel.facts import find_tracefs, probe_kernel
    from tracer.kernel.loader import Tracer, TracerSettings

    tracer = Tracer(probe_kernel(find_tracefs()), settings=TracerSettings(hold=True))
    table = tracer.bpf[b"counts"]
    ncpus = len(table.Leaf())
    for i in range(1, n + 1):
        # A key no real drop makes (netns 1): the program counts nothing anyway (held).
        # Per CPU, {packets, bytes} (struct nd_count_val, bpf/netdrop.h).
        table[table.Key(location=0x10, netns=1, reason=2, pod=i << 2 | 1)] = table.Leaf(
            *[table.sLeaf(i, 100 * i) for _ in range(ncpus)])
    return tracer.counts


def main(n: int, kernel: bool = False) -> None:
    refs = {i: PodRef("default", f"web-7d9f8c6b5-{i:05d}", f"u{i}", "node-a") for i in range(1, n + 1)}
    synthetic = {(4026531840 + i, 2, 0x10, i << 2 | 1): 1 for i in range(1, n + 1)}
    counts = kernel_counts(n) if kernel else (lambda: synthetic)
    series = Series(Names(), lambda tag: Attribution(refs[tag >> 2], "in-pod"), lambda who: "web",
                    max_series=n)
    live = set(refs)
    c = DropCollector("node-a", series, counts, lambda k: AgentState(0, 0, (), None), lambda: live,
                      "bench", "bench")
    agent = Agent()
    agent.collector = c
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"   # Prometheus's
    times = []
    for round_ in range(12):
        for k in synthetic:
            synthetic[k] += round_
        t = time.perf_counter()
        body, _ = agent.scrape(accept)
        times.append(time.perf_counter() - t)
    median = statistics.median(times[1:])
    where = " from the kernel map" if kernel else ""
    print(f"{n} series{where}: first scrape {times[0] * 1000:.0f} ms, then median {median * 1000:.0f} ms "
          f"(max {max(times[1:]) * 1000:.0f} ms), {len(body) / 1e6:.1f} MB of text")


def agent_cost() -> None:
    import os
    import re
    import subprocess
    import threading
    import urllib.request

    from tracer.lab.node import SimNode
    from tracer.lab.shell import in_netns

    node = SimNode.create(prefix=f"ndbs{os.getpid() % 100000}")
    port = 19000 + os.getpid() % 1000
    agent = subprocess.Popen([sys.executable, "-m", "tracer.cli", "serve", "--listen", f"127.0.0.1:{port}",
                              "--kubeconfig", str(node.kubeconfig), "--node-netns", node.node1],
                             stderr=subprocess.PIPE, text=True)
    stop = threading.Event()
    try:
        assert agent.stderr is not None and "serving" in agent.stderr.readline()
        tck = os.sysconf("SC_CLK_TCK")

        def cpu() -> float:
            f = Path(f"/proc/{agent.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / tck

        def rss() -> float:
            m = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{agent.pid}/status").read_text())
            return int(m.group(1)) / 1024 if m else 0.0

        def drops() -> float:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("netdrop_drops_total{"))

        def scraper() -> None:
            while not stop.wait(15):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read()

        threading.Thread(target=scraper, daemon=True).start()
        time.sleep(5)
        print(f"after start-up: {rss():.0f} MiB resident")
        c0, t0 = cpu(), time.monotonic()
        time.sleep(60)
        print(f"idle: {100 * (cpu() - c0) / (time.monotonic() - t0):.2f} % of a core, {rss():.0f} MiB")
        d0, c0, t0 = drops(), cpu(), time.monotonic()
        floods = [subprocess.Popen([*in_netns(node.client), sys.executable, "-m", "tracer.lab.traffic", "udp",
                                    "--dst", node.pods["db"].ipv4, "--port", "9999", "--count", "100000000",
                                    "--seconds", "40"], stdout=subprocess.DEVNULL) for _ in range(2)]
        for f in floods:
            f.wait()
        d1, c1, t1 = drops(), cpu(), time.monotonic()
        print(f"storm: {(d1 - d0) / (t1 - t0):,.0f} drops/s for {t1 - t0:.0f} s: "
              f"{100 * (c1 - c0) / (t1 - t0):.2f} % of a core, {rss():.0f} MiB")
    finally:
        stop.set()
        agent.terminate()
        agent.wait(10)
        node.destroy()


if __name__ == "__main__":
    if "--agent" in sys.argv[1:]:
        agent_cost()
        sys.exit(0)
    args = [a for a in sys.argv[1:] if a != "--kernel"]
    main(int(args[0]) if args else 10000, kernel="--kernel" in sys.argv[1:])
