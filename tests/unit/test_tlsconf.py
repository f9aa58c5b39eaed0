"""The serving certificate: from files, read again when a renewed Secret changes them."""

import os
import socket
import ssl
import threading

import pytest

from tracer.errors import UserError
from tracer.tlsconf import from_files, make_certificate, self_signed


def write(tmp, name: str) -> tuple[str, str]:
    cert, key = make_certificate(name, ["127.0.0.1"])
    (tmp / "tls.crt").write_bytes(cert)
    (tmp / "tls.key").write_bytes(key)
    return str(tmp / "tls.crt"), str(tmp / "tls.key")


def served_name(ctx: ssl.SSLContext) -> str:
    """The common name a client sees in the certificate `ctx` serves."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def accept() -> None:
            conn, _ = listener.accept()
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                conn.close()

        t = threading.Thread(target=accept)
        t.start()
        client = ssl.create_default_context()
        client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection(listener.getsockname()) as raw, client.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
        t.join(5)
    from cryptography import x509

    return str(x509.load_der_x509_certificate(der).subject.rfc4514_string())


def test_a_renewed_certificate_is_served_without_a_restart(tmp_path):
    cert, key = write(tmp_path, "first")
    serving = from_files(cert, key)
    assert served_name(serving.context) == "CN=first"
    assert serving.reload_if_changed() is None
    write(tmp_path, "second")
    os.utime(cert, (1, 1))      # a Secret's update swaps the files: a new mtime
    assert serving.reload_if_changed() == f"TLS: loaded the renewed certificate {cert}"
    assert served_name(serving.context) == "CN=second"


def test_a_broken_renewal_keeps_the_loaded_certificate(tmp_path):
    cert, key = write(tmp_path, "first")
    serving = from_files(cert, key)
    (tmp_path / "tls.crt").write_text("not a certificate")
    os.utime(cert, (2, 2))
    said = serving.reload_if_changed()
    assert said is not None and "the loaded certificate stays" in said
    assert served_name(serving.context) == "CN=first"


def test_a_renewal_caught_between_its_two_files_keeps_serving_the_old_pair(tmp_path):
    """A Secret's certificate renewed before its key: the new certificate does not match the
    loaded key. The context in use must still hold the old pair and serve it."""
    cert, key = write(tmp_path, "first")
    serving = from_files(cert, key)
    in_use = serving.context
    (tmp_path / "tls.crt").write_bytes(make_certificate("second", [])[0])      # the key not yet renewed
    os.utime(cert, (3, 3))
    said = serving.reload_if_changed()
    assert said is not None and "the loaded certificate stays" in said
    assert serving.context is in_use and served_name(in_use) == "CN=first"


def test_renegotiation_is_refused():
    assert self_signed("node-a", []).context.options & ssl.OP_NO_RENEGOTIATION


def test_unreadable_or_mismatched_files_are_one_line(tmp_path):
    cert, _ = write(tmp_path, "a")
    with pytest.raises(UserError, match="cannot read the TLS certificate or key"):
        from_files(cert, str(tmp_path / "missing.key"))
    other = make_certificate("b", [])[1]
    (tmp_path / "other.key").write_bytes(other)
    with pytest.raises(UserError, match="cannot use the TLS certificate"):
        from_files(cert, str(tmp_path / "other.key"))


def test_a_certificate_made_at_start_names_the_node():
    assert served_name(self_signed("node-a", ["127.0.0.1"]).context) == "CN=node-a"
