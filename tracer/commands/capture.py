"""netdrop capture: record drops for a while into a directory (events, summary, pcapng)."""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING

from ..env import Environment
from ..errors import ExitStatus, UserError
from ..kernel.loader import TracerSettings
from ..messages import info, warn
from ..options import CaptureOptions
from ..pipeline.session import Session
from ..pipeline.startup import kernel_facts, make_filters, pod_source, require_root, wants_stacks

if TYPE_CHECKING:
    from ..kernel.loader import Stats


def run(opts: CaptureOptions, env: Environment) -> ExitStatus:
    from ..sinks import capture
    from ..sinks.summary.build import build

    require_root(env)
    outdir = capture.prepare_output(opts.output)      # before anything is loaded
    if opts.snaplen is not None and not opts.pcap:
        raise UserError("--snaplen sets what --pcap records: add --pcap")
    facts = kernel_facts(opts.kernel, env)
    filters = make_filters(opts.select, env)
    pods = pod_source(opts.select, env)
    snaplen = (opts.snaplen or capture.DEFAULT_SNAPLEN) if opts.pcap else 0
    settings = TracerSettings(tp_btf=not opts.kernel.classic_tracepoints, max_event_rate=opts.select.max_event_rate,
                            snaplen=snaplen, headers_only=opts.snaplen is None, stacks=wants_stacks(opts.stacks))
    with Session(env, facts, filters, pods, settings, opts.view, title=f"netdrop capture -> {outdir.path}") as session:
        recorder = capture.Recorder(outdir, pcap_snaplen=snaplen, max_events=opts.max_events,
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
            stats = session.run([recorder], opts.duration, on_tick)
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
        files = [capture.EVENTS_FILE, capture.SUMMARY_FILE] + ([capture.PCAP_FILE] if opts.pcap else [])
        info(env, f"wrote {', '.join(str(outdir.path / f) for f in files)} ({stopped}); "
                  f"read it with: netdrop summary {outdir.path}")
        if recorder.write_error:
            warn(env, recorder.write_error)
    return ExitStatus.OK
