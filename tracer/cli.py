"""netdrop command line: main(argv) -> exit status.

User errors (UserError) become one line on stderr and a non-zero exit; only
bugs produce tracebacks.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

PROG = "netdrop"


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (examples: 30s, 2m, 10)")
    value = float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    if value <= 0:
        raise argparse.ArgumentTypeError("duration must be positive")
    return value


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are user errors too: one line, exit 2 (not argparse's usage block)."""

    def error(self, message):
        raise UserError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Trace packets the Linux kernel drops, and say why.")
    sub = parser.add_subparsers(dest="command", required=True)

    watch = sub.add_parser("watch", help="show drops live (or as JSON lines)")
    watch.add_argument("--netns", action="append", default=[], metavar="NAME|PATH|INODE",
                       help="only drops in this network namespace (repeatable)")
    watch.add_argument("--ip", action="append", default=[], metavar="ADDR",
                       help="only packets from or to this address (repeatable, IPv4 or IPv6)")
    watch.add_argument("--port", action="append", default=[], metavar="N",
                       help="only TCP/UDP packets from or to this port (repeatable)")
    watch.add_argument("--duration", type=parse_duration, metavar="TIME",
                       help="stop after this long, e.g. 30s or 2m (default: until Ctrl-C)")
    watch.add_argument("--json", action="store_true",
                       help="print one JSON object per drop per line on stdout")
    watch.add_argument("--max-event-rate", type=int, default=None, metavar="N",
                       help="send at most about N events/s from the kernel (default 10000; 0: no limit); "
                            "drop counts are exact either way")
    pods = watch.add_argument_group("pods (from the Kubernetes API and the node's own namespaces)")
    pods.add_argument("--pod", metavar="NAME", help="only drops of this pod: in its namespace, on its veth, "
                                                     "and on the node with its addresses")
    pods.add_argument("-n", "--namespace", default="default", help="the pod's namespace (default: default)")
    pods.add_argument("-l", "--selector", metavar="KEY=VALUE,...", help="only pods with these labels")
    pods.add_argument("-A", "--all-namespaces", action="store_true", help="pods of every namespace")
    pods.add_argument("--kubeconfig", metavar="PATH",
                      help="default: $KUBECONFIG, ~/.kube/config, /etc/kubernetes/kubelet.conf, in-cluster")
    pods.add_argument("--node", metavar="NAME", help="this node's name (default: the hostname, or the Node "
                                                       "with this machine's addresses)")
    pods.add_argument("--node-netns", metavar="NAME|PATH", default=None,
                      help="the namespace that plays the node (default: the host's; a simulated node's)")
    _common(watch)

    demo = sub.add_parser("demo", help="build a simulated Kubernetes node in namespaces, play the "
                                       "drop cases and watch them live")
    demo.add_argument("--duration", type=parse_duration, default=60.0, metavar="TIME",
                      help="how long to run (default: 60s)")
    demo.add_argument("--cases", default="all", metavar="LIST",
                      help="comma-separated cases to play (default: all)")
    demo.add_argument("--prefix", default="nd-demo", metavar="NAME",
                      help="prefix of the namespaces the demo creates (default: nd-demo)")
    _common(demo)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mount-tracefs", action="store_true",
                   help="mount tracefs on /sys/kernel/tracing if it is not mounted")


def require_root() -> None:
    if os.geteuid() != 0:
        raise UserError("netdrop needs root to load BPF programs: run it with sudo")


@contextmanager
def stop_on_signals(stop: threading.Event):
    """Ctrl-C and SIGTERM end the run cleanly (the loop checks `stop` twice a second)."""
    def handler(signum, frame):
        stop.set()
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def kernel_facts(args):
    """What the machine must offer, checked before anything else is looked at."""
    from . import kernel

    try:
        tracefs = kernel.find_tracefs()
    except UserError:
        if not args.mount_tracefs:
            raise
        tracefs = kernel.mount_tracefs()
    return kernel.probe_kernel(tracefs)


def open_tracer(args, facts, filters):
    from .loader import Tracer

    rate = getattr(args, "max_event_rate", None)
    if rate is not None and rate < 0:
        raise UserError("--max-event-rate must be 0 (no limit) or positive")
    return Tracer(facts, filters, **({} if rate is None else {"max_event_rate": rate}))


def make_filters(args):
    from .filters import Filters, parse_ip, parse_port, resolve_netns

    return Filters(
        netns=frozenset(resolve_netns(s) for s in args.netns),
        ips=frozenset(parse_ip(s) for s in args.ip),
        ports=frozenset(parse_port(s) for s in args.port),
    )


def pod_source(args):
    """The pod index source, or None when neither a selection nor an API is there to use."""
    from .kube import Selection, parse_selector
    from .nodeview import HOST_NETNS
    from .pods import PodSource

    sel = Selection(name=args.pod, namespace=args.namespace, selector=args.selector,
                    all_namespaces=args.all_namespaces)
    if sel.selector:
        parse_selector(sel.selector)
    if sel.active and (args.netns or args.ip):
        raise UserError("--pod/-l/-A choose the namespaces, interfaces and addresses themselves: "
                        "they cannot be combined with --netns or --ip")

    def warn(msg):
        print(f"{PROG}: warning: {msg}", file=sys.stderr, flush=True)

    source = PodSource(sel, args.kubeconfig, args.node, args.node_netns or HOST_NETNS, warn=warn)
    if source.kube is None and sel.active:
        warn(source.describe())
    return source


