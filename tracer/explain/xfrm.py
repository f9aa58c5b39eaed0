"""xfrm: a namespace's IPsec policies and states, and which inbound policy refused a packet.

An inbound IPsec policy refuses a packet in three ways a responder must tell
apart (net/xfrm/xfrm_policy.c __xfrm_policy_check()): the policy blocks it
(`action block`); it requires a transform (ESP, AH) and the namespace has no
state (SA) for it, so nothing could have decrypted it (the IPsec agent has
not installed its keys); or the state exists and the packet came in plaintext
(the sender did not encrypt). The kernel's reason says none of this: XFRM_POLICY
where a socket took the packet (udp_queue_rcv_one_skb(), tcp_v4_rcv(),
icmp_rcv()), NOT_SPECIFIED on UDP's no-socket path (__udp4_lib_rcv()), none
before 5.17. The namespace's own policies and states do: read here from
`ip xfrm policy list dir in` and `ip xfrm state list nokeys` under nsenter
(evidence.py): `ip` prints no key, and a state's algorithm lines are passed
over unparsed.

Parsers take node text (a policy's selector names a device a pod may have
named): each survives any input, keeps typed values only, and is bounded.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ..kernel.decode import Drop

MAX_POLICIES = 256         # inbound policies kept per namespace
MAX_STATES = 256           # states kept per namespace
MAX_TEMPLATES = 8          # templates kept per policy
MAX_TEXT = 1 << 22         # longer output is not parsed (4 MiB)
TOKEN_MAX = 64             # a kept token is cut to this
SELECTOR_MAX = 200         # a policy's selector as kept and quoted in a hint (iproute2's is under 150)

_SPD_RE = re.compile(r"SPD IN\s+(\d{1,9})\s+OUT\s+(\d{1,9})\s+FWD\s+(\d{1,9})")
_SAD_RE = re.compile(r"SAD count\s+(\d{1,9})")
# The protocols a selector or template names (iproute2 prints a name, or the number).
_PROTOS = {"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58, "icmpv6": 58, "sctp": 132, "gre": 47, "esp": 50,
           "ah": 51, "comp": 108, "route2": 43, "hao": 201}


@dataclass(frozen=True)
class Template:
    """What a policy requires of a packet: a transform by a state of this kind."""

    proto: str                     # esp, ah, comp, route2, hao
    mode: str | None               # transport, tunnel, beet
    reqid: int | None              # 0: any state
    src: str | None                # tunnel endpoints; 0.0.0.0 / :: in transport mode
    dst: str | None
    optional: bool = False         # "level use": a packet without it passes


@dataclass(frozen=True)
class Policy:
    selector: str                  # as `ip xfrm policy` prints it: "src 10.0.0.1/32 dst 10.0.0.2/32 proto udp"
    src: str | None
    dst: str | None
    proto: int | None
    sport: int | None
    dport: int | None
    action: str                    # allow, block
    priority: int | None
    templates: tuple[Template, ...]

    def matches(self, d: Drop) -> bool:
        """The selector takes this packet (src/dst prefixes, protocol, ports)."""
        return (_within(d.src, self.src) and _within(d.dst, self.dst)
                and (self.proto is None or self.proto == _PROTOS.get(d.proto or "", _number(d.proto)))
                and (self.sport is None or self.sport == d.sport) and (self.dport is None or self.dport == d.dport))

    @property
    def name(self) -> str:
        """"src 192.0.2.1/32 dst 192.0.2.2/32 proto udp dport 7001 dir in action block"."""
        if self.action == "block":
            return f"{self.selector} dir in action block"
        needs = ", ".join(f"{t.proto} {t.mode or ''}".rstrip() for t in self.templates if not t.optional)
        return f"{self.selector} dir in" + (f" tmpl {needs}" if needs else "")


@dataclass(frozen=True)
class State:
    src: str
    dst: str
    proto: str
    spi: str | None
    reqid: int | None
    mode: str | None

    def serves(self, t: Template, d: Drop) -> bool:
        """Could this state have taken the packet off the template's transform?"""
        if self.proto != t.proto or (t.mode and self.mode and self.mode != t.mode):
            return False
        if t.reqid and self.reqid != t.reqid:
            return False
        # Transport mode: the template's addresses are unset and the packet's own count.
        dst = t.dst if t.dst and not _unspecified(t.dst) else d.dst
        src = t.src if t.src and not _unspecified(t.src) else d.src
        return _same(self.dst, dst) and (src is None or _same(self.src, src))


