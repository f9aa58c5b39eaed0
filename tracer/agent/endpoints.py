"""endpoints: what netdrop serve answers over HTTP: /metrics, /healthz, / and the capture files.

The Agent reads the counter map when scraped (sinks/metrics.py's
DropCollector; scrapes within a second share one render) and says whether the
programs are attached and the counters readable. httpd.py serves its routes
on its own event loop in a thread; serveauth.py decides who may read /metrics
(the Gate it asks) and whether over TLS. The command's loop (commands/serve.py)
keeps the pod maps current and beats the Agent's heart. A capture's files
(/captures/<namespace>/<name>/<file>) come from the node's capture store
(capturehttp.py), once the agent keeps one (Agent.files.store).
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import UserError
from . import capturehttp, capturepaths, httpd

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ..kernel.loader import Tracer
    from ..sinks.metrics import DropCollector


# Prometheus's list of default exporter ports has no room left in 9100-9999;
# new exporters are given ports above 10000. Kubernetes itself uses 10248-10259
# on every node (kubelet, kube-proxy, scheduler, controller manager).
DEFAULT_PORT = 10303
DEFAULT_LISTEN = f"0.0.0.0:{DEFAULT_PORT}"
STALL_SECONDS = 10.0        # /healthz fails when the main loop has not ticked for this long
CLOSE_WAIT_SECONDS = 0.3    # at the end, a render in flight (~0.1 s at 10,000 series) gets this long
RENDER_SECONDS = 1.0        # a metrics body is rendered at most this often (per format); scrapes share it
TEXT_004 = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
INDEX = b"netdrop serve: /metrics (Prometheus), /healthz, /captures/<namespace>/<name>/<file>\n"


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
        self.files = capturehttp.FilesRoute()

    def routes(self) -> dict[str, httpd.Route]:
        """/healthz and / say nothing about the node: served to anyone (the kubelet
        brings no token); /metrics, the capture files (every path below /captures/)
        and any other path only as the Gate allows (access.path_attributes)."""
        return {"/metrics": httpd.Route(self.metrics), "/healthz": httpd.Route(self.healthz, gated=False),
                "/": httpd.Route(lambda _: httpd.Response(200, INDEX), gated=False),
                capturepaths.PREFIX: httpd.Route(self.files.answer)}

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
