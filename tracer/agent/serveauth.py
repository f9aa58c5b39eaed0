"""serveauth: how `netdrop serve` guards /metrics, decided from its options.

/metrics names every pod, namespace and workload of the node, and the kernel:
to anyone who reaches the port, which on a host-network agent is every pod of
every tenant. So:

    listen on loopback                 open, plain HTTP (a local Prometheus, the lab)
    any other address                  bearer token (TokenReview + SubjectAccessReview), HTTPS
    --auth kubernetes                  tokens on loopback too
    --insecure-no-auth                 open on any address (said once at start)

HTTPS with a certificate from --tls-cert-file/--tls-key-file, else one made at
start. The probe path (/healthz) is never guarded: it says nothing about pods,
and the kubelet probes without a token.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .access import Attributes, Gate, KubeGate, Open
from ..errors import UserError
from ..tlsconf import Serving, from_files, self_signed

if TYPE_CHECKING:
    from ..pods.apicall import Calls


@dataclass(frozen=True)
class Plan:
    authenticate: bool
    cert: str | None = None
    key: str | None = None

    @property
    def tls(self) -> bool:
        return self.authenticate or self.cert is not None


def plan(host: str, *, auth: str | None, insecure: bool, cert: str | None, key: str | None) -> Plan:
    """The guard for a listen address and the options given; UserError on options that contradict."""
    if (cert is None) != (key is None):
        raise UserError("--tls-cert-file and --tls-key-file go together")
    if auth == "kubernetes" and insecure:
        raise UserError("--auth kubernetes and --insecure-no-auth contradict each other")
    if insecure:
        return Plan(False, cert, key)
    if auth == "kubernetes" or not ipaddress.ip_address(host).is_loopback:
        return Plan(True, cert, key)
    return Plan(False, cert, key)


def describe(p: Plan, host: str) -> str:
    scheme = "https" if p.tls else "http"
    if p.authenticate:
        return f"{scheme}: /metrics for bearer tokens allowed to get nodes/metrics of this node"
    if ipaddress.ip_address(host).is_loopback:
        return f"{scheme}: /metrics open to local clients (loopback)"
    return f"{scheme}: /metrics open to ANYONE who reaches this address (--insecure-no-auth)"


def serving(p: Plan, node: str, addresses: list[str]) -> Serving | None:
    if not p.tls:
        return None
    if p.cert is not None and p.key is not None:
        return from_files(p.cert, p.key)
    return self_signed(node, addresses)


def gate_for(p: Plan, kubeconfig: str | None, calls: Calls | None = None) -> Callable[[str], Gate]:
    """The gate for a node's name (known later in start-up). With tokens, the
    agent's own credentials are read now, so that their absence fails at once:
    UserError (authentication cannot work without the API). calls: the agent's
    API calls, which its stop cuts off (pods/apicall.py)."""
    if not p.authenticate:
        return lambda node: Open()
    from ..pods.apicall import KubeUnavailable
    from ..pods.kube import KubeClient
    from .reviews import KubeReviewer

    try:
        reviewer = KubeReviewer(KubeClient(kubeconfig, calls))
    except KubeUnavailable as exc:
        raise UserError(f"scrapers' tokens are checked through the Kubernetes API, which cannot be used: {exc}; "
                        "listen on 127.0.0.1, or pass --insecure-no-auth to serve /metrics to anyone") from None
    return lambda node: KubeGate(reviewer, Attributes("get", "nodes", "metrics", node))
