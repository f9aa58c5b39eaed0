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


def open_tracer(args, filters):
    """Checks in the order a user can fix them, then loads the BPF program."""
    from . import kernel
    from .loader import Tracer

    try:
        tracefs = kernel.find_tracefs()
    except UserError:
        if not args.mount_tracefs:
            raise
        tracefs = kernel.mount_tracefs()
    facts = kernel.probe_kernel(tracefs)
    rate = getattr(args, "max_event_rate", None)
    if rate is not None and rate < 0:
        raise UserError("--max-event-rate must be 0 (no limit) or positive")
    return facts, Tracer(facts, filters, **({} if rate is None else {"max_event_rate": rate}))


def make_filters(args):
    from .filters import Filters, parse_ip, parse_port, resolve_netns

    return Filters(
        netns=frozenset(resolve_netns(s) for s in args.netns),
        ips=frozenset(parse_ip(s) for s in args.ip),
        ports=frozenset(parse_port(s) for s in args.port),
    )


def trace(args, filters, *, json_out: bool, title: str = "netdrop watch",
          background: threading.Thread | None = None, note: str | None = None) -> int:
    from . import console, kernel, watch
    from .decode import Decoder
    from .filters import known_netns_inodes
    from .groups import Groups
    from .jsonout import JsonLines

    facts, tracer = open_tracer(args, filters)
    with tracer:
        kallsyms = kernel.Kallsyms.load()
        if not kallsyms.usable:
            print(f"{PROG}: warning: /proc/kallsyms hides addresses (kptr_restrict): drop locations "
                  "cannot be named", file=sys.stderr)
        decoder = Decoder(facts.reasons, kallsyms, has_reason=facts.has_reason)
        groups = Groups(decoder)
        names = known_netns_inodes()
        view = console.View(hooks=tracer.hooks, filters=filters.describe(names), netns_names=names,
                            title=title, note=note)
        skipped = [f"{h.name}: {h.detail}" for h in tracer.hooks if not h.attached]
        if skipped:
            print(f"{PROG}: function hooks not used ({'; '.join(skipped)}): working with tracepoints",
                  file=sys.stderr)
        stop = threading.Event()
        with stop_on_signals(stop):
            print(f"{PROG}: tracing ({', '.join(h.name for h in tracer.hooks if h.attached)}); "
                  f"filters: {'; '.join(view.filters) or 'none'}; Ctrl-C to stop", file=sys.stderr, flush=True)
            if background is not None:
                background.start()
            if json_out:
                stats = watch.run(tracer, decoder, groups, [JsonLines(sys.stdout)], args.duration, stop)
            else:
                stats = _live(tracer, decoder, groups, view, args.duration, stop)
        print(f"{PROG}: {stats.matched:,} drops counted, {stats.events:,} events delivered, "
              f"{stats.lost:,} events lost, {stats.sampled_out:,} sampled out", file=sys.stderr)
    return 0


def _live(tracer, decoder, groups, view, duration, stop):
    from rich.console import Console
    from rich.live import Live

    from . import console, watch
    from .filters import known_netns_inodes

    last_names = [time.monotonic()]

    with Live(console.render(groups, view), console=Console(), refresh_per_second=4,
              transient=False) as live:
        def on_tick(stats, elapsed, remaining):
            view.stats, view.elapsed, view.remaining = stats, elapsed, remaining
            if time.monotonic() - last_names[0] > 2:
                view.netns_names = known_netns_inodes()
                last_names[0] = time.monotonic()
            live.update(console.render(groups, view))

        return watch.run(tracer, decoder, groups, [], duration, stop, on_tick)


def cmd_watch(args) -> int:
    require_root()
    return trace(args, make_filters(args), json_out=args.json)


def cmd_demo(args) -> int:
    from . import lab
    from .filters import Filters

    require_root()
    cases = lab.select_cases(args.cases)
    node = lab.SimNode.create(prefix=args.prefix)
    try:
        player = lab.Player(node, cases)
        args.netns, args.ip, args.port = [], [], []
        filters = Filters(netns=frozenset(node.netns_inodes().values()))
        note = "demo: " + "; ".join(f"{c.name}: {c.description}" for c in cases)
        return trace(args, filters, json_out=False, title="netdrop demo: simulated node",
                     background=threading.Thread(target=player.run, daemon=True), note=note)
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
