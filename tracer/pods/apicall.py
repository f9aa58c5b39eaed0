"""apicall: hard limits for each call to the Kubernetes API: one deadline, one byte cap.

The official client (kubernetes, over urllib3) knows a connect timeout and a
timeout per socket read. A server that sends one byte a second never trips
either, and a body that never ends is read whole into memory: such a server
held `netdrop doctor` for minutes and grew it by gigabytes. Here each call is
a Call, with a deadline for all of it (connect, headers, body) and a cap on
the bytes it reads:

- the client's connections are made by the classes limit() puts into its
  urllib3 pool manager. Their sockets read through the Call current in the
  thread when the request went out (running()): before each read the socket's
  timeout becomes what is left of the deadline, and each read counts against
  the cap; past either, the read raises and the Call says why (Call.why).
  Nothing else of the client changes: its authentication, TLS and proxies;
- a Call holds a duplicate of each of its sockets' descriptors from before
  the socket connects, so cancel() (from any thread) shuts the socket down
  wherever the call is, in connect, TLS handshake or a read, and the thread
  that made the call gets its error at once. Calls.close() does that for
  all of a client's calls: a stopping netdrop never leaves a thread blocked
  in the API, which is what made interpreter shutdown abort ("Fatal Python
  error: Aborted": a daemon thread that comes back from a blocking read
  while the interpreter finalizes is ended with pthread_exit, whose unwind
  aborts the process);
- netdrop never asks for a compressed body (the client sends no
  Accept-Encoding), so a body that says it is compressed is kept as the
  bytes it is: urllib3 would inflate a small gzip bomb into gigabytes.
"""

from __future__ import annotations

import functools
import http.client
import io
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family

from . import apitext, objects

BUFFER_BYTES = 64 << 10     # one socket read at most: a 4 MiB list in 64 reads


class CallLimit(OSError):
    """A read refused by its call's limits or cancelled; the Call says which (Call.why)."""


class Call:
    """One API call's limits and its sockets (see the module's docstring)."""

    def __init__(self, deadline: float, max_bytes: int, late: str = "did not answer in time",
                 big: str = "sent too much") -> None:
        """late, big: what why says when the deadline passed, when max_bytes did."""
        self.deadline = deadline
        self.max_bytes = max_bytes
        self.late, self.big = late, big
        self.received = 0
        self.why: str | None = None         # set when a limit ended the call, or cancel()
        self._handles: list[socket.socket] = []
        self._lock = threading.Lock()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        """Keep a way to shut sock down from another thread: a duplicate of its
        descriptor (one of its own, so it can never name a socket reused after
        sock is closed; an SSL socket replaces the plain one it wraps, but the
        connection underneath both is the same)."""
        handle = socket.socket(fileno=os.dup(sock.fileno()))
        with self._lock:
            self._handles.append(handle)
            cancelled = self.why is not None
        if cancelled:
            _shut(handle)

    def cancel(self, why: str) -> None:
        with self._lock:
            if self.why is None:
                self.why = why
            handles = list(self._handles)
        for handle in handles:
            _shut(handle)

    def close(self) -> None:
        """The duplicates closed (the sockets themselves are the client's)."""
        with self._lock:
            handles, self._handles = self._handles, []
        for handle in handles:
            handle.close()

    def check(self) -> None:
        """Raise CallLimit when the call may not read any more."""
        if self.why is None and self.left() <= 0:
            self.why = self.late
        if self.why is not None:
            raise CallLimit(self.why)

    def count(self, n: int) -> None:
        self.received += n
        if self.received > self.max_bytes:
            self.why = self.big
            raise CallLimit(self.why)


def _shut(handle: socket.socket) -> None:
    with suppress(OSError):     # closed, or never connected
        handle.shutdown(socket.SHUT_RDWR)


def size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


