"""wiring: what a run of the plugin is given, so that tests run it against the lab and read strings.

The environment (streams, terminal width, clocks: env.Environment), how it
reaches the API server (connect), how it brings a node's files (fetch), how
it waits (sleep: a test raises KeyboardInterrupt there as Ctrl-C would), how
it hands over to kubectl (execvp), and the waits the command keeps to.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..env import Environment
from .kubeapi import PluginApi, Target, connect

POLL_SECONDS = 2.0          # how often `capture` redraws its nodes' state (the reports are watched)
GRACE_SECONDS = 30.0        # past the capture's end, how long agents have to write their last report
FETCH_WORKERS = 4           # nodes' files fetched at once


# fetch(endpoint_url, cert_sha256, token, namespace, name, filename, dest, max_bytes): one file of a
# node's capture from its agent (tracer/kubectl/fetch.py).
Fetch = Callable[[str, str, str, str, str, str, Path, int], Any]


def _default_fetch(endpoint: str, cert_sha256: str, token: str, namespace: str, name: str, filename: str,
                   dest: Path, max_bytes: int) -> Any:
    # Its TLS client, loaded only when files are fetched.
    module: Any = importlib.import_module(f"{__package__}.fetch")
    return module.fetch(endpoint, cert_sha256, token, namespace, name, filename, dest, max_bytes)


@dataclass(frozen=True, kw_only=True)
class Wiring:
    env: Environment = field(default_factory=Environment)
    connect: Callable[[Target], PluginApi] = connect
    fetch: Fetch = _default_fetch
    sleep: Callable[[float], None] = time.sleep
    execvp: Callable[[str, list[str]], Any] = os.execvp
    poll_seconds: float = POLL_SECONDS
    grace_seconds: float = GRACE_SECONDS
    fetch_workers: int = FETCH_WORKERS
