"""findings: what a check returns: a severity, what is wrong, the evidence, and the fix with its commands."""

from __future__ import annotations

from dataclasses import dataclass, field

SEVERITIES = ("error", "warning", "info", "ok", "unchecked")


@dataclass(frozen=True)
class Finding:
    check: str
    severity: str
    summary: str
    evidence: list[str] = field(default_factory=list)
    fix: str | None = None
    # The commands in fix, each as it appears there: a report keeps each whole on one line.
    commands: tuple[str, ...] = ()


class Cmd(str):
    """A command within a fix's text (what the reader copies)."""


def fix(*parts: str) -> tuple[str, tuple[str, ...]]:
    """A fix's text and its commands (the parts that are Cmd): Finding's last two fields."""
    return "".join(parts), tuple(p for p in parts if isinstance(p, Cmd))


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else many or word + 's'}"


def problems(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity in ("error", "warning")]
