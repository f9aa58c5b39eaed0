"""cli: `kubectl netdrop` (the `kubectl-netdrop` executable): argv -> options -> a command -> exit status.

kubectl's conventions: -n/--namespace (default: the context's namespace,
else default), -A/--all-namespaces, -l/--selector, --kubeconfig, --context,
$KUBECONFIG; they may come before or after the command's name. It runs as
the user, with the user's credentials, and needs nothing of the nodes.
Anything that ends it early (bad input, no kubeconfig, an unreachable API, a
refusal by RBAC, an unknown capture) is one line on stderr and status 2;
only bugs give a traceback. Exit statuses: 0 done; 1 a capture some nodes of
which failed or did not report (the others' summary still written); 2 an
error; 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import NoReturn

from ..captures.spec import MAX_ITEMS, CaptureFilters, SpecError, parse_duration
from ..errors import ExitStatus, UserError
from ..explain.categories import CATEGORIES
from ..messages import say
from ..pods.apicall import KubeUnavailable
from ..pods.apitext import DNS_SUBDOMAIN
from ..pods.kube import parse_selector
from ..sinks.summary.render import FORMATS
from .kubeapi import Target
from .options import CaptureOptions, DeleteOptions, GetOptions, ListOptions, Options, WatchOptions
from .wiring import Wiring

PROG = "kubectl netdrop"

__all__ = ["build_parser", "entry", "main", "parse"]


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are user errors: one line, status 2 (not argparse's usage block)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see '{self.prog} --help')")


def duration(text: str) -> float:
    try:
        return parse_duration(text, "duration")
    except SpecError:
        raise argparse.ArgumentTypeError(f"{text[:32]!r} is not a duration such as 30s, 2m or 1h30m") from None


def name(text: str) -> str:
    if not DNS_SUBDOMAIN.accepts(text):
        raise argparse.ArgumentTypeError(f"{text[:64]!r} is not a Kubernetes name (lower case, digits, '-', '.')")
    return text


def port(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 5 and 1 <= int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"{text[:16]!r}: a port is 1-65535")
    return int(text)


def address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:64]!r} is not an IP address") from None


def selector(text: str) -> str:
    parse_selector(text)        # UserError with the example
    return text


def _common(p: argparse.ArgumentParser) -> None:
    """kubectl's flags; SUPPRESS: given before or after the command, neither hides the other."""
    s = argparse.SUPPRESS
    p.add_argument("--kubeconfig", metavar="PATH", default=s, help="the kubeconfig (default: $KUBECONFIG, "
                                                                  "~/.kube/config)")
    p.add_argument("--context", metavar="NAME", default=s, help="the kubeconfig context to use")
    p.add_argument("-n", "--namespace", metavar="NS", type=name, default=s,
                   help="the namespace (default: the context's, else default)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Capture packet drops across the cluster with the netdrop agents.",
                     epilog="Exit status: 0 done, 1 some nodes failed (the others' summary written), "
                            "2 error, 130 interrupted.")
    _common(parser)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    cap = sub.add_parser("capture", help="capture on the nodes of some pods (or nodes), fetch and merge")
    _common(cap)
    which = cap.add_mutually_exclusive_group(required=True)
    which.add_argument("--pod", metavar="NAME", type=name, action="append", help="this pod's node (repeatable)")
    which.add_argument("-l", "--selector", type=selector, metavar="SELECTOR", help="the nodes of pods with "
                                                                                     "these labels (app=web)")
    which.add_argument("--node", metavar="NAME", type=name, action="append",
                       help="every drop of this node (repeatable; in the agents' namespace)")
    which.add_argument("--all-nodes", action="store_true", help="every drop of every node")
    cap.add_argument("--duration", type=duration, required=True, metavar="TIME", help="how long: 30s to 1h")
    cap.add_argument("--since", type=duration, default=0.0, metavar="TIME",
                     help="start this far back, from the agents' flight recorder (at most 1h)")
    cap.add_argument("--port", type=port, action="append", default=[], help="only events of this port")
    cap.add_argument("--ip", type=address, action="append", default=[], help="only events of this address")
    cap.add_argument("--category", choices=sorted(CATEGORIES), action="append", default=[],
                     help="only drops of this category")
    cap.add_argument("--packets", action="store_true", help="keep packet headers (drops.pcapng)")
    cap.add_argument("--output", "-o", type=Path, required=True, metavar="DIR",
                     help="a new or empty directory: DIR/<node>/ and DIR/summary.json")
    cap.add_argument("--name", type=name, help="the capture's name (default: netdrop-<random>)")
    cap.add_argument("--format", choices=FORMATS, default="table", help="how to print the merged summary")

    get = sub.add_parser("get", help="a capture's reports, node by node")
    _common(get)
    get.add_argument("name", type=name)

    lst = sub.add_parser("list", help="captures and how many nodes reported")
    _common(lst)
    lst.add_argument("-A", "--all-namespaces", action="store_true")
    lst.add_argument("-l", "--selector", type=selector, metavar="SELECTOR", help="captures with these labels")

    dele = sub.add_parser("delete", help="delete a capture (its reports and files go with it)")
    _common(dele)
    dele.add_argument("name", type=name)

    wat = sub.add_parser("watch", help="the live console of a pod's node, through its agent (kubectl exec)")
    _common(wat)
    wat.add_argument("--pod", metavar="NAME", type=name, required=True)
    wat.add_argument("--dry-run", action="store_true", help="print the kubectl command instead of running it")
    return parser


