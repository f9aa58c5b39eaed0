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
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterator, TypeVar

from .errors import UserError
from .textsafe import printable

if TYPE_CHECKING:
    from .kernel.facts import KernelFacts
    from .kernel.filters import Filters
    from .kernel.loader import Stats
    from .pods.attribute import Attribution
    from .pods.source import PodSource
    from .watch import Sink

    OnTick = Callable[[Stats, float, float | None], None]

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

    def error(self, message: str) -> Any:   # NoReturn in typeshed
        raise UserError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Trace packets the Linux kernel drops, and say why.")
    sub = parser.add_subparsers(dest="command", required=True)

    watch = sub.add_parser("watch", help="show drops live (or as JSON lines)")
    _selection(watch)
    watch.add_argument("--duration", type=parse_duration, metavar="TIME",
                       help="stop after this long, e.g. 30s or 2m (default: until Ctrl-C)")
    watch.add_argument("--json", action="store_true",
                       help="print one JSON object per drop per line on stdout")
    _common(watch)

    cap = sub.add_parser("capture", help="record drops for a while into a directory: events, summary, pcapng")
    _selection(cap)
    cap.add_argument("--duration", type=parse_duration, default=120.0, metavar="TIME",
                     help="how long to record (default: 2m); Ctrl-C or SIGTERM end it early")
    cap.add_argument("--output", "-o", required=True, metavar="DIR", help="directory for the files")
    cap.add_argument("--pcap", action="store_true",
                     help="also write drops.pcapng: each dropped packet's headers with a comment saying why")
    cap.add_argument("--snaplen", type=int, metavar="N",
                     help="with --pcap: record up to N bytes of each packet, payload included "
                          "(default: headers only, at most 128 bytes)")
    cap.add_argument("--max-events", type=int, metavar="N",
                     help="write at most N events to events.jsonl (counts stay exact)")
    _common(cap)

    doc = sub.add_parser("doctor", help="check the node for misconfigurations that drop packets "
                                        "(exit status 1 if any is found)")
    doc.add_argument("--netns", metavar="NAME|PATH", help="examine this namespace as the node (a simulated "
                                                           "node); default: the one netdrop runs in")
    doc.add_argument("--pod", metavar="NAME", help="check this pod's path (MTU, its namespace)")
    doc.add_argument("-n", "--namespace", default="default", help="the pod's namespace (default: default)")
    doc.add_argument("--kubeconfig", metavar="PATH")
    doc.add_argument("--node", metavar="NAME", help="this node's Kubernetes name")
    doc.add_argument("--cni-dir", default="/var/lib/cni/networks", metavar="DIR",
                     help="host-local IPAM state (default: /var/lib/cni/networks)")
    doc.add_argument("--json", action="store_true", help="findings as JSON on stdout")

    summ = sub.add_parser("summary", help="what a capture found, for a person or a ticket")
    summ.add_argument("dir", metavar="DIR", help="a capture's directory (or its summary.json)")
    summ.add_argument("--format", "-f", choices=("table", "markdown", "json", "csv", "html"), default="table")

    demo = sub.add_parser("demo", help="build a simulated Kubernetes node in namespaces, play the "
                                       "drop cases and watch them live")
    demo.add_argument("--duration", type=parse_duration, default=60.0, metavar="TIME",
                      help="how long to run (default: 60s)")
    demo.add_argument("--cases", default="all", metavar="LIST",
                      help="comma-separated cases to play (default: all)")
    demo.add_argument("--prefix", default="nd-demo", metavar="NAME",
                      help="prefix of the namespaces the demo creates: 1-15 of a-z, 0-9 and '-', a letter "
                           "first (default: nd-demo)")
    _common(demo)
    return parser