class Calls:
    """The calls in flight of one client: close() ends them all and refuses new ones."""

    def __init__(self) -> None:
        self._open: set[Call] = set()
        self._lock = threading.Lock()
        self.closed = False

    def add(self, call: Call) -> bool:
        """False once closed: the call must not be made."""
        with self._lock:
            if self.closed:
                return False
            self._open.add(call)
            return True

    def discard(self, call: Call) -> None:
        with self._lock:
            self._open.discard(call)

    def close(self, why: str = "was cut off: netdrop is stopping") -> None:
        with self._lock:
            self.closed = True
            calls = list(self._open)
        for call in calls:
            call.cancel(why)


_current = threading.local()


@contextmanager
def running(call: Call) -> Iterator[None]:
    """Connections made and responses begun in this thread meanwhile belong to call."""
    _current.call = call
    try:
        yield
    finally:
        _current.call = None


def current() -> Call | None:
    call: Call | None = getattr(_current, "call", None)
    return call


class _Reader(io.RawIOBase):
    """A response's socket (the unbuffered reader makefile() made), read within its call's limits."""

    def __init__(self, raw: Any, sock: socket.socket, call: Call) -> None:
        super().__init__()
        self._raw, self._sock, self._call = raw, sock, call

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int | None:
        call = self._call
        call.check()
        self._sock.settimeout(max(call.left(), 0.001))
        room = call.max_bytes - call.received + 1   # one byte past the cap tells it was passed
        with memoryview(b) as view:
            try:
                n: int | None = self._raw.readinto(view[:room] if len(view) > room else view)
            except TimeoutError:
                call.check()            # the deadline passed: say so
                raise
        if n:
            call.count(n)
        return n

    def close(self) -> None:
        self._raw.close()   # makefile()'s own count of the socket's readers: the socket closes after the last
        super().close()


class _Response(http.client.HTTPResponse):
    """http.client's response, reading through the thread's current Call."""

    def __init__(self, sock: socket.socket, *args: Any, **kw: Any) -> None:
        super().__init__(sock, *args, **kw)
        call = current()
        if call is not None:
            call.watch(sock)
            self.fp = io.BufferedReader(_Reader(self.fp.detach(), sock, call), BUFFER_BYTES)

    def begin(self) -> None:
        super().begin()
        # Never inflated (see the module's docstring): urllib3 builds its headers from these.
        del self.msg["Content-Encoding"]


