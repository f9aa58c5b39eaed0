"""serve: netdrop serve, the node agent Prometheus scrapes (a DaemonSet pod on every node).

The BPF program counts every drop in the kernel; the agent never looks at a
drop in Python. /metrics reads the counter map when scraped (sinks/metrics.py's
DropCollector; scrapes within a second share one render), /healthz says whether
the programs are attached and the counters readable. The HTTP server (httpd.py)
runs its own event loop in a thread; serveauth.py decides who may read /metrics
(the Gate it asks) and whether over TLS. The main thread only keeps the kernel's pod maps current
(pods/source.py) and drains the few events the program still sends (one per
CPU per 100 ms at most, max_event_rate=1: nothing here uses them, and an
undrained ring buffer would count them as lost).

Lifecycle: the address is bound first (a port in use fails before anything is
loaded), then the program is compiled while the pod source asks the API; a
stop signal (SIGINT, SIGTERM, SIGHUP) ends the loop within TICK_SECONDS and the
HTTP server is shut, then the pod source and the program: within 2 s, nothing left.

With --node-netns (a simulated node sharing this kernel with others) the
agent counts only that node's drops: its namespace and its pods' (filter maps
kept current with the pods); on a real node everything is the node's.
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import httpd, serveauth
from .access import Later
from .env import Environment
from .errors import UserError

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from .kernel.loader import Tracer
    from .pods.attribute import Attribution
    from .pods.kube import PodInfo
    from .pods.source import PodSource
    from .sinks.metrics import DropCollector

# Prometheus's list of default exporter ports has no room left in 9100-9999;
# new exporters are given ports above 10000. Kubernetes itself uses 10248-10259
# on every node (kubelet, kube-proxy, scheduler, controller manager).
DEFAULT_PORT = 10303
DEFAULT_LISTEN = f"0.0.0.0:{DEFAULT_PORT}"
TICK_SECONDS = 0.5          # pod maps brought up to date, stop looked at
STALL_SECONDS = 10.0        # /healthz fails when the main loop has not ticked for this long
TRIM_SECONDS = 10.0
CLOSE_WAIT_SECONDS = 0.3    # at the end, a render in flight (~0.1 s at 10,000 series) gets this long
SERVE_EVENT_RATE = 1        # events/s asked of the kernel: the least it sends (one per CPU per window)
RENDER_SECONDS = 1.0        # a metrics body is rendered at most this often (per format); scrapes share it
TEXT_004 = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
INDEX = b"netdrop serve: /metrics (Prometheus), /healthz\n"


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(text: str) -> Listen:
    """ADDR:PORT, [V6ADDR]:PORT or :PORT (every address); addresses only, never a name to resolve."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise UserError(f"--listen {text!r}: expected ADDR:PORT, e.g. 0.0.0.0:{DEFAULT_PORT} or [::1]:{DEFAULT_PORT}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise UserError(f"--listen {text!r}: brackets are for IPv6 addresses")
    elif ":" in host:
        raise UserError(f"--listen {text!r}: an IPv6 address goes in brackets, e.g. [::1]:{DEFAULT_PORT}")
    host = host or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise UserError(f"--listen {text!r}: {host!r} is not an IP address") from None
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5) or not 0 < int(port_text) < 65536:
        raise UserError(f"--listen {text!r}: the port must be a number from 1 to 65535")
    return Listen(host, int(port_text))


# ---------------------------------------------------------------- the agent

