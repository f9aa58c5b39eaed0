"""lead: the fact that decides a drop's why, in a few words, for a row of the console.

A category's hint is a sentence: the cause, the evidence, the fix. An 80-column
row has room for about 35 characters of it, and the start of a sentence ("1500-
byte packet with DF set is…") is rarely what decides. So a category's entry
(categories.REGISTRY, its `lead`) also says which fact does: the MTU and its
device, the chain and its policy or rule, the protocol and port nobody listens
on. The console starts the row with it; the whole hint is shown below the list.

A lead reads the drop and its verdict's detail (what netfilter_verdict and the
function hooks found), never the node's state: where a category's hint reads
the node's evidence for a drop (a device's carrier, the overlay's VNIs, IPsec
state), that hint starts with the state it found, and the entry gives no lead
(categories.Category.lead_of). None: the hint itself is the best lead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..kernel.decode import Drop
from .verdict import ICMP_DEST_UNREACH, on_device

Detail = Mapping[str, object] | None
Lead = Callable[[Drop, Detail], str | None]


def _unspecific(d: Drop) -> bool:
    return d.reason in (None, "NOT_SPECIFIED")


def _port(d: Drop) -> str:
    """"udp/53", or the protocol alone."""
    proto = d.proto or "ip"
    return f"{proto}/{d.dport}" if d.dport is not None else proto


def _get(detail: Detail, key: str) -> str:
    value = (detail or {}).get(key)
    return "" if value is None else str(value)


def mtu(d: Drop, detail: Detail) -> str:
    if d.reason and d.reason.startswith(("FRAG_", "DUP_FRAG")):
        return f"fragments lost ({d.reason})"
    df = " DF" if d.df else ""
    if d.mtu:
        return f"MTU {d.mtu} {d.out_ifname or '?'}, {d.len}-byte{df}"
    return f"{d.len}-byte{df} > path MTU{on_device(d)}"


def _point(detail: Detail) -> str:
    """"FORWARD policy DROP", "KUBE-FORWARD rule DROP": one policy or rule of a netfilter verdict."""
    kind = "policy" if _get(detail, "by") == "policy" else "rule"
    return " ".join(x for x in (_get(detail, "chain"), kind, _get(detail, "target")) if x)


def netfilter(d: Drop, detail: Detail) -> str:
    service = _get(detail, "service_without_endpoints")
    if service:
        return f"Service {service}: no endpoints"
    if d.icmp_sent is not None and d.icmp_sent[0] == ICMP_DEST_UNREACH:
        # An ICMP error went back: a REJECT, whichever point netfilter_verdict could match.
        chain = _get(detail, "chain") if _get(detail, "target").upper() == "REJECT" else ""
        return f"{chain + ' rule ' if chain else ''}REJECT, ICMP {d.icmp_sent[0]}/{d.icmp_sent[1]} sent"
    by = _get(detail, "by")
    if by in ("policy", "rule"):
        return _point(detail)
    candidates = (detail or {}).get("candidates")
    if by == "one of" and isinstance(candidates, list):
        return "one of: " + "; ".join(_point(c) for c in candidates if isinstance(c, Mapping))
    return f"rule or policy{on_device(d)}, {d.location or 'netfilter'}"


def conntrack(d: Drop, detail: Detail) -> str:
    by, state = _get(detail, "by"), _get(detail, "state")
    if by == "nat-bypass":
        bnf = _get(detail, "bridge_nf_call_iptables")
        return "reply not NATed back" + (f", bridge-nf-call-iptables={bnf}" if bnf
                                         else f" from {_get(detail, 'reply_from')}")
    if state == "invalid":
        chain = _get(detail, "chain")
        return "ctstate INVALID" + (f", {chain} rule DROP" if chain else "")
    if state == "insert_failed":
        return f"conntrack insert race, {_port(d)}"
    if state == "table_full":
        limit = _get(detail, "max") or _get(detail, "entries")
        return "conntrack table full" + (f" ({limit})" if limit else "")
    if by == "hook":
        return f"conntrack/NAT refused, ct {_get(detail, 'conntrack_state') or d.conntrack or '?'}"
    return f"conntrack refused at {d.location or '?'}"


def no_socket(d: Drop, detail: Detail) -> str:
    if d.reason == "IP_NOPROTO":
        return f"IP protocol {d.proto or '?'} unhandled"
    what = "socket closing" if d.reason == "SOCKET_CLOSE" else "nothing listening"
    return f"{_port(d)} {what}" + (f" on {d.dst}" if d.dst else "")


def no_route(d: Drop, detail: Detail) -> str:
    if d.reason in ("IP_INADDRERRORS", "IP_INVALID_DEST"):
        return f"invalid destination {d.dst or '?'}{on_device(d)}"
    return f"no route to {d.dst or '?'}{on_device(d)}"


_NEIGHBOUR = {"NEIGH_CREATEFAIL": "neighbour table full", "NEIGH_QUEUEFULL": "ARP/ND queue full",
              "NEIGH_DEAD": "neighbour entry going away", "NEIGH_HH_FILLFAIL": "no link-layer header"}


def neighbor(d: Drop, detail: Detail) -> str:
    return _NEIGHBOUR.get(d.reason or "", "no ARP/ND answer") + on_device(d) + (f", to {d.dst}" if d.dst else "")


def rp_filter(d: Drop, detail: Detail) -> str:
    what = {"IP_INVALID_SOURCE": "martian source", "IP_LOCAL_SOURCE": "own address as source"}
    return f"{what.get(d.reason or '', 'rp_filter: source')} {d.src or '?'}{on_device(d)}"


def tcp(d: Drop, detail: Detail) -> str:
    what = "segment refused" if _unspecific(d) else (d.reason or "").removeprefix("TCP_")
    return f"{_port(d)} {what}" + (f" [{d.tcp_flag_names}]" if d.tcp_flags else "")


_BUFFER = {"TCP_LISTEN_OVERFLOW": "listen queue full", "TCP_ZEROWINDOW": "zero window",
           "TCP_OFO_QUEUE_PRUNE": "out-of-order queue pruned", "SOCKET_RCVBUFF": "receive buffer full",
           "SOCKET_BACKLOG": "backlog full", "PROTO_MEM": "tcp_mem/udp_mem limit",
           "PACKET_SOCK_ERROR": "packet socket copy lost"}


def socket_buffer(d: Drop, detail: Detail) -> str:
    return f"{_port(d)} {_BUFFER.get(d.reason or '', 'socket full')}"


def qdisc(d: Drop, detail: Detail) -> str:
    return f"{d.reason or 'queue drop'}{on_device(d)}"


def malformed(d: Drop, detail: Detail) -> str:
    return f"{d.reason or 'bad packet'}" + (f" from {d.src}" if d.src else on_device(d))


def other(d: Drop, detail: Detail) -> str:
    return f"{d.reason or 'no reason'}@{d.location or '?'}"
