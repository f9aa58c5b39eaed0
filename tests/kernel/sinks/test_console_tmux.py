"""The interactive console in a real terminal: tmux at 80x24, keys sent as a user types
them, the screen read back; drops made on the simulated node (namespaces this run creates).

Each test runs its own tmux server (-L, a socket named for this process), removed at the end."""

import contextlib
import itertools
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tracer.explain.categories import CATEGORIES
from tracer.lab.cases import CASES
from tracer.lab.ownership import Ownership

from ...timing import allowed
from ..conftest import NETDROP
from ..helpers import lab_namespaces

pytestmark = pytest.mark.skipif(subprocess.run(["which", "tmux"], capture_output=True).returncode != 0
                                and os.environ.get("CI") != "true", reason="tmux not installed")


SERVERS = itertools.count()


class Tmux:
    def __init__(self, tmp_path, command: list[str] | str, width: int = 80, height: int = 24):
        self.sock = f"ndt-console-{os.getpid()}-{next(SERVERS)}"
        self.files = {k: tmp_path / k for k in ("stderr", "rc", "stty")}
        # After netdrop: its exit status and the terminal's settings, read from the same terminal.
        command = command if isinstance(command, str) else shlex.join(command)
        script = (f"{command} 2>{self.files['stderr']}; echo $? >{self.files['rc']}; "
                  f"stty -a >{self.files['stty']}; sleep 60")
        self.tmux("new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height), script)

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.sock, *args], check=True, capture_output=True, text=True,
                              timeout=10).stdout

    def screen(self) -> list[str]:
        return self.tmux("capture-pane", "-p", "-t", "t").rstrip("\n").split("\n")

    def wait_for(self, pattern: str, timeout: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.screen()
            if re.search(pattern, "\n".join(lines)):
                return lines
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} never shown; screen:\n" + "\n".join(self.screen())
                             + "\nstderr:\n" + (self.files["stderr"].read_text() if self.files["stderr"].exists()
                                                else ""))

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def alternate_screen(self) -> bool:
        return self.tmux("display-message", "-p", "-t", "t", "#{alternate_on}").strip() == "1"

    def netdrop_pid(self) -> int:
        shell = self.tmux("display-message", "-p", "-t", "t", "#{pane_pid}").strip()
        return int(subprocess.run(["pgrep", "-P", shell], capture_output=True, text=True).stdout.split()[0])

    def exit_status(self, timeout: float = 15) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.files["rc"].exists() and self.files["rc"].read_text().strip():
                time.sleep(0.3)      # stty runs right after
                return int(self.files["rc"].read_text())
            time.sleep(0.1)
        raise AssertionError("netdrop did not end; screen:\n" + "\n".join(self.screen()))

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def terminal(tmp_path, node):
    started: list[Tmux] = []

    def start(*args: str) -> Tmux:
        t = Tmux(tmp_path, [*NETDROP, *args])
        started.append(t)
        return t

    yield start
    for t in started:
        t.close()       # a netdrop still running gets SIGHUP (its terminal closed) and ends by itself


def watch_args(node):
    return ("watch", "--netns", node.node1, "--kubeconfig", str(node.kubeconfig), "--node-netns", node.node1,
            "--duration", "120")


def proc_state(pid: int) -> str:
    """The process's state letter in /proc (T: stopped, Z: exited, not yet reaped), or "" once gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def exited(pid: int) -> bool:
    """Gone, or a zombie: its shell died with the terminal, and the orphan waits for
    pid 1 to reap it (here over a second after it exited), which is not netdrop's time."""
    return proc_state(pid) in ("", "Z")


def group_rows(lines: list[str]) -> list[str]:
    """The list's rows: from the column names to the first blank line (the selected group's why comes after)."""
    head = next(i for i, line in enumerate(lines) if line.startswith("pod "))
    end = next((i for i in range(head + 1, len(lines)) if not lines[i].strip()), len(lines))
    return lines[head + 1:end]


def below_list(lines: list[str]) -> str:
    """The rows below the list (the selected group's why and evidence), in one line."""
    head = next(i for i, line in enumerate(lines) if line.startswith("pod "))
    start = next(i for i in range(head + 1, len(lines)) if not lines[i].strip())
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("Recent drops")), len(lines))
    return " ".join(" ".join(lines[start:end]).split())


def restored(stty: str) -> bool:
    flags = stty.split()
    return "icanon" in flags and "echo" in flags


