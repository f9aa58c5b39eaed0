"""access: who may read what the agent serves (the HTTP server asks, a Gate answers).

The server (serve.py) calls `Gate.check` for every request to a path that says
something about the node (/metrics); probes (/healthz) never come here, so the
kubelet needs no token. `check` blocks (it may ask the API server) and the
server runs it off its event loop, under the request's deadline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Verdict:
    """The answer for one request: 200 serves it; 401 (no or unknown token), 403
    (known, not permitted) and 503 (the API could not be asked) refuse it with `why`."""

    status: int
    why: str

    @property
    def allowed(self) -> bool:
        return self.status == 200


ALLOWED = Verdict(200, "ok")


class Gate(Protocol):
    def check(self, path: str, authorization: str | None) -> Verdict:
        """May the client that sent this Authorization header (None: none sent) GET `path`?"""
        ...


class Open:
    """No authentication: a loopback address (a local Prometheus, the lab), or
    another address only when the operator said so (--insecure-no-auth)."""

    def check(self, path: str, authorization: str | None) -> Verdict:
        return ALLOWED
