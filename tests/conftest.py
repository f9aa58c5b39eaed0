"""Markers and the CI rule: under CI=true a kernel test may not be skipped.

tests/unit    pure Python on plain data, no root needed.
tests/kernel  marked `kernel`: root, BPF and tracefs on the real kernel; each
              builds its own namespaces and removes them, and counts only drops of
              namespaces it or its fixtures made (the machine may be busy with others).
Shared builders live in each tree's helpers.py (tests/unit/strategies.py: Hypothesis
strategies); a test module imports those, never another test module.
  `portable`  kernel tests that scripts/kernels runs on Debian's 5.10, 6.1 and 6.12
              under QEMU too (the kernel matrix; here as every kernel test).
  `image`     kernel tests that run the agent's image with podman as the DaemonSet says
              (tests/kernel/test_image.py; they build the image first if podman lacks it).
  `guest`     kernel tests that change the whole kernel (nf_conntrack_max, modules):
              only inside a guest of scripts/kernels (NETDROP_GUEST=1), where the
              kernel is the test's own; elsewhere deselected, never run on a host.
"""

import os
import signal
from pathlib import Path

import pytest
from hypothesis import settings

IN_CI = os.environ.get("CI") == "true"
IN_GUEST = os.environ.get("NETDROP_GUEST") == "1"

# Tests assert behaviour, not timings: Hypothesis's default 200 ms deadline per example fails
# a correct test on a loaded machine (kernel tests or other runs beside it). Loaded here, before
# any test module, so every @settings there inherits it.
settings.register_profile("netdrop", deadline=None)
settings.load_profile("netdrop")


def pytest_configure(config):
    config.addinivalue_line("markers", "kernel: needs root, bcc and the real kernel (tests/kernel)")
    config.addinivalue_line("markers", "portable: a kernel test of the kernel matrix (scripts/kernels)")
    config.addinivalue_line("markers", "image: runs the agent's image with podman as deploy/daemonset.yaml says")
    config.addinivalue_line("markers", "guest: changes the whole kernel: runs only in a scripts/kernels guest")
    # A run started in the background of a non-interactive shell (`./scripts/test &`) inherits
    # SIGINT ignored (POSIX: asynchronous lists ignore it), and netdrop, like every command, keeps
    # an ignored stop signal ignored (nohup): the Ctrl-C tests would wait for nothing. Ignored
    # dispositions survive exec, so the commands the tests start would inherit it too.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/kernel" in Path(str(item.fspath)).as_posix():
            item.add_marker(pytest.mark.kernel)
    guest = [item for item in items if item.get_closest_marker("guest")]
    others = [item for item in items if not item.get_closest_marker("guest")]
    if not IN_GUEST:
        # Never on a host: they lower nf_conntrack_max and unload modules.
        if guest:
            config.hook.pytest_deselected(items=guest)
        items[:] = others
    else:
        # First, whatever order the folders are collected in: they need nf_conntrack
        # unloaded, as a fresh guest has it, before any other test loads it.
        items[:] = guest + others


def kernel_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "bcc is not importable (run scripts/setup)"
    if not any(Path(p, "events").is_dir() for p in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")):
        return "tracefs is not mounted"
    return None


def pytest_runtest_setup(item):
    if item.get_closest_marker("kernel"):
        why = kernel_unavailable()
        if why:
            if IN_CI:
                pytest.fail(f"kernel test cannot run under CI=true: {why}")
            pytest.skip(why)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and item.get_closest_marker("kernel"):
        report.outcome = "failed"
        report.longrepr = f"kernel test skipped under CI=true: {report.longrepr}"
