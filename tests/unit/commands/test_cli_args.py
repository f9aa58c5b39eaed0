"""What the arguments may say, checked as they are parsed: numbers within what
they end up in (a field of a BPF map, a map's size, a JSON number), paths made
absolute, namespaces that are network namespaces. Bad input: one line, exit 2."""

from __future__ import annotations

from typing import Any
import os
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracer import cli
from tracer.env import Environment
from tracer.errors import UserError
from tracer.kernel.event import ND_MAX_SNAPLEN
from tracer.kernel.loader import MAX_COUNTERS, MAX_EVENT_RATE_LIMIT
from tracer.node.nsexec import own_working_directory
from tracer.options import Options
from tracer.pipeline.startup import node_netns

from ..helpers import Run

YEAR = 8760 * 3600.0

# option -> (argv before it, attribute, lowest, highest): what each command accepts.
NUMBERS = {
    "--max-event-rate": (["watch"], "select.max_event_rate", 0, MAX_EVENT_RATE_LIMIT),
    "--port": (["watch"], "select.port", 1, 65535),
    "--snaplen": (["capture", "-o", "/x", "--pcap"], "snaplen", 1, ND_MAX_SNAPLEN),
    "--max-events": (["capture", "-o", "/x"], "max_events", 0, 2**53 - 1),
    "--max-series": (["serve"], "max_series", 1, MAX_COUNTERS),
}
DURATIONS = {
    "--duration": ["watch"],
    "--series-ttl": ["serve"],
}


def parsed(argv: list[str]) -> Any:
    """The command's options (any of options.Options: each test knows which)."""
    return cli.parse(argv)


def value(opts: Options, attr: str) -> object:
    """The option at attr, a dotted path ("select.port"); the first of a repeatable one."""
    v: object = opts
    for name in attr.split("."):
        v = getattr(v, name)
    return v[0] if isinstance(v, tuple) else v


@pytest.mark.parametrize("option", NUMBERS)
def test_each_number_is_taken_up_to_its_bounds_and_refused_past_them(option: str) -> None:
    before, attr, low, high = NUMBERS[option]
    assert value(parsed([*before, option, str(low)]), attr) == low
    assert value(parsed([*before, option, str(high)]), attr) == high
    for bad in (str(high + 1), str(low - 1), "9" * 400, "1e3", "0x10", "\u0663", ""):
        with pytest.raises(UserError) as err:
            parsed([*before, option, bad])
        line = str(err.value)
        assert "\n" not in line and f"argument {option}" in line
        if bad.lstrip("-").isdigit():
            assert f"from {low} to {high:,}" in line


def test_an_event_rate_that_would_wrap_the_kernels_field_is_refused_in_one_line() -> None:
    """2**32 * 10 events/s is a per-CPU budget of 2**32 per 100 ms window: 0 in the u32."""
    run = Run(["watch", "--max-event-rate", str(2**32 * 10)], euid=0)
    assert run.status == 2
    assert run.error == ("netdrop: error: argument --max-event-rate: '42949672960': expected a whole number "
                         f"from 0 to {MAX_EVENT_RATE_LIMIT:,} (0: no limit) (see 'netdrop watch --help')")


@pytest.mark.parametrize("option", DURATIONS)
def test_durations_end_at_a_year(option: str) -> None:
    before = DURATIONS[option]
    assert getattr(parsed([*before, option, "8760h"]), option[2:].replace("-", "_")) == YEAR
    for bad in ("8761h", "9" * 400, "\u0663s", "0"):
        with pytest.raises(UserError) as err:
            parsed([*before, option, bad])
        assert "\n" not in str(err.value) and f"argument {option}" in str(err.value)


@given(option=st.sampled_from(sorted(NUMBERS)),
       text=st.one_of(st.text(max_size=40), st.integers().map(str), st.floats().map(str)))
def test_any_number_text_is_taken_within_range_or_refused_in_one_line(option: str, text: str) -> None:
    before, attr, low, high = NUMBERS[option]
    try:
        args = parsed([*before, f"{option}={text}"])
    except UserError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("argument ")
    else:
        got = value(args, attr)
        assert isinstance(got, int) and low <= got <= high


@given(option=st.sampled_from(sorted(DURATIONS)), text=st.text(max_size=40))
def test_any_duration_text_is_taken_within_a_year_or_refused_in_one_line(option: str, text: str) -> None:
    try:
        args = parsed([*DURATIONS[option], f"{option}={text}"])
    except UserError as exc:
        assert "\n" not in str(exc)
    else:
        assert 0 < getattr(args, option[2:].replace("-", "_")) <= YEAR


