"""layout: report text for the width it gets, commands kept whole.

Reports (doctor's findings, a capture's summary) are read on a terminal, piped
into less, pasted into a ticket. Prose wraps at spaces to the width; a command
is what the reader copies, so it never breaks: it goes whole on the line where
it fits, else it starts a line, and one longer than the width runs past it on
a line of its own (the terminal may wrap it on screen; copied, it is one line).
A word longer than the width that is no command (a path, a long name) folds.

Into a pipe or a file no terminal says how wide the reader is: reports take
$COLUMNS if set, else DEFAULT_WIDTH, the width terminals open with and the one
a ticket's plain text is read at (env.Environment.report_width).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from rich.cells import cell_len

DEFAULT_WIDTH = 80
# Below this, a report's indents leave too little room to read: it is laid out
# for this many columns and a terminal narrower still wraps it.
MIN_WIDTH = 40

# A command or rule quoted in a hint: 'ip route get 10.0.0.1', `-A FORWARD -j DROP`.
# A single quote opens after a space, a bracket or the start and closes before one,
# so "the pod's" is no quote.
_QUOTED = re.compile(r"(?<![\w'])'[^'\s][^']*'(?![\w'])|`[^`]+`")


def quoted_commands(text: str) -> list[str]:
    """The commands and rules a text quotes ('conntrack -S'), with their quotes."""
    return _QUOTED.findall(text)


def _units(text: str, whole: Iterable[str], quoted: bool) -> list[tuple[str, bool]]:
    """text cut at its spaces, except spaces inside a span kept whole: (unit, holds one)."""
    inside = bytearray(len(text))
    if quoted:
        for m in _QUOTED.finditer(text):
            inside[m.start():m.end()] = b"\1" * (m.end() - m.start())
    for cmd in whole:
        at = text.find(cmd) if cmd else -1
        while at >= 0:
            inside[at:at + len(cmd)] = b"\1" * len(cmd)
            at = text.find(cmd, at + len(cmd))
    units: list[tuple[str, bool]] = []
    start = None
    for i, c in enumerate(text):
        if c == " " and not inside[i]:
            if start is not None:
                units.append((text[start:i], any(inside[start:i])))
                start = None
        elif start is None:
            start = i
    if start is not None:
        units.append((text[start:], any(inside[start:])))
    return units


def _head(word: str, room: int) -> str:
    """The longest start of word within room cells (one character at least)."""
    used = cell_len(word[0])
    end = 1
    while end < len(word) and used + cell_len(word[end]) <= room:
        used += cell_len(word[end])
        end += 1
    return word[:end]


def _fill(units: list[tuple[str, bool]], width: int, first: str, rest: str, most: int | None) -> list[str]:
    """The units in lines, greedily; stops past `most` lines (enough to know it is over)."""
    lines: list[str] = []
    line, prefix = "", first

    def room() -> int:
        return max(width - cell_len(prefix), 1)

    def flush() -> None:
        nonlocal line, prefix
        lines.append(prefix + line)
        line, prefix = "", rest

    for unit, is_command in units:
        if most is not None and len(lines) > most:
            return lines
        if line and cell_len(line) + 1 + cell_len(unit) <= room():
            line += " " + unit
            continue
        if line:
            flush()
        if not is_command:      # a word longer than the line folds
            while cell_len(unit) > room():
                line = _head(unit, room())
                unit = unit[len(line):]
                flush()
        line = unit
    if line or not lines:
        flush()
    return lines


ELLIPSIS = ("…", False)


def wrap(text: str, width: int, *, whole: Iterable[str] = (), quoted: bool = False, first: str = "",
         rest: str = "", max_lines: int | None = None) -> list[str]:
    """text in lines of at most width cells, the first after `first`, the others
    after `rest`: broken at spaces only, never inside a span of `whole` (commands,
    each as it appears in text) nor, with quoted, inside what text quotes
    (quoted_commands). Such a span longer than its line has room for gets a line
    of its own, past the width; any word that long folds. Beyond max_lines, the
    text is cut between words (never inside a span) and ends with "…"."""
    width = max(width, MIN_WIDTH)
    if max_lines is not None:
        # What max_lines can show, with room for long commands: anyone's summary.json
        # may hold a hint of megabytes, and only its start is shown.
        text = text[:max_lines * width * 8]
    units = _units(text, whole, quoted)
    lines = _fill(units, width, first, rest, max_lines)
    if max_lines is None or len(lines) <= max_lines:
        return lines
    # The most units that fit max_lines with the ellipsis after them: greedy filling
    # never takes fewer lines for more units, so a bisection finds it.
    low, high = 0, len(units)
    while low < high:
        mid = (low + high + 1) // 2
        if len(_fill([*units[:mid], ELLIPSIS], width, first, rest, max_lines)) <= max_lines:
            low = mid
        else:
            high = mid - 1
    return _fill([*units[:low], ELLIPSIS], width, first, rest, max_lines)[:max_lines]
