"""messages: the lines netdrop prints on stderr (its own, warnings, errors)."""

from __future__ import annotations

from contextlib import suppress

from .env import Environment
from .textsafe import printable

PROG = "netdrop"


def say(env: Environment, line: str) -> None:
    """One line on stderr, every line netdrop prints there: names of interfaces,
    pods and rules in it come from others, and must not drive the terminal."""
    with suppress(OSError):   # the terminal is gone (SIGHUP, EIO): nobody to tell, the run still ends cleanly
        print(printable(line), file=env.stderr, flush=True)


def warn(env: Environment, msg: str) -> None:
    say(env, f"{PROG}: warning: {msg}")


def info(env: Environment, msg: str) -> None:
    say(env, f"{PROG}: {msg}")