def test_paths_the_user_gave_are_absolute_once_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative to where netdrop was started, whatever changes directory later (bcc's compile does)."""
    monkeypatch.chdir(tmp_path)
    here = str(tmp_path)
    watch = parsed(["watch", "--kubeconfig", "kc", "--netns", "./ns/a", "--netns", "pod-a", "--netns", "4026531840",
                    "--node-netns", "../n1"])
    assert watch.select.node.kubeconfig == f"{here}/kc"
    assert watch.select.netns == (f"{here}/./ns/a", "pod-a", "4026531840")     # names and inodes stay what they are
    assert watch.select.node.node_netns == f"{here}/../n1"   # as written: no '..' folded over a link
    assert parsed(["capture", "-o", "out/incident"]).output == f"{here}/out/incident"
    serve = parsed(["serve", "--kubeconfig", "kc", "--node-netns", "n1", "--tls-cert-file", "tls/crt",
                    "--tls-key-file", "tls/key"])
    assert (serve.node.kubeconfig, serve.tls_cert_file, serve.tls_key_file) == (f"{here}/kc", f"{here}/tls/crt",
                                                                           f"{here}/tls/key")
    doctor = parsed(["doctor", "--kubeconfig", "kc", "--cni-dir", "cni", "--netns", "x/y"])
    assert (doctor.kubeconfig, doctor.cni_dir, doctor.netns) == (f"{here}/kc", f"{here}/cni", f"{here}/x/y")
    assert parsed(["summary", "a", "/b/summary.json"]).dirs == (f"{here}/a", "/b/summary.json")
    assert parsed(["doctor"]).cni_dir == "/var/lib/cni/networks"


@pytest.mark.parametrize("argv", [["watch", "--kubeconfig", ""], ["capture", "-o", ""], ["summary", ""],
                                  ["watch", "--kubeconfig", "a\0b"], ["doctor", "--netns", ""]])
def test_an_empty_path_is_refused(argv: list[str]) -> None:
    run = Run(argv, euid=0)
    assert run.status == 2 and run.error.startswith("netdrop: error: argument ")


@pytest.mark.parametrize("argv", [
    ["watch", "--netns", "/dev/zero"],
    ["capture", "-o", "{tmp}/out", "--netns", "/dev/zero"],
    ["watch", "-A", "--node-netns", "/dev/zero"],
    ["doctor", "--netns", "/dev/zero"],
    ["serve", "--listen", "127.0.0.1:0", "--node-netns", "/dev/zero"],
])
def test_a_netns_that_is_no_network_namespace_is_one_line(argv: list[str], tmp_path: Path) -> None:
    run = Run([a.replace("{tmp}", str(tmp_path)) for a in argv], euid=0, netns_dir=tmp_path)
    assert run.status == 2
    assert run.error == "netdrop: error: not a network namespace: /dev/zero is a character device"


def test_a_netns_name_is_one_under_the_run_directory(tmp_path: Path) -> None:
    (tmp_path / "leftover").write_text("")       # a name whose bind mount `ip netns add` never made
    run = Run(["doctor", "--netns", "leftover"], euid=0, netns_dir=tmp_path)
    assert run.status == 2
    assert run.error == f"netdrop: error: not a network namespace: {tmp_path}/leftover is a regular file"


def test_the_node_namespace_may_be_a_processs(tmp_path: Path) -> None:
    """/proc/PID/ns/net is a link by design: followed, and taken."""
    mine = f"/proc/{os.getpid()}/ns/net"
    assert node_netns(mine, Environment(netns_dir=tmp_path)) == mine
    assert node_netns(None, Environment(netns_dir=tmp_path)) == "/proc/self/ns/net"


def test_a_thread_with_a_working_directory_of_its_own_moves_nobody_else(tmp_path: Path) -> None:
    """What the compiling thread does before bcc's chdir (kernel/loader.py)."""
    here = os.getcwd()
    moved, checked = threading.Event(), threading.Event()
    seen: list[str] = []

    def compile_like() -> None:
        own_working_directory()
        os.chdir(tmp_path)
        seen.append(os.getcwd())
        moved.set()
        checked.wait(10)

    t = threading.Thread(target=compile_like)
    t.start()
    try:
        assert moved.wait(10)
        assert seen == [str(tmp_path)] and os.getcwd() == here
    finally:
        checked.set()
        t.join()
        os.chdir(here)      # had the thread moved everyone, the next tests would not run from here