def _selection(p: argparse.ArgumentParser) -> None:
    """Which drops: namespaces, addresses, ports, pods (watch and capture alike)."""
    p.add_argument("--netns", action="append", default=[], metavar="NAME|PATH|INODE",
                   help="only drops in this network namespace (repeatable)")
    p.add_argument("--ip", action="append", default=[], metavar="ADDR",
                   help="only packets from or to this address (repeatable, IPv4 or IPv6)")
    p.add_argument("--port", action="append", default=[], metavar="N",
                   help="only TCP/UDP packets from or to this port (repeatable)")
    p.add_argument("--max-event-rate", type=int, default=None, metavar="N",
                   help="send at most about N events/s from the kernel (default 10000; 0: no limit); "
                        "drop counts are exact either way")
    pods = p.add_argument_group("pods (from the Kubernetes API and the node's own namespaces)")
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


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mount-tracefs", action="store_true",
                   help="mount tracefs on /sys/kernel/tracing if it is not mounted")


def require_root() -> None:
    if os.geteuid() != 0:
        raise UserError("netdrop needs root to load BPF programs: run it with sudo")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """A stop signal before tracing began: the command ends at once with
    128 + the signal's number. A BaseException, like KeyboardInterrupt, so
    that no `except Exception` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Signals:
    """Ctrl-C, SIGTERM and SIGHUP (a closed terminal) for the whole run, from
    the first line of main(). Before tracing, the first one raises Interrupted
    where Python is (right after the C call it interrupted returns, e.g. bcc's
    compile), so start-up ends within moments and every `finally` on the way
    cleans up. While tracing (and after), it only sets `stop`: the event loop
    sees it within one pass and the run ends with its usual lines."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.signum: int | None = None
        self._raise = True
        self._deferred = 0
        self._pid = os.getpid()
        self.installed: dict[int, object] = {}

    def install(self) -> dict[int, object]:
        """The handlers, in place; returns the ones they replace. Call inside the
        try that catches Interrupted: a signal may come before this returns."""
        self.stop.clear()
        self.signum, self._raise, self._deferred = None, True, 0
        self._pid = os.getpid()
        old: dict[int, object] = {}
        self.installed = old
        for s in STOP_SIGNALS:
            if signal.getsignal(s) == signal.SIG_IGN:
                # Ignored by whoever started us (`nohup`, a shell's background job):
                # they mean netdrop to outlive the terminal; it stays ignored.
                continue
            old[s] = signal.getsignal(s)
            signal.signal(s, self._handler)
        return old

    @staticmethod
    def restore(old: dict[int, object]) -> None:
        for s, h in old.items():
            signal.signal(s, h)   # type: ignore[arg-type]

    def _handler(self, signum: int, frame: object) -> None:
        if os.getpid() != self._pid:
            # A forked helper (pyroute2 forks one to enter a namespace) inherits
            # this handler: there the signal must do what it does by default,
            # never unwind a copy of main() (which would run its cleanup twice).
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.stop.set()
        if self.signum is not None:
            return                # a second signal: the first one is being handled
        self.signum = signum
        if self._raise and not self._deferred:
            self._raise = False   # raised once: the cleanup it starts is not interrupted
            raise Interrupted(signum)

    def check(self) -> None:
        """Raise now what arrived while deferred (or do nothing)."""
        if self.signum is not None and self._raise:
            self._raise = False
            raise Interrupted(self.signum)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Steps that must not be cut in half (the lab's build starts processes
        it must know about to remove them): a signal only sets `stop` until the
        caller's next check()."""
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1

    def tracing(self) -> None:
        """From here on a signal only sets `stop`: the run ends with its lines."""
        self.check()
        self._raise = False


SIGNALS = Signals()


def kernel_facts(args: argparse.Namespace) -> KernelFacts:
    """What the machine must offer, checked before anything else is looked at."""
    from .kernel import facts

    try:
        tracefs = facts.find_tracefs()
    except UserError:
        if not args.mount_tracefs:
            raise
        tracefs = facts.mount_tracefs()
    return facts.probe_kernel(tracefs)