def test_interactive_console_in_tmux(terminal, node):
    t = terminal(*watch_args(node))
    t.wait_for(r"drops · \d+ events lost")
    assert t.alternate_screen()
    CASES["mtu"].play(node, 3)
    CASES["no-route"].play(node, 2)
    t.wait_for(r"MTU 1450 flannel.1")
    t.wait_for(r"no route to 10.244.3.10")
    t.keys("p")                              # the rows hold still while we pick one
    lines = t.wait_for(r"paused, counting goes on")
    assert all(len(line) <= 80 for line in lines) and len(lines) <= 24
    assert next(i for i, line in enumerate(lines) if line.startswith("pod ")) <= 3
    rows = group_rows(lines)
    assert sum("MTU 1450 flannel.1, 1500-byte DF" in r for r in rows) == 1      # one line per group
    mtu = next(i for i, r in enumerate(rows) if "MTU 1450" in r)
    assert rows[mtu].startswith("web ") and " mtu " in rows[mtu]       # narrow: the workload's name, no namespace
    # Down to it (the first row stands selected): its why below the list; Enter: its details.
    t.keys(*["Down"] * mtu)
    below = below_list(t.wait_for(r"why: 1500-byte packet"))
    assert "larger than the MTU 1450 of flannel.1" in below and "route out flannel.1 mtu 1450" in below
    t.keys("Enter")
    details = " ".join(" ".join(t.wait_for(r"latest flows")).split())
    assert "larger than the MTU 1450 of flannel.1" in details
    assert "route out flannel.1 mtu 1450" in details and "pod: default/web" in details
    assert re.search(r"first seen \d\d:\d\d:\d\d UTC", details)
    t.keys("Left")
    t.wait_for(r"pod +category +drops +/s +why")
    t.keys("q")
    assert t.exit_status() == 0
    err = t.files["stderr"].read_text()
    assert "drops counted" in err and "Traceback" not in err
    assert restored(t.files["stty"].read_text())
    assert not t.alternate_screen()
    # What the screen showed last stays on the terminal.
    assert any("MTU 1450 flannel.1" in line for line in t.screen())


def test_the_demo_at_80x24_shows_the_mtu_and_its_device_without_a_key(tmp_path):
    prefix = f"ndt80{os.getpid() % 100000}"
    t = Tmux(tmp_path, [*NETDROP, "demo", "--duration", "90", "--prefix", prefix])
    try:
        lines = t.wait_for(r"MTU 1450 flannel.1, 1500-byte DF", timeout=90)
        assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
        rows = group_rows(lines)
        mtu = next(r for r in rows if "MTU 1450" in r)
        assert mtu.startswith("web ") and " mtu " in mtu
        # No key pressed: the first group's whole why, and its evidence, in the rows below the list.
        category = next(c for c in CATEGORIES if f" {c} " in rows[0])
        title, why = below_list(lines).split(" why: ", 1)
        assert f" {category} " in title and why
        # The other cases' facts lead their rows as they come (the demo plays them in turn).
        lines = t.wait_for(r"FORWARD policy DROP", timeout=60)
        assert any("nothing listening" in r for r in group_rows(t.wait_for(r"udp/9999 nothing listening"))), lines
        t.keys("q")
        assert t.exit_status(timeout=30) == 0
        assert "Traceback" not in t.files["stderr"].read_text()
    finally:
        t.close()
        if lab_namespaces(prefix):
            Ownership(prefix).cleanup_leftovers()
    assert lab_namespaces(prefix) == []


def test_sigterm_ends_the_interactive_console_and_restores_the_terminal(terminal, node):
    t = terminal(*watch_args(node))
    t.wait_for(r"drops · \d+ events lost")
    t.keys("Down", "Enter")                  # in the middle of something
    pid = t.netdrop_pid()
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    assert t.exit_status() == 0 and time.monotonic() - started < allowed(2.0) + 1    # + polling the pane
    assert restored(t.files["stty"].read_text()) and not t.alternate_screen()
    assert "Traceback" not in t.files["stderr"].read_text()


def test_without_a_terminal_on_stdin_no_keys_are_read(node, tmp_path):
    (tmp_path / "keys").write_text("q")
    args = [*NETDROP, *watch_args(node)][:-1] + ["8"]       # --duration 8
    t = Tmux(tmp_path, f"{shlex.join(args)} <{tmp_path / 'keys'}")
    try:
        t.wait_for(r"drops · \d+ events lost")
        assert not t.alternate_screen()
        assert "↑↓ select" not in "\n".join(t.screen())
        assert t.exit_status(timeout=30) == 0        # the duration ended it, not the "q" in the file
    finally:
        t.close()


def test_closing_the_terminal_ends_the_interactive_console(node, tmp_path):
    t = Tmux(tmp_path, [*NETDROP, *watch_args(node)])
    try:
        t.wait_for(r"drops · \d+ events lost")
        t.keys("h")
        pid = t.netdrop_pid()
    finally:
        t.close()                            # the pane's terminal goes away: SIGHUP
    started = time.monotonic()
    while time.monotonic() - started < 10 and not exited(pid):
        time.sleep(0.02)
    assert exited(pid)
    assert time.monotonic() - started < allowed(2.0)      # the promise: 2 s (tests/timing.py)
    assert "Traceback" not in t.files["stderr"].read_text()


# ---------------------------------------------------------------- Ctrl-Z and fg, as in a shell with job control

