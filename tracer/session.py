"""session: the commands' bodies and the pipeline they wire.

A command is a function (args, env) -> ExitStatus. Those that trace build a
Session: the loaded BPF program with its decoder, groups, pod source,
explainer and the screen's state. Everything the user sees goes through env
(env.py): the streams, the terminal, the clock. Start-up checks run first
and in an order that fails cheaply (root, arguments, the capture directory,
tracefs) before anything is loaded. Stop signals (Signals) are handled from
the first line of cli.main() to the end.
"""

from __future__ import annotations

import argparse
import enum
import functools
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from . import signals
from .env import Environment
from .errors import UserError
from .textsafe import printable

if TYPE_CHECKING:
    from types import FrameType

    from .kernel.facts import KernelFacts
    from .kernel.filters import Filters
    from .kernel.loader import Stats
    from .pods.attribute import Attribution
    from .pods.source import PodSource
    from .watch import Sink

    OnTick = Callable[[Stats, float, float | None], None]

PROG = "netdrop"

T = TypeVar("T")


class ExitStatus(enum.IntEnum):
    """What a command ends with (httpie's ExitStatus, and the shell's 128 + n
    for a command ended by signal n)."""

    OK = 0
    PROBLEMS = 1        # doctor found a problem
    ERROR = 2           # a UserError: one line on stderr (errors.UserError.exit_status)
    STOPPED_BY_SIGHUP = 128 + signal.SIGHUP
    STOPPED_BY_SIGINT = 128 + signal.SIGINT
    STOPPED_BY_SIGTERM = 128 + signal.SIGTERM

    @classmethod
    def stopped_by(cls, signum: int) -> ExitStatus:
        """The status for a stop signal (one of STOP_SIGNALS) that ended start-up."""
        return cls(128 + signum)


def say(env: Environment, line: str) -> None:
    """One line on stderr, every line netdrop prints there: names of interfaces,
    pods and rules in it come from others, and must not drive the terminal."""
    with suppress(OSError):   # the terminal is gone (SIGHUP, EIO): nobody to tell, the run still ends cleanly
        print(printable(line), file=env.stderr, flush=True)


def warn(env: Environment, msg: str) -> None:
    say(env, f"{PROG}: warning: {msg}")


def info(env: Environment, msg: str) -> None:
    say(env, f"{PROG}: {msg}")


def require_root(env: Environment) -> None:
    if env.euid != 0:
        raise UserError("netdrop needs root to load BPF programs: run it with sudo")


# ---------------------------------------------------------------- signals

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
    sees it within one pass and the run ends with its usual lines.

    Signal handlers belong to the process, so there is one of these (SIGNALS)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.signum: int | None = None
        self._raise = True
        self._deferred = 0
        self._pid = os.getpid()
        self.installed: dict[int, signals.Handler] = {}

    def install(self) -> dict[int, signals.Handler]:
        """The handlers, in place; returns the ones they replace. Call inside the
        try that catches Interrupted: a signal may come before this returns."""
        self.stop.clear()
        self.signum, self._raise, self._deferred = None, True, 0
        self._pid = os.getpid()
        # A stop signal ignored by whoever started us (`nohup`) stays ignored:
        # they mean netdrop to outlive the terminal.
        self.installed = signals.take(STOP_SIGNALS, self._handler)
        return self.installed

    restore = staticmethod(signals.give_back)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if signals.in_forked_child(self._pid, signum):
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


# ---------------------------------------------------------------- start-up

def kernel_facts(args: argparse.Namespace, env: Environment) -> KernelFacts:
    """What the machine must offer, checked before anything else is looked at."""
    from .kernel import facts

    try:
        tracefs = facts.find_tracefs(env.tracefs)
    except UserError:
        if not args.mount_tracefs:
            raise
        tracefs = facts.mount_tracefs(env.tracefs[0])
    return facts.probe_kernel(tracefs)


def make_filters(args: argparse.Namespace, env: Environment) -> Filters:
    """--netns, --ip, --port (the last two parsed with the arguments, cli.py)."""
    from .kernel.filters import Filters
    from .node.namespaces import resolve_netns

    return Filters(netns=frozenset(resolve_netns(s, env.netns_dir) for s in args.netns),
                   ips=frozenset(args.ip), ports=frozenset(args.port))