class Agent:
    """What the HTTP server asks: the metrics and the health, from the loaded program."""

    def __init__(self) -> None:
        from prometheus_client import ProcessCollector

        # process_cpu_seconds_total, process_resident_memory_bytes, ...: the agent's own cost.
        self.process = ProcessCollector(registry=None)
        self.collector: DropCollector | None = None
        self.tracer: Tracer | None = None
        self.state = "starting: loading the BPF program"
        self.beat = time.monotonic()
        # Scrapes within a second of a render, or during it, share it: one render a second per format.
        self.bodies = httpd.Recent(self._render, max_age=RENDER_SECONDS)
        self.served = 0
        self._count = threading.Lock()
        self._program = threading.Lock()     # a probe's read of the program's maps, or their close

    def routes(self) -> dict[str, httpd.Route]:
        """/healthz and / say nothing about the node: served to anyone (the kubelet
        brings no token); /metrics and any other path only as the Gate allows."""
        return {"/metrics": httpd.Route(self.metrics), "/healthz": httpd.Route(self.healthz, gated=False),
                "/": httpd.Route(lambda _: httpd.Response(200, INDEX), gated=False)}

    def metrics(self, request: httpd.Request) -> httpd.Response:
        openmetrics = wants_openmetrics(request.header("accept"))
        try:
            body = self.bodies.get(openmetrics)
            gzipped = httpd.accepts_gzip(request.header("accept-encoding"))
            data = body.gzipped() if gzipped else body.plain
        # A failed read of the kernel's maps (the program going away at the end):
        # one line to the scraper, the agent goes on.
        except Exception as exc:  # noqa: BLE001
            return httpd.Response(500, f"netdrop: cannot read the counters: {exc}\n".encode(errors="replace"))
        headers = (("Vary", "Accept-Encoding"),) + ((("Content-Encoding", "gzip"),) if gzipped else ())
        with self._count:
            self.served += 1
        return httpd.Response(200, data, OPENMETRICS if openmetrics else TEXT_004, headers)

    def healthz(self, request: httpd.Request) -> httpd.Response:
        ok, why = self.health()
        return httpd.Response(200 if ok else 503, f"{why}\n".encode())

    def scrape(self, accept: str | None) -> tuple[bytes, str]:
        """A fresh exposition in the format the scraper asked for (Prometheus asks
        for OpenMetrics first, text 0.0.4 otherwise), and its content type."""
        openmetrics = wants_openmetrics(accept)
        return self._render(openmetrics), OPENMETRICS if openmetrics else TEXT_004

    def _render(self, openmetrics: bool) -> bytes:
        from prometheus_client import generate_latest
        from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

        families = list(self.process.collect())
        drops = b""
        collector = self.collector
        if collector is not None:
            drops, others = collector.render(openmetrics=openmetrics)
            families = others + families
        return drops + (generate_openmetrics if openmetrics else generate_latest)(_Families(families))

    def health(self) -> tuple[bool, str]:
        tracer = self.tracer
        if tracer is None or self.collector is None:
            return False, self.state
        if not any(h.attached and h.name.endswith(" skb:kfree_skb") for h in tracer.hooks):
            return False, "the skb:kfree_skb tracepoint is not attached"
        try:
            # Not the collector's lock: a probe must not wait for a render of 10,000
            # series on a busy node (the kubelet gives it 1 s); only for the close.
            with self._program:
                if self.tracer is None:
                    return False, self.state
                tracer.stats({})       # the per-CPU state map: a cheap read of the program's maps
        # bcc raises bare Exception for a failed map read
        except Exception as exc:  # noqa: BLE001
            return False, f"the counters cannot be read: {exc}"
        stalled = time.monotonic() - self.beat
        if stalled > STALL_SECONDS:
            return False, f"the agent's loop has not run for {stalled:.0f} s: pod maps are not kept current"
        return True, "ok: programs attached, counters readable"

    def detach(self, close: Callable[[], None]) -> None:
        """Close the program once no scrape reads it (a scrape in flight gets CLOSE_WAIT_SECONDS)."""
        collector = self.collector
        got = collector.lock.acquire(timeout=CLOSE_WAIT_SECONDS) if collector is not None else False
        try:
            with self._program:
                self.state = "stopping"
                self.tracer = None
                close()
        finally:
            if got and collector is not None:
                collector.lock.release()


