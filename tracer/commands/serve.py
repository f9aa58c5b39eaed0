"""netdrop serve: the node agent Prometheus scrapes (a DaemonSet pod on every node).

The BPF program counts every drop in the kernel; the agent never looks at a
drop in Python. The HTTP side (agent/: endpoints, httpd, who may scrape,
TLS) runs its own event loop in a thread. The main thread only keeps the
kernel's pod maps current (pods/source.py) and feeds the flight recorder
(history/): the sampled events the program sends (--record-rate, with up to
RECORD_SNAPLEN bytes of headers) as they come, and the counters every 5 s, so
that a capture can start in the past. The same events tell the Events on pods
where the drops went (agent/podeventswriter.py, whose API calls have a thread
of their own).

Lifecycle: the address is bound first (a port in use fails before anything is
loaded), then the program is compiled while the pod source asks the API; a
stop signal (SIGINT, SIGTERM, SIGHUP) ends the loop within watch.TICK_SECONDS
and the HTTP server is shut, then the pod source and the program: within 2 s,
nothing left.

With --node-netns (a simulated node sharing this kernel with others) the
agent counts only that node's drops: its namespace and its pods' (filter maps
kept current with the pods); on a real node everything is the node's.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from ..agent import httpd, serveauth
from ..agent.access import Later
from ..agent.endpoints import Agent, parse_listen
from ..env import Environment
from ..errors import ExitStatus, UserError
from ..history.recorder import FlightRecorder
from ..kernel.loader import TracerSettings
from ..messages import info, warn
from ..options import ServeOptions
from ..pipeline.loaded import Loaded
from ..pipeline.startup import Pending, kernel_facts, node_netns, require_root
from ..signals import SIGNALS
from ..watch import TICK_SECONDS, TRIM_SECONDS

if TYPE_CHECKING:
    from ..agent.captures import Controller
    from ..agent.endpoints import Listen
    from ..kernel.loader import Tracer
    from ..pods.attribute import Attribution
    from ..pods.objects import PodInfo
    from ..pods.source import PodSource
    from ..tlsconf import Serving

RECORD_SNAPLEN = 128        # bytes of each sampled drop's packet kept, headers only (docs/captures.md)


class Workloads:
    """The workload label of a pod, from the pod source's current API pods (by uid)."""

    def __init__(self, pods: Callable[[], list[PodInfo] | None]) -> None:
        self._pods = pods
        self._list: list[PodInfo] | None = None
        self._by_uid: dict[str, PodInfo] = {}

    def __call__(self, who: Attribution) -> str:
        from ..pods.workload import workload_of

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


