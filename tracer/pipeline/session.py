"""session: a run that looks at each drop (watch, capture, demo).

On top of the loaded kernel side (loaded.py): groups, the explainer (rule
counters, conntrack), the evidence cache and the console's view; run() hands
them to the event loop (watch.py) with the run's sinks, run_live() with the
live console, report() says on stderr what the run counted.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING

from ..env import Environment
from ..messages import info, warn
from ..options import ViewOptions
from ..signals import SIGNALS
from .loaded import Loaded
from .startup import Pending

if TYPE_CHECKING:
    from ..kernel.facts import KernelFacts
    from ..kernel.filters import Filters
    from ..kernel.loader import Stats, TracerSettings
    from ..pods.source import PodSource
    from ..watch import Sink

    OnTick = Callable[[Stats, float, float | None], None]

NO_VIEW_OPTIONS = ViewOptions()


class Session:
    """A loaded BPF program with everything that turns its output into drops:
    decoder, groups, pod source, explainer, and the screen's state. Used as a
    context; if building it fails at any step, what was already made is closed
    (the program detached, the pod source's and explainer's threads stopped)."""

    def __init__(self, env: Environment, facts: KernelFacts, filters: Filters,
                 pods: PodSource | Pending[PodSource] | None, settings: TracerSettings,
                 view: ViewOptions = NO_VIEW_OPTIONS, *, title: str = "netdrop watch",
                 note: str | None = None) -> None:
        from ..explain.evidence import EvidenceCache
        from ..explain.explainer import Explainer
        from ..groups import Groups
        from ..node.namespaces import known_netns_inodes
        from ..sinks import console

        self.env = env
        with ExitStack() as stack:
            # Closed in reverse (explainer, pod source, program) unless all of
            # this succeeds: then pop_all() hands them to close().
            self.loaded = loaded = Loaded(env, stack, facts, filters, pods, settings)
            self.tracer, self.pods, self.decoder = loaded.tracer, loaded.source, loaded.decoder
            self.loaded_at = loaded.loaded_at
            self.groups = Groups(self.decoder, pod_of_tag=loaded.pod_of_tag)
            names = known_netns_inodes(env.netns_dir)
            source = self.pods
            self.view = console.View(hooks=self.tracer.hooks, filters=filters.describe(names),
                                     netns_names=names, title=title, note=note,
                                     pods=source.describe() if source is not None else None,
                                     verbose=view.verbose)
            self.show_benign = view.show_benign
            node_netns = source.scanner.node_inode if source is not None else os.stat("/proc/self/ns/net").st_ino
            self.explainer = Explainer(node_netns=node_netns, warn=lambda msg: warn(env, msg))
            stack.callback(self.explainer.stop)
            self.explainer.sample_now()     # the node's ruleset is known before the first drop arrives
            self.explainer.start()
            # The node's state behind device, overlay, IPsec, ... hints: read in its
            # own thread when a drop in a namespace first asks, then every few seconds.
            self.evidence = EvidenceCache()
            stack.callback(self.evidence.close)
            self.evidence.start()
            self.stop = SIGNALS.stop
            self.stacks = settings.stacks
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
        from ..node.namespaces import known_netns_inodes

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
        from .. import watch

        SIGNALS.tracing()
        self.announce()
        if background is not None:
            background.start()
        pods, loaded, tracer = self.pods, self.loaded, self.tracer

        def maintain() -> None:
            if loaded.maintain() and say_hooks:
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
        from ..sinks import tui

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
        from ..node.namespaces import known_netns_inodes
        from ..sinks import console

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