def make_filters(args: argparse.Namespace) -> Filters:
    from .kernel.filters import Filters, parse_ip, parse_port, resolve_netns

    return Filters(
        netns=frozenset(resolve_netns(s) for s in args.netns),
        ips=frozenset(parse_ip(s) for s in args.ip),
        ports=frozenset(parse_port(s) for s in args.port),
    )


def pod_source(args: argparse.Namespace) -> Pending[PodSource]:
    """The pod index source (kube.Selection from --pod/-l/-A, the API, the node)."""
    from .pods.kube import Selection, parse_selector
    from .pods.nodeview import HOST_NETNS
    from .pods.source import PodSource

    sel = Selection(name=args.pod, namespace=args.namespace, selector=args.selector,
                    all_namespaces=args.all_namespaces)
    if sel.selector:
        parse_selector(sel.selector)
    if sel.active and (args.netns or args.ip):
        raise UserError("--pod/-l/-A choose the namespaces, interfaces and addresses themselves: "
                        "they cannot be combined with --netns or --ip")

    def build() -> PodSource:
        source = PodSource(sel, args.kubeconfig, args.node, args.node_netns or HOST_NETNS, warn=warn)
        if source.kube is None and sel.active:
            warn(source.describe())
        return source

    return Pending(build)


T = TypeVar("T")