def run(opts: ServeOptions, env: Environment) -> ExitStatus:
    from ..agent import podeventswriter
    from ..explain.explainer import ct_stats
    from ..kernel.filters import Filters
    from ..memory import release_free_memory
    from ..pods.apicall import Calls
    from ..pods.kube import Selection
    from ..pods.source import PodSource
    from ..sinks.metrics import AgentState, DropCollector, Series
    from ..tlsconf import RELOAD_CHECK_SECONDS

    node_path = node_netns(opts.node.node_netns, env)
    listen = parse_listen(opts.listen)
    try:
        advertise = parse_listen(opts.advertise) if opts.advertise else listen
    except UserError as exc:
        raise UserError(str(exc).replace("--listen", "--advertise", 1)) from None
    guard = serveauth.plan(listen.host, auth=opts.auth, insecure=opts.insecure_no_auth,
                           cert=opts.tls_cert_file, key=opts.tls_key_file)
    require_root(env)
    calls = Calls()     # the agent's API calls (pods, reviews): its stop cuts them off at once
    gate_for = serveauth.gate_for(guard, opts.node.kubeconfig, calls)
    facts = kernel_facts(opts.kernel, env)
    agent = Agent()
    gate = Later()
    tls = serveauth.serving(guard, opts.node.node or socket.gethostname(),
                            [] if listen.host in ("0.0.0.0", "::") else [listen.host])
    try:
        server = httpd.Server(listen.host, listen.port, agent.routes(), gate, tls.context if tls is not None else None)
    except OSError as exc:
        raise UserError(f"cannot listen on {listen}: {exc.strerror or exc}") from None

    def detach(close: Callable[[], None]) -> None:
        server.close()      # first: no new scrape waits on the program going
        agent.detach(close)

    scope: frozenset[int] | None = None

    def narrow(tracer: Tracer, source: PodSource | None) -> None:
        nonlocal scope
        assert source is not None
        scope = node_scope(source)
        if scope is not None:
            tracer.set_filters(Filters(netns=scope))

    with ExitStack() as stack:
        stack.callback(server.close)
        server.start()
        pods = Pending(lambda: PodSource(Selection(), opts.node.kubeconfig, opts.node.node, node_path,
                                         warn=lambda msg: warn(env, msg), calls=calls), cancel=calls.close)
        settings = TracerSettings(tp_btf=not opts.kernel.classic_tracepoints, max_event_rate=opts.recorder.rate,
                                  snaplen=RECORD_SNAPLEN, headers_only=True)
        loading = time.monotonic()      # the counters' maps are made below, all zero
        loaded = Loaded(env, stack, facts, Filters(), pods, settings, detach=detach, idle_source=True,
                        before_counting=narrow)
        tracer, source, decoder = loaded.tracer, loaded.source, loaded.decoder
        assert source is not None
        recorder = FlightRecorder(opts.recorder.budget, opts.recorder.history, mono_to_wall=decoder.mono_to_wall,
                                  loaded=loading)
        node = opts.node.node or source.node_name or socket.gethostname()
        gate.gate = gate_for(node)
        ct_path = None if scope is None else source.scanner.node_path
        ct_cache: list[Any] = [float("-inf"), None]

        def conntrack() -> dict[str, int] | None:
            # /proc/net/stat/nf_conntrack of the node's namespace; inside another
            # namespace that is a process (nsenter cat): at most once a second.
            now = time.monotonic()
            if now - ct_cache[0] >= 1.0:
                ct_cache[:] = [now, ct_stats(ct_path)]
            got: dict[str, int] | None = ct_cache[1]
            return got

        def state(counts: Any) -> AgentState:
            stats = tracer.stats(counts)
            return AgentState(events_lost=stats.lost, ungrouped=stats.counter_full,
                              hooks=tuple((h.name, h.attached) for h in tracer.hooks), conntrack=conntrack())

        series = Series(decoder, loaded.pod_of_tag, Workloads(source.pods), opts.max_series, opts.series_ttl)
        collector = DropCollector(node, series, tracer.counts, state, lambda: live_pods(source),
                                  version=_version(), kernel=facts.release)
        agent.collector, agent.tracer = collector, tracer
        events = None if not opts.pod_events else podeventswriter.start(
            node, opts.events_interval, tracer.counts, decoder, decoder.decode_record, loaded.pod_of_tag,
            lambda: live_pods(source), opts.node.kubeconfig, lambda msg: warn(env, msg), opts.max_series,
            opts.series_ttl)
        if events is not None:
            stack.callback(events.close)
        captures = _captures(opts, env, node, loaded, advertise, tls, recorder, agent) if opts.captures else None
        if captures is not None:
            stack.callback(captures.close)      # before the program and the pod source go: closed first
        agent.beat = time.monotonic()
        SIGNALS.tracing()
        info(env, f"serving {'https' if tls else 'http'}://{listen}/metrics and /healthz for node {node}; "
                  f"{serveauth.describe(guard, listen.host)}; pods: {source.describe()}; Ctrl-C to stop")
        next_trim = next_tls_check = time.monotonic()
        while not SIGNALS.stop.is_set():
            records = tracer.poll_records(int(TICK_SECONDS * 1000), 256)   # sampled events
            recorder.record(records)
            if recorder.due():
                recorder.tick(tracer.counts())
            if captures is not None:
                captures.tick(records)
            now = time.monotonic()
            if events is not None:
                events.tick(records, now)       # their destinations; the counters every few seconds
            loaded.maintain()       # the pod maps; a module's function hooks, as the module comes or goes
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
        info(env, f"stopped: {agent.served} scrapes served ({collector.scrapes} renders), {len(series)} series; "
                  f"{recorder.describe()}")
    return ExitStatus.OK


def _captures(opts: ServeOptions, env: Environment, node: str, loaded: Loaded, advertise: Listen,
              tls: Serving | None, recorder: FlightRecorder, agent: Agent) -> Controller | None:
    """The controller of NetdropCaptures (agent/captures.py), its threads started;
    None, said once, when the API cannot be used for them."""
    from pathlib import Path

    from ..agent.capturefiles import CaptureStore, StoreError
    from ..agent.capturerun import FromRecorder, NoHistory
    from ..agent.captures import Controller, Endpoint, internal_ip
    from ..captures.api import CaptureClient
    from ..pods.apicall import KubeUnavailable
    from ..pods.kube import KubeClient

    tracer, source = loaded.tracer, loaded.source
    assert source is not None
    try:
        client = CaptureClient(KubeClient(opts.node.kubeconfig, warn=lambda msg: warn(env, msg)),
                               warn=lambda msg: warn(env, msg))
    except KubeUnavailable as exc:
        warn(env, f"captures: off: {exc}")
        return None
    scheme = "https" if tls is not None else "http"
    endpoint = Endpoint(scheme, advertise.host, advertise.port, lambda: internal_ip(client, node))

    def packets() -> dict[Any, int]:
        return {k: c.packets for k, c in tracer.counts().items()}

    try:
        store = CaptureStore(Path(opts.capture_dir))
    except StoreError as exc:
        raise UserError(f"--capture-dir {opts.capture_dir}: {exc}") from None
    agent.files.store = store       # GET /captures/...: what this store made, to whom RBAC lets read it
    past = FromRecorder(recorder, NoHistory(packets, recorder.now))
    controller = Controller(node, client, store, past, clock=recorder.now,
                            decoder=loaded.decoder, pod_of_tag=loaded.pod_of_tag, pods=source.pods,
                            attributor=source.current, counts=packets, totals=tracer.cpu_totals,
                            endpoint=endpoint, cert=lambda: tls.sha256 if tls is not None else "",
                            hooks=tracer.hooks, warn=lambda msg: warn(env, msg))
    controller.start()
    return controller


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("netdrop")
    except PackageNotFoundError:
        return "unknown"
