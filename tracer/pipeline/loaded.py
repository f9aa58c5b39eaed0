"""loaded: the one place a command that traces loads the kernel side.

The BPF program (held until the pod maps are written), the pod source taken
from its start-up thread, the pod maps pushed into the kernel, counting
started, then the decoder. watch, capture and demo build their Session on
it; serve its metrics. Every part is closed by the caller's ExitStack, in
reverse, if start-up fails at any step or when the run ends.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from typing import TYPE_CHECKING

from ..env import Environment
from ..errors import UserError
from ..messages import info, warn
from .startup import Pending

if TYPE_CHECKING:
    from datetime import datetime

    from ..kernel.facts import KernelFacts
    from ..kernel.filters import Filters
    from ..kernel.loader import Tracer, TracerSettings
    from ..pods.attribute import Attribution
    from ..pods.source import PodSource


class Loaded:
    """The loaded program (tracer), the pod source that keeps its pod maps
    (source; None without one) and the decoder of its events.

    idle_source: a pod source that cannot attribute (no API, no pods chosen)
    is said on stderr and then dropped (watch, capture, demo) or kept for
    what else it knows of the node (serve: its name, its namespace).
    before_counting(tracer, source): the last step before the kernel counts
    (serve narrows the filters to its node's namespaces there)."""

    def __init__(self, env: Environment, stack: ExitStack, facts: KernelFacts, filters: Filters,
                 pods: PodSource | Pending[PodSource] | None, settings: TracerSettings, *,
                 detach: Callable[[Callable[[], None]], None] | None = None, idle_source: bool = False,
                 before_counting: Callable[[Tracer, PodSource | None], None] | None = None) -> None:
        from ..kernel.decode import Decoder
        from ..kernel.facts import Kallsyms
        from ..kernel.loader import Tracer
        from ..kernel.stacks import Symbolizer

        self.env = env
        if isinstance(pods, Pending):
            stack.callback(pods.close)      # start-up fails before taking it: its calls end
        # Held until the pod maps are written: with --pod, a drop counted before
        # would be any pod's (the API may take seconds to answer).
        self.tracer = tracer = Tracer(facts, filters, replace(settings, hold=True), warn=functools.partial(warn, env))
        if detach is not None:
            stack.callback(detach, tracer.close)
        else:
            stack.callback(tracer.close)
        try:
            source = pods.result() if isinstance(pods, Pending) else pods
        except OSError as exc:    # the node's namespace unreadable (no CAP_SYS_ADMIN for setns, ...)
            raise UserError(f"cannot read the node's network namespace: {exc}") from None
        if source is not None:
            stack.callback(source.stop)     # stops what start() began; nothing before it
            if not source.attributing:
                info(env, f"pods: {source.describe()}")
                if not idle_source:
                    source = None
        self.source = source
        self.push_pods()
        if before_counting is not None:
            before_counting(tracer, source)
        if source is not None:
            source.start()
        tracer.start_counting()
        self.loaded_at: datetime = env.now()      # the kernel counters count from here
        kallsyms = Kallsyms.load()
        if not kallsyms.usable:
            warn(env, "/proc/kallsyms hides addresses (kptr_restrict, or no CAP_SYSLOG): drop locations cannot "
                      "be named, and categories that depend on them are not told apart")
        self.decoder = Decoder(facts.reasons, kallsyms, has_reason=facts.has_reason,
                               stacks=Symbolizer(kallsyms, tracer.stack_frames) if settings.stacks else None)

    def push_pods(self) -> None:
        """The kernel's pod maps brought up to the pod source's index (on each tick)."""
        if self.source is not None and (pods := self.source.new_kernel_pods()) is not None:
            self.tracer.set_pods(pods)

    def maintain(self) -> bool:
        """What a tick keeps current: the pod maps, and the function hooks of a
        module that came or went. True when the hooks changed."""
        self.push_pods()
        return self.tracer.maintain_hooks()

    def pod_of_tag(self, tag: int) -> Attribution:
        """The pod of a kernel counter's pod tag, by the current index."""
        from ..pods.attribute import NO_POD

        index = self.source.current() if self.source is not None else None
        return index.attribute_tag(tag) if index is not None else NO_POD
