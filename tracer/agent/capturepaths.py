"""capturepaths: the names of a capture's files on a node and in the files URL.

Namespaces and names come from the API server, written by whoever may create
NetdropCaptures, and reach the agent again in URLs any client sends: both are
untrusted. Only what Kubernetes itself allows becomes a path component here
(apimachinery/pkg/util/validation/validation.go: a namespace is a DNS label,
an object's name a DNS subdomain), so "." and "..", "/", NUL, upper case and
anything longer than the API server accepts never do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..sinks.capture import EVENTS_FILE, PCAP_FILE, SUMMARY_FILE

PREFIX = "/captures/"
# The files of a capture the agent serves: nothing else in its directory ever is.
SERVED: tuple[str, ...] = (SUMMARY_FILE, EVENTS_FILE, PCAP_FILE)
MAX_NAMESPACE = 63
MAX_NAME = 253

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?")


def valid_namespace(text: object) -> bool:
    return isinstance(text, str) and len(text) <= MAX_NAMESPACE and _LABEL.fullmatch(text) is not None


def valid_name(text: object) -> bool:
    """A DNS subdomain: it starts and ends alphanumeric, so it is never "." or ".."."""
    return isinstance(text, str) and len(text) <= MAX_NAME and _SUBDOMAIN.fullmatch(text) is not None


@dataclass(frozen=True)
class FilePath:
    """GET /captures/<namespace>/<name>/<file>, read."""

    namespace: str
    name: str
    file: str


def parse(path: str) -> FilePath | None:
    """The capture file a request path names, None if it names none (anything
    else, percent-escapes included: a valid name has none to escape)."""
    if not path.startswith(PREFIX) or len(path) > len(PREFIX) + MAX_NAMESPACE + MAX_NAME + 32:
        return None
    parts = path[len(PREFIX):].split("/")
    if len(parts) != 3:
        return None
    namespace, name, file = parts
    if not valid_namespace(namespace) or not valid_name(name) or file not in SERVED:
        return None
    return FilePath(namespace, name, file)