def node_netns(spec: str | None, env: Environment) -> str:
    """The file of the namespace that plays the node (--node-netns, doctor's
    --netns), checked to be a network namespace before anything is loaded; by
    default the one netdrop runs in."""
    from .node.namespaces import checked_netns, netns_path
    from .node.namespaces import HOST_NETNS

    if spec is None:
        return HOST_NETNS
    checked_netns(spec, env.netns_dir)
    return str(netns_path(spec, env.netns_dir))


def pod_source(args: argparse.Namespace, env: Environment) -> Pending[PodSource]:
    """The pod index source (kube.Selection from --pod/-l/-A, the API, the node)."""
    from .pods.apicall import Calls
    from .pods.kube import Selection, parse_selector
    from .pods.source import PodSource

    sel = Selection(name=args.pod, namespace=args.namespace, selector=args.selector,
                    all_namespaces=args.all_namespaces)
    if sel.selector:
        parse_selector(sel.selector)
    if sel.active and (args.netns or args.ip):
        raise UserError("--pod/-l/-A choose the namespaces, interfaces and addresses themselves: "
                        "they cannot be combined with --netns or --ip")
    node = node_netns(args.node_netns, env)
    calls = Calls()

    def build() -> PodSource:
        source = PodSource(sel, args.kubeconfig, args.node, node, warn=functools.partial(warn, env), calls=calls)
        if source.kube is None and sel.active:
            warn(env, source.describe())
        return source

    return Pending(build, cancel=calls.close)


class Pending(Generic[T]):
    """A value built in a thread while the main thread does other start-up work:
    the pod source asks the API (up to kube.START_SECONDS) while bcc compiles
    (about a second, in C, without the GIL), so start-up takes the longer of
    the two, not both. result() gives the value or raises what building raised.

    close() gives up on a value not taken (start-up failed or was stopped
    first): cancel() (the API calls' Calls.close) and a short wait for the
    thread, so that it is not left in a blocking call when the interpreter
    exits, which can abort the process (see pods/apicall.py)."""

    JOIN_SECONDS = 1.0

    def __init__(self, build: Callable[[], T], cancel: Callable[[], None] | None = None) -> None:
        self._value: T | None = None
        self._error: BaseException | None = None
        self._cancel = cancel
        self._taken = False
        self._thread = threading.Thread(target=self._run, args=(build,), name="netdrop-start", daemon=True)
        self._thread.start()

    def _run(self, build: Callable[[], T]) -> None:
        try:
            self._value = build()
        except BaseException as exc:  # handed to the main thread as it is  # noqa: BLE001
            self._error = exc

    def result(self) -> T:
        try:
            self._thread.join()
        except BaseException:       # a stop signal (Interrupted) while waiting
            self.close()
            raise
        self._taken = True
        if self._error is not None:
            raise self._error
        return self._value   # type: ignore[return-value]

    def close(self) -> None:
        if self._taken:
            return
        self._taken = True
        if self._cancel is not None:
            self._cancel()
        self._thread.join(self.JOIN_SECONDS)


# ---------------------------------------------------------------- the session