class Pending(Generic[T]):
    """A value built in a thread while the main thread does other start-up work:
    the pod source asks the API (up to kube.START_SECONDS) while bcc compiles
    (about a second, in C, without the GIL), so start-up takes the longer of
    the two, not both. result() gives the value or raises what building raised."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(build,), name="netdrop-start", daemon=True)
        self._thread.start()

    def _run(self, build: Callable[[], T]) -> None:
        try:
            self._value = build()
        except BaseException as exc:  # handed to the main thread as it is
            self._error = exc

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value   # type: ignore[return-value]


def _say(line: str) -> None:
    """One line on stderr, every line netdrop prints there: names of interfaces,
    pods and rules in it come from others, and must not drive the terminal."""
    try:
        print(printable(line), file=sys.stderr, flush=True)
    except OSError:   # the terminal is gone (SIGHUP, EIO): nobody to tell, the run still ends cleanly
        pass


def warn(msg: str) -> None:
    _say(f"{PROG}: warning: {msg}")


def info(msg: str) -> None:
    _say(f"{PROG}: {msg}")


class Session:
    """A loaded BPF program with everything that turns its output into drops:
    decoder, groups, pod source, and the screen's state. Used as a context."""

    def __init__(self, args: argparse.Namespace, facts: KernelFacts, filters: Filters,
                 pods: PodSource | Pending[PodSource] | None = None, *, title: str = "netdrop watch",
                 note: str | None = None, snaplen: int = 0, headers_only: bool = True) -> None:
        from .groups import Groups
        from .kernel.decode import Decoder
        from .kernel.facts import Kallsyms
        from .kernel.filters import known_netns_inodes
        from .kernel.loader import Tracer
        from .sinks import console

        rate = getattr(args, "max_event_rate", None)
        if rate is not None and rate < 0:
            raise UserError("--max-event-rate must be 0 (no limit) or positive")
        self.tracer = Tracer(facts, filters, snaplen=snaplen, headers_only=headers_only,
                             **({} if rate is None else {"max_event_rate": rate}))
        self.loaded_at = datetime.now(timezone.utc)      # the kernel counters count from here
        if isinstance(pods, Pending):
            pods = pods.result()
        if pods is not None and not pods.attributing:
            info(f"pods: {pods.describe()}")
            pods = None
        self.pods = pods
        if pods is not None:
            pods.apply(self.tracer)
            pods.start()
        kallsyms = Kallsyms.load()
        if not kallsyms.usable:
            warn("/proc/kallsyms hides addresses (kptr_restrict): drop locations cannot be named")
        self.decoder = Decoder(facts.reasons, kallsyms, has_reason=facts.has_reason)
        from .pods.attribute import NO_POD

        source = pods

        def pod_of_tag(tag: int) -> Attribution:
            index = source.current() if source is not None else None
            return index.attribute_tag(tag) if index is not None else NO_POD

        self.groups = Groups(self.decoder, pod_of_tag=pod_of_tag)
        names = known_netns_inodes()
        self.view = console.View(hooks=self.tracer.hooks, filters=filters.describe(names), netns_names=names,
                                 title=title, note=note, pods=pods.describe() if pods is not None else None)
        from .explain.netfilter import Explainer

        node_netns = pods.scanner.node_inode if pods is not None else os.stat("/proc/self/ns/net").st_ino
        self.explainer = Explainer(node_netns=node_netns, warn=warn)
        self.explainer.sample_now()     # the node's ruleset is known before the first drop arrives
        self.explainer.start()
        self.stop = SIGNALS.stop
        self._names_at = time.monotonic()

    def announce(self) -> None:
        skipped = [f"{h.name}: {h.detail}" for h in self.tracer.hooks if not h.attached]
        if skipped:
            info(f"function hooks not used ({'; '.join(skipped)}): working with tracepoints")
        info(f"tracing ({', '.join(h.name for h in self.tracer.hooks if h.attached)}); "
             f"filters: {'; '.join(self.view.filters) or 'none'}; Ctrl-C to stop")
        if self.pods is not None:
            info(f"pods: {self.view.pods}")

    def refresh_view(self, stats: Stats, elapsed: float, remaining: float | None) -> None:
        from .kernel.filters import known_netns_inodes

        v = self.view
        v.stats, v.elapsed, v.remaining = stats, elapsed, remaining
        v.notices = self.notices()
        if time.monotonic() - self._names_at > 2:
            v.netns_names = known_netns_inodes()
            if self.pods is not None:
                v.pods = self.pods.describe()
            self._names_at = time.monotonic()

    def run(self, sinks: list[Sink], duration: float | None, on_tick: OnTick = lambda *a: None,
            background: threading.Thread | None = None) -> Stats:
        from . import watch

        SIGNALS.tracing()
        self.announce()
        if background is not None:
            background.start()
        pods = self.pods
        return watch.run(self.tracer, self.decoder, self.groups, sinks, duration, self.stop, on_tick,
                         pods=pods.current if pods is not None else (lambda: None),
                         maintain=(lambda: pods.apply(self.tracer)) if pods is not None else (lambda: None),
                         explainer=self.explainer)

    def run_live(self, duration: float | None, background: threading.Thread | None = None) -> Stats:
        """The rich console on stdout, redrawn on every tick."""
        from rich.console import Console
        from rich.live import Live

        from .sinks import console

        screen = Console()
        self.view.width = screen.width
        with Live(console.render(self.groups, self.view), console=screen, refresh_per_second=4) as live:
            def on_tick(stats: Stats, elapsed: float, remaining: float | None) -> None:
                self.refresh_view(stats, elapsed, remaining)
                self.view.width = screen.width
                live.update(console.render(self.groups, self.view))
            return self.run([], duration, on_tick, background)

    def notices(self) -> list[str]:
        names = self.view.netns_names
        return [f"netns {names.get(ns, ns)}: {text}" for ns, text in sorted(self.explainer.notices.items())]

    def report(self, stats: Stats, groups_too: bool = False) -> None:
        from .kernel.filters import known_netns_inodes
        from .sinks import console

        info(f"{stats.matched:,} drops counted, {stats.events:,} events delivered, "
             f"{stats.lost:,} events lost, {stats.sampled_out:,} sampled out")
        if groups_too:
            for line in console.summary_lines(self.groups, known_netns_inodes()):
                info(f"counted {line}")
        for notice in self.notices():
            info(f"notice: {notice}")

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.explainer.stop()
        if self.pods is not None:
            self.pods.stop()
        self.tracer.close()