@dataclass(frozen=True)
class Xfrm:
    policies: tuple[tuple[str, int], ...]    # direction (in, out, fwd) -> count
    states: int | None
    inbound: tuple[Policy, ...] | None = None     # None: not read (none counted, or the read failed)
    state_list: tuple[State, ...] | None = None

    def count(self, direction: str) -> int:
        return sum(n for d, n in self.policies if d == direction)


@dataclass(frozen=True)
class Refusal:
    """Which inbound policy refused a packet, and how."""

    policy: Policy
    how: str                       # "block", "no-state", "plaintext"
    template: Template | None = None


def refusal(x: Xfrm | None, d: Drop) -> Refusal | None:
    """The inbound policy of the namespace that refused d, from its own state; None if none is known."""
    if x is None or not x.inbound or d.src is None:
        return None
    candidates = [p for p in x.inbound if p.matches(d) and (p.action == "block" or p.templates)]
    if not candidates:
        return None
    p = min(candidates, key=lambda p: p.priority if p.priority is not None else 0)
    if p.action == "block":
        return Refusal(p, "block")
    required = [t for t in p.templates if not t.optional]
    if not required:
        return None
    for t in required:
        if x.state_list is not None and not any(s.serves(t, d) for s in x.state_list):
            return Refusal(p, "no-state", t)
    return Refusal(p, "plaintext", required[0]) if x.state_list is not None else None


def hint(d: Drop, x: Xfrm | None, cause: str) -> str:
    """The ipsec category's hint: the policy that refused d, named from the namespace's own state."""
    r = refusal(x, d)
    if r is not None:          # the policy leads: it is what decides
        said = f"inbound IPsec policy '{r.policy.name}' refused {d.flow}:"
        t = r.template
        if r.how == "block" or t is None:
            return f"{said} the policy blocks it (action block)"
        need = f"{t.proto.upper()}{f' ({t.mode})' if t.mode else ''}"
        if r.how == "no-state":
            return (f"{said} the policy requires {need} and this namespace has no state (SA) for it: nothing "
                    f"could decrypt it; the IPsec agent (Cilium, Calico, strongSwan) has not installed its keys")
        return (f"{said} the policy requires {need} and the packet came in plaintext (a state for it is here): "
                f"the sender did not encrypt it; check its outbound policy and state")
    if x is None:
        return f"{cause}, flow {d.flow}: check 'ip xfrm policy' and 'ip xfrm state' in this namespace"
    counts = f"{x.count('in')} in, {x.count('out')} out, {x.count('fwd')} fwd policies and {x.states} states here"
    if x.policies and not x.count("in"):
        # No policy to name: the inbound default (XFRM_USERPOLICY_BLOCK, `ip xfrm policy
        # setdefault`) refuses what no policy allows; UDP's receive path also frees a datagram
        # shorter than its header without a reason (pskb_may_pull() in __udp4_lib_rcv()).
        short = "; or it was shorter than a UDP header" if d.reason == "NOT_SPECIFIED" else ""
        return (f"{cause}, flow {d.flow}: IPsec has {counts}: no inbound policy refused it; check "
                f"'ip xfrm policy getdefault' (a default of block refuses what no policy allows){short}")
    if x.states == 0:
        return (f"{cause}, flow {d.flow}: IPsec has {counts}: a policy requires a transform but no state (SA) "
                f"exists: the IPsec agent (Cilium, Calico, strongSwan) has not installed its keys")
    return (f"{cause}, flow {d.flow}: IPsec has {counts}: the peer sent plaintext where ESP is required, "
            f"or a key expired")


def before_socket(d: Drop, x: Xfrm | None) -> str | None:
    """A NO_SOCKET drop that an inbound policy refused: the no-socket paths check the policy
    before they answer, and some set NO_SOCKET first (__udp6_lib_rcv(); tcp_v4_rcv()'s
    no_tcp_socket), so the refusal reads as a closed port, without the port unreachable
    (IPv4's icmp_send() is seen: with one sent, no policy refused it). Asked for IPv6 UDP
    (categories.py): what the kernel measured here says NO_SOCKET for."""
    if d.icmp_sent is not None or refusal(x, d) is None:
        return None
    return f"{hint(d, x, '')} (the kernel reports it as {d.reason or 'a closed port'}, and answers nothing)"


# -- parsers of node text: any input, typed and bounded output ----------------

def parse_counts(policy_count: str | None, state_count: str | None) -> Xfrm | None:
    """`ip xfrm policy count` and `ip xfrm state count` -> counts; None if neither reads."""
    p = _SPD_RE.search(policy_count[:4096]) if policy_count else None
    s = _SAD_RE.search(state_count[:4096]) if state_count else None
    if p is None and s is None:
        return None
    policies = tuple(zip(("in", "out", "fwd"), (int(x) for x in p.groups()), strict=True)) if p else ()
    return Xfrm(policies, int(s.group(1)) if s else None)