class Session:
    """A loaded BPF program with everything that turns its output into drops:
    decoder, groups, pod source, explainer, and the screen's state. Used as a
    context; if building it fails at any step, what was already made is closed
    (the program detached, the pod source's and explainer's threads stopped)."""

    def __init__(self, env: Environment, args: argparse.Namespace, facts: KernelFacts, filters: Filters,
                 pods: PodSource | Pending[PodSource] | None = None, *, title: str = "netdrop watch",
                 note: str | None = None, snaplen: int = 0, headers_only: bool = True,
                 stacks: bool = False) -> None:
        """stacks: events carry their kernel stack, sampled per group (groups.py)."""
        from .explain.explainer import Explainer
        from .explain.evidence import EvidenceCache
        from .groups import Groups
        from .kernel.decode import Decoder
        from .kernel.facts import Kallsyms
        from .node.namespaces import known_netns_inodes
        from .kernel.loader import Tracer, TracerSettings
        from .kernel.stacks import Symbolizer
        from .pods.attribute import NO_POD
        from .sinks import console

        self.env = env
        rate = getattr(args, "max_event_rate", None)      # range-checked as it was parsed (cli.py)
        with ExitStack() as stack:
            # Closed in reverse (explainer, pod source, program) unless all of
            # this succeeds: then pop_all() hands them to close().
            if isinstance(pods, Pending):
                stack.callback(pods.close)      # start-up fails before taking it: its calls end
            # Held until the pod maps are written: with --pod, a drop counted before
            # would be any pod's (the API may take seconds to answer).
            self.tracer = Tracer(facts, filters, TracerSettings(
                snaplen=snaplen, headers_only=headers_only, hold=True,
                tp_btf=not getattr(args, "classic_tracepoints", False), stacks=stacks,
                **({} if rate is None else {"max_event_rate": rate})), warn=functools.partial(warn, env))
            stack.callback(self.tracer.close)
            source = pods.result() if isinstance(pods, Pending) else pods
            if source is not None:
                stack.callback(source.stop)     # stops what start() began; nothing before it
                if not source.attributing:
                    info(env, f"pods: {source.describe()}")
                    source = None
            self.pods = source
            if source is not None:
                source.apply(self.tracer)
                source.start()
            self.tracer.start_counting()
            self.loaded_at = env.now()      # the kernel counters count from here
            kallsyms = Kallsyms.load()
            if not kallsyms.usable:
                warn(env, "/proc/kallsyms hides addresses (kptr_restrict): drop locations cannot be named")
            self.decoder = Decoder(facts.reasons, kallsyms, has_reason=facts.has_reason,
                                   stacks=Symbolizer(kallsyms, self.tracer.stack_frames) if stacks else None)

            def pod_of_tag(tag: int) -> Attribution:
                index = source.current() if source is not None else None
                return index.attribute_tag(tag) if index is not None else NO_POD

            self.groups = Groups(self.decoder, pod_of_tag=pod_of_tag)
            names = known_netns_inodes(env.netns_dir)
            self.view = console.View(hooks=self.tracer.hooks, filters=filters.describe(names),
                                     netns_names=names, title=title, note=note,
                                     pods=source.describe() if source is not None else None,
                                     verbose=bool(getattr(args, "verbose", False)))
            self.show_benign = bool(getattr(args, "show_benign", False))    # --all: benign drops listed too
            node_netns = source.scanner.node_inode if source is not None else os.stat("/proc/self/ns/net").st_ino
            self.explainer = Explainer(node_netns=node_netns, warn=functools.partial(warn, env))
            stack.callback(self.explainer.stop)
            self.explainer.sample_now()     # the node's ruleset is known before the first drop arrives
            self.explainer.start()
            # The node's state behind device, overlay, IPsec, ... hints: read in its
            # own thread when a drop in a namespace first asks, then every few seconds.
            self.evidence = EvidenceCache()
            stack.callback(self.evidence.close)
            self.evidence.start()
            self.stop = SIGNALS.stop
            self.stacks = stacks
            self._names_at = env.monotonic()
            self._close = stack.pop_all()

    def close(self) -> None:
        self._close.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def announce(self) -> None:
        hooks = self.tracer.function_hooks
        waiting = [h.name for h in hooks if not h.attached and h.detail.startswith("waiting")]
        if waiting:
            info(self.env, f"function hooks waiting for their module ({', '.join(waiting)}): attached when it loads")
        skipped = [f"{h.name}: {h.detail}" for h in hooks if not h.attached and not h.detail.startswith("waiting")]
        if skipped:
            info(self.env, f"function hooks not used ({'; '.join(skipped)}): working with tracepoints")
        info(self.env, f"tracing ({', '.join(h.name for h in self.tracer.hooks if h.attached)}); "
                       f"filters: {'; '.join(self.view.filters) or 'none'}; Ctrl-C to stop")
        if self.pods is not None:
            info(self.env, f"pods: {self.view.pods}")

    def refresh_view(self, stats: Stats, elapsed: float, remaining: float | None) -> None:
        from .node.namespaces import known_netns_inodes

        v = self.view
        v.stats, v.elapsed, v.remaining = stats, elapsed, remaining
        v.notices = self.notices()
        if self.env.monotonic() - self._names_at > 2:
            v.netns_names = known_netns_inodes(self.env.netns_dir)
            if self.pods is not None:
                v.pods = self.pods.describe()
            self._names_at = self.env.monotonic()

    def run(self, sinks: list[Sink], duration: float | None, on_tick: OnTick | None = None,
            background: threading.Thread | None = None, say_hooks: bool = True) -> Stats:
        """say_hooks: a line on stderr when a function hook comes or goes (its
        module loaded or unloaded); the live console shows it in its header."""
        from . import watch

        SIGNALS.tracing()
        self.announce()
        if background is not None:
            background.start()
        pods, tracer = self.pods, self.tracer

        def maintain() -> None:
            if pods is not None:
                pods.apply(tracer)
            if tracer.maintain_hooks() and say_hooks:
                info(self.env, "function hooks now: " + "; ".join(
                    f"{h.name} {'attached' if h.attached else '(' + h.detail + ')'}" for h in tracer.function_hooks))

        return watch.run(tracer, self.decoder, self.groups, sinks, duration, self.stop,
                         on_tick if on_tick is not None else (lambda *a: None),
                         pods=pods.current if pods is not None else (lambda: None),
                         maintain=maintain, explainer=self.explainer, evidence=self.evidence)

    def run_live(self, duration: float | None, background: threading.Thread | None = None) -> Stats:
        """The live console on stdout, redrawn on every tick; interactive (keys)
        when stdin is a terminal too. `q` ends the run as the duration or a
        signal would: through self.stop, with the usual report."""
        from .sinks import tui

        with tui.LiveConsole(self.env, self.view, self.groups, show_benign=self.show_benign,
                             on_quit=self.stop.set) as live:
            def on_tick(stats: Stats, elapsed: float, remaining: float | None) -> None:
                self.refresh_view(stats, elapsed, remaining)
                live.tick(self.groups)
            return self.run([], duration, on_tick, background, say_hooks=False)

    def notices(self) -> list[str]:
        names = self.view.netns_names
        return [f"netns {names.get(ns, ns)}: {text}" for ns, text in sorted(self.explainer.notices.items())]

    def report(self, stats: Stats, groups_too: bool = False) -> None:
        from .node.namespaces import known_netns_inodes
        from .sinks import console

        info(self.env, f"{stats.matched:,} drops counted, {stats.events:,} events delivered, "
                       f"{stats.lost:,} events lost, {stats.sampled_out:,} sampled out")
        benign = [g for g in self.groups.groups.values() if g.benign and g.count]
        if benign:
            info(self.env, f"{sum(g.count for g in benign):,} of them benign, expected on a healthy node "
                           f"({', '.join(sorted({console.where(g) for g in benign}))}); --all lists them")
        if groups_too:
            for line in console.summary_lines(self.groups, known_netns_inodes(self.env.netns_dir)):
                info(self.env, f"counted {line}")
        for notice in self.notices():
            info(self.env, f"notice: {notice}")


