"""httpd: the agent's HTTP/1.1 server, made to hold against hostile clients.

One asyncio event loop, in one thread beside the agent's main loop, serves
every connection; h11 (python-hyper's sans-IO HTTP/1.1) parses. What one
client can cost is bounded:

- time: a request has a deadline from its first byte to its response written
  (a connection's first request: from the accept, a TLS handshake included).
  It is not per read: a client sending one byte a second is cut at the
  deadline. Between the requests of a kept-alive connection: the idle timeout.
- memory: headers of at most `header_bytes` in all and `headers` fields (431,
  then closed); no request body (400, closed); only GET and HEAD (405,
  closed); reads of READ_SIZE bytes; a response is written in WRITE_SIZE
  pieces, each drained before the next.
- connections: at most `connections` at once. One more, and the connection
  that has waited longest for its request (idle, or slow to send it) is
  dropped rather than the new one refused: slow clients cannot lock out the
  kubelet's probe, whose request comes whole at once. An idle connection is
  a coroutine and its buffers, no thread.
- threads: what may block (the Gate asking the API server, a read of the
  kernel's maps) runs in small pools of daemon threads, the probes' apart:
  slow gate checks or renders cannot hold /healthz, nor a stuck one the
  process's exit.

Every path but the ungated routes' (the probes: they say nothing about the
node) is first put to the Gate (access.py), under the request's deadline.
"""

from __future__ import annotations

import asyncio
import gzip
import queue
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Generic, Protocol, TypeVar

import h11

from .access import Gate

READ_SIZE = 4096
WRITE_SIZE = 65536
LINGER_SECONDS = 1.0    # after a response that ends the connection: the client's last bytes read and dropped
LINGER_READS = 16
GZIP_LEVEL = 1          # a scrape of 10,000 series: 3.6 MB -> 140 kB in 6 ms (level 6: 130 kB in 20 ms)
TEXT = "text/plain; charset=utf-8"
K = TypeVar("K")


@dataclass(frozen=True)
class Limits:
    request_seconds: float = 5.0    # first byte (or accept) -> response written
    # Between requests on a kept-alive connection: above the 15-60 s a Prometheus
    # scrapes at, so its connection is kept; idle ones are the first dropped anyway.
    idle_seconds: float = 90.0
    connections: int = 128
    header_bytes: int = 16384       # request line and headers: a bearer token is ~1-2 KiB
    headers: int = 64
    gate_threads: int = 4
    # One thread answers gated paths (/metrics): scrapers queue for it, and the
    # body is shared anyway. A render's big buffers then stay in one malloc
    # arena: with four threads, each took its own peak (resident memory crept
    # 15 MiB over 4 minutes of scrapes of 10,000 series before it settled).
    answer_threads: int = 1
    probe_threads: int = 2


@dataclass(frozen=True)
class Request:
    method: str                                 # GET or HEAD
    path: str                                   # the target's path, the query left off
    headers: tuple[tuple[str, str], ...]        # names in lower case, values as sent (latin-1)

    def header(self, name: str) -> str | None:
        """The value of the first field of that name (lower case), None if none was sent."""
        return next((v for n, v in self.headers if n == name), None)