def wants_openmetrics(accept: str | None) -> bool:
    """Whether an Accept field asks for OpenMetrics (Prometheus lists it first).
    The content types answered are our two constants: nothing of the client's
    text comes back, and a cache keyed on the format has two entries."""
    return any(media == "application/openmetrics-text" and q > 0    # NaN is not above 0
               for media, q in httpd.weighted(accept))


class _Families:
    """Metric families already read, in the shape prometheus_client's encoders take (a registry)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


class Workloads:
    """The workload label of a pod, from the pod source's current API pods (by uid)."""

    def __init__(self, pods: Callable[[], list[PodInfo] | None]) -> None:
        self._pods = pods
        self._list: list[PodInfo] | None = None
        self._by_uid: dict[str, PodInfo] = {}

    def __call__(self, who: Attribution) -> str:
        from .pods.workload import workload_of

        pod = who.pod
        if pod is None or pod.name is None:
            return ""
        pods = self._pods()
        if pods is not self._list:      # the source swaps in a new list on every change
            self._list = pods
            self._by_uid = {p.uid: p for p in pods or ()}
        info = self._by_uid.get(pod.uid or "")
        return workload_of(info).name if info is not None else pod.name


def live_pods(source: PodSource) -> set[int] | None:
    """Ids of the pods the node has now; None when the API does not answer (then nothing expires)."""
    index = source.current()
    if index is None or source.kube is None:
        return None
    return set(index.by_netns.values()) | set(index.hostports.values())


def node_scope(source: PodSource) -> frozenset[int] | None:
    """The namespaces whose drops are this node's: None on a real node (all of
    them); with --node-netns, the node's namespace and its pods' sandboxes."""
    node = source.scanner.node_inode
    if node == os.stat("/proc/self/ns/net").st_ino:
        return None
    index = source.current()
    # The pods' sandboxes as the index joined them with the API's pods: not
    # every namespace with a veth into the node (another simulated node's
    # underlay link is one too).
    pods = set(index.by_netns) if index is not None else set()
    return frozenset({node} | pods)


