"""access: who may read what the agent serves (the HTTP server asks, a Gate answers).

The server puts every request to a path that says something about the node
(/metrics) to the Gate: `cached` on its event loop, then, if that cannot
decide, `ask` in a worker thread under the request's deadline (it may ask the
API server). Probes (/healthz) never come here, so the kubelet needs no token.

KubeGate decides as the kubelet does for its own /metrics (the kubelet's
--authentication-token-webhook and --authorization-mode=Webhook;
pkg/kubelet/server/auth.go): the bearer token is given to the API server in a
TokenReview, and the user it names in a SubjectAccessReview for

    verb get, resource nodes, subresource metrics, name <this node>

the attributes the kubelet asks for /metrics (pkg/kubelet/server/auth.go,
GetRequestAttributes). So whoever may scrape this node's kubelet may scrape its
netdrop (Prometheus's usual ClusterRole grants `nodes/metrics`), RBAC can grant
it node by node, and nothing new is invented for operators to learn. A
capture's file (/captures/<namespace>/<name>/<file>, docs/captures.md) is
asked for as the API server would ask for a subresource of the capture:

    verb get, group netdrop.io, resource netdropcaptures, subresource files,
    namespace <namespace>, name <name>

so a RoleBinding in a namespace gives that namespace's captures' files, and
nothing of another's. Both
answers are kept briefly (the kubelet keeps them 2 min and 5 min; here less, so
that a revoked grant takes effect within a minute), and asking about tokens
never accepted is rate-limited: any client on the network can send made-up
tokens, and each would otherwise be a call to the API server.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from ..captures.spec import GROUP, PLURAL
from . import capturepaths


@dataclass(frozen=True)
class Verdict:
    """The answer for one request: 200 serves it; 401 (no or unknown token), 403
    (known, not permitted), 429 (too many unknown tokens at once) and 503 (the
    API could not be asked) refuse it with `why`."""

    status: int
    why: str

    @property
    def allowed(self) -> bool:
        return self.status == 200


ALLOWED = Verdict(200, "ok")


class Gate(Protocol):
    """May the client that sent this Authorization header (None: none sent) GET `path`?

    Asked in two steps so that what is already known never waits behind what
    must be asked: `cached` answers at once when nothing needs asking (no token,
    an answer kept, too many unknown tokens) and is called on the server's event
    loop; only when it returns None is `ask` called, in a worker thread, and may
    block on the API server."""

    def cached(self, path: str, authorization: str | None) -> Verdict | None: ...

    def ask(self, path: str, authorization: str | None) -> Verdict: ...


def check(gate: Gate, path: str, authorization: str | None) -> Verdict:
    """Both steps in one call (where blocking does not matter)."""
    return gate.cached(path, authorization) or gate.ask(path, authorization)


class Open:
    """No authentication: a loopback address (a local Prometheus, the lab), or
    another address only when the operator said so (--insecure-no-auth)."""

    def cached(self, path: str, authorization: str | None) -> Verdict | None:
        return ALLOWED

    def ask(self, path: str, authorization: str | None) -> Verdict:
        return ALLOWED


class Later:
    """A gate decided once start-up knows the node's name (the review's object):
    until then /metrics says the agent is starting."""

    def __init__(self) -> None:
        self.gate: Gate | None = None

    def cached(self, path: str, authorization: str | None) -> Verdict | None:
        gate = self.gate
        return gate.cached(path, authorization) if gate is not None else Verdict(503, "starting")

    def ask(self, path: str, authorization: str | None) -> Verdict:
        gate = self.gate
        return gate.ask(path, authorization) if gate is not None else Verdict(503, "starting")


@dataclass(frozen=True)
class Identity:
    """A user as a TokenReview names it (authentication.k8s.io/v1 UserInfo)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class Attributes:
    """What a SubjectAccessReview asks about (authorization.k8s.io/v1 ResourceAttributes);
    namespace "": a cluster-scoped object (a node), group "": the core group."""

    verb: str
    resource: str
    subresource: str
    name: str
    namespace: str = ""
    group: str = ""

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.verb} {self.resource}/{self.subresource} {where}"


def path_attributes(path: str, node: Attributes) -> Attributes:
    """What a request for `path` is asked as: a capture's file as the capture's
    `files` subresource, anything else (/metrics) as `node` (the node's metrics)."""
    wanted = capturepaths.parse(path)
    if wanted is None:
        return node
    return Attributes("get", PLURAL, "files", wanted.name, namespace=wanted.namespace, group=GROUP)


class ReviewUnavailable(Exception):
    """The API server could not be asked (unreachable, slow, refused our own token)."""


class Reviewer(Protocol):
    def authenticate(self, token: str) -> Identity | None:
        """The token's user, None when the API server does not accept it; ReviewUnavailable."""
        ...

    def authorize(self, who: Identity, attrs: Attributes) -> bool:
        """Whether RBAC (or any authorizer of the cluster) lets `who` do `attrs`; ReviewUnavailable."""
        ...


