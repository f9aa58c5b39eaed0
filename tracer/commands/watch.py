"""netdrop watch: drops live on the console, or as JSON lines on stdout."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..env import Environment
from ..errors import ExitStatus
from ..kernel.loader import TracerSettings
from ..options import WatchOptions, WatchOutput
from ..pipeline.session import Session
from ..pipeline.startup import kernel_facts, make_filters, pod_source, require_root, wants_stacks

if TYPE_CHECKING:
    from ..kernel.loader import Stats


@dataclass(frozen=True)
class Output:
    """Where watch shows the drops as they come."""

    run: Callable[[Session, float | None], Stats]
    groups_in_report: bool      # the closing report on stderr lists the groups (the output itself has no totals)


def _json_lines(session: Session, duration: float | None) -> Stats:
    from ..sinks.jsonout import JsonLines

    return session.run([JsonLines(session.env.stdout, stacks=session.stacks)], duration)


OUTPUTS: dict[WatchOutput, Output] = {
    "console": Output(lambda session, duration: session.run_live(duration), groups_in_report=False),
    "json": Output(_json_lines, groups_in_report=True),
}


def run(opts: WatchOptions, env: Environment) -> ExitStatus:
    require_root(env)
    facts = kernel_facts(opts.kernel, env)
    filters = make_filters(opts.select, env)
    output = OUTPUTS[opts.output]
    settings = TracerSettings(tp_btf=not opts.kernel.classic_tracepoints, max_event_rate=opts.select.max_event_rate,
                            stacks=wants_stacks(opts.stacks, json_lines=opts.output == "json"))
    with Session(env, facts, filters, pod_source(opts.select, env), settings, opts.view) as session:
        stats = output.run(session, opts.duration)
        session.report(stats, groups_too=output.groups_in_report)
    return ExitStatus.OK
