"""options: what each command was asked to do, parsed once from argv (cli.py).

One frozen dataclass per command; the pieces several commands share (which
drops, where the pods come from, how the kernel side is loaded, what the
console shows) are dataclasses of their own. Values are already checked and
typed here: numbers within their bounds, durations in seconds, paths absolute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .kernel.loader import MAX_EVENT_RATE
from .pods.kube import Selection


@dataclass(frozen=True)
class KernelOptions:
    """How the BPF side is loaded (every command that traces)."""

    mount_tracefs: bool = False             # mount tracefs if it is not mounted
    classic_tracepoints: bool = False       # the classic tracepoints even where tp_btf loads


@dataclass(frozen=True)
class NodeOptions:
    """Where the pods come from and which node this is (watch, capture, serve)."""

    kubeconfig: str | None = None
    node: str | None = None                 # this node's Kubernetes name
    node_netns: str | None = None           # the namespace that plays the node; None: the host's


@dataclass(frozen=True)
class DropSelection:
    """Which drops watch and capture trace: namespaces, addresses, ports, pods."""

    netns: tuple[str, ...] = ()
    ip: tuple[str, ...] = ()
    port: tuple[int, ...] = ()
    max_event_rate: int = MAX_EVENT_RATE     # events/s the kernel sends at most (0: no limit)
    pods: Selection = Selection()
    node: NodeOptions = NodeOptions()


@dataclass(frozen=True)
class ViewOptions:
    """What the console and the stderr report show."""

    show_benign: bool = False               # --all: benign drops listed too (always counted)
    verbose: bool = False                   # hooks, filters and pod source in full


# The live console, or one JSON object per drop per line (--json).
WatchOutput = Literal["console", "json"]


@dataclass(frozen=True)
class WatchOptions:
    select: DropSelection
    kernel: KernelOptions
    view: ViewOptions
    duration: float | None                  # None: until stopped
    output: WatchOutput                     # how commands/watch.py shows the drops (OUTPUTS)
    stacks: bool | None                     # None: the default for the output (pipeline/startup.py, wants_stacks)


@dataclass(frozen=True)
class CaptureOptions:
    select: DropSelection
    kernel: KernelOptions
    view: ViewOptions
    duration: float
    output: str
    pcap: bool
    snaplen: int | None                     # None: headers only
    max_events: int | None
    stacks: bool | None


@dataclass(frozen=True)
class DemoOptions:
    kernel: KernelOptions
    view: ViewOptions
    duration: float
    cases: str
    prefix: str


@dataclass(frozen=True)
class DoctorOptions:
    netns: str | None                       # the namespace examined as the node; None: this one
    pod: str | None
    namespace: str
    kubeconfig: str | None
    node: str | None
    cni_dir: str
    json: bool


@dataclass(frozen=True)
class SummaryOptions:
    dirs: tuple[str, ...]
    format: str
    show_benign: bool


@dataclass(frozen=True)
class RecorderOptions:
    """serve's flight recorder (tracer/history/): what it keeps of the past for captures."""

    rate: int = 200                         # events/s asked of the kernel (sampled; counts are exact)
    budget: int = 32 * 1024 * 1024          # bytes for the events kept
    history: float = 30 * 60.0              # seconds of counter history kept


@dataclass(frozen=True)
class ServeOptions:
    listen: str
    node: NodeOptions
    kernel: KernelOptions
    max_series: int
    series_ttl: float
    auth: str | None
    insecure_no_auth: bool
    tls_cert_file: str | None
    tls_key_file: str | None
    pod_events: bool = True                 # Events on pods whose traffic breaks (agent/podevents.py)
    events_interval: float = 60.0           # seconds: a series' Event written at most this often
    recorder: RecorderOptions = RecorderOptions()
    captures: bool = True                   # carry out NetdropCaptures (docs/captures.md)
    capture_dir: str = "/var/lib/netdrop/captures"
    advertise: str | None = None            # ADDR:PORT written into reports; None: the node's InternalIP


Options = WatchOptions | CaptureOptions | DemoOptions | DoctorOptions | SummaryOptions | ServeOptions