def cmd_watch(args: argparse.Namespace) -> int:
    from .sinks.jsonout import JsonLines

    require_root()
    facts = kernel_facts(args)
    filters = make_filters(args)
    with Session(args, facts, filters, pod_source(args)) as session:
        if args.json:
            stats = session.run([JsonLines(sys.stdout)], args.duration)
        else:
            stats = session.run_live(args.duration)
        session.report(stats, groups_too=args.json)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .kernel.filters import Filters
    from .lab.node import Player, SimNode, check_prefix, select_cases
    from .pods.kube import Selection
    from .pods.source import PodSource

    check_prefix(args.prefix)       # a bad prefix fails at once, root or not
    require_root()
    facts = kernel_facts(args)
    cases = select_cases(args.cases)
    # The build starts the process holding the cache pod's namespace: it must
    # end with `node` known, or nothing would remove it. A signal during the
    # build is acted on right after it, inside the try: the lab is destroyed.
    with SIGNALS.deferred():
        node = SimNode.create(prefix=args.prefix)
    player = Player(node, cases)
    try:
        SIGNALS.check()
        filters = Filters(netns=frozenset(node.netns_inodes().values()))
        note = "demo: " + "; ".join(f"{c.name}: {c.description}" for c in cases)
        pods = PodSource(Selection(), str(node.kubeconfig), None, node.node1, warn=warn)
        with Session(args, facts, filters, pods, title="netdrop demo: simulated node", note=note) as session:
            stats = session.run_live(args.duration, threading.Thread(target=player.run, daemon=True))
            session.report(stats)
        return 0
    finally:
        with SIGNALS.deferred():    # a signal now must not cut the removal short
            player.stop()
            node.destroy()


