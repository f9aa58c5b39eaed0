"""main(argv, env) in this process on the real kernel: what the environment's
streams receive, and a set-up that fails after the program is loaded leaves
nothing of it behind."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

from tracer import cli
from tracer.env import Environment
from tracer.lab.cases import CASES
from tracer.lab.node import SimNode


def bpf_fds() -> list[str]:
    """This process's BPF programs, maps and attached perf events (tracepoints)."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:         # closed meanwhile (the listing's own fd)
            continue
        if target.startswith(("anon_inode:bpf", "anon_inode:[perf_event]")):
            found.append(target)
    return found


def test_a_set_up_that_fails_after_loading_closes_the_program(tmp_path: Path) -> None:
    # The pod source (built beside bcc's compile) finds no kubeconfig there:
    # the program is loaded and attached by then.
    before = bpf_fds()
    out, err = io.StringIO(), io.StringIO()
    status = cli.main(["watch", "--json", "--duration", "1", "--kubeconfig", str(tmp_path / "absent")],
                      Environment(stdout=out, stderr=err))
    assert status == 2
    assert err.getvalue() == f"netdrop: error: kubeconfig {tmp_path}/absent does not exist\n"
    assert out.getvalue() == ""
    assert bpf_fds() == before


def test_the_live_console_draws_on_the_environments_stdout(node: SimNode) -> None:
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err, stdout_tty=True, width=160)
    done = threading.Event()

    def play() -> None:         # once tracing began (its line on the env's stderr)
        while "netdrop: tracing" not in err.getvalue():
            if done.wait(0.1):
                return
        CASES["mtu"].play(node, 2)

    player = threading.Thread(target=play)
    player.start()
    try:
        status = cli.main(["watch", "--netns", node.node1, "--duration", "5"], env)
    finally:
        done.set()
        player.join()
    assert status == 0, err.getvalue()
    screen = out.getvalue()
    for text in ("netdrop watch", "PKT_TOO_BIG", "ip_forward", node.node1):
        assert text in screen, text
    assert "\x1b[" in screen            # drawn as on a terminal: the env said stdout is one
    lines = err.getvalue().splitlines()
    assert any(line.startswith("netdrop: tracing (tp_btf skb:kfree_skb") for line in lines)
    assert any(line.startswith("netdrop: ") and "drops counted" in line for line in lines)


def test_a_captures_progress_line_goes_to_the_environments_stderr(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err, stderr_tty=True, width=160)
    status = cli.main(["capture", "--duration", "2", "--output", str(tmp_path / "cap")], env)
    assert status == 0, err.getvalue()
    assert "capture: " in err.getvalue() and "events written" in err.getvalue()   # the live progress line
    assert (tmp_path / "cap" / "summary.json").is_file()