class _PlainConnect:
    """For urllib3's own TCP connections: the socket is in the call before it connects
    (urllib3.util.connection.create_connection, with Call.watch() before connect())."""

    def _new_conn(self) -> socket.socket:
        call = current()
        conn: Any = self
        if call is None:
            sock: socket.socket = super()._new_conn()  # type: ignore[misc]
            return sock
        host = conn._dns_host.strip("[]")
        try:
            infos = socket.getaddrinfo(host, conn.port, allowed_gai_family(), socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise NameResolutionError(conn.host, conn, exc) from exc
        error: OSError = OSError("getaddrinfo returns an empty list")
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                for option in conn.socket_options or ():
                    sock.setsockopt(*option)
                if isinstance(conn.timeout, (int, float)):
                    sock.settimeout(conn.timeout)
                if conn.source_address:
                    sock.bind(conn.source_address)
                call.watch(sock)
                sock.connect(address)
                return sock
            except TimeoutError as exc:
                sock.close()
                raise ConnectTimeoutError(conn, f"Connection to {conn.host} timed out") from exc
            except OSError as exc:
                sock.close()
                error = exc
        raise NewConnectionError(conn, f"Failed to establish a new connection: {error}")


class _OtherConnect:
    """For connections urllib3 makes its own way (SOCKS): in the call once connected."""

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        call = current()
        if call is not None:
            call.watch(sock)
        return sock


@functools.cache
def _limited_pool(pool_cls: type[Any]) -> type[Any]:
    base = pool_cls.ConnectionCls
    connect = _PlainConnect if base._new_conn is HTTPConnection._new_conn else _OtherConnect
    conn_cls = type(f"Limited{base.__name__}", (connect, base), {"response_class": _Response})
    return type(f"Limited{pool_cls.__name__}", (pool_cls,), {"ConnectionCls": conn_cls})


def limit(manager: urllib3.PoolManager) -> None:
    """Make every connection of manager (the client's rest_client.pool_manager) read
    within the Call current in the thread that sends the request."""
    manager.clear()
    manager.pool_classes_by_scheme = {scheme: _limited_pool(cls)
                                      for scheme, cls in manager.pool_classes_by_scheme.items()}


# ---------------------------------------------------------------- calls of the client's API methods

# Every call: CONNECT_SECONDS at most to connect, CALL_SECONDS for all of it.
CONNECT_SECONDS = 2.0
CALL_SECONDS = 5.0
# Lists come in pages of LIST_PAGE objects (client-go's pager asks 500; fewer keep a page
# small). A page of pods, nodes or Services is 0.2-2 MiB (2-20 KiB an object), and no object
# the API server stores is over 1.5 MiB (etcd's default --max-request-bytes): MAX_RESPONSE_BYTES
# holds either with room to spare, and stays cheap to parse: JSON shaped like API objects
# takes 7.8 times its size as Python objects (measured), 31 MiB for 4 MiB, which the
# DaemonSet's memory limit absorbs. A page over it is asked again with fewer objects; an
# object over it alone (text that JSON escapes six-fold: \u0001 for one byte) is left out.
LIST_PAGE = 100
MAX_OBJECTS = 20_000            # in one list, all pages together: no list netdrop makes is longer
MAX_LEFT_OUT = 8                # objects too large left out of one list; past that, the list fails
MAX_RESPONSE_BYTES = 4 << 20
HEAD_BYTES = 64 << 10           # the start of a list, where the API server writes its metadata
_LIST_META = re.compile(rb'"metadata"\s*:\s*\{([^{}]*)\}\s*,\s*"items"\s*:\s*\[')
_CONTINUE = re.compile(rb'"continue"\s*:\s*"([^"\\]*)"')


class KubeUnavailable(Exception):
    """No Kubernetes API to ask; the message says why."""

    status: int | None = None   # the HTTP status the API server answered with, when it answered one


class TooLarge(KubeUnavailable):
    """An answer over its call's byte cap."""


def _cause(exc: BaseException) -> BaseException:
    """The error under urllib3's and the client's wrappers (MaxRetryError's reason,
    ProtocolError's argument): ConnectionRefusedError, BadStatusLine, ..."""
    for _ in range(8):
        reason = getattr(exc, "reason", None)
        inner = reason if isinstance(reason, BaseException) else \
            next((a for a in exc.args if isinstance(a, BaseException)), None) or exc.__cause__
        if inner is None or inner is exc:
            break
        exc = inner
    return exc


class Api:
    """Calls of the official client's API methods (CoreV1Api.read_node, ...), each
    within hard limits: a deadline for all of it (CALL_SECONDS, or what within()
    leaves), a cap on the bytes it reads (MAX_RESPONSE_BYTES); close() ends every
    call in flight at once, from any thread. Any failure is KubeUnavailable with
    one line that says what: past the deadline, over the cap, an error status,
    not HTTP, not JSON, unreachable."""

    def __init__(self, api_client: Any, calls: Calls | None = None,
                 warn: Callable[[str], None] = lambda msg: None) -> None:
        from kubernetes.client.exceptions import ApiException

        limit(api_client.rest_client.pool_manager)
        self._api_exception = ApiException
        self.server = str(api_client.configuration.host)
        self.calls = calls if calls is not None else Calls()
        self.warn = warn
        self.left_out = 0                   # objects too large to read, left out of lists
        self._local = threading.local()     # within()'s deadline, for the thread that set it

    @contextmanager
    def within(self, seconds: float, since: float | None = None, at_least: float = 1.0) -> Iterator[None]:
        """The calls this thread makes inside end `seconds` after `since`
        (monotonic; default now), yet get `at_least` from now: start-up must not
        wait for the API, and a busy node's slow scan must not leave an
        answering API no time."""
        now = time.monotonic()
        self._local.deadline = max((now if since is None else since) + seconds, now + at_least)
        try:
            yield
        finally:
            self._local.deadline = None

    def close(self) -> None:
        """End every call in flight now (their threads get KubeUnavailable at
        once, wherever the call was) and refuse new ones."""
        self.calls.close()

    def _begin(self, seconds: float, max_bytes: int, what: str) -> Call:
        now = time.monotonic()
        deadline = now + seconds
        late = f"did not answer within {seconds:g} s" if what == "answer" else \
            f"did not end the {what} within {seconds:g} s"
        limit: float | None = getattr(self._local, "deadline", None)
        if limit is not None and limit < deadline:
            deadline, late = limit, "did not answer in time"
        if deadline - now <= 0.05:
            raise KubeUnavailable(f"the API server at {self.server} did not answer in time")
        call = Call(deadline, max_bytes, late, f"sent more than {size(max_bytes)} in one {what}")
        if not self.calls.add(call):
            raise KubeUnavailable(f"the API server at {self.server} was not asked: netdrop is stopping")
        return call

    @contextmanager
    def open(self, fn: Callable[..., Any], *args: Any, seconds: float | None = None,
             max_bytes: int | None = None, what: str = "answer", **kw: Any) -> Iterator[Any]:
        """One call of the API method fn, its response open for reading (a
        urllib3 response; None for 404 Not Found); the caller's reads are
        within the call's limits too."""
        call = self._begin(seconds or CALL_SECONDS, max_bytes or MAX_RESPONSE_BYTES, what)
        resp = None
        try:
            try:
                left = max(call.left(), 0.001)
                with running(call):
                    resp = fn(*args, _preload_content=False, _request_timeout=(min(CONNECT_SECONDS, left), left),
                              **kw)
            except self._api_exception as exc:
                if exc.status != 404 or call.why:
                    raise self._failed(exc, call) from None
            # urllib3's errors, the client's own on a strange answer: an API that
            # misbehaves makes pods unknown, never a crash
            except Exception as exc:  # noqa: BLE001
                raise self._failed(exc, call) from None
            try:
                yield resp
            except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
                raise self._failed(exc, call) from None
        finally:
            self.calls.discard(call)
            if resp is not None:
                with suppress(Exception):   # read to its end, it went back to the pool already
                    resp.close()
            call.close()

    def _failed(self, exc: BaseException, call: Call) -> KubeUnavailable:
        """The one line that says why a call failed."""
        where = f"the API server at {self.server}"
        if call.received > call.max_bytes:
            return TooLarge(f"{where} {call.why}")
        if call.why:
            return KubeUnavailable(f"{where} {call.why}")
        status = getattr(exc, "status", None)
        if isinstance(exc, self._api_exception) and status:
            answered = KubeUnavailable(f"{where} answered {status} {apitext.message(getattr(exc, 'reason', ''), 80)}")
            answered.status = status if isinstance(status, int) else None     # 409 Conflict: read, then replace
            return answered
        cause = _cause(exc)
        if isinstance(cause, TimeoutError) or "Timeout" in type(cause).__name__ or call.left() <= 0:
            return KubeUnavailable(f"{where} did not answer in time")
        if isinstance(cause, http.client.HTTPException) or isinstance(exc, urllib3.exceptions.ProtocolError):
            return KubeUnavailable(f"{where} broke off its answer or did not speak HTTP ({type(cause).__name__})")
        return KubeUnavailable(f"cannot reach {where}: {type(cause).__name__}")

    def call_json(self, fn: Callable[..., Any], *args: Any, seconds: float | None = None,
                  max_bytes: int | None = None, **kw: Any) -> Any:
        """One call, its answer as plain JSON (None for 404): every call netdrop
        makes. Invalid UTF-8 is replaced, as the API server itself does (Go's
        encoding/json): one odd byte does not lose a whole list. Plain JSON, not
        the client's models: objects.pod_info reads both, and a V1Pod model
        costs about a millisecond to build."""
        with self.open(fn, *args, seconds=seconds, max_bytes=max_bytes, **kw) as resp:
            if resp is None:
                return None
            body = resp.read(decode_content=False)
        try:
            return json.loads(body.decode("utf-8", "replace"))
        except (ValueError, RecursionError):
            raise KubeUnavailable(f"the API server at {self.server} answered something that is not JSON") from None

    def pages(self, fn: Callable[..., Any], **kw: Any) -> Iterator[Any]:
        """The pages of a list, as plain JSON (see LIST_PAGE)."""
        token: str | None = None
        count = LIST_PAGE
        listed = left_out = 0
        while True:
            try:
                page = self.call_json(fn, limit=count, _continue=token, **kw)
            except TooLarge as exc:
                if count > 1:
                    count = max(1, count // 10)
                    continue
                left_out += 1
                if left_out > MAX_LEFT_OUT:
                    raise
                token = self._past(fn, token, exc, **kw)
                listed += 1
                if token is None:
                    return
                continue
            if page is None:
                return
            # Counted whatever limit the server ignored: a server that sends pages without
            # end, or pages of a million tiny objects, ends here.
            listed += max(1, len(objects.list_field(page, "items")))
            if listed > MAX_OBJECTS:
                raise KubeUnavailable(f"the API server at {self.server} listed more than {MAX_OBJECTS:,} objects")
            yield page
            raw = objects.api_field(objects.api_field(page, "metadata"), "continue")
            if raw in (None, ""):
                return
            token = objects.opaque(raw)
            if token is None:
                raise KubeUnavailable(f"the API server at {self.server} answered a list with an odd continue token")

    def _past(self, fn: Callable[..., Any], token: str | None, too_large: TooLarge, **kw: Any) -> str | None:
        """The continue token past the one object at `token` that is too large to
        read (None: it was the last), from the start of its page: the API server
        writes a list's metadata before its items. The object is left out and the
        list goes on; anything else (a server that ignores `limit`) is too_large."""
        try:
            with self.open(fn, limit=1, _continue=token, max_bytes=HEAD_BYTES + 2 * BUFFER_BYTES, **kw) as resp:
                head = resp.read(HEAD_BYTES, decode_content=False) if resp is not None else b""
        except KubeUnavailable:
            raise too_large from None
        meta = _LIST_META.search(head)
        if meta is None:
            raise too_large
        found = _CONTINUE.search(meta.group(1))
        after = objects.opaque(found.group(1).decode("ascii", "replace")) if found else None
        if found and after is None:
            raise too_large
        self.left_out += 1
        if self.left_out == 1:
            self.warn(f"pods: an object from the API server at {self.server} is over {size(MAX_RESPONSE_BYTES)} "
                      f"as JSON: left out (told once)")
        return after


def lines(resp: Any, max_line: int) -> Iterator[bytes]:
    """The lines of a streamed body (a watch's events), each as soon as it is
    complete; LineTooLong once one passes max_line bytes without its end."""
    pending = bytearray()
    while True:
        chunk = resp.read1(BUFFER_BYTES, decode_content=False)
        if not chunk:
            if pending:
                yield bytes(pending)
            return
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", start)) >= 0:
            if end - start > max_line:
                raise LineTooLong(max_line)
            yield bytes(pending[start:end])
            start = end + 1
        del pending[:start]
        if len(pending) > max_line:
            raise LineTooLong(max_line)


class LineTooLong(ValueError):
    def __init__(self, max_line: int) -> None:
        super().__init__(f"a line longer than {size(max_line)}")
