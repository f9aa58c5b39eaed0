"""netdrop command line: main(argv, env) -> exit status.

Parses the arguments once into the command's options (options.py), runs the
command (commands/) with the environment (env.py), and maps what ends it to
an exit status and at most one line on stderr: a UserError (bad input,
machine set-up) to ERROR, a stop signal before tracing began to 128 + its
number, a reader that left (`| head`) to OK. Only bugs produce tracebacks.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import NoReturn

from .agent.endpoints import DEFAULT_LISTEN
from .commands import capture, demo, doctor, serve, summary, watch
from .env import Environment
from .errors import ExitStatus, UserError
from .kernel.event import ND_MAX_SNAPLEN
from .kernel.filters import parse_ip
from .history.recorder import MAX_KEEP
from .kernel.loader import MAX_COUNTERS, MAX_EVENT_RATE, MAX_EVENT_RATE_LIMIT
from .messages import PROG, say
from .sinks.summary.render import FORMATS as SUMMARY_FORMATS
from .options import (
    CaptureOptions,
    DemoOptions,
    DoctorOptions,
    DropSelection,
    KernelOptions,
    NodeOptions,
    Options,
    RecorderOptions,
    ServeOptions,
    SummaryOptions,
    ViewOptions,
    WatchOptions,
)
from .pods.kube import Selection
from .signals import SIGNALS, Interrupted

__all__ = ["build_parser", "entry", "main", "parse", "parse_duration"]

# The longest --duration, --series-ttl: a year, in hours. Far below where the
# clocks' arithmetic and threading's waits (threading.TIMEOUT_MAX) give out; a
# run meant to last for ever is one without --duration.
MAX_DURATION = 8760 * 3600.0
# --max-events is recorded in summary.json: at most 2**53 - 1, the largest
# integer every JSON reader holds exactly (RFC 8259, section 6).
MAX_JSON_INT = 2**53 - 1
# --record-budget: a limit, not an allocation; past 64 GiB it is surely a typo.
MAX_RECORD_BUDGET_MIB = 65536


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*", text, re.ASCII)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (examples: 30s, 2m, 10)")
    value = float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    if value <= 0:
        raise argparse.ArgumentTypeError("duration must be positive")
    if value > MAX_DURATION:
        raise argparse.ArgumentTypeError(f"{text.strip()!r} is too long: at most {MAX_DURATION / 3600:.0f}h (a year)")
    return value


def events_interval(text: str) -> float:
    """serve --events-interval: a duration from 1 s to 1 h (a pod's Event updated at most that often)."""
    value = parse_duration(text)
    if not 1.0 <= value <= 3600.0:
        raise argparse.ArgumentTypeError(f"{text.strip()!r}: expected 1s to 1h")
    return value


def number(low: int, high: int, note: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number from low to high, written in ASCII digits.
    The bounds are what the value ends up in can hold (a field of a BPF map,
    a map's size, a JSON number): a bigger one would wrap or mean nothing."""
    def parse(text: str) -> int:
        digits = text.strip()
        # The length first: int() of thousands of digits is slow, and refused past 4300.
        if not (digits.isascii() and digits.isdigit() and len(digits) <= len(str(high))) \
                or not low <= int(digits) <= high:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number from {low} to {high:,}{note}")
        return int(digits)
    return parse


def user_path(text: str) -> str:
    """A file or directory the user named, made absolute now, against the directory
    netdrop was started in. Start-up reads some of them in another thread while
    bcc compiles, and bcc's compile changes directory (nsexec.own_working_directory
    keeps that to its own thread where the kernel lets it): a relative name must
    not depend on when it is read."""
    if not text or "\0" in text:
        raise argparse.ArgumentTypeError(f"not a path: {text!r}")
    try:
        return os.path.join(os.getcwd(), text)      # kept as written: no ".." folded across a link
    except FileNotFoundError:
        raise argparse.ArgumentTypeError(f"{text!r}: the current directory no longer exists; "
                                         "give an absolute path") from None


def netns_spec(text: str) -> str:
    """--netns/--node-netns NAME|PATH|INODE: a path (it has a '/') made absolute
    as user_path does; a name or an inode as given. Whether it is a network
    namespace is checked before anything is loaded (node/namespaces.py, checked_netns)."""
    return user_path(text) if "/" in text or not text or "\0" in text else text


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are user errors too: one line, exit 2 (not argparse's usage block)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Trace packets the Linux kernel drops, and say why.")
    sub = parser.add_subparsers(dest="command", required=True)

    watch_p = sub.add_parser("watch", help="show drops live (or as JSON lines)")
    _selection(watch_p)
    watch_p.add_argument("--duration", type=parse_duration, metavar="TIME",
                       help="stop after this long, e.g. 30s or 2m (default: until Ctrl-C)")
    watch_p.add_argument("--json", action="store_true",
                       help="print one JSON object per drop per line on stdout")
    _stacks_option(watch_p, "--json lines carry a \"stack\" only with --stacks")
    _common(watch_p)

    cap = sub.add_parser("capture", help="record drops for a while into a directory: events, summary, pcapng")
    _selection(cap)
    cap.add_argument("--duration", type=parse_duration, default=120.0, metavar="TIME",
                     help="how long to record (default: 2m); Ctrl-C or SIGTERM end it early")
    cap.add_argument("--output", "-o", required=True, type=user_path, metavar="DIR", help="directory for the files")
    cap.add_argument("--pcap", action="store_true",
                     help="also write drops.pcapng: each dropped packet's headers with a comment saying why")
    cap.add_argument("--snaplen", type=number(1, ND_MAX_SNAPLEN), metavar="N",
                     help="with --pcap: record up to N bytes of each packet, payload included "
                          "(default: headers only, at most 128 bytes)")
    cap.add_argument("--max-events", type=number(0, MAX_JSON_INT), metavar="N",
                     help="write at most N events to events.jsonl (counts stay exact)")
    _stacks_option(cap, "summary.json keeps up to 3 per group")
    _common(cap)

    doc = sub.add_parser("doctor", help="check the node for misconfigurations that drop packets "
                                        "(exit status 1 if any is found)")
    doc.add_argument("--netns", type=netns_spec, metavar="NAME|PATH",
                     help="examine this namespace as the node (a simulated node); default: the one netdrop runs in")
    doc.add_argument("--pod", metavar="NAME", help="check this pod's path (MTU, its namespace)")
    doc.add_argument("-n", "--namespace", default="default", help="the pod's namespace (default: default)")
    doc.add_argument("--kubeconfig", type=user_path, metavar="PATH")
    doc.add_argument("--node", metavar="NAME", help="this node's Kubernetes name")
    doc.add_argument("--cni-dir", type=user_path, default="/var/lib/cni/networks", metavar="DIR",
                     help="host-local IPAM state (default: /var/lib/cni/networks)")
    doc.add_argument("--json", action="store_true", help="findings as JSON on stdout")

    summ = sub.add_parser("summary", help="what a capture found (or captures of several nodes), for a person "
                                           "or a ticket")
    summ.add_argument("dir", metavar="DIR", nargs="+", type=user_path,
                      help="a capture's directory (or its summary.json); several (one per node) are merged into "
                           "one report, overall and per node")
    summ.add_argument("--format", "-f", choices=SUMMARY_FORMATS, default="table")
    summ.add_argument("--all", action="store_true", dest="show_benign",
                      help="list benign drops among the verdicts too (they are always counted)")

    demo_p = sub.add_parser("demo", help="build a simulated Kubernetes node in namespaces, play the "
                                       "drop cases and watch them live")
    demo_p.add_argument("--duration", type=parse_duration, default=60.0, metavar="TIME",
                      help="how long to run (default: 60s)")
    demo_p.add_argument("--cases", default="all", metavar="LIST",
                      help="comma-separated cases to play (default: all)")
    demo_p.add_argument("--prefix", default="nd-demo", metavar="NAME",
                      help="prefix of the namespaces the demo creates: 1-15 of a-z, 0-9 and '-', a letter "
                           "first (default: nd-demo)")
    _common(demo_p)

    serve_p = sub.add_parser("serve", help="the node agent: exact drop metrics for Prometheus on /metrics, "
                                         "and /healthz, until stopped")
    serve_p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="ADDR:PORT",
                       help=f"address and port to serve on (default: {DEFAULT_LISTEN}; [::]:PORT for IPv6)")
    _node_options(serve_p)
    serve_p.add_argument("--max-series", type=number(1, MAX_COUNTERS, " (the kernel counts at most that many "
                                                                 "groups, each one series at most)"),
                       default=10000, metavar="N",
                       help="drop series of their own at most; past that new ones fold into pod=\"_other\" "
                            "(default: 10000)")
    serve_p.add_argument("--series-ttl", type=parse_duration, default=300.0, metavar="TIME",
                       help="remove a series this long after its pods are gone (default: 5m)")
    serve_p.add_argument("--no-pod-events", action="store_true",
                       help="write no Events on pods whose traffic breaks (path-breaking drops: "
                            "PacketsDropped, as kubectl describe pod shows them)")
    serve_p.add_argument("--events-interval", type=events_interval, default=60.0, metavar="SECONDS",
                       help="update a pod's drop Event (its count) at most this often (default: 60; "
                            "1s to 1h; 30s, 2m)")
    guard = serve_p.add_argument_group("who may scrape (loopback: anyone local; any other address: bearer "
                                     "tokens the API server accepts, allowed to get nodes/metrics of this node)")
    guard.add_argument("--auth", choices=("kubernetes",), default=None,
                       help="check tokens (TokenReview, SubjectAccessReview) on a loopback address too")
    guard.add_argument("--insecure-no-auth", action="store_true",
                       help="serve /metrics to anyone who reaches the address: its pods, namespaces and kernel")
    guard.add_argument("--tls-cert-file", type=user_path, metavar="PATH",
                       help="serving certificate (PEM; read again when it changes); default with tokens: "
                            "a self-signed one made at start")
    guard.add_argument("--tls-key-file", type=user_path, metavar="PATH", help="its private key (PEM)")
    _recorder_options(serve_p)
    caps = serve_p.add_argument_group("cluster captures (NetdropCapture resources: docs/captures.md)")
    caps.add_argument("--captures", action=argparse.BooleanOptionalAction, default=True,
                      help="carry out the NetdropCaptures that select this node or its pods (default: on)")
    caps.add_argument("--capture-dir", type=user_path, default="/var/lib/netdrop/captures", metavar="DIR",
                      help="where their files are kept (default: /var/lib/netdrop/captures)")
    caps.add_argument("--advertise", metavar="ADDR:PORT",
                      help="where clients fetch the files, written into reports (default: the listen address, "
                           "or on 0.0.0.0 / [::] the node's InternalIP and the listen port)")
    _tracefs_option(serve_p)
    return parser


def _recorder_options(p: argparse.ArgumentParser) -> None:
    rec = p.add_argument_group("flight recorder (what a capture may start back in time with; drop counts are "
                               "exact either way)")
    rec.add_argument("--record-rate", type=number(1, MAX_EVENT_RATE_LIMIT), default=RecorderOptions.rate,
                     metavar="N", help=f"keep about N sampled drop events/s (default: {RecorderOptions.rate})")
    rec.add_argument("--record-budget", type=number(1, MAX_RECORD_BUDGET_MIB),
                     default=RecorderOptions.budget >> 20, metavar="MIB",
                     help=f"memory for the events kept, in MiB (default: {RecorderOptions.budget >> 20})")
    rec.add_argument("--history", type=_history, default=RecorderOptions.history, metavar="TIME",
                     help=f"how long the counters' history reaches back (default: {RecorderOptions.history / 60:.0f}m, "
                          f"at most {MAX_KEEP / 3600:.0f}h)")


def _history(text: str) -> float:
    value = parse_duration(text)
    if value > MAX_KEEP:
        raise argparse.ArgumentTypeError(f"{text.strip()!r} is too long: at most {MAX_KEEP / 3600:.0f}h")
    return value


def _selection(p: argparse.ArgumentParser) -> None:
    """Which drops: namespaces, addresses, ports, pods (watch and capture alike)."""
    p.add_argument("--netns", action="append", default=[], type=netns_spec, metavar="NAME|PATH|INODE",
                   help="only drops in this network namespace (repeatable)")
    p.add_argument("--ip", action="append", default=[], type=parse_ip, metavar="ADDR",
                   help="only packets from or to this address (repeatable, IPv4 or IPv6)")
    p.add_argument("--port", action="append", default=[], type=number(1, 65535), metavar="N",
                   help="only TCP/UDP packets from or to this port (repeatable)")
    p.add_argument("--max-event-rate", type=number(0, MAX_EVENT_RATE_LIMIT, " (0: no limit)"), default=MAX_EVENT_RATE,
                   metavar="N",
                   help="send at most about N events/s from the kernel (default 10000; 0: no limit); "
                        "drop counts are exact either way")
    pods = p.add_argument_group("pods (from the Kubernetes API and the node's own namespaces)")
    pods.add_argument("--pod", metavar="NAME", help="only drops of this pod: in its namespace, on its veth, "
                                                     "and on the node with its addresses")
    pods.add_argument("-n", "--namespace", default="default", help="the pod's namespace (default: default)")
    pods.add_argument("-l", "--selector", metavar="KEY=VALUE,...", help="only pods with these labels")
    pods.add_argument("-A", "--all-namespaces", action="store_true", help="pods of every namespace")
    _node_options(pods)


def _node_options(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Where the pods come from and which node this is (watch, capture, serve)."""
    p.add_argument("--kubeconfig", type=user_path, metavar="PATH",
                   help="default: $KUBECONFIG, ~/.kube/config, /etc/kubernetes/kubelet.conf, in-cluster")
    p.add_argument("--node", metavar="NAME", help="this node's name (default: the hostname, or the Node "
                                                    "with this machine's addresses)")
    p.add_argument("--node-netns", type=netns_spec, metavar="NAME|PATH", default=None,
                   help="the namespace that plays the node (default: the host's; a simulated node's)")


def _stacks_option(p: argparse.ArgumentParser, where: str) -> None:
    p.add_argument("--stacks", action=argparse.BooleanOptionalAction, default=None,
                   help=f"take the kernel stack of each event (not of each counted drop), named once per "
                        f"distinct stack; {where} (default: on, except with --json)")


def _tracefs_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mount-tracefs", action="store_true",
                   help="mount tracefs on /sys/kernel/tracing if it is not mounted")
    p.add_argument("--classic-tracepoints", action="store_true",
                   help="attach the classic tracepoints even where BTF-typed ones (tp_btf) load: they cost more "
                        "per drop; for comparison, or a kernel whose tp_btf misbehaves")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--all", action="store_true", dest="show_benign",
                   help="show benign drops too (those every healthy node makes); they are always counted")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="show the hooks, filters and pod source in full above the drops")
    _tracefs_option(p)


def parse(argv: Sequence[str] | None = None) -> Options:
    """argv (without the program's name) as the command's options; a UserError for a usage mistake."""
    return _options(build_parser().parse_args(argv))


def _kernel(ns: argparse.Namespace) -> KernelOptions:
    return KernelOptions(mount_tracefs=ns.mount_tracefs, classic_tracepoints=ns.classic_tracepoints)


def _node(ns: argparse.Namespace) -> NodeOptions:
    return NodeOptions(kubeconfig=ns.kubeconfig, node=ns.node, node_netns=ns.node_netns)


def _view(ns: argparse.Namespace) -> ViewOptions:
    return ViewOptions(show_benign=ns.show_benign, verbose=ns.verbose)


def _select(ns: argparse.Namespace) -> DropSelection:
    return DropSelection(netns=tuple(ns.netns), ip=tuple(ns.ip), port=tuple(ns.port), max_event_rate=ns.max_event_rate,
                         pods=Selection(name=ns.pod, namespace=ns.namespace, selector=ns.selector,
                                        all_namespaces=ns.all_namespaces),
                         node=_node(ns))


def _options(ns: argparse.Namespace) -> Options:
    """The parser's namespace, read once, into the command's frozen options."""
    if ns.command == "watch":
        return WatchOptions(select=_select(ns), kernel=_kernel(ns), view=_view(ns), duration=ns.duration,
                            output="json" if ns.json else "console", stacks=ns.stacks)
    if ns.command == "capture":
        return CaptureOptions(select=_select(ns), kernel=_kernel(ns), view=_view(ns), duration=ns.duration,
                              output=ns.output, pcap=ns.pcap, snaplen=ns.snaplen, max_events=ns.max_events,
                              stacks=ns.stacks)
    if ns.command == "demo":
        return DemoOptions(kernel=_kernel(ns), view=_view(ns), duration=ns.duration, cases=ns.cases, prefix=ns.prefix)
    if ns.command == "doctor":
        return DoctorOptions(netns=ns.netns, pod=ns.pod, namespace=ns.namespace, kubeconfig=ns.kubeconfig,
                             node=ns.node, cni_dir=ns.cni_dir, json=ns.json)
    if ns.command == "summary":
        return SummaryOptions(dirs=tuple(ns.dir), format=ns.format, show_benign=ns.show_benign)
    assert ns.command == "serve", ns.command
    return ServeOptions(listen=ns.listen, node=_node(ns), kernel=_kernel(ns), max_series=ns.max_series,
                        series_ttl=ns.series_ttl, auth=ns.auth, insecure_no_auth=ns.insecure_no_auth,
                        tls_cert_file=ns.tls_cert_file, tls_key_file=ns.tls_key_file,
                        pod_events=not ns.no_pod_events, events_interval=ns.events_interval,
                        recorder=RecorderOptions(rate=ns.record_rate, budget=ns.record_budget << 20,
                                                 history=ns.history),
                        captures=ns.captures, capture_dir=ns.capture_dir, advertise=ns.advertise)


def run(opts: Options, env: Environment) -> ExitStatus:
    """The command the options are for."""
    match opts:
        case WatchOptions():
            return watch.run(opts, env)
        case CaptureOptions():
            return capture.run(opts, env)
        case DemoOptions():
            return demo.run(opts, env)
        case DoctorOptions():
            return doctor.run(opts, env)
        case SummaryOptions():
            return summary.run(opts, env)
        case ServeOptions():
            return serve.run(opts, env)


def main(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    """Run one command; its exit status. Bad input and machine set-up
    (UserError) end as one line on stderr; only bugs give a traceback."""
    env = env if env is not None else Environment()
    # First thing: a signal during parsing and loading (bcc's compile takes
    # about a second) must end the command too, without a traceback.
    try:
        SIGNALS.install()
        return run(parse(argv), env)
    except Interrupted as exc:
        say(env, f"{PROG}: stopped by {signal.Signals(exc.signum).name} before tracing began")
        return ExitStatus.stopped_by(exc.signum)
    except UserError as exc:
        say(env, f"{PROG}: error: {exc}")
        return exc.exit_status
    except BrokenPipeError:
        # `netdrop watch --json | head`: the reader left; that is not an error.
        # Python's failed flush of stdout at exit would be reported on stderr:
        # closing it keeps that quiet.
        with suppress(OSError):
            env.stderr.close()
        return ExitStatus.OK
    except OSError:
        if SIGNALS.signum == signal.SIGHUP:   # the terminal closed under the live console (EIO)
            return ExitStatus.STOPPED_BY_SIGHUP
        raise
    finally:
        SIGNALS.restore(SIGNALS.installed)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