def _blocks(text: str | None) -> list[list[list[str]]]:
    """Output in blocks: a line at the margin starts one; each line as its tokens."""
    if not text or len(text) > MAX_TEXT:
        return []
    out: list[list[list[str]]] = []
    for line in text.splitlines():
        tokens = [t[:TOKEN_MAX] for t in line.split()]
        if not tokens:
            continue
        if not line[:1].isspace():
            out.append([])
        if out and len(out[-1]) < 64:
            out[-1].append(tokens)
    return out


def _pairs(tokens: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in zip(tokens[::2], tokens[1::2], strict=False):
        out.setdefault(k, v)
    return out


def parse_policies(text: str | None) -> tuple[Policy, ...]:
    """`ip xfrm policy list dir in` -> its inbound policies (others passed over)."""
    out: list[Policy] = []
    for block in _blocks(text):
        head = block[0]
        if head[:1] != ["src"]:
            continue
        sel = _pairs(head)
        attrs: dict[str, str] = {}
        flags: set[str] = set()
        templates: list[Template] = []
        tmpl: dict[str, str] | None = None
        for line in block[1:]:
            if line[0] == "tmpl":
                if tmpl is not None:
                    templates.append(_template(tmpl))
                tmpl = _pairs(line[1:])
            elif tmpl is not None and line[0] in ("proto", "level"):
                tmpl.update({k: v for k, v in _pairs(line).items() if k not in tmpl})
            elif line[0] == "dir":
                attrs.update(_pairs(line))
                flags.update(line)
        if tmpl is not None:
            templates.append(_template(tmpl))
        if attrs.get("dir") != "in":
            continue
        out.append(Policy(" ".join(head)[:SELECTOR_MAX], _prefix(sel.get("src")), _prefix(sel.get("dst")),
                          _proto(sel.get("proto")), _port(sel.get("sport")), _port(sel.get("dport")),
                          "block" if attrs.get("action") == "block" else "allow", _port(attrs.get("priority"), 1 << 32),
                          tuple(templates[:MAX_TEMPLATES])))
        if len(out) >= MAX_POLICIES:
            break
    return tuple(out)


def _template(t: dict[str, str]) -> Template:
    return Template(t.get("proto") or "?", t.get("mode"), _port(t.get("reqid"), 1 << 32), _addr(t.get("src")),
                    _addr(t.get("dst")), t.get("level") == "use")


def parse_states(text: str | None) -> tuple[State, ...]:
    """`ip xfrm state list` -> its states' addresses, protocol, SPI, reqid and mode. Only the
    header and the `proto` line of each are read: key material is never parsed or kept."""
    out: list[State] = []
    for block in _blocks(text):
        head = _pairs(block[0])
        src, dst = _addr(head.get("src")), _addr(head.get("dst"))
        line = next((x for x in block[1:] if x[0] == "proto"), None)
        if src is None or dst is None or line is None:
            continue
        p = _pairs(line)
        spi = p.get("spi")
        spi = spi if spi and re.fullmatch(r"0x[0-9a-f]{1,8}", spi) else None
        out.append(State(src, dst, p.get("proto") or "?", spi, _port(p.get("reqid"), 1 << 32), p.get("mode")))
        if len(out) >= MAX_STATES:
            break
    return tuple(out)


def _addr(v: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address(v)) if v else None
    except ValueError:
        return None


def _prefix(v: str | None) -> str | None:
    try:
        return str(ipaddress.ip_network(v, strict=False)) if v else None
    except ValueError:
        return None


def _port(v: str | None, limit: int = 1 << 16) -> int | None:
    return int(v) if v and v.isdigit() and len(v) <= 10 and int(v) < limit else None


def _number(v: str | None) -> int | None:
    return int(v) if v and v.isdigit() and len(v) <= 3 else None


def _proto(v: str | None) -> int | None:
    return _PROTOS.get(v, _number(v)) if v else None


def _within(addr: str | None, prefix: str | None) -> bool:
    if prefix is None:
        return True
    try:
        return addr is not None and ipaddress.ip_address(addr) in ipaddress.ip_network(prefix)
    except (ValueError, TypeError):
        return False


def _unspecified(a: str) -> bool:
    return a in ("0.0.0.0", "::")


def _same(a: str | None, b: str | None) -> bool:
    try:
        return a is not None and b is not None and ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False