def cmd_capture(args: argparse.Namespace) -> int:
    from .sinks import capture, summary

    require_root()
    outdir = capture.prepare_output(args.output)      # before anything is loaded
    if args.snaplen is not None and not args.pcap:
        raise UserError("--snaplen sets what --pcap records: add --pcap")
    if args.max_events is not None and args.max_events < 0:
        raise UserError("--max-events must be 0 or more")
    facts = kernel_facts(args)
    filters = make_filters(args)
    pods = pod_source(args)
    snaplen = (args.snaplen or capture.DEFAULT_SNAPLEN) if args.pcap else 0
    with Session(args, facts, filters, pods, title=f"netdrop capture -> {outdir.path}", snaplen=snaplen,
                 headers_only=args.snaplen is None) as session:
        recorder = capture.Recorder(outdir, pcap_snaplen=snaplen, max_events=args.max_events,
                                    started=session.loaded_at)
        progress = capture.Progress()

        def on_tick(stats: Stats, elapsed: float, remaining: float | None) -> None:
            session.refresh_view(stats, elapsed, remaining)
            recorder.tick(session.groups, datetime.now(timezone.utc))
            # A closed terminal (SIGHUP) makes the progress line fail with EIO:
            # the capture goes on to its summary all the same.
            with suppress(OSError):
                progress.update(session.groups, stats, recorder, elapsed, remaining)

        try:
            stats = session.run([recorder], args.duration, on_tick)
        finally:
            with suppress(OSError):
                progress.close()
            ended = datetime.now(timezone.utc)
            recorder.tick(session.groups, ended)
            recorder.close()
        stopped = "duration reached" if not session.stop.is_set() else "stopped early (signal)"
        names = session.view.netns_names
        node = session.pods.node_name if session.pods is not None else None
        result = summary.build(session.groups, recorder, ended=ended, reason_ended=stopped, stats=stats,
                               hooks=session.tracer.hooks, filters=session.view.filters,
                               pods=session.view.pods, node=node, names=names, notices=session.notices())
        capture.write_summary(outdir, result)
        session.report(stats)
        files = [capture.EVENTS_FILE, capture.SUMMARY_FILE] + ([capture.PCAP_FILE] if args.pcap else [])
        info(f"wrote {', '.join(str(outdir.path / f) for f in files)} ({stopped}); "
             f"read it with: netdrop summary {outdir.path}")
        if recorder.write_error:
            warn(recorder.write_error)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:

    from rich.console import Console

    from . import doctor
    from .pods.kube import KubeUnavailable, Selection
    from .pods.nodeview import HOST_NETNS, NETNS_RUN_DIR, NodeScanner
    from .pods.source import PodSource

    require_root()
    spec = args.netns or HOST_NETNS
    path = spec if "/" in spec else str(NETNS_RUN_DIR / spec)
    if not os.path.exists(path):
        raise UserError(f"unknown network namespace {args.netns!r}: {path} does not exist")
    scanner = NodeScanner(spec)
    snapshot = scanner.scan()
    pods = snapshot.pod_like()
    names: dict[int, str] = {}
    live = {ip for info in pods for ip in info.ips}
    if args.pod or args.kubeconfig:
        source = PodSource(Selection(name=args.pod, namespace=args.namespace), args.kubeconfig, args.node, spec,
                           warn=warn)
        if source.index is not None:
            idx = source.index
            names = {inode: idx.ids.refs[pid].label for inode, pid in idx.by_netns.items()}
            if args.pod:
                if source.kube is None:
                    raise UserError(f"--pod needs the Kubernetes API to find {args.pod}: {source.problem}")
                pods = [snapshot.namespaces[i] for i, pid in idx.by_netns.items() if pid in idx.selected]
                if not pods:
                    raise UserError(f"pod {args.namespace}/{args.pod} has no sandbox on this node yet")
    if names and not args.pod:      # the API says which sandboxes are pods
        pods = [p for p in pods if p.inode in names]
    node = doctor.Node(None if spec == HOST_NETNS else path, args.netns or "this node", pods, names,
                       Path(args.cni_dir))
    findings = doctor.run_all(node, live)
    cidrs, this_node = None, None
    if (args.pod or args.kubeconfig) and source.kube is not None:
        try:
            cidrs, this_node = source.kube.pod_cidrs(), source.node_name
        except KubeUnavailable:
            pass
    findings += doctor.check_pod_routes(node, cidrs, this_node)
    if args.json:
        sys.stdout.write(doctor.to_json(findings, node))
    else:
        Console().print(doctor.render(findings, node))
        bad = doctor.problems(findings)
        info(f"{len(bad)} problem{'s' if len(bad) != 1 else ''} found" if bad else "no problems found")
    return 1 if doctor.problems(findings) else 0


def cmd_summary(args) -> int:
    from .sinks import capture, summary

    # load() refuses what is not a summary (FIFO, device, over 64 MiB, wrong
    # types, deep nesting) with one line; render() escapes for the format's reader.
    data = summary.load(capture.summary_path(args.dir))
    sys.stdout.write(summary.render(data, args.format))
    return 0


COMMANDS = {"watch": cmd_watch, "demo": cmd_demo, "capture": cmd_capture, "summary": cmd_summary,
            "doctor": cmd_doctor}


def main(argv: list[str] | None = None) -> int:
    # First thing: a signal during parsing and loading (bcc's compile takes
    # about a second) must end the command too, without a traceback.
    try:
        SIGNALS.install()
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except Interrupted as exc:
        _say(f"{PROG}: stopped by {signal.Signals(exc.signum).name} before tracing began")
        return 128 + exc.signum
    except UserError as exc:
        _say(f"{PROG}: error: {exc}")
        return exc.exit_status
    except BrokenPipeError:
        # `netdrop watch --json | head`: the reader left; that is not an error.
        sys.stderr.close()
        return 0
    except OSError as exc:
        if SIGNALS.signum == signal.SIGHUP:   # the terminal closed under the live console (EIO)
            return 128 + signal.SIGHUP
        raise
    finally:
        SIGNALS.restore(SIGNALS.installed)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
