"""keys: the interactive console's keys, pure: bytes from the terminal -> key
names -> the next UiState. No terminal and no thread here (tui.py has them),
so tests feed key sequences and read the state.

A terminal in cbreak mode sends a key as one byte ("q", "\\r") or as an
escape sequence: CSI ("ESC [ A") in normal cursor mode, SS3 ("ESC O A") in
application cursor mode, which tmux and some SSH clients switch on
(ECMA-48, xterm's ctlseqs). A lone ESC is the Esc key; a sequence cut
between two reads is kept (`rest`) until the next read completes it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypeVar

from ..groups import SORTS

K = TypeVar("K")

_SEQUENCES = {
    "A": "up", "B": "down", "C": "right", "D": "left", "H": "home", "F": "end",
    "1~": "home", "4~": "end", "7~": "home", "8~": "end", "5~": "pgup", "6~": "pgdn",
}
# Ctrl-Z arrives as a byte (SUB, 0x1a) only where the terminal makes no SIGTSTP of it
# (ISIG off, or no VSUSP character): "suspend", which tui.py turns into that signal.
_BYTES = {"\r": "enter", "\n": "enter", "\x7f": "backspace", "\x08": "backspace", " ": "space",
          "\x1a": "suspend"}
MAX_SEQUENCE = 16       # longer "sequences" are noise: dropped, never buffered without bound


def parse(data: str) -> tuple[list[str], str]:
    """Key names in data, and an unfinished escape sequence at its end (to be
    completed by the next read, or taken as Esc if none comes). Any input is
    accepted: what is not a known key is passed over."""
    keys: list[str] = []
    i, n = 0, len(data)
    while i < n:
        c = data[i]
        if c != "\x1b":
            keys.append(_BYTES.get(c, c if c.isprintable() else ""))
            i += 1
            continue
        if i + 1 == n:
            return [k for k in keys if k], data[i:]           # ESC alone so far: Esc, or a sequence starting
        intro = data[i + 1]
        if intro not in "[O":
            keys.append("esc")                                # ESC then a key (Alt+key): Esc, then that key
            i += 1
            continue
        # Parameters (digits, ';') up to a final byte in 0x40-0x7e (ECMA-48 5.4).
        j = i + 2
        while j < n and (data[j].isdigit() or data[j] == ";"):
            j += 1
        if j - i >= MAX_SEQUENCE:       # noise: passed over whole, with its final byte
            i = j + 1
            continue
        if j == n:
            return [k for k in keys if k], data[i:]
        final = data[j]
        params = data[i + 2:j].split(";")[0]
        keys.append(_SEQUENCES.get(params + final if final == "~" else final, ""))
        i = j + 1
    return [k for k in keys if k], ""


@dataclass(frozen=True)
class UiState:
    """What the user chose: the selected group (by its key, so it stays
    selected while the ranking changes), the view open, pause, sort, benign."""

    selected: object | None = None   # a group key (groups.GroupKey)
    details: bool = False
    help: bool = False
    paused: bool = False
    sort: str = "rate"
    show_benign: bool = False
    quit: bool = False
    page: int = 10                   # rows moved by PgUp/PgDn: the rows on screen, set by the view


SORT_ORDER = tuple(SORTS)


def _move(state: UiState, order: list[K], by: int) -> UiState:
    if not order:
        return replace(state, selected=None)
    # Nothing selected yet (or the selected group left the list): the first row
    # stands selected, as the console shows it (its why below the list).
    i = order.index(state.selected) if state.selected in order else 0
    return replace(state, selected=order[max(0, min(len(order) - 1, i + by))])


def step(state: UiState, key: str, order: list[K]) -> UiState:
    """The state after one key; order: the group keys as listed now."""
    if key == "q":
        return replace(state, quit=True)
    if key in ("h", "?"):
        return replace(state, help=not state.help, details=False)
    if key in ("left", "esc", "backspace"):
        return replace(state, details=False, help=False)
    if key == "p":
        return replace(state, paused=not state.paused)
    if key == "s":
        return replace(state, sort=SORT_ORDER[(SORT_ORDER.index(state.sort) + 1) % len(SORT_ORDER)])
    if key == "b":
        return replace(state, show_benign=not state.show_benign)
    moves = {"up": -1, "k": -1, "down": 1, "j": 1, "pgup": -state.page, "pgdn": state.page,
             "home": -len(order), "end": len(order)}
    if key in moves:
        moved = _move(state, order, moves[key])
        return replace(moved, help=False)
    if key in ("enter", "right", "l"):
        chosen = state if state.selected in order else _move(state, order, 0)
        return replace(chosen, details=chosen.selected is not None, help=False)
    return state
