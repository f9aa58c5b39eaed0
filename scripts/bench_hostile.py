"""bench-hostile: the agent's HTTP server (tracer/agent/httpd.py) against hostile clients.

    scripts/bench_hostile [--seconds 300] [--markdown]            # root: the real BPF map
    scripts/bench_hostile --synthetic --seconds 30                # no root: counts made up in Python
    scripts/bench_hostile --lab-auth                              # HTTPS, tokens reviewed by an API server

An agent serving 10,000 drop series is started (a child process running
serve's own HTTP path: agent.endpoints.Agent, its routes, and the gate and TLS that
serve's flags make, on the real counter map of a loaded program filled with one key per pod, as
scripts/bench_serve.py --kernel does). Then, all at once, for --seconds:

- 100 slow clients, each sending one byte of a request's headers every 2 s
  (cut at the deadline, they connect again);
- 16 clients sending requests of 99 headers of 64 KiB each, in a loop;
- 8 scrapers, Prometheus-like: OpenMetrics with gzip on a kept-alive
  connection, one scrape a second each, a 10 s scrape timeout, one retry on
  a reused connection the server had closed (as Go's HTTP client does);
- a kubelet-like probe: GET /healthz on a new connection every 0.5 s.

It reports every probe's answer time (the kubelet gives 1 s: max and p99),
the share of scrapes served (200, the whole body: all 10,000 series and the
closing # EOF), the agent's resident memory over time (the DaemonSet's limit
is 448Mi) and its CPU.

With authentication: --lab-auth runs the lab's Kubernetes API server
(tracer/lab/api.py: TokenReview, SubjectAccessReview) in this process, gives
the agent --auth kubernetes, its kubeconfig and a serving certificate, and the
scrapers a token allowed to get nodes/metrics, over HTTPS. By hand:
--agent-arg passes serve's own flags to the agent, --https talks TLS to it,
--ca-file verifies it, --token-file is the scrapers' bearer token. Or --url
and --pid aim at an agent started by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import http.client
import os
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
SCRAPE_TIMEOUT = 10.0
PROBE_TIMEOUT = 5.0         # waited for in full, to measure; the kubelet's own timeout is 1 s
LIMIT_MIB = 320


# ---------------------------------------------------------------- the agent (child process)

def agent_child(port: int, series: int, synthetic: bool, agent_args: list[str]) -> None:
    from bench_serve import Names, kernel_counts

    from tracer.agent import endpoints, httpd, serveauth
    from tracer.cli import parse
    from tracer.options import ServeOptions
    from tracer.kernel.loader import Hook, Stats
    from tracer.memory import release_free_memory
    from tracer.pods.attribute import Attribution, PodRef
    from tracer.sinks.metrics import AgentState, DropCollector, Series

    # Who may scrape, and TLS, from serve's own flags, as commands/serve.py decides them.
    opts = parse(["serve", "--listen", f"127.0.0.1:{port}", *agent_args])
    assert isinstance(opts, ServeOptions)
    guard = serveauth.plan("127.0.0.1", auth=opts.auth, insecure=opts.insecure_no_auth,
                           cert=opts.tls_cert_file, key=opts.tls_key_file)
    gate = serveauth.gate_for(guard, opts.node.kubeconfig)("node-a")
    tls = serveauth.serving(guard, "node-a", ["127.0.0.1"])
    refs = {i: PodRef("default", f"web-7d9f8c6b5-{i:05d}", f"u{i}", "node-a") for i in range(1, series + 1)}
    agent = endpoints.Agent()
    if synthetic:
        made = {(4026531840 + i, 2, 0x10, i << 2 | 1): 1 for i in range(1, series + 1)}

        class Held:
            hooks = [Hook("tracepoint skb:kfree_skb", True)]

            def stats(self, counts: object) -> Stats:
                return Stats()

            def counts(self) -> dict[tuple[int, int, int, int], int]:
                for k in made:
                    made[k] += 1
                return made

        tracer = Held()
        counts = tracer.counts
    else:
        counts = kernel_counts(series)
        tracer = counts.__self__         # the loaded Tracer whose map was filled
    collector = DropCollector("node-a", Series(Names(), lambda tag: Attribution(refs[tag >> 2], "in-pod"),
                                               lambda who: "web", max_series=series),
                              counts, lambda k: AgentState(0, 0, (("tracepoint skb:kfree_skb", True),), None),
                              lambda: set(refs), "bench", os.uname().release)
    agent.collector, agent.tracer = collector, tracer  # type: ignore[assignment]
    server = httpd.Server("127.0.0.1", port, agent.routes(), gate, tls.context if tls is not None else None)
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print("ready", flush=True)
    next_trim = time.monotonic()
    while not stop.wait(0.5):           # serve's main loop: the beat, and malloc_trim every 10 s
        agent.beat = time.monotonic()
        if agent.beat >= next_trim:
            release_free_memory()
            next_trim = agent.beat + 10
    server.close()
    agent.detach(getattr(tracer, "close", lambda: None))


# ---------------------------------------------------------------- the clients

@dataclass
class Tally:
    probes: list[tuple[float, int, float]] = field(default_factory=list)     # (at, status, seconds)
    scrapes: list[tuple[float, bool, float, str]] = field(default_factory=list)  # (at, served, seconds, why)
    retries: int = 0
    slow_connections: int = 0
    slow_cut_after: list[float] = field(default_factory=list)
    big_requests: int = 0
    big_answers: dict[str, int] = field(default_factory=dict)
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # (at, rss MiB, cpu seconds)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    https: bool
    context: ssl.SSLContext | None
    token: str | None

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


def scraper(target: Target, tally: Tally, stop: threading.Event, interval: float, series: int) -> None:
    headers = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip", "User-Agent": "Prometheus/bench"}
    if target.token:
        headers["Authorization"] = f"Bearer {target.token}"
    conn: http.client.HTTPConnection | None = None
    while not stop.is_set():
        t0 = time.monotonic()
        served, why = False, ""
        for attempt in (1, 2):
            reused = conn is not None
            try:
                if conn is None:
                    conn = target.connection(SCRAPE_TIMEOUT)
                conn.request("GET", "/metrics", headers=headers)
                r = conn.getresponse()
                body = r.read()
                if r.getheader("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                got = body.count(b"\nnetdrop_drops_total{")
                served = r.status == 200 and body.endswith(b"# EOF\n") and got == series
                why = "" if served else f"status {r.status}, {got} series"
                if r.will_close:
                    conn.close()
                    conn = None
                break
            except (OSError, http.client.HTTPException) as exc:
                if conn is not None:
                    conn.close()
                conn = None
                why = type(exc).__name__
                # A kept-alive connection the server closed before answering: asked again once.
                if not (reused and attempt == 1 and isinstance(exc, (http.client.RemoteDisconnected,
                                                                     ConnectionResetError, BrokenPipeError))):
                    break
                with tally.lock:
                    tally.retries += 1
        took = time.monotonic() - t0
        with tally.lock:
            tally.scrapes.append((t0, served and took <= SCRAPE_TIMEOUT, took, why))
        stop.wait(max(0.0, interval - took))
    if conn is not None:
        conn.close()


def prober(target: Target, tally: Tally, stop: threading.Event, interval: float) -> None:
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            conn = target.connection(PROBE_TIMEOUT)
            conn.request("GET", "/healthz", headers={"User-Agent": "kube-probe/1.30", "Connection": "close"})
            r = conn.getresponse()
            r.read()
            status = r.status
            conn.close()
        except (OSError, http.client.HTTPException):
            status = 0
        took = time.monotonic() - t0
        with tally.lock:
            tally.probes.append((t0, status, took))
        stop.wait(max(0.0, interval - took))


async def attackers(target: Target, tally: Tally, stop: threading.Event, slow: int, big: int,
                    drip: float) -> None:
    context = None
    if target.https:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE      # a hostile client does not care who answers

    async def open_() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(asyncio.open_connection(target.host, target.port, ssl=context), 10)

    async def one_slow(i: int) -> None:
        await asyncio.sleep(drip * i / max(slow, 1))        # spread over one interval
        request = b"GET /metrics HTTP/1.1\r\nHost: node\r\nUser-Agent: slowloris\r\nX-Pad: " + b"a" * 100000
        while not stop.is_set():
            try:
                reader, writer = await open_()
            except (OSError, TimeoutError):
                await asyncio.sleep(0.5)
                continue
            t0 = time.monotonic()
            tally.slow_connections += 1
            try:
                for at in range(len(request)):
                    if stop.is_set():
                        return
                    writer.write(request[at:at + 1])
                    await writer.drain()
                    try:
                        if not await asyncio.wait_for(reader.read(4096), drip):
                            break           # closed by the server
                        break               # answered (an error): done with this one
                    except TimeoutError:
                        continue
            except (OSError, ssl.SSLError):
                pass
            finally:
                tally.slow_cut_after.append(time.monotonic() - t0)
                writer.transport.abort()

    async def one_big() -> None:
        fields = b"".join(b"X-Big-%02d: " % n + b"a" * 65536 + b"\r\n" for n in range(99))
        request = b"GET /metrics HTTP/1.1\r\nHost: node\r\n" + fields + b"\r\n"
        while not stop.is_set():
            try:
                reader, writer = await open_()
            except (OSError, TimeoutError):
                await asyncio.sleep(0.1)
                continue
            tally.big_requests += 1
            answer = "no answer"
            try:
                writer.write(request)
                head = await asyncio.wait_for(reader.read(64), 10)
                m = re.match(rb"HTTP/1\.1 (\d{3})", head)
                answer = m.group(1).decode() if m else ("closed" if not head else "garbled")
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                answer = type(exc).__name__
            finally:
                writer.transport.abort()
            tally.big_answers[answer] = tally.big_answers.get(answer, 0) + 1

    tasks = [asyncio.create_task(one_slow(i)) for i in range(slow)] + [asyncio.create_task(one_big())
                                                                       for _ in range(big)]
    while not stop.is_set():
        await asyncio.sleep(0.2)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def sampler(pid: int, tally: Tally, stop: threading.Event) -> None:
    tck = os.sysconf("SC_CLK_TCK")
    while True:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            m = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
        except OSError:
            return
        tally.samples.append((time.monotonic(), int(m.group(1)) / 1024 if m else 0.0,
                              (int(stat[11]) + int(stat[12])) / tck))
        if stop.wait(1.0):
            return


# ---------------------------------------------------------------- the run

def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=300.0)
    p.add_argument("--series", type=int, default=10000)
    p.add_argument("--slow", type=int, default=100, help="slow clients (default 100)")
    p.add_argument("--drip", type=float, default=2.0, help="seconds between a slow client's bytes (default 2)")
    p.add_argument("--big", type=int, default=16, help="clients sending huge headers (default 16)")
    p.add_argument("--scrapers", type=int, default=8)
    p.add_argument("--scrape-interval", type=float, default=1.0)
    p.add_argument("--probe-interval", type=float, default=0.5)
    p.add_argument("--synthetic", action="store_true", help="no BPF program: counts made up in Python (no root)")
    p.add_argument("--agent-arg", action="append", default=[], metavar="ARG",
                   help="a flag of netdrop serve for the agent (TLS files, --auth, --kubeconfig), repeatable")
    p.add_argument("--lab-auth", action="store_true",
                   help="tokens checked by the lab's API server, over HTTPS (see above)")
    p.add_argument("--https", action="store_true", help="talk TLS to the agent")
    p.add_argument("--ca-file", help="CA to verify the agent's certificate (with --https)")
    p.add_argument("--token-file", help="the scrapers' bearer token")
    p.add_argument("--url", help="an agent already running (http[s]://HOST:PORT), instead of starting one")
    p.add_argument("--pid", type=int, help="that agent's process id, for its memory and CPU")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--child", nargs=2, metavar=("PORT", "SERIES"), help=argparse.SUPPRESS)
    args, rest = p.parse_known_args(argv)
    if args.child:
        agent_child(int(args.child[0]), int(args.child[1]), args.synthetic, rest)
        return 0
    if rest:
        p.error(f"unknown arguments: {' '.join(rest)}")
    if args.lab_auth and (args.url or args.agent_arg or args.token_file):
        p.error("--lab-auth makes its own agent, certificate and token")

    lab = None
    if args.lab_auth:
        lab = LabAuth()
        args.agent_arg += lab.agent_args
        args.https, args.ca_file, args.token_file = True, str(lab.ca_file), str(lab.token_file)
    try:
        return run(args)
    finally:
        if lab is not None:
            print(f"reviews the API server made: {lab.api.reviews}")
            lab.close()


class LabAuth:
    """The lab's API server, a serving certificate and a scraper's token, in a temporary directory."""

    def __init__(self) -> None:
        import tempfile

        from tracer.lab.api import KubeAPI
        from tracer.tlsconf import make_certificate

        self.dir = Path(tempfile.mkdtemp(prefix="bench-hostile-"))
        self.api = KubeAPI()
        self.api.start(tls=True)
        kubeconfig = self.api.write_kubeconfig(self.dir / "kubeconfig")
        user = "system:serviceaccount:monitoring:prometheus"
        token = self.api.add_user(user, ("system:serviceaccounts",))
        self.api.grant(user, "get", "nodes", "metrics")
        ca = make_certificate("bench-ca", [], ca=True)
        cert, key = make_certificate("netdrop", ["127.0.0.1"], issuer_pem=ca)
        self.ca_file, self.token_file = self.dir / "ca.crt", self.dir / "token"
        for path, data in ((self.ca_file, ca[0]), (self.dir / "tls.crt", cert), (self.dir / "tls.key", key),
                           (self.token_file, token.encode())):
            path.touch(mode=0o600)
            path.write_bytes(data)
        self.agent_args = ["--auth", "kubernetes", "--kubeconfig", str(kubeconfig),
                           "--tls-cert-file", str(self.dir / "tls.crt"), "--tls-key-file", str(self.dir / "tls.key")]

    def close(self) -> None:
        import shutil

        self.api.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    context = None
    https = args.https or (args.url or "").startswith("https:")
    if https:
        context = ssl.create_default_context(cafile=args.ca_file)
        if args.ca_file is None:
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    token = Path(args.token_file).read_text().strip() if args.token_file else None
    child = None
    if args.url:
        u = urllib.parse.urlsplit(args.url)
        host, port, pid = u.hostname or "127.0.0.1", u.port or (443 if https else 80), args.pid
    else:
        host, port = "127.0.0.1", free_port()
        cmd = [sys.executable, __file__, "--child", str(port), str(args.series), *(["--synthetic"] * args.synthetic),
               *args.agent_arg]
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            child.wait(10)
            print("the agent did not start", file=sys.stderr)
            return 1
        pid = child.pid
    target = Target(host, port, https, context, token)
    tally, stop = Tally(), threading.Event()
    started = time.monotonic()
    threads = [threading.Thread(target=lambda: asyncio.run(attackers(target, tally, stop, args.slow, args.big,
                                                                       args.drip)), daemon=True),
               *(threading.Thread(target=scraper, args=(target, tally, stop, args.scrape_interval, args.series),
                                  daemon=True) for _ in range(args.scrapers)),
               threading.Thread(target=prober, args=(target, tally, stop, args.probe_interval), daemon=True)]
    if pid:
        threads.append(threading.Thread(target=sampler, args=(pid, tally, stop), daemon=True))
    try:
        for t in threads:
            t.start()
        stop.wait(args.seconds)
    finally:
        stop.set()
        for t in threads:
            t.join(SCRAPE_TIMEOUT + 5)
        if child is not None:
            child.send_signal(signal.SIGTERM)
            child.wait(10)
    report(args, tally, time.monotonic() - started)
    return 0


def report(args: argparse.Namespace, t: Tally, seconds: float) -> None:
    probe_times = [took for _, _, took in t.probes]
    bad_probes = [(s, took) for _, s, took in t.probes if s != 200 or took > 1.0]
    served = [s for s in t.scrapes if s[1]]
    scrape_times = [took for _, ok, took, _ in t.scrapes if ok]
    failures: dict[str, int] = {}
    for _, ok, _, why in t.scrapes:
        if not ok:
            failures[why or "late"] = failures.get(why or "late", 0) + 1
    rows = [
        ("run", f"{seconds:.0f} s; {args.slow} slow clients (a byte every {args.drip:g} s), {args.big} clients "
                f"with 99 x 64 KiB headers, {args.scrapers} scrapers (every {args.scrape_interval:g} s), "
                f"{args.series:,} series"
                + (f" of the agent at {args.url}" if args.url else
                   " (synthetic counts)" if args.synthetic else " (the real BPF map)")
                + (", TLS" if args.https or (args.url or "").startswith("https:") else "")
                + (", a bearer token" if args.token_file else "")),
        ("probes (GET /healthz, new connection)",
         f"{len(t.probes)}; answered 200 within 1 s: {len(t.probes) - len(bad_probes)}; "
         f"max {max(probe_times, default=float('nan')) * 1000:.0f} ms, p99 {pct(probe_times, 99) * 1000:.0f} ms, "
         f"median {pct(probe_times, 50) * 1000:.0f} ms"),
        ("scrapes served (200, all series, # EOF, within 10 s)",
         f"{len(served)} of {len(t.scrapes)} = {100 * len(served) / max(len(t.scrapes), 1):.2f} %"
         + (f"; failed: {failures}" if failures else "") + f"; retried on a closed kept-alive connection: {t.retries}"),
        ("scrape time", f"median {pct(scrape_times, 50) * 1000:.0f} ms, p99 {pct(scrape_times, 99) * 1000:.0f} ms, "
                        f"max {max(scrape_times, default=float('nan')) * 1000:.0f} ms"),
        ("slow clients", f"{t.slow_connections} connections, cut after median "
                         f"{statistics.median(t.slow_cut_after) if t.slow_cut_after else float('nan'):.1f} s "
                         f"(max {max(t.slow_cut_after, default=float('nan')):.1f} s)"),
        ("huge-header requests", f"{t.big_requests}: answers {dict(sorted(t.big_answers.items()))}"),
    ]
    if t.samples:
        t0, rss0, cpu0 = t.samples[0]
        t1, _, cpu1 = t.samples[-1]
        rss = [r for _, r, _ in t.samples]
        marks = []
        step = max(1, len(t.samples) // 10)
        for at, r, _ in t.samples[::step]:
            marks.append(f"{at - t0:.0f} s: {r:.0f}")
        rows += [
            ("agent resident memory (MiB)", f"start {rss0:.0f}, max {max(rss):.0f}, end {rss[-1]:.0f} "
                                            f"(limit {LIMIT_MIB}); over time: {', '.join(marks)}"),
            ("agent CPU", f"{100 * (cpu1 - cpu0) / max(t1 - t0, 1e-9):.1f} % of a core"),
        ]
    load = os.getloadavg()
    rows.append(("machine", f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
                            "at the end"))
    if args.markdown:
        print("| measure | value |\n| --- | --- |")
        for k, v in rows:
            print(f"| {k} | {v} |")
    else:
        for k, v in rows:
            print(f"{k}: {v}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