def run(args: argparse.Namespace, env: Environment) -> int:
    from .explain.explainer import ct_stats
    from .kernel.decode import Decoder
    from .kernel.facts import Kallsyms
    from .kernel.filters import Filters
    from .kernel.loader import Tracer, TracerSettings
    from .memory import release_free_memory
    from .pods.apicall import Calls
    from .pods.kube import Selection
    from .node.namespaces import HOST_NETNS
    from .pods.source import PodSource
    from .session import SIGNALS, ExitStatus, Pending, info, kernel_facts, require_root, warn
    from .sinks.metrics import AgentState, DropCollector, Series
    from .tlsconf import RELOAD_CHECK_SECONDS

    listen = parse_listen(args.listen)
    guard = serveauth.plan(listen.host, auth=args.auth, insecure=args.insecure_no_auth,
                           cert=args.tls_cert_file, key=args.tls_key_file)
    require_root(env)
    calls = Calls()     # the agent's API calls (pods, reviews): its stop cuts them off at once
    gate_for = serveauth.gate_for(guard, args.kubeconfig, calls)
    facts = kernel_facts(args, env)
    agent = Agent()
    gate = Later()
    tls = serveauth.serving(guard, args.node or socket.gethostname(), [] if listen.host in ("0.0.0.0", "::")
                            else [listen.host])
    try:
        server = httpd.Server(listen.host, listen.port, agent.routes(), gate, tls.context if tls is not None else None)
    except OSError as exc:
        raise UserError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
    say = functools.partial(warn, env)

    with ExitStack() as stack:
        stack.callback(server.close)
        server.start()
        pods = Pending(lambda: PodSource(Selection(), args.kubeconfig, args.node, args.node_netns or HOST_NETNS,
                                         warn=say, calls=calls), cancel=calls.close)
        stack.callback(pods.close)      # start-up fails before taking it: its API calls end
        tracer = Tracer(facts, Filters(), TracerSettings(max_event_rate=SERVE_EVENT_RATE, hold=True,
                                                         tp_btf=not args.classic_tracepoints), warn=say)
        stack.callback(agent.detach, tracer.close)
        stack.callback(server.close)    # before the detach: no new scrape waits on the program going
        try:
            source = pods.result()
        except OSError as exc:    # the node's namespace unreadable (no CAP_SYS_ADMIN for setns, ...)
            raise UserError(f"cannot read the node's network namespace: {exc}") from None
        stack.callback(source.stop)
        if not source.attributing:
            info(env, f"pods: {source.describe()}")
        source.apply(tracer)
        scope = node_scope(source)
        if scope is not None:
            tracer.set_filters(Filters(netns=scope))
        source.start()
        tracer.start_counting()
        node = args.node or source.node_name or socket.gethostname()
        gate.gate = gate_for(node)
        kallsyms = Kallsyms.load()
        if not kallsyms.usable:
            say("/proc/kallsyms hides addresses (kptr_restrict, or no CAP_SYSLOG): drop locations cannot be named, "
                "and categories that depend on them are not told apart")
        decoder = Decoder(facts.reasons, kallsyms, has_reason=facts.has_reason)
        node_path = None if scope is None else source.scanner.node_path
        ct_cache: list[Any] = [float("-inf"), None]

        def conntrack() -> dict[str, int] | None:
            # /proc/net/stat/nf_conntrack of the node's namespace; inside another
            # namespace that is a process (nsenter cat): at most once a second.
            now = time.monotonic()
            if now - ct_cache[0] >= 1.0:
                ct_cache[:] = [now, ct_stats(node_path)]
            got: dict[str, int] | None = ct_cache[1]
            return got

        def state(counts: Any) -> AgentState:
            stats = tracer.stats(counts)
            return AgentState(events_lost=stats.lost, ungrouped=stats.counter_full,
                              hooks=tuple((h.name, h.attached) for h in tracer.hooks), conntrack=conntrack())

        def attribute(tag: int) -> Attribution:
            from .pods.attribute import NO_POD

            index = source.current()
            return index.attribute_tag(tag) if index is not None else NO_POD

        series = Series(decoder, attribute, Workloads(source.pods), args.max_series, args.series_ttl)
        collector = DropCollector(node, series, tracer.counts, state, lambda: live_pods(source),
                                  version=_version(), kernel=facts.release)
        agent.collector, agent.tracer = collector, tracer
        agent.beat = time.monotonic()
        SIGNALS.tracing()
        info(env, f"serving {'https' if tls else 'http'}://{listen}/metrics and /healthz for node {node}; "
                  f"{serveauth.describe(guard, listen.host)}; pods: {source.describe()}; Ctrl-C to stop")
        next_trim = next_tls_check = time.monotonic()
        while not SIGNALS.stop.is_set():
            tracer.poll_records(int(TICK_SECONDS * 1000), 256)   # sampled events, unused: drained as bytes
            now = time.monotonic()
            source.apply(tracer)
            tracer.maintain_hooks()         # a module's function hooks, as the module comes or goes
            new_scope = node_scope(source) if scope is not None else None
            if new_scope is not None and new_scope != scope:
                scope = new_scope
                tracer.set_filters(Filters(netns=scope))
            agent.beat = now
            if tls is not None and now >= next_tls_check:
                if (said := tls.reload_if_changed()) is not None:
                    server.ssl = tls.context        # new connections: the renewed certificate
                    info(env, said)
                next_tls_check = now + RELOAD_CHECK_SECONDS
            if now >= next_trim:
                release_free_memory()
                next_trim = now + TRIM_SECONDS
        info(env, f"stopped: {agent.served} scrapes served ({collector.scrapes} renders), {len(series)} series")
    return ExitStatus.OK


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("netdrop")
    except PackageNotFoundError:
        return "unknown"
