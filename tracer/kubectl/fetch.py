"""fetch: a capture's file from a node's agent, to the user's machine.

The agent's report (written with the agent's own credentials, which RBAC gives
to agents alone: docs/captures.md) names where its files are (`endpoint`) and
the SHA-256 of its serving certificate's DER (`certSHA256`). That hash is the
whole of the trust: no CA is asked (the agent's certificate is usually
self-signed, made at its start), and a server presenting any other
certificate is refused before the user's token is sent. Plain http only when
the report names no certificate and the caller allows it (an agent on
loopback, the lab).

The agent checks the user's bearer token by TokenReview, then asks the API
server whether that user may `get` the capture's `files` subresource. A
kubeconfig that authenticates with client certificates has no token to give:
that is said in one line (token_of, NO_TOKEN).

Bounded: connect and each read within `timeout`, the whole within
`max_seconds`, at most `max_bytes` (a Content-Length above it is refused
before any byte is read). The file is created new (O_EXCL, O_NOFOLLOW: never
over an existing file, never through a link), mode 0600 (captures name the
node's pods and addresses), and removed again if the download fails.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import os
import re
import socket
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..agent.capturepaths import PREFIX, SERVED, valid_name, valid_namespace
from ..errors import UserError
from ..trust import create_new

PIECE = 64 * 1024
TIMEOUT = 30.0
MAX_SECONDS = 15 * 60.0
NO_TOKEN = ("the kubeconfig's user has no bearer token (client certificates?): the netdrop agents check users "
            "by TokenReview, which takes tokens only; use a context with a token (kubectl create token, "
            "or an exec credential plugin)")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class FetchError(UserError):
    """A file that could not be fetched; str() is one line naming the node's endpoint and why."""


def token_of(configuration: Any) -> str | None:
    """The bearer token of a kubernetes client Configuration (what its kubeconfig
    loader put in api_key, after the refresh hook an exec plugin sets); None if
    the user authenticates otherwise (client certificates)."""
    hook = getattr(configuration, "refresh_api_key_hook", None)
    if hook is not None:
        hook(configuration)
    keys = getattr(configuration, "api_key", None) or {}
    value = keys.get("authorization") if isinstance(keys, dict) else None
    if not isinstance(value, str):
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _text(data: bytes) -> str:
    """An agent's error answer as one short printable line."""
    text = data.decode("utf-8", "replace").strip()
    return "".join(c if c.isprintable() else " " for c in text)[:200]


def fetch(endpoint_url: str, cert_sha256: str, token: str | None, namespace: str, name: str, filename: str,
          dest: Path, max_bytes: int, *, timeout: float = TIMEOUT, max_seconds: float = MAX_SECONDS,
          allow_http: bool = False) -> int:
    """GET <endpoint>/captures/<namespace>/<name>/<filename> into the new file
    dest; the bytes written. FetchError (one line) otherwise; nothing is left at dest."""
    if not valid_namespace(namespace) or not valid_name(name) or filename not in SERVED:
        raise FetchError(f"{namespace[:63]}/{name[:63]}/{filename[:32]}: not a capture's file")
    where = endpoint_url[:200]
    if not token:
        raise FetchError(NO_TOKEN)
    try:
        url = urlsplit(endpoint_url)
        host, port = url.hostname, url.port
    except ValueError:
        raise FetchError(f"{where!r} is not an agent's endpoint (https://ADDRESS:PORT)") from None
    if url.scheme not in ("https", "http") or not host or url.path not in ("", "/") or url.query \
            or url.username is not None:
        raise FetchError(f"{where!r} is not an agent's endpoint (https://ADDRESS:PORT)")
    pin = cert_sha256.lower()
    if pin:
        if url.scheme != "https" or not _SHA256.fullmatch(pin):
            raise FetchError(f"{where}: the report's certSHA256 {cert_sha256[:80]!r} is not an https "
                             "endpoint's SHA-256")
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, timeout=timeout,
                                                                       context=_pinned_context())
    elif url.scheme == "http" and allow_http:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    else:
        raise FetchError(f"{where}: the report names no certificate to trust; refused (plain http is not "
                         "allowed for this endpoint)")
    path = f"{PREFIX}{namespace}/{name}/{filename}"
    deadline = time.monotonic() + max_seconds
    try:
        conn.connect()
        if pin:
            _check_pin(conn, pin, where)
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"})
        response = conn.getresponse()
        if response.status != 200:
            raise FetchError(f"{where}{path}: {response.status} {_text(response.read(512))}")
        length = response.getheader("Content-Length") or ""
        if not (length.isascii() and length.isdigit()):
            raise FetchError(f"{where}{path}: the agent did not say the file's size")
        size = int(length)
        if size > max_bytes:
            raise FetchError(f"{where}{path}: {size} bytes, more than the {max_bytes} allowed")
        return _save(response, size, dest, deadline, f"{where}{path}")
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(f"{where}{path}: {_why(exc)}") from None
    finally:
        conn.close()


def _pinned_context() -> ssl.SSLContext:
    # No CA and no name: the certificate is checked by its hash (_check_pin), before anything is sent.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _check_pin(conn: http.client.HTTPConnection, pin: str, where: str) -> None:
    sock = conn.sock
    der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
    got = hashlib.sha256(der).hexdigest() if der else ""
    if not hmac.compare_digest(got, pin):
        raise FetchError(f"{where}: the agent's certificate (SHA-256 {got[:16] or 'none'}...) is not the one its "
                         f"report names ({pin[:16]}...); refused, the token was not sent")


def _save(response: http.client.HTTPResponse, size: int, dest: Path, deadline: float, what: str) -> int:
    try:
        fd = create_new(dest)
    except OSError as exc:
        raise FetchError(f"cannot create {dest}: {_why(exc)}") from None
    got = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while got < size:
                if time.monotonic() > deadline:
                    raise FetchError(f"{what}: not fetched within the time allowed ({got} of {size} bytes)")
                data = response.read(min(PIECE, size - got))
                if not data:
                    raise FetchError(f"{what}: the agent ended the file after {got} of {size} bytes")
                out.write(data)
                got += len(data)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return got


def _why(exc: BaseException) -> str:
    if isinstance(exc, FileExistsError):
        return "it exists already (never overwritten)"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "the agent did not answer in time"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"not an HTTP answer ({type(exc).__name__})"
