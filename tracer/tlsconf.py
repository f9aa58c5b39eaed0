"""tlsconf: the agent's serving certificate, from files or made at start.

With authentication on, scrapers send bearer tokens: in clear text on a node's
network any pod that can sniff (a hostNetwork pod, a NET_ADMIN one on a
bridge) could take them, so authentication always comes with TLS.

From files (--tls-cert-file/--tls-key-file: a Secret, e.g. cert-manager's):
read again when they change, as a Secret's files do when it is renewed, so a
renewal needs no restart. Made at start: a self-signed certificate (ECDSA
P-256, a year) whose key never touches a file system: ssl takes PEM only from
a path, so it is given an anonymous memory file (memfd_create(2)) through
/proc/self/fd, which only this process (and root) can open.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

RELOAD_CHECK_SECONDS = 60.0


def _context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # Every handshake runs on the server's one event-loop thread: a client
    # renegotiating again and again inside its deadline would keep it busy.
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    return ctx


@dataclass
class Serving:
    """The SSL context the server uses, and the files it came from (None: made at start)."""

    context: ssl.SSLContext
    cert: Path | None = None
    key: Path | None = None
    _stamp: tuple[float, float] | None = None
    sha256: str = ""        # of the certificate served (DER): what a capture report names (docs/captures.md)

    def reload_if_changed(self) -> str | None:
        """Load the files again if either changed (a renewed Secret) into a new
        `context`, which the server gives new connections. Returns a line to log
        when something happened."""
        if self.cert is None or self.key is None:
            return None
        try:
            stamp = (self.cert.stat().st_mtime, self.key.stat().st_mtime)
        except OSError as exc:
            return f"TLS: cannot look at {self.cert} / {self.key}: {exc.strerror}; the loaded certificate stays"
        if stamp == self._stamp:
            return None
        # Into a new context, swapped in whole: loading into the one in use would
        # drop its key as soon as a certificate that does not match it is read (a
        # Secret caught between its two files), and connections being set up read it.
        fresh = _context()
        try:
            fresh.load_cert_chain(self.cert, self.key)
        except OSError as exc:      # ssl.SSLError included
            return f"TLS: cannot load the changed {self.cert} / {self.key}: {exc}; the loaded certificate stays"
        self.context, self._stamp, self.sha256 = fresh, stamp, _fingerprint(self.cert)
        return f"TLS: loaded the renewed certificate {self.cert}"


def from_files(cert: str, key: str) -> Serving:
    ctx = _context()
    cert_path, key_path = Path(cert).absolute(), Path(key).absolute()
    try:
        stamp = (cert_path.stat().st_mtime, key_path.stat().st_mtime)
        ctx.load_cert_chain(cert_path, key_path)
    except ssl.SSLError as exc:     # an OSError too: asked first
        raise UserError(f"cannot use the TLS certificate {cert} with key {key}: {exc.reason or exc}") from None
    except OSError as exc:
        raise UserError(f"cannot read the TLS certificate or key ({exc.filename}): {exc.strerror}") from None
    return Serving(ctx, cert_path, key_path, stamp, _fingerprint(cert_path))


def self_signed(node: str, addresses: list[str]) -> Serving:
    """A certificate for this node made now (the scraper checks the token's
    exchange, not who we are: Prometheus scrapes it with insecure_skip_verify,
    as it does the kubelet's self-signed one)."""
    ctx = _context()
    cert, key = make_certificate(node, addresses)
    load_pem(ctx, cert, key)
    return Serving(ctx, sha256=fingerprint(cert))


def fingerprint(pem: bytes) -> str:
    """SHA-256 of the first certificate of a PEM text, as hex of its DER ("" if there is none)."""
    import hashlib

    start = pem.find(b"-----BEGIN CERTIFICATE-----")
    end = pem.find(b"-----END CERTIFICATE-----", start)
    if start < 0 or end < 0:
        return ""
    block = pem[start:end + len(b"-----END CERTIFICATE-----")].decode("ascii", "replace")
    try:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(block)).hexdigest()
    except ValueError:
        return ""


def _fingerprint(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return fingerprint(f.read(1 << 20))
    except OSError:
        return ""


def load_pem(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """Certificate and key from memory into ctx, through a memfd (ssl reads PEM only
    from a path; no file system ever holds the key)."""
    fd = os.memfd_create("netdrop-tls", os.MFD_CLOEXEC)
    try:
        os.write(fd, cert_pem + key_pem)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def make_certificate(common_name: str, addresses: list[str], *, issuer_pem: tuple[bytes, bytes] | None = None,
                     ca: bool = False, days: int = 365) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for `common_name`, its addresses as SANs; signed
    by issuer_pem (certificate, key) or by itself. Used by the lab's API server too."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64] or "netdrop")])
    if issuer_pem is not None:
        issuer_cert = x509.load_pem_x509_certificate(issuer_pem[0])
        issuer_key = serialization.load_pem_private_key(issuer_pem[1], password=None)
        issuer_name = issuer_cert.subject
    else:
        issuer_key, issuer_name = key, name
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = []
    for a in addresses:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(a)))
        except ValueError:
            sans.append(x509.DNSName(a))
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