AUTHN_TTL = 60.0          # a token's user (and a rejected token) kept this long
ALLOW_TTL = 60.0          # a permission granted, kept this long
DENY_TTL = 10.0           # a permission refused: asked again soon (a grant being set up)
ACCEPTED_TTL = 3600.0     # a token accepted once is reviewed again outside the budget for unknown ones
CACHE_ENTRIES = 1024      # per cache: memory bounded whatever tokens clients send
REVIEWS_PER_SECOND = 10.0  # reviews of tokens not in the cache, sustained
REVIEW_BURST = 20
MAX_TOKEN = 16 * 1024     # longer than any service-account or OIDC token

K = TypeVar("K")
V = TypeVar("V")


class _Cache(Generic[K, V]):
    """A small LRU with an expiry per entry."""

    def __init__(self, clock: Callable[[], float], size: int = CACHE_ENTRIES) -> None:
        self._clock = clock
        self._size = size
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> tuple[bool, V | None]:
        hit = self._items.get(key)
        if hit is None or hit[0] <= self._clock():
            return False, None
        self._items.move_to_end(key)
        return True, hit[1]

    def put(self, key: K, value: V, ttl: float) -> None:
        self._items[key] = (self._clock() + ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)


class KubeGate:
    """TokenReview, then SubjectAccessReview for the path's attributes (`attrs`,
    the node's, for /metrics; path_attributes); answers kept briefly, per user and attributes.

    Reviews of tokens never seen are rate-limited (made-up tokens are free to
    send); a token the API server accepted before is reviewed again when its
    answer expires without waiting for that budget, so a flood of made-up
    tokens cannot lock a real scraper out."""

    def __init__(self, reviewer: Reviewer, attrs: Attributes, clock: Callable[[], float] = time.monotonic) -> None:
        self._reviewer = reviewer
        self.attrs = attrs
        self._clock = clock
        self._lock = threading.Lock()
        self._users: _Cache[bytes, Identity | None] = _Cache(clock)
        self._grants: _Cache[tuple[Identity, Attributes], bool] = _Cache(clock)
        self._accepted: _Cache[bytes, bool] = _Cache(clock)     # tokens the API server accepted lately
        self._budget = float(REVIEW_BURST)
        self._refilled = clock()

    def check(self, path: str, authorization: str | None) -> Verdict:
        return check(self, path, authorization)

    def cached(self, path: str, authorization: str | None) -> Verdict | None:
        token = bearer_token(authorization)
        if token is None:
            return NO_TOKEN
        key = _key(token)
        with self._lock:
            known, who = self._users.get(key)
            if not known:
                if self._accepted.get(key)[0] or self._take():
                    return None
                return TOO_MANY
            if who is None:
                return NOT_ACCEPTED
            attrs = path_attributes(path, self.attrs)
            known, allowed = self._grants.get((who, attrs))
        if not known:
            return None
        return ALLOWED if allowed else self._forbidden(who, attrs)

    def ask(self, path: str, authorization: str | None) -> Verdict:
        token = bearer_token(authorization)
        if token is None:
            return NO_TOKEN
        key = _key(token)
        with self._lock:
            known, who = self._users.get(key)
        if not known:
            try:
                who = self._reviewer.authenticate(token)
            except ReviewUnavailable:
                return UNAVAILABLE
            with self._lock:
                self._users.put(key, who, AUTHN_TTL)
                if who is not None:
                    self._accepted.put(key, True, ACCEPTED_TTL)
        if who is None:
            return NOT_ACCEPTED
        attrs = path_attributes(path, self.attrs)
        with self._lock:
            known, allowed = self._grants.get((who, attrs))
        if not known:
            try:
                allowed = self._reviewer.authorize(who, attrs)
            except ReviewUnavailable:
                return UNAVAILABLE
            with self._lock:
                self._grants.put((who, attrs), allowed, ALLOW_TTL if allowed else DENY_TTL)
        return ALLOWED if allowed else self._forbidden(who, attrs)

    @staticmethod
    def _forbidden(who: Identity, attrs: Attributes) -> Verdict:
        return Verdict(403, f"{who.username} may not {attrs}")

    def _take(self) -> bool:
        """A token bucket for reviews of tokens not seen before (called with the lock held)."""
        now = self._clock()
        self._budget = min(float(REVIEW_BURST), self._budget + (now - self._refilled) * REVIEWS_PER_SECOND)
        self._refilled = now
        if self._budget < 1.0:
            return False
        self._budget -= 1.0
        return True


NO_TOKEN = Verdict(401, "a bearer token is required (Authorization: Bearer <token>)")
NOT_ACCEPTED = Verdict(401, "the token was not accepted (TokenReview)")
TOO_MANY = Verdict(429, "too many unknown tokens at once; try again in a second")
# The API server's address and error stay out of the answer: whoever asks may hold no token at all.
UNAVAILABLE = Verdict(503, "cannot review the token now: the API server did not answer; try again")


def _key(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()     # no token kept in memory as it came


def bearer_token(authorization: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>` (RFC 6750 2.1: the scheme is
    case-insensitive, the token is token68 characters), else None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN:
        return None
    if not all(c.isascii() and (c.isalnum() or c in "-._~+/=") for c in token):
        return None
    return token
