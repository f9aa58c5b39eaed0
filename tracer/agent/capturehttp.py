"""capturehttp: GET /captures/<namespace>/<name>/<file>, a capture's file from this node's store.

Who may ask was decided before the route is called (access.py: TokenReview,
then a SubjectAccessReview for the capture's `files` subresource). Here only
the three capture files of a capture the store made are served
(capturefiles.CaptureStore.open_file); anything else is one 404, whether the
name is malformed, the capture unknown or the file missing, so the answer
says nothing of what the node holds beyond what the grant already covers.

A file may be hundreds of MiB: it is sent as it is read, WRITE_SIZE bytes at
a time (httpd's pieces), each read in a reader thread and each written and
drained within PIECE_SECONDS, so memory stays a piece per download and a
client that stops reading is cut. The size is the file's when opened: a file
still growing (a capture being recorded) is sent up to that size, and one cut
shorter meanwhile ends the connection before its Content-Length, which the
client sees as a failed download, never as a shorter file.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import BinaryIO

from . import capturepaths, httpd
from .capturefiles import CaptureStore

PIECE_SECONDS = 10.0     # a piece (64 KiB) read, written and drained within this: at least 6.4 KiB/s
READER_THREADS = 2
CONTENT_TYPES = {"summary.json": "application/json", "events.jsonl": "application/x-ndjson",
                 "drops.pcapng": "application/octet-stream"}
NOT_FOUND = httpd.Response(404, b"no such capture file on this node\n")


class FileBody:
    """A capture file sent piece by piece (httpd.Streamed)."""

    def __init__(self, file: BinaryIO, size: int, readers: httpd._Workers, piece_seconds: float) -> None:
        self._file = file
        self.size = size
        self._readers = readers
        self._piece_seconds = piece_seconds

    async def send(self, write: Callable[[bytes], None], drain: Callable[[], Awaitable[None]]) -> None:
        left = self.size
        while left > 0:
            async with asyncio.timeout(self._piece_seconds):
                data = await asyncio.wrap_future(self._readers.submit(self._file.read, min(left, httpd.WRITE_SIZE)))
                if not data:
                    raise EOFError("the file is shorter than when it was opened")
                write(data)
                await drain()
            left -= len(data)

    def close(self) -> None:
        # A read still running in a reader (its piece's deadline passed) holds the
        # buffered file's lock: the close waits for it, never pulls the descriptor away.
        self._file.close()


class FilesRoute:
    """The route's answer; `store` is set once the agent keeps captures (None: it keeps none)."""

    def __init__(self, store: CaptureStore | None = None, piece_seconds: float = PIECE_SECONDS) -> None:
        self.store = store
        self.piece_seconds = piece_seconds
        self._readers = httpd._Workers("netdrop-http-files", READER_THREADS)
        self._started = False           # the readers start with the first file served
        self._lock = threading.Lock()

    def answer(self, request: httpd.Request) -> httpd.Response:
        wanted = capturepaths.parse(request.path)
        store = self.store
        if wanted is None or store is None:
            return NOT_FOUND
        opened = store.open_file(wanted.namespace, wanted.name, wanted.file)
        if opened is None:
            return NOT_FOUND
        file, size = opened
        with self._lock:
            if not self._started:
                self._readers.start()
                self._started = True
        return httpd.Response(200, content_type=CONTENT_TYPES.get(wanted.file, "application/octet-stream"),
                              headers=(("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")),
                              stream=FileBody(file, size, self._readers, self.piece_seconds))

    def close(self) -> None:
        with self._lock:
            if self._started:
                self._readers.stop()
