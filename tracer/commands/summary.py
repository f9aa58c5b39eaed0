"""netdrop summary: what a capture found (or captures of several nodes), for a person or a ticket."""

from __future__ import annotations

from ..env import Environment
from ..errors import ExitStatus
from ..options import SummaryOptions


def run(opts: SummaryOptions, env: Environment) -> ExitStatus:
    from ..sinks import capture
    from ..sinks.summary.merge import merge
    from ..sinks.summary.render import render
    from ..sinks.summary.schema import load

    # load() refuses what is not a summary (FIFO, device, over 64 MiB, wrong
    # types, deep nesting) with one line; render() escapes for the format's reader.
    parts = [load(capture.summary_path(d)) for d in opts.dirs]
    data = parts[0] if len(parts) == 1 else merge(parts)
    # Laid out for the report's width (on a terminal its own; into a pipe or a file
    # $COLUMNS or 80): wrapped at words, commands whole, tables only where they fit.
    width = env.report_width()
    # Benign drops (explain/benign.py) are counted in every format; the views for
    # people list them only with --all, saying in one line how many they set aside.
    env.stdout.write(render(data, opts.format, width, show_benign=opts.show_benign))
    return ExitStatus.OK
