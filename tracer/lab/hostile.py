"""hostile: API servers that misbehave, for tests of netdrop's API client.

The lab's KubeAPI (api.py) answers as the Kubernetes API does; a Hostile
server answers as an API server should not, in one of MODES:

    drip          the answer (status, headers, body) one byte a second
    silent        reads the request and never answers
    flood         a 200 whose body never ends, as fast as the client reads
    random        random bytes instead of HTTP
    not-http      a line of another protocol, then nothing
    bad-json      a 200 whose body is not JSON
    huge-headers  a 200 with headers that never end (64 KiB each)
    gzip-bomb     a 200 "Content-Encoding: gzip" body that inflates to 1 GiB
    watch-drip    lists and reads answered well (no pods); a watch drips
    watch-flood   lists and reads answered well (no pods); a watch is one endless line

It listens on 127.0.0.1 only, and every connection ends when the server is
stopped, the client goes, or after MAX_SECONDS or MAX_BYTES, whichever is first.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from .api import write_kubeconfig

MODES = ("drip", "silent", "flood", "random", "not-http", "bad-json", "huge-headers", "gzip-bomb",
         "watch-drip", "watch-flood")
MAX_SECONDS = 300.0
MAX_BYTES = 4 << 30
CHUNK = 64 << 10
_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


def _gzip_bomb(inflated: int = 1 << 30) -> bytes:
    """A gzip stream of `inflated` zero bytes (about 1 MiB for 1 GiB)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    parts = [comp.compress(block) for _ in range(inflated // len(block))]
    return b"".join(parts) + comp.flush()


def _json_answer(obj: Any) -> bytes:
    body = json.dumps(obj).encode()
    return _OK + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


class Hostile:
    """A misbehaving API server on 127.0.0.1 (see the module's docstring)."""

    def __init__(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
        self.mode = mode
        self.requests: list[str] = []
        self._stopping = threading.Event()
        self._server: socketserver.ThreadingTCPServer | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._bomb = _gzip_bomb() if mode == "gzip-bomb" else b""

    def start(self) -> str:
        hostile = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn: socket.socket = self.request
                with hostile._lock:
                    hostile._conns.add(conn)
                try:
                    hostile._serve(conn)
                except OSError:
                    pass            # the client went: what a hostile server wants anyway
                finally:
                    with hostile._lock:
                        hostile._conns.discard(conn)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self.url

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig for this server at path (new, mode 0600)."""
        return write_kubeconfig(path, self.url, "hostile", context="hostile")

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):     # the client went first
                conn.shutdown(socket.SHUT_RDWR)

    # -- one connection --
    def _request(self, conn: socket.socket) -> str | None:
        """The request line of the next request (its head read and dropped); None when the client went."""
        head = b""
        conn.settimeout(MAX_SECONDS)
        while b"\r\n\r\n" not in head:
            data = conn.recv(CHUNK)
            if not data or len(head) > 1 << 20:
                return None
            head += data
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        self.requests.append(line)
        return line

    def _serve(self, conn: socket.socket) -> None:
        while not self._stopping.is_set():
            line = self._request(conn)
            if line is None:
                return
            watch = "watch=true" in line or "watch=True" in line
            mode = self.mode
            if mode.startswith("watch-"):
                if not watch:
                    conn.sendall(self._fine(line))
                    continue
                mode = mode[len("watch-"):]
            self._misbehave(conn, mode)
            return

    def _fine(self, line: str) -> bytes:
        """A well-formed answer without pods, for the watch-* modes' lists and reads."""
        path = line.split(" ")[1] if " " in line else "/"
        if path.startswith("/api/v1/nodes/"):
            name = path.split("?")[0].rsplit("/", 1)[1]
            return _json_answer({"kind": "Node", "apiVersion": "v1", "metadata": {"name": name}})
        return _json_answer({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []})

    def _misbehave(self, conn: socket.socket, mode: str) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        sent = 0

        def more() -> bool:
            return not self._stopping.is_set() and time.monotonic() < deadline and sent < MAX_BYTES

        if mode == "silent":
            self._stopping.wait(MAX_SECONDS)
        elif mode == "drip":
            answer = _OK + b"Transfer-Encoding: chunked\r\n\r\n" + b"10000\r\n" + b'{"items": [' + b" " * (1 << 20)
            while more() and sent < len(answer):
                conn.sendall(answer[sent:sent + 1])
                sent += 1
                self._stopping.wait(1.0)
        elif mode == "flood":
            conn.sendall(_OK + b"\r\n" + b'{"kind":"PodList","items":[')
            block = b'{"metadata":{"name":"p","namespace":"n"}},' * (CHUNK // 42)
            while more():
                conn.sendall(block)
                sent += len(block)
        elif mode == "random":
            while more():
                conn.sendall(os.urandom(CHUNK))
                sent += CHUNK
        elif mode == "not-http":
            conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
            self._stopping.wait(MAX_SECONDS)
        elif mode == "bad-json":
            body = b'{"kind": "PodList", "items'
            conn.sendall(_OK + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            self._stopping.wait(MAX_SECONDS)
        elif mode == "huge-headers":
            conn.sendall(_OK)
            header = b"X-Padding: " + b"a" * (CHUNK - 16) + b"\r\n"
            while more():
                conn.sendall(header)
                sent += len(header)
        elif mode == "gzip-bomb":
            conn.sendall(_OK + b"Content-Encoding: gzip\r\n" + f"Content-Length: {len(self._bomb)}\r\n\r\n".encode())
            conn.sendall(self._bomb)
            self._stopping.wait(MAX_SECONDS)