class Streamed(Protocol):
    """A body too big to hold (a capture's file): its size, then its bytes written
    by send() piece by piece, each drained, under deadlines of its own; closed after."""

    size: int

    async def send(self, write: Callable[[bytes], None], drain: Callable[[], Awaitable[None]]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()
    stream: Streamed | None = None      # instead of body


@dataclass(frozen=True)
class Route:
    answer: Callable[[Request], Response]       # may block: called in a worker thread
    gated: bool = True                          # False: a probe, served without asking the Gate


class Server:
    """The HTTP server: bound when made (a port in use fails at once), serving from start() to close()."""

    def __init__(self, host: str, port: int, routes: Mapping[str, Route], gate: Gate,
                 ssl_context: ssl.SSLContext | None = None, limits: Limits = Limits()) -> None:
        self.routes = dict(routes)
        self.gate = gate
        self.ssl = ssl_context
        self.limits = limits
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((host, port))
            self._sock.listen(64)
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise
        self.port: int = self._sock.getsockname()[1]
        self._gates = _Workers("netdrop-http-gate", limits.gate_threads)
        self._answers = _Workers("netdrop-http", limits.answer_threads)
        self._probes = _Workers("netdrop-http-probe", limits.probe_threads)
        self._conns: dict[_Conn, None] = {}         # every connection, oldest first
        self._waiting: dict[_Conn, None] = {}       # those waiting for a request, longest first
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="netdrop-http-loop", daemon=True)

    def start(self) -> None:
        for pool in (self._gates, self._answers, self._probes):
            pool.start()
        self._thread.start()
        self._ready.wait(5)

    def close(self) -> None:
        """Stop listening, drop every connection; returns within about half a second. Again: nothing."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self._thread.is_alive():
            with suppress(RuntimeError):        # the loop has just closed: the server ended on its own
                loop.call_soon_threadsafe(stop.set)
            self._thread.join(0.5)
        self._sock.close()
        for pool in (self._gates, self._answers, self._probes):
            pool.stop()

    @property
    def connections(self) -> int:
        return len(self._conns)

    # ------------------------------------------------------------ the loop

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main(loop))
        finally:
            loop.close()

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._connection, sock=self._sock, limit=4 * READ_SIZE)
        self._loop = loop
        self._ready.set()
        await self._stop.wait()
        server.close()
        tasks = [c.task for c in self._conns]
        for c in list(self._conns):
            self._drop(c)
        if tasks:
            await asyncio.wait(tasks, timeout=0.2)

    def _admit(self, conn: _Conn) -> None:
        if len(self._conns) >= self.limits.connections:
            # The longest waiting for its request; if every one is being answered, the oldest.
            victim = next(iter(self._waiting), None) or next(iter(self._conns))
            self._drop(victim)
        self._conns[conn] = None
        self._waiting[conn] = None

    def _drop(self, conn: _Conn) -> None:
        self._conns.pop(conn, None)
        self._waiting.pop(conn, None)
        conn.writer.transport.abort()
        conn.task.cancel()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        conn = _Conn(task, writer)
        self._admit(conn)
        # drain() then waits until everything written is in the kernel's buffer: a
        # connection aborted after its response has lost nothing of it.
        writer.transport.set_write_buffer_limits(0)
        stream = _Plain(reader, writer) if self.ssl is None else _Tls(reader, writer, self.ssl)
        try:
            if await self._converse(conn, stream, loop.time() + self.limits.request_seconds):
                self._waiting[conn] = None
                await _close(stream)
        except (TimeoutError, OSError, EOFError, ssl.SSLError, h11.ProtocolError):
            pass                                    # cut at its deadline, or the client went
        finally:
            self._conns.pop(conn, None)
            self._waiting.pop(conn, None)
            conn.writer.transport.abort()

    async def _converse(self, conn: _Conn, stream: _Plain, deadline: float) -> bool:
        """Requests answered until the client goes, its deadline or idle timeout
        passes, or a response ends the connection (True: then close it gently)."""
        loop = asyncio.get_running_loop()
        limits = self.limits
        async with asyncio.timeout_at(deadline):
            await stream.handshake()
        h = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.header_bytes)
        while True:
            async with asyncio.timeout_at(deadline) as limit:
                try:
                    request = await _receive(h, stream, limits)
                except _Refused as refused:
                    if h.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
                        return False
                    await _send(h, stream, refused.response, head=refused.head, close=True)
                    return True
                if request is None:
                    return False
                self._waiting.pop(conn, None)       # being answered: not a waiting one to drop
                response = await self._respond(request)
                try:
                    await _send(h, stream, response, head=request.method == "HEAD", close=False, limit=limit)
                finally:
                    if response.stream is not None:
                        response.stream.close()
            if h.our_state is not h11.DONE or h.their_state is not h11.DONE:
                return True                         # the client said Connection: close, or HTTP/1.0
            h.start_next_cycle()
            self._waiting[conn] = None
            if not h.trailing_data[0]:              # keep-alive: wait for the next request's first byte
                async with asyncio.timeout(limits.idle_seconds):
                    data = await stream.read()
                if not data:
                    return False
                h.receive_data(data)
            self._waiting.pop(conn, None)           # its turn in the drop order starts anew
            self._waiting[conn] = None
            deadline = loop.time() + limits.request_seconds

    async def _respond(self, request: Request) -> Response:
        # "/captures/" serves every path below it (its route reads the rest).
        route = self.routes.get(request.path) or self.routes.get(request.path[:request.path.find("/", 1) + 1])
        if route is None or route.gated:
            auth = [v for n, v in request.headers if n == "authorization"]
            if len(auth) > 1:
                return Response(400, b"more than one Authorization header\n")
            authorization = auth[0] if auth else None
            try:
                # What the gate knows already is answered here, never behind reviews in flight.
                verdict = self.gate.cached(request.path, authorization)
                if verdict is None:
                    verdict = await _run(self._gates, self.gate.ask, request.path, authorization)
            except Busy:
                return Response(503, b"too many requests waiting for their token's review; try again\n")
            # The Gate's own failures are its to say (503 with why); anything else still answers.
            except Exception:  # noqa: BLE001
                return Response(503, b"cannot check access\n")
            if not verdict.allowed:
                extra = (("WWW-Authenticate", 'Bearer realm="netdrop"'),) if verdict.status == 401 else ()
                return Response(verdict.status, f"{verdict.why}\n".encode(errors="replace"), headers=extra)
        if route is None:
            paths = ", ".join(sorted(self.routes))
            return Response(404, f"not found; served: {paths}\n".encode())
        try:
            return await _run(self._answers if route.gated else self._probes, route.answer, request)
        except Busy:
            return Response(503, b"busy; try again\n")
        except Exception:  # noqa: BLE001 - a route's bug: one answer fails, the server goes on
            return Response(500, b"internal error\n")


@dataclass(eq=False)
class _Conn:
    task: asyncio.Task[None]
    writer: asyncio.StreamWriter


class _Refused(Exception):
    """A request answered with an error and the connection closed."""

    def __init__(self, status: int, why: str, headers: tuple[tuple[str, str], ...] = (), head: bool = False) -> None:
        super().__init__(why)
        self.response = Response(status, f"{why}\n".encode(), headers=headers)
        self.head = head


async def _receive(h: h11.Connection, stream: _Plain, limits: Limits) -> Request | None:
    """The next request, read whole; None when the client closed between requests."""
    try:
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                h.receive_data(await stream.read())         # b"": the client closed
            elif isinstance(event, h11.Request):
                break
            else:
                return None                          # ConnectionClosed
        if len(event.headers) > limits.headers:
            raise _Refused(431, f"more than {limits.headers} header fields")
        method = event.method.decode("ascii", "replace")
        if method not in ("GET", "HEAD"):
            raise _Refused(405, f"{method} is not served: GET or HEAD", (("Allow", "GET, HEAD"),))
        # h11 frames the body from the headers: none means the message has ended already.
        if not isinstance(h.next_event(), h11.EndOfMessage):
            raise _Refused(400, "a request body is not accepted", head=method == "HEAD")
    except h11.RemoteProtocolError as exc:
        status = exc.error_status_hint
        raise _Refused(status, "request headers too large" if status == 431 else "malformed request") from None
    target = event.target.decode("ascii", "replace")
    if not target.startswith("/"):
        raise _Refused(400, "the request target must be a path")
    headers = tuple((n.decode("ascii", "replace"), v.decode("latin-1")) for n, v in event.headers)
    return Request(method, target.split("?", 1)[0], headers)


async def _send(h: h11.Connection, stream: _Plain, response: Response, head: bool,
                close: bool, limit: asyncio.Timeout | None = None) -> None:
    body = response.body
    size = response.stream.size if response.stream is not None else len(body)
    headers = [("Content-Type", response.content_type), ("Content-Length", str(size)),
               ("Date", formatdate(usegmt=True)), *response.headers]
    if close:
        headers.append(("Connection", "close"))
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = ""
    stream.write(h.send(h11.Response(status_code=response.status, headers=headers, reason=reason)) or b"")
    await stream.drain()
    for at in range(0, 0 if head else len(body), WRITE_SIZE):
        stream.write(h.send(h11.Data(data=body[at:at + WRITE_SIZE])) or b"")
        await stream.drain()
    if response.stream is not None and not head:
        if limit is not None:
            limit.reschedule(None)          # the request's deadline is for its head; each piece has its own
        await response.stream.send(lambda data: stream.write(h.send(h11.Data(data=data)) or b""), stream.drain)
    stream.write(h.send(h11.EndOfMessage()) or b"")
    await stream.drain()


async def _close(stream: _Plain) -> None:
    """End a connection whose response is written, without losing it: closed at
    once, a socket with unread bytes (the rest of a refused request) sends a
    reset, which may discard the response before the client reads it. So our
    side is shut (after TLS's close_notify) and what still comes is read and
    dropped, briefly (RFC 9112 9.6)."""
    try:
        async with asyncio.timeout(LINGER_SECONDS):
            await stream.shut()
            for _ in range(LINGER_READS):
                if not await stream.reader.read(READ_SIZE):
                    break
    except (TimeoutError, OSError, ssl.SSLError):
        pass


class _Plain:
    """A connection's bytes as they come and go."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def handshake(self) -> None:
        return None

    async def read(self) -> bytes:
        """What the client sent next, at most READ_SIZE bytes; b"" when it has closed."""
        return await self.reader.read(READ_SIZE)

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    async def shut(self) -> None:
        """No more from us: the client sees the end of the connection."""
        self.writer.write_eof()
        await self.writer.drain()


class _Tls(_Plain):
    """TLS done here on memory BIOs (ssl.SSLObject), not by asyncio's TLS
    transport, which keeps a 256 KiB read buffer for every connection and,
    on close, waits up to 30 s for the client's close_notify (a flood of
    refused requests held 150 MiB that way). Here a connection's TLS state
    holds at most what READ_SIZE reads bring, the handshake runs under the
    request's deadline like any read, and closing sends our close_notify
    without waiting for the client's, as Go's servers do."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext) -> None:
        super().__init__(reader, writer)
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._in, self._out, server_side=True)

    async def _more(self) -> bool:
        """What we owe the client sent, then the client's next bytes taken in; False at its end."""
        await self.drain()
        data = await self.reader.read(READ_SIZE)
        if not data:
            return False
        self._in.write(data)
        return True

    async def handshake(self) -> None:
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if not await self._more():
                    raise EOFError("the client left during the TLS handshake") from None
        await self.drain()

    async def read(self) -> bytes:
        while True:
            try:
                return self._tls.read(READ_SIZE)
            except ssl.SSLWantReadError:
                if not await self._more():
                    return b""
            except ssl.SSLZeroReturnError:      # the client's close_notify
                return b""

    def write(self, data: bytes) -> None:
        self._tls.write(data)
        self.writer.write(self._out.read())

    async def drain(self) -> None:
        if self._out.pending:
            self.writer.write(self._out.read())
        await self.writer.drain()

    async def shut(self) -> None:
        with suppress(ssl.SSLError):
            self._tls.unwrap()          # our close_notify; the client's is not waited for
        self.writer.write(self._out.read())
        await super().shut()


T = TypeVar("T")


async def _run(pool: _Workers, fn: Callable[..., T], *args: Any) -> T:
    """fn(*args) in one of the pool's threads; cancelled (the deadline) before it starts: never run."""
    return await asyncio.wrap_future(pool.submit(fn, *args))


class Busy(Exception):
    """More calls wait for a pool's threads than it keeps."""


WAITING_CALLS = 64      # per pool: a request whose connection went stays queued until a thread takes it


class _Workers:
    """A few daemon threads taking calls from a bounded queue. Not concurrent.futures'
    pool: the interpreter joins its threads at exit, and one call blocked
    (a gate asking an API server that does not answer) would hold the exit.
    Past WAITING_CALLS waiting, submit() refuses (Busy): with every thread
    blocked, requests that time out or whose client left would otherwise pile up."""

    def __init__(self, name: str, threads: int) -> None:
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = \
            queue.SimpleQueue()
        self._room = threading.BoundedSemaphore(WAITING_CALLS)
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(threads)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        if not self._room.acquire(blocking=False):
            raise Busy
        done: Future[T] = Future()
        self._queue.put((done, fn, args))
        return done

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            self._room.release()
            done, fn, args = item
            if not done.set_running_or_notify_cancel():
                continue
            try:
                done.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                done.set_exception(exc)


# ------------------------------------------------------------ shared bodies

class Body:
    """A rendered body, and its gzip made once, when first asked for."""

    def __init__(self, plain: bytes) -> None:
        self.plain = plain
        self._gzip: bytes | None = None
        self._lock = threading.Lock()

    def gzipped(self) -> bytes:
        with self._lock:
            if self._gzip is None:
                self._gzip = gzip.compress(self.plain, compresslevel=GZIP_LEVEL, mtime=0)
            return self._gzip


@dataclass
class _Slot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    body: Body | None = None
    made: float = float("-inf")


class Recent(Generic[K]):
    """The last body made for a key, made again at most once per max_age
    seconds; whoever asks while it is being made waits for that one. Two
    Prometheus replicas, or eight scrapers, cost one render a second. Keys
    must be few (a format, not anything a client may spell)."""

    def __init__(self, make: Callable[[K], bytes], max_age: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._make = make
        self.max_age = max_age
        self._clock = clock
        self._slots: dict[K, _Slot] = {}
        self._lock = threading.Lock()

    def get(self, key: K) -> Body:
        with self._lock:
            slot = self._slots.setdefault(key, _Slot())
        with slot.lock:
            if slot.body is None or self._clock() - slot.made >= self.max_age:
                started = self._clock()     # its age counts from the read, not from the end of the render
                slot.body = Body(self._make(key))
                slot.made = started
            return slot.body


def weighted(field: str | None) -> Iterator[tuple[str, float]]:
    """Each item of an Accept-like field (RFC 9110 12.4.2) with its q: (name in lower
    case, weight); a q that is not a number weighs 0."""
    for item in (field or "").split(","):
        name, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for p in params:
            key, _, value = p.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        yield name.lower(), q


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an Accept-Encoding field allows gzip (RFC 9110 12.5.3): gzip or
    x-gzip with a q above 0, or * when gzip is not named."""
    named: float | None = None
    star: float | None = None
    for coding, q in weighted(accept_encoding):
        if coding in ("gzip", "x-gzip"):
            named = max(named or 0.0, q)
        elif coding == "*":
            star = q
    got = named if named is not None else star
    return got is not None and got > 0      # NaN is not above 0
