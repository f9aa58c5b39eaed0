"""What ends a command: a UserError becomes one line on stderr and a non-zero
exit in cli.main(); ExitStatus is every status a command ends with."""

from __future__ import annotations

import enum
import signal


class UserError(Exception):
    """Something the user can fix (input, permissions, machine set-up)."""

    exit_status = 2


class ExitStatus(enum.IntEnum):
    """What a command ends with (httpie's ExitStatus, and the shell's 128 + n
    for a command ended by signal n)."""

    OK = 0
    PROBLEMS = 1        # doctor found a problem
    ERROR = 2           # a UserError: one line on stderr (UserError.exit_status)
    STOPPED_BY_SIGHUP = 128 + signal.SIGHUP
    STOPPED_BY_SIGINT = 128 + signal.SIGINT
    STOPPED_BY_SIGTERM = 128 + signal.SIGTERM

    @classmethod
    def stopped_by(cls, signum: int) -> ExitStatus:
        """The status for a stop signal (signals.STOP_SIGNALS) that ended start-up."""
        return cls(128 + signum)