class Shell(Tmux):
    """An interactive shell in the pane (job control: Ctrl-Z, fg, kill %1 as a user types them)."""

    PROMPT = "ndsh$ "

    def __init__(self, tmp_path, shell: list[str]):
        self.sock = f"ndt-console-{os.getpid()}-{next(SERVERS)}"
        self.files = {k: tmp_path / k for k in ("stderr", "rc", "stty")}
        self.pid: int | None = None
        self.tmux("new-session", "-d", "-s", "t", "-x", "80", "-y", "24", shlex.join(shell))
        self.type(f"PS1={shlex.quote(self.PROMPT)}")      # dash takes no PS1 from the environment as root
        self.wait_for(re.escape(self.PROMPT.strip()) + r" *$", timeout=10)

    def type(self, line: str) -> None:
        self.keys("-l", line)
        self.keys("Enter")

    def start(self, args: list[str]) -> int:
        self.type(f"{shlex.join(args)} 2>{self.files['stderr']}")
        self.wait_for(r"drops · \d+ events lost")
        self.pid = self.netdrop_pid()
        return self.pid

    def state(self) -> str:
        return proc_state(self.pid) if self.pid is not None else ""

    def wait_state(self, *states: str, timeout: float = 5) -> float:
        """Seconds until netdrop is in one of states ("" and "Z": it ended)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.state() in states:
                return time.monotonic() - started
            time.sleep(0.02)
        raise AssertionError(f"netdrop's state {self.state()!r}, not {states}; screen:\n" + "\n".join(self.screen()))

    def wait_file(self, name: str, timeout: float = 5) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.files[name].read_text() if self.files[name].exists() else ""
            if text.endswith("\n"):
                return text
            time.sleep(0.05)
        raise AssertionError(f"{name} never written; screen:\n" + "\n".join(self.screen()))

    def close(self) -> None:
        if self.pid is not None and self.state() not in ("", "Z"):
            # Ours, by pid: a netdrop left stopped ends on SIGTERM once continued.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
                os.kill(self.pid, signal.SIGCONT)
        super().close()


@pytest.fixture
def shell(tmp_path, node):
    started: list[Shell] = []

    def start(*cmd: str) -> Shell:
        t = Shell(tmp_path, list(cmd))
        started.append(t)
        return t

    yield start
    for t in started:
        t.close()


def mtu_drops(lines: list[str]) -> int:
    found = re.search(r" mtu +(\d+) .*MTU 1450", "\n".join(lines))
    assert found, "\n".join(lines)
    return int(found.group(1))


def test_ctrl_z_gives_the_shell_back_and_fg_redraws_the_console(shell, node):
    # dash keeps no terminal settings of its own for a stopped job: what `stty` shows is what netdrop left.
    t = shell("dash", "-i")
    t.start([*NETDROP, *watch_args(node)])
    CASES["mtu"].play(node, 3)
    t.wait_for(r" mtu +3 .*MTU 1450")
    t.keys("C-z")
    t.wait_state("T")
    t.wait_for(r"Stopped")
    assert not t.alternate_screen()
    t.type(f"stty -a >{t.files['stty']}")           # typed into a cooked, echoing terminal
    t.wait_for(r"stty -a >")
    assert restored(t.wait_file("stty"))
    t.files["stty"].unlink()
    # While stopped the kernel goes on counting: after fg the count is exact.
    CASES["mtu"].play(node, 4)
    assert t.state() == "T"
    t.type("fg")
    lines = t.wait_for(r" mtu +7 .*MTU 1450", timeout=10)
    assert t.alternate_screen() and t.state() in ("R", "S")
    assert lines[0].startswith("netdrop watch") and any(line.startswith("pod ") for line in lines[:4])
    assert not any(Shell.PROMPT.strip() in line for line in lines)      # the whole screen redrawn
    assert mtu_drops(lines) == 7
    t.keys("q")
    t.wait_state("", "Z")
    t.type(f"echo $? >{t.files['rc']}; stty -a >{t.files['stty']}")
    assert int(t.wait_file("rc")) == 0
    assert restored(t.wait_file("stty")) and not t.alternate_screen()
    err = t.files["stderr"].read_text()
    assert "drops counted" in err and "Traceback" not in err, err


def test_a_stopped_console_ends_on_kill_from_the_shell(shell, node):
    # bash's `kill %1` sends SIGTERM, then SIGCONT to the stopped job, as a user ends it.
    t = shell("bash", "--norc", "--noprofile", "-i")
    t.start([*NETDROP, *watch_args(node)])
    t.keys("C-z")
    t.wait_state("T")
    t.wait_for(r"Stopped")
    assert not t.alternate_screen()
    t.type("kill %1")
    took = t.wait_state("", "Z", timeout=10)
    assert took < allowed(2.0), f"took {took:.1f} s to end"
    t.type("")
    t.wait_for(r"\[1\]\+ +Done")                      # exit status 0, not "Exit 1" nor "Terminated"
    assert not t.alternate_screen()
    t.type(f"stty -a >{t.files['stty']}")
    assert restored(t.wait_file("stty"))
    err = t.files["stderr"].read_text()
    assert "drops counted" in err and "Traceback" not in err, err