def trace(args, facts, filters, *, json_out: bool, title: str = "netdrop watch",
          background: threading.Thread | None = None, note: str | None = None, pods=None) -> int:
    from . import console, kernel, watch
    from .decode import Decoder
    from .filters import known_netns_inodes
    from .groups import Groups
    from .jsonout import JsonLines

    tracer = open_tracer(args, facts, filters)
    if pods is not None and not pods.attributing:
        print(f"{PROG}: pods: {pods.describe()}", file=sys.stderr)
        pods = None
    if pods is not None:
        pods.apply(tracer)
        pods.start()
    try:
        return _trace(args, tracer, facts, filters, json_out, title, background, note, pods)
    finally:
        if pods is not None:
            pods.stop()


def _trace(args, tracer, facts, filters, json_out, title, background, note, pods) -> int:
    from . import console, kernel, watch
    from .decode import Decoder
    from .filters import known_netns_inodes
    from .groups import Groups
    from .jsonout import JsonLines

    with tracer:
        kallsyms = kernel.Kallsyms.load()
        if not kallsyms.usable:
            print(f"{PROG}: warning: /proc/kallsyms hides addresses (kptr_restrict): drop locations "
                  "cannot be named", file=sys.stderr)
        decoder = Decoder(facts.reasons, kallsyms, has_reason=facts.has_reason)
        pod_of_tag = (lambda tag: pods.current().attribute_tag(tag)) if pods is not None else (lambda tag: None)
        groups = Groups(decoder, pod_of_tag=pod_of_tag)
        names = known_netns_inodes()
        view = console.View(hooks=tracer.hooks, filters=filters.describe(names), netns_names=names,
                            title=title, note=note, pods=pods.describe() if pods is not None else None)
        current = pods.current if pods is not None else (lambda: None)
        maintain = (lambda: pods.apply(tracer)) if pods is not None else (lambda: None)
        skipped = [f"{h.name}: {h.detail}" for h in tracer.hooks if not h.attached]
        if skipped:
            print(f"{PROG}: function hooks not used ({'; '.join(skipped)}): working with tracepoints",
                  file=sys.stderr)
        stop = threading.Event()
        with stop_on_signals(stop):
            print(f"{PROG}: tracing ({', '.join(h.name for h in tracer.hooks if h.attached)}); "
                  f"filters: {'; '.join(view.filters) or 'none'}; Ctrl-C to stop", file=sys.stderr, flush=True)
            if pods is not None:
                print(f"{PROG}: pods: {view.pods}", file=sys.stderr, flush=True)
            if background is not None:
                background.start()
            if json_out:
                stats = watch.run(tracer, decoder, groups, [JsonLines(sys.stdout)], args.duration, stop,
                                  pods=current, maintain=maintain)
            else:
                stats = _live(tracer, decoder, groups, view, args.duration, stop, current, maintain, pods)
        print(f"{PROG}: {stats.matched:,} drops counted, {stats.events:,} events delivered, "
              f"{stats.lost:,} events lost, {stats.sampled_out:,} sampled out", file=sys.stderr)
        if json_out:
            for line in console.summary_lines(groups, known_netns_inodes()):
                print(f"{PROG}: counted {line}", file=sys.stderr)
    return 0


def _live(tracer, decoder, groups, view, duration, stop, current, maintain, pods):
    from rich.console import Console
    from rich.live import Live

    from . import console, watch
    from .filters import known_netns_inodes

    last_names = [time.monotonic()]
    screen = Console()
    view.width = screen.width

    with Live(console.render(groups, view), console=screen, refresh_per_second=4,
              transient=False) as live:
        def on_tick(stats, elapsed, remaining):
            view.stats, view.elapsed, view.remaining = stats, elapsed, remaining
            view.width = screen.width
            if time.monotonic() - last_names[0] > 2:
                view.netns_names = known_netns_inodes()
                if pods is not None:
                    view.pods = pods.describe()
                last_names[0] = time.monotonic()
            live.update(console.render(groups, view))

        return watch.run(tracer, decoder, groups, [], duration, stop, on_tick, pods=current, maintain=maintain)


def cmd_watch(args) -> int:
    require_root()
    facts = kernel_facts(args)
    filters = make_filters(args)
    return trace(args, facts, filters, json_out=args.json, pods=pod_source(args))


def cmd_demo(args) -> int:
    from . import lab
    from .filters import Filters
    from .kube import Selection
    from .pods import PodSource

    require_root()
    facts = kernel_facts(args)
    cases = lab.select_cases(args.cases)
    node = lab.SimNode.create(prefix=args.prefix)
    try:
        player = lab.Player(node, cases)
        args.netns, args.ip, args.port = [], [], []
        filters = Filters(netns=frozenset(node.netns_inodes().values()))
        note = "demo: " + "; ".join(f"{c.name}: {c.description}" for c in cases)
        pods = PodSource(Selection(), str(node.kubeconfig), None, node.node1)
        return trace(args, facts, filters, json_out=False, title="netdrop demo: simulated node",
                     background=threading.Thread(target=player.run, daemon=True), note=note, pods=pods)
    finally:
        if "player" in locals():
            player.stop()
        node.destroy()


COMMANDS = {"watch": cmd_watch, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except BrokenPipeError:
        # `netdrop watch --json | head`: the reader left; that is not an error.
        sys.stderr.close()
        return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
