"""startup: the checks and inputs every tracing command needs, before anything is loaded.

They run in an order that fails cheaply (root, arguments, the namespaces
named, tracefs) and the pod source is built in a thread (Pending) while bcc
compiles.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from ..env import Environment
from ..errors import UserError
from ..messages import warn
from ..options import DropSelection, KernelOptions

if TYPE_CHECKING:
    from ..kernel.facts import KernelFacts
    from ..kernel.filters import Filters
    from ..pods.source import PodSource

T = TypeVar("T")

# Whether the console and capture take kernel stacks unless told (--stacks,
# --no-stacks): measured in docs/performance.md against the per-drop budget.
STACKS_BY_DEFAULT = True


def wants_stacks(stacks: bool | None, json_lines: bool = False) -> bool:
    """--stacks/--no-stacks as given; else on for the views for people (the
    console's details, a capture's summary), off for `watch --json`: a stack
    per line is for those who ask."""
    if stacks is not None:
        return stacks
    return STACKS_BY_DEFAULT and not json_lines


def require_root(env: Environment) -> None:
    if env.euid != 0:
        raise UserError("netdrop needs root to load BPF programs: run it with sudo")


def kernel_facts(kernel: KernelOptions, env: Environment) -> KernelFacts:
    """What the machine must offer, checked before anything else is looked at."""
    from ..kernel import facts

    try:
        tracefs = facts.find_tracefs(env.tracefs)
    except UserError:
        if not kernel.mount_tracefs:
            raise
        tracefs = facts.mount_tracefs(env.tracefs[0])
    return facts.probe_kernel(tracefs)


def make_filters(select: DropSelection, env: Environment) -> Filters:
    """--netns, --ip, --port (the last two checked as they were parsed, cli.py)."""
    from ..kernel.filters import Filters
    from ..node.namespaces import resolve_netns

    return Filters(netns=frozenset(resolve_netns(s, env.netns_dir) for s in select.netns),
                   ips=frozenset(select.ip), ports=frozenset(select.port))


def node_netns(spec: str | None, env: Environment) -> str:
    """The file of the namespace that plays the node (--node-netns, doctor's
    --netns), checked to be a network namespace before anything is loaded; by
    default the one netdrop runs in."""
    from ..node.namespaces import HOST_NETNS, checked_netns, netns_path

    if spec is None:
        return HOST_NETNS
    checked_netns(spec, env.netns_dir)
    return str(netns_path(spec, env.netns_dir))


def pod_source(select: DropSelection, env: Environment) -> Pending[PodSource]:
    """The pod index source (the pods chosen by --pod/-l/-A, the API, the node)."""
    from ..pods.apicall import Calls
    from ..pods.kube import parse_selector
    from ..pods.source import PodSource

    sel = select.pods
    if sel.selector:
        parse_selector(sel.selector)
    if sel.active and (select.netns or select.ip):
        raise UserError("--pod/-l/-A choose the namespaces, interfaces and addresses themselves: "
                        "they cannot be combined with --netns or --ip")
    node = node_netns(select.node.node_netns, env)
    calls = Calls()

    def build() -> PodSource:
        source = PodSource(sel, select.node.kubeconfig, select.node.node, node, warn=functools.partial(warn, env),
                           calls=calls)
        if source.kube is None and sel.active:
            warn(env, source.describe())
        return source

    return Pending(build, cancel=calls.close)


class Pending(Generic[T]):
    """A value built in a thread while the main thread does other start-up work:
    the pod source asks the API (up to kube.START_SECONDS) while bcc compiles
    (about a second, in C, without the GIL), so start-up takes the longer of
    the two, not both. result() gives the value or raises what building raised.

    close() gives up on a value not taken (start-up failed or was stopped
    first): cancel() (the API calls' Calls.close) and a short wait for the
    thread, so that it is not left in a blocking call when the interpreter
    exits, which can abort the process (see pods/apicall.py)."""

    JOIN_SECONDS = 1.0

    def __init__(self, build: Callable[[], T], cancel: Callable[[], None] | None = None) -> None:
        self._value: T | None = None
        self._error: BaseException | None = None
        self._cancel = cancel
        self._taken = False
        self._thread = threading.Thread(target=self._run, args=(build,), name="netdrop-start", daemon=True)
        self._thread.start()

    def _run(self, build: Callable[[], T]) -> None:
        try:
            self._value = build()
        except BaseException as exc:  # handed to the main thread as it is  # noqa: BLE001
            self._error = exc

    def result(self) -> T:
        try:
            self._thread.join()
        except BaseException:       # a stop signal (Interrupted) while waiting
            self.close()
            raise
        self._taken = True
        if self._error is not None:
            raise self._error
        return self._value   # type: ignore[return-value]

    def close(self) -> None:
        if self._taken:
            return
        self._taken = True
        if self._cancel is not None:
            self._cancel()
        self._thread.join(self.JOIN_SECONDS)