# ---------------------------------------------------------------- the commands

# Whether the console and capture take kernel stacks unless told (--stacks,
# --no-stacks): measured in docs/performance.md against the per-drop budget.
STACKS_BY_DEFAULT = True


def wants_stacks(args: argparse.Namespace) -> bool:
    """--stacks/--no-stacks as given; else on for the views for people (the
    console's details, a capture's summary), off for `watch --json`: a stack
    per line is for those who ask."""
    if args.stacks is not None:
        return bool(args.stacks)
    return STACKS_BY_DEFAULT and not getattr(args, "json", False)


def cmd_watch(args: argparse.Namespace, env: Environment) -> ExitStatus:
    from .sinks.jsonout import JsonLines

    require_root(env)
    facts = kernel_facts(args, env)
    filters = make_filters(args, env)
    with Session(env, args, facts, filters, pod_source(args, env), stacks=wants_stacks(args)) as session:
        stats = (session.run([JsonLines(env.stdout, stacks=session.stacks)], args.duration) if args.json
                 else session.run_live(args.duration))
        session.report(stats, groups_too=args.json)
    return ExitStatus.OK


def cmd_demo(args: argparse.Namespace, env: Environment) -> ExitStatus:
    from .kernel.filters import Filters
    from .lab.cases import Player, select_cases
    from .lab.node import SimNode
    from .lab.ownership import check_prefix
    from .pods.kube import Selection
    from .pods.source import PodSource

    check_prefix(args.prefix)       # a bad prefix fails at once, root or not
    require_root(env)
    facts = kernel_facts(args, env)
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
        pods = PodSource(Selection(), str(node.kubeconfig), None, node.node1, warn=functools.partial(warn, env))
        with Session(env, args, facts, filters, pods, title="netdrop demo: simulated node", note=note,
                     stacks=STACKS_BY_DEFAULT) as session:
            stats = session.run_live(args.duration, threading.Thread(target=player.run, daemon=True))
            session.report(stats)
        return ExitStatus.OK
    finally:
        with SIGNALS.deferred():    # a signal now must not cut the removal short
            player.stop()
            node.destroy()


