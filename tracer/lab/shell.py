"""shell: commands run inside the lab's namespaces, and the one error the lab raises."""

from __future__ import annotations

import subprocess

from ..errors import UserError


class LabError(UserError):
    pass


def in_netns(ns: str) -> list[str]:
    """The command prefix that enters ns: a /run/netns name, or a path such as
    /proc/PID/ns/net for a namespace that only a process holds."""
    return ["nsenter", f"--net={ns}"] if ns.startswith("/") else ["ip", "netns", "exec", ns]


def run(*cmd: str, ns: str | None = None, check: bool = True, timeout: float = 30) -> str:
    """Run a command, inside namespace `ns` if given. Never in the host namespace
    for anything that changes state: callers always pass ns or use `ip -n`."""
    full = (in_netns(ns) if ns else []) + list(cmd)
    try:
        res = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise LabError(f"{full[0]} is not installed (run scripts/setup)") from None
    if check and res.returncode != 0:
        raise LabError(f"{' '.join(full)} failed: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout
