"""options: what each `kubectl netdrop` command was asked to do, parsed once by cli.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..captures.spec import CaptureFilters
from .kubeapi import Target


@dataclass(frozen=True)
class CaptureOptions:
    target: Target
    namespace: str | None           # -n; None: the context's (pods) or the agents' (nodes)
    pods: tuple[str, ...]           # --pod NAME...
    selector: str | None            # -l
    nodes: tuple[str, ...]          # --node NAME...
    all_nodes: bool
    duration: float
    since: float
    filters: CaptureFilters
    packets: bool
    output: Path
    name: str | None
    format: str

    @property
    def node_scope(self) -> bool:
        return bool(self.nodes or self.all_nodes)


@dataclass(frozen=True)
class GetOptions:
    target: Target
    namespace: str | None
    name: str


@dataclass(frozen=True)
class ListOptions:
    target: Target
    namespace: str | None
    all_namespaces: bool
    selector: str | None


@dataclass(frozen=True)
class DeleteOptions:
    target: Target
    namespace: str | None
    name: str


@dataclass(frozen=True)
class WatchOptions:
    target: Target
    namespace: str | None
    pod: str
    dry_run: bool


Options = CaptureOptions | GetOptions | ListOptions | DeleteOptions | WatchOptions
