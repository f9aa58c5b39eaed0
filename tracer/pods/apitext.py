"""apitext: text from the Kubernetes API, made safe once, where it enters netdrop.

Whoever may create a pod writes most of what netdrop reads about it: its
labels, its container fields, and its owner references, of which the API
server checks little more than that the name is not empty
(k8s.io/apimachinery/pkg/api/validation/objectmeta.go,
validateOwnerReference). That text becomes /metrics labels, console lines,
summaries, and from there alert text and terminals: an ESC or a U+202E in it
drives or reorders what people read, a 1.4 MB name makes every scrape
megabytes, a lone surrogate (JSON's "\\ud800") cannot be encoded at all.
Escaping at each sink would leave one forgotten, so kube.pod_info,
service_info and the node readers pass every value through these functions
and the rest of netdrop only ever sees their results:

- a value Kubernetes itself accepts for that field (a DNS-1123 name, a label
  key or value, ...: the rules of k8s.io/apimachinery/pkg/util/validation)
  is kept as it is, the name people see in kubectl;
- any other value keeps a readable prefix in which every control, format
  (bidi overrides and isolates, zero-width characters), line or paragraph
  separator, surrogate, private-use and unassigned character is written as
  an escape (\\x1b, \\u202e), then `~` and 16 hex digits of the SHA-256 of
  the whole value. It is never longer than the field's own limit (in
  characters and in UTF-8 bytes); two values never give the same text (short
  of a 64-bit hash collision), and never the text of a value Kubernetes
  accepts, which cannot contain `~`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import unicodedata
from dataclasses import dataclass

HASH_DIGITS = 16
MARK = "~"


@dataclass(frozen=True)
class Rule:
    """What Kubernetes accepts in a field: a pattern (ASCII only) and a length limit."""

    pattern: re.Pattern[str]
    limit: int

    def accepts(self, text: str) -> bool:
        return len(text) <= self.limit and self.pattern.fullmatch(text) is not None


_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_QUALIFIED = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
# IsDNS1123Label, IsDNS1123Subdomain (namespaces; pods, nodes, owners' names).
DNS_LABEL = Rule(re.compile(_LABEL), 63)
DNS_SUBDOMAIN = Rule(re.compile(rf"{_LABEL}(?:\.{_LABEL})*"), 253)
# IsQualifiedName (label keys): an optional DNS subdomain prefix of at most 253 and `/`,
# then a name of at most 63. IsValidLabelValue: empty, or such a name.
LABEL_KEY = Rule(re.compile(rf"(?:(?=[^/]{{1,253}}/){_LABEL}(?:\.{_LABEL})*/)?(?=[^/]{{1,63}}\Z){_QUALIFIED}"),
                 253 + 1 + 63)
LABEL_VALUE = Rule(re.compile(rf"(?:{_QUALIFIED})?"), 63)
# A kind is a Go type's name (ReplicaSet); a phase or an IP family an enum's value (Running,
# IPv6, PreferDualStack); a uid the API server's UUID. Their fields take any text.
KIND = Rule(re.compile(r"[A-Za-z][A-Za-z0-9]*"), 63)
WORD = Rule(re.compile(r"[A-Za-z0-9]+"), 63)
UID = Rule(re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"), 128)
# resourceVersion and continue tokens: opaque, handed back to the server as they came.
TOKEN = Rule(re.compile(r"[!-~]+"), 1024)


def _escape(ch: str) -> str:
    """ch, or its escape when it is not visible text: the Unicode categories
    Cc (C0 and C1 controls, U+0085 among them), Cf (bidi controls U+202A-E,
    U+2066-9, zero-width and other format characters), Cs (lone surrogates),
    Co and Cn (private and unassigned), Zl and Zp (U+2028, U+2029)."""
    cat = unicodedata.category(ch)
    if cat[0] != "C" and cat not in ("Zl", "Zp"):
        return ch
    code = ord(ch)
    if ch in "\n\t\r":
        return {"\n": "\\n", "\t": "\\t", "\r": "\\r"}[ch]
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _prefix(text: str, budget: int) -> str:
    """The longest start of text, escaped, that fits budget UTF-8 bytes. Looks at
    no more of text than it keeps: a megabyte costs what 253 characters cost."""
    out: list[str] = []
    used = 0
    for ch in text:
        piece = _escape(ch)
        size = len(piece.encode("utf-8"))
        if used + size > budget:
            break
        out.append(piece)
        used += size
    return "".join(out)


def marked(text: str, limit: int) -> str:
    """Text that is not what its field takes: a readable prefix, `~` and a hash of all of it."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_DIGITS]
    return _prefix(text, limit - len(MARK) - HASH_DIGITS) + MARK + digest


def safe(text: str, rule: Rule) -> str:
    """text where Kubernetes would accept it in the field `rule` describes; else marked()."""
    return text if rule.accepts(text) else marked(text, rule.limit)


def field(value: object, rule: Rule) -> str | None:
    """An API field's value made safe; None when it is absent, empty or not text."""
    return safe(value, rule) if isinstance(value, str) and value else None


def message(value: object, limit: int = 300) -> str:
    """Free text from the API server (an error's message, an HTTP reason), for a
    warning line: one line, nothing but visible characters, at most limit characters.
    Shown only, never a key: no hash needed."""
    text = " ".join(str(value).split())
    escaped = "".join(_escape(ch) for ch in text[:limit])
    return escaped if len(escaped) <= limit else escaped[:limit - 1] + "\u2026"


def ip(value: object) -> str | None:
    """An IP address in its usual form; None for anything else."""
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def cidr(value: object) -> str | None:
    """An IP network (a node's pod CIDR) in its usual form; None for anything else."""
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        return None
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        return None