def cmd_capture(args: argparse.Namespace, env: Environment) -> ExitStatus:
    from .sinks import capture
    from .sinks.summary.build import build

    require_root(env)
    outdir = capture.prepare_output(args.output)      # before anything is loaded
    if args.snaplen is not None and not args.pcap:
        raise UserError("--snaplen sets what --pcap records: add --pcap")
    facts = kernel_facts(args, env)
    filters = make_filters(args, env)
    pods = pod_source(args, env)
    snaplen = (args.snaplen or capture.DEFAULT_SNAPLEN) if args.pcap else 0
    with Session(env, args, facts, filters, pods, title=f"netdrop capture -> {outdir.path}", snaplen=snaplen,
                 headers_only=args.snaplen is None, stacks=wants_stacks(args)) as session:
        recorder = capture.Recorder(outdir, pcap_snaplen=snaplen, max_events=args.max_events,
                                    started=session.loaded_at)
        progress = capture.Progress(env.console(stderr=True), env.stderr)

        def on_tick(stats: Stats, elapsed: float, remaining: float | None) -> None:
            session.refresh_view(stats, elapsed, remaining)
            recorder.tick(session.groups, env.now())
            # A closed terminal (SIGHUP) makes the progress line fail with EIO:
            # the capture goes on to its summary all the same.
            with suppress(OSError):
                progress.update(session.groups, stats, recorder, elapsed, remaining)

        try:
            stats = session.run([recorder], args.duration, on_tick)
        finally:
            with suppress(OSError):
                progress.close()
            ended = env.now()
            recorder.tick(session.groups, ended)
            recorder.close()
        stopped = "duration reached" if not session.stop.is_set() else "stopped early (signal)"
        names = session.view.netns_names
        node = session.pods.node_name if session.pods is not None else None
        result = build(session.groups, recorder, ended=ended, reason_ended=stopped, stats=stats,
                       hooks=session.tracer.hooks, filters=session.view.filters,
                       pods=session.view.pods, node=node, names=names, notices=session.notices())
        capture.write_summary(outdir, result)
        session.report(stats)
        files = [capture.EVENTS_FILE, capture.SUMMARY_FILE] + ([capture.PCAP_FILE] if args.pcap else [])
        info(env, f"wrote {', '.join(str(outdir.path / f) for f in files)} ({stopped}); "
                  f"read it with: netdrop summary {outdir.path}")
        if recorder.write_error:
            warn(env, recorder.write_error)
    return ExitStatus.OK


def cmd_doctor(args: argparse.Namespace, env: Environment) -> ExitStatus:
    from .doctor.run import Scope, diagnose
    from .doctor.view import to_json, write

    require_root(env)
    scope = Scope(node_netns(args.netns, env), args.netns or "this node", pod=args.pod, namespace=args.namespace,
                  kubeconfig=args.kubeconfig, node_name=args.node, cni_dir=Path(args.cni_dir), tracefs=env.tracefs)
    report = diagnose(scope, warn=functools.partial(warn, env))
    bad = report.problems
    if args.json:
        env.stdout.write(to_json(report.findings, report.node))
    else:
        write(env, report.findings, report.node)
        info(env, f"{len(bad)} problem{'s' if len(bad) != 1 else ''} found" if bad else "no problems found")
    return ExitStatus.PROBLEMS if bad else ExitStatus.OK


def cmd_summary(args: argparse.Namespace, env: Environment) -> ExitStatus:
    from .sinks import capture
    from .sinks.summary.merge import merge
    from .sinks.summary.render import render
    from .sinks.summary.schema import load

    # load() refuses what is not a summary (FIFO, device, over 64 MiB, wrong
    # types, deep nesting) with one line; render() escapes for the format's reader.
    parts = [load(capture.summary_path(d)) for d in args.dir]
    data = parts[0] if len(parts) == 1 else merge(parts)
    # Laid out for the report's width (on a terminal its own; into a pipe or a file
    # $COLUMNS or 80): wrapped at words, commands whole, tables only where they fit.
    width = env.report_width()
    # Benign drops (explain/benign.py) are counted in every format; the views for
    # people list them only with --all, saying in one line how many they set aside.
    env.stdout.write(render(data, args.format, width, show_benign=args.show_benign))
    return ExitStatus.OK


Command = Callable[[argparse.Namespace, Environment], ExitStatus]
COMMANDS: dict[str, Command] = {"watch": cmd_watch, "demo": cmd_demo, "capture": cmd_capture,
                                "summary": cmd_summary, "doctor": cmd_doctor}


def cmd_serve(args: argparse.Namespace, env: Environment) -> ExitStatus:
    """The node agent: /metrics for Prometheus and /healthz, until a stop signal (serve.py)."""
    from . import serve

    args.node_netns = node_netns(args.node_netns, env)
    return ExitStatus(serve.run(args, env))


COMMANDS["serve"] = cmd_serve