def _items(values: list[str] | list[int], what: str) -> None:
    if len(values) > MAX_ITEMS:
        raise UserError(f"at most {MAX_ITEMS} {what}")


def parse(argv: Sequence[str]) -> Options:
    ns = build_parser().parse_args(list(argv))
    target = Target(getattr(ns, "kubeconfig", None), getattr(ns, "context", None))
    namespace: str | None = getattr(ns, "namespace", None)
    if ns.command == "capture":
        for values, what in ((ns.port, "--port"), (ns.ip, "--ip"), (ns.category, "--category"),
                             (ns.pod or [], "--pod"), (ns.node or [], "--node")):
            _items(values, what)
        filters = CaptureFilters(tuple(dict.fromkeys(ns.port)), tuple(dict.fromkeys(ns.ip)),
                                 tuple(dict.fromkeys(ns.category)))
        return CaptureOptions(target, namespace, tuple(dict.fromkeys(ns.pod or [])), ns.selector,
                              tuple(dict.fromkeys(ns.node or [])), ns.all_nodes, ns.duration, ns.since,
                              filters, ns.packets, ns.output, ns.name, ns.format)
    if ns.command == "get":
        return GetOptions(target, namespace, ns.name)
    if ns.command == "list":
        return ListOptions(target, namespace, ns.all_namespaces, ns.selector)
    if ns.command == "delete":
        return DeleteOptions(target, namespace, ns.name)
    return WatchOptions(target, namespace, ns.pod, ns.dry_run)


def run(opts: Options, w: Wiring) -> ExitStatus:
    from . import capture, views

    if isinstance(opts, CaptureOptions):
        return capture.run(opts, w)
    if isinstance(opts, GetOptions):
        return views.run_get(opts, w)
    if isinstance(opts, ListOptions):
        return views.run_list(opts, w)
    if isinstance(opts, DeleteOptions):
        return views.run_delete(opts, w)
    return views.run_watch(opts, w)


def main(argv: Sequence[str] | None = None, wiring: Wiring | None = None) -> int:
    """Run one command; its exit status. Every failure a user can meet is one line on stderr."""
    w = wiring if wiring is not None else Wiring()
    try:
        return run(parse(sys.argv[1:] if argv is None else argv), w)
    except (UserError, KubeUnavailable) as exc:
        say(w.env, f"{PROG}: error: {exc}")
        return ExitStatus.ERROR
    except KeyboardInterrupt:
        say(w.env, f"{PROG}: interrupted")
        return ExitStatus.STOPPED_BY_SIGINT
    except BrokenPipeError:
        with suppress(OSError):   # `| head`: the reader left, Python's own flush at exit is quiet too
            w.env.stderr.close()
        return ExitStatus.OK


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
