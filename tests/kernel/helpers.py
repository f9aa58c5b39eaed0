"""What several kernel tests build or read alike: the kernel's own counters of a
namespace, a capture started and stopped as a user does, a pair of namespaces
joined by a veth, the namespaces a lab recorded, pods of a test's own on either
simulated node. Fixtures stay in conftest.py; BPF programs of the tests' own in
bpftest.py, Prometheus in prometheus.py."""

from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tracer import cli
from tracer.env import Environment
from tracer.lab import api as labapi
from tracer.lab.node import SimNode
from tracer.lab.ownership import NETNS_DIR, STATE_DIR
from tracer.lab.topology import NODE_NAMES, Pod

from .conftest import NETDROP, Netdrop

TRACING = "netdrop: tracing"          # the line a tracing command prints once its programs are attached


class Agent(Netdrop):
    """`netdrop serve` in the background, ready once it serves."""

    READY = "netdrop: serving"


def nstat(ns: str, counter: str) -> int:
    """A kernel counter (nstat's name) as the namespace ns counts it."""
    out = subprocess.run(["ip", "netns", "exec", ns, "nstat", "-asz", counter],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == counter:
            return int(parts[1])
    raise AssertionError(f"{counter} not in nstat output: {out!r}")


def pod_args(node: SimNode, *extra: str) -> tuple[str, ...]:
    """`netdrop watch --json` of the simulated node's pods (extra selects them: -A, --pod, -l)."""
    return ("watch", "--json", "--duration", "60", "--kubeconfig", str(node.kubeconfig),
            "--node-netns", node.node1, *extra)


def wait_tracing(proc: subprocess.Popen[str], what: str = "netdrop") -> subprocess.Popen[str]:
    """proc (its stderr a text pipe) once it says it is tracing; it failing to is the test's failure."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith(TRACING):
            return proc
    raise AssertionError(f"{what} did not start: {proc.communicate(timeout=30)}")


@contextlib.contextmanager
def tracing(*args: str) -> Iterator[subprocess.Popen[str]]:
    """`netdrop args...` as a user runs it, once it is tracing; killed at the end if it
    still runs then (the test failed before stopping it)."""
    proc = subprocess.Popen([*NETDROP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield wait_tracing(proc, args[0])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start_capture(node: SimNode, outdir: Path, *extra: str, duration: str = "60") -> subprocess.Popen[str]:
    """`netdrop capture` of the simulated node (extra selects its pods or namespaces), tracing."""
    proc = subprocess.Popen([*NETDROP, "capture", "--duration", duration, "--output", str(outdir),
                             "--kubeconfig", str(node.kubeconfig), "--node-netns", node.node1, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return wait_tracing(proc, "capture")


def finish(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> tuple[int, str, str]:
    """Stop a started command as a user does (after the last drops reached the ring buffer):
    its exit status, stdout and the rest of its stderr."""
    time.sleep(0.5)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def main_while_tracing(argv: list[str], play: Callable[[], object]) -> str:
    """cli.main(argv) in this process, play() run beside it once it is tracing; its stderr.
    Exits 0 or fails the test."""
    out, err = io.StringIO(), io.StringIO()
    done = threading.Event()

    def player() -> None:
        while TRACING not in err.getvalue():
            if done.wait(0.1):
                return
        play()

    thread = threading.Thread(target=player)
    thread.start()
    try:
        status = cli.main(argv, Environment(stdout=out, stderr=err))
    finally:
        done.set()
        thread.join()
    assert status == 0, err.getvalue()
    return err.getvalue()


def ip(*args: str, ns: str | None = None) -> str:
    """`ip [-n ns] args...`; its failure fails the test with what ip said."""
    cmd = ["ip", *(("-n", ns) if ns else ()), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: {res.stderr}")
    return res.stdout


@contextlib.contextmanager
def veth_pair(a: str, b: str, dev_a: str, dev_b: str, addrs_a: Iterable[str] = ("192.0.2.1/24", "fd00::1/64"),
              addrs_b: Iterable[str] = ("192.0.2.2/24", "fd00::2/64")) -> Iterator[None]:
    """Namespaces a and b of the test's own, joined by a veth (dev_a in a, dev_b in b) with
    these addresses (IPv6 without duplicate address detection: usable at once), every link
    and lo up. Both removed afterwards, also on failure."""
    made: list[str] = []
    try:
        for ns in (a, b):
            ip("netns", "add", ns)
            made.append(ns)
        ip("link", "add", dev_a, "netns", a, "type", "veth", "peer", "name", dev_b, "netns", b)
        for ns, dev, addrs in ((a, dev_a, addrs_a), (b, dev_b, addrs_b)):
            for addr in addrs:
                ip("addr", "add", addr, "dev", dev, *(("nodad",) if ":" in addr else ()), ns=ns)
            ip("link", "set", dev, "up", ns=ns)
            ip("link", "set", "lo", "up", ns=ns)
        yield
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def lab_namespaces(prefix: str) -> list[str]:
    """The namespaces a lab with this prefix recorded as created (pods are cni-<uuid>)."""
    state = STATE_DIR / f"lab-{prefix}.json"
    return json.loads(state.read_text())["namespaces"] if state.exists() else []


def existing(names: list[str]) -> list[str]:
    return [n for n in names if (NETNS_DIR / n).exists()]


@dataclass(frozen=True)
class LabelledPod:
    """A pod of a test's own: a sandbox on node 1 or 2 of the lab, its Pod object in the lab's API."""

    name: str
    namespace: str
    node: str               # its Kubernetes node (sim-node1, sim-node2)
    labels: dict[str, str]
    sandbox: Pod            # as SimNode.add_pod made it (its name there is the seed role's)

    @property
    def ipv4(self) -> str:
        return self.sandbox.ipv4

    @property
    def netns(self) -> str:
        return self.sandbox.netns


# The seed pod whose sandbox add_pod copies for each node: its node, not its name or namespace.
_ROLE_OF_NODE = {1: "web", 2: "api"}


@contextlib.contextmanager
def labelled_pods(node: SimNode, specs: Iterable[tuple[str, str, int, int, dict[str, str]]]
                  ) -> Iterator[list[LabelledPod]]:
    """Pods (name, namespace, node 1 or 2, address 10.244.<node>.<host>, labels) made as kubelet
    makes them (the sandbox, then the Pod object), reachable from the lab's client; deleted
    (the object, then the sandbox) afterwards, also on failure. The seed pods stay as they are."""
    assert node.api is not None
    made: list[LabelledPod] = []
    try:
        for name, namespace, i, host, labels in specs:
            role = _ROLE_OF_NODE[i]
            seed = node.pods[role]
            try:
                sandbox = node.add_pod(role, host)
            finally:
                node.pods[role] = seed       # add_pod records the sandbox as the role's pod
            pod = LabelledPod(name, namespace, NODE_NAMES[i], dict(labels), sandbox)
            made.append(pod)
            ips = [a for a in (sandbox.ipv4, sandbox.ipv6) if a is not None]
            for addr in ips:        # an earlier pod's MAC at this address, still in the node's cache
                ip("neigh", "flush", "to", addr, ns=sandbox.node)
            node.api.put_pod(labapi.pod_object(name, namespace, pod.node, ips, f"192.168.100.{i}", labels=labels,
                                               ports=[8080], owner=name.rsplit("-", 1)[0]))
        for pod in made:     # neighbours resolved: a drop case's first packets are not queued behind it
            deadline = time.monotonic() + 10
            while subprocess.run(["ip", "netns", "exec", node.client, "ping", "-c1", "-W1", pod.ipv4],
                                 capture_output=True, timeout=5).returncode != 0:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the lab's client cannot reach pod {pod.name} at {pod.ipv4}")
                time.sleep(0.1)
        yield made
    finally:
        for pod in made:
            if node.api is not None:
                node.api.delete_pod(pod.namespace, pod.name)
            node.remove_sandbox(pod.sandbox)
