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
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family

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
        with self._lock:
            if not self.closed:
                self._open.add(call)
        return not self.closed

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
