"""capture: a time-boxed recording into a directory, for the incident ticket.

    events.jsonl   every delivered drop event (the keys of watch --json), one
                   write per line, so a crash or a full disk leaves whole lines
    drops.pcapng   with --pcap: the dropped packets' headers, each commented
    summary.json   written at the end (summary.build), Ctrl-C included

Recorder is a sink of the watch loop plus a tick consumer: it never talks to
the kernel itself.
"""

from __future__ import annotations

import collections
import errno
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ..errors import UserError
from ..explain.verdict import Verdict
from ..groups import GroupKey, Groups
from ..kernel.decode import Drop
from ..pods.attribute import Attribution
from ..topk import SpaceSaving
from ..trust import create_new, trusted_owners, why_untrusted
from .jsonout import LineEncoder, summary_time
from .pcapng import PcapngWriter

if TYPE_CHECKING:
    from rich.console import Console

    from ..kernel.loader import Stats

DEFAULT_SNAPLEN = 128          # bytes of a packet in drops.pcapng, and never past its headers
PROGRESS_EVERY = 10.0          # seconds between progress lines when stderr is not a terminal
EVENTS_FILE = "events.jsonl"
PCAP_FILE = "drops.pcapng"
SUMMARY_FILE = "summary.json"


# Files are created, never opened (trust.create_new: an earlier capture or a
# name planted in advance is refused, a link never followed), and every open
# is relative to the directory's own descriptor, so that renaming the directory
# or a path component after the checks changes nothing.
FILE_MODE = 0o600      # drops name pods, addresses and rules of the node: root's to read
DIR_MODE = 0o700


@dataclass(frozen=True)
class OutputDir:
    """A capture's directory, checked and held open; files are made only through it."""

    path: Path
    fd: int

    def create(self, name: str, extra_flags: int = 0) -> int:
        """A new file in the directory, mode 0600; raises OSError (EEXIST, ELOOP, ...)."""
        return create_new(name, FILE_MODE, dir_fd=self.fd, extra_flags=extra_flags)

    def close(self) -> None:
        os.close(self.fd)


def prepare_output(path: str) -> OutputDir:
    """Create DIR (mode 0700) or take an existing one that only trusted users can
    change, and prove it writable, before anything is loaded. An existing DIR
    that another user owns, or that group or others may write, could hold links
    or swap files under root's hands: it is refused, and so is a capture already
    there (netdrop never overwrites one)."""
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(out, DIR_MODE)
    except FileExistsError:
        pass
    except OSError as exc:
        raise UserError(f"cannot write to output directory {out}: {exc.strerror}") from None
    try:
        fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        why = "it is a symbolic link" if out.is_symlink() else exc.strerror
        raise UserError(f"cannot write to output directory {out}: {why}") from None
    outdir = OutputDir(out, fd)
    try:
        _check_dir(outdir)
    except BaseException:
        outdir.close()
        raise
    return outdir


def _check_dir(outdir: OutputDir) -> None:
    out = outdir.path
    why = why_untrusted(os.fstat(outdir.fd), trusted_owners())
    if why is not None:
        raise UserError(f"output directory {out}: {why}: root does not write where others can plant files; "
                        f"choose a new directory")
    taken = [name for name in (EVENTS_FILE, SUMMARY_FILE, PCAP_FILE) if _exists(outdir, name)]
    if taken:
        raise UserError(f"output directory {out} already holds a capture ({', '.join(taken)}): netdrop never "
                        f"overwrites one; choose a new directory")
    probe = f".netdrop-write-test-{os.getpid()}"
    try:
        os.close(outdir.create(probe))
        os.unlink(probe, dir_fd=outdir.fd)
    except OSError as exc:
        raise UserError(f"cannot write to output directory {out}: {exc.strerror}") from None


def _exists(outdir: OutputDir, name: str) -> bool:
    try:
        os.stat(name, dir_fd=outdir.fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def write_summary(outdir: OutputDir, summary: dict[str, object]) -> None:
    """summary.json, written once at the end, created like every capture file."""
    try:
        fd = outdir.create(SUMMARY_FILE)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(summary, indent=2) + "\n")
    except OSError as exc:
        raise UserError(f"cannot write {outdir.path / SUMMARY_FILE}: {exc.strerror}") from None


def summary_path(path: str) -> Path:
    p = Path(path)
    return p if p.suffix == ".json" else p / SUMMARY_FILE


def packet_comment(drop: Drop, verdict: Verdict, who: Attribution) -> str:
    """What Wireshark shows beside the packet: why, where, whose (and the pod at
    the other end), and "benign" for a drop every healthy node makes."""
    pod = f"pod {who.pod.label} {who.direction}" if who.pod else "no pod"
    peer = f"; peer {who.peer.label} {who.peer_direction}" if who.peer else ""
    dev = f" on {drop.ifname}" if drop.ifname else ""
    benign = ", benign" if verdict.benign else ""
    return (f"netdrop: {drop.reason or 'dropped'} at {drop.location or '?'} ({verdict.category}{benign}); "
            f"{pod}{peer}; netns {drop.netns}{dev}")


FlowKey = tuple[str | None, str | None, int | None, str | None, int | None]   # proto, src, sport, dst, dport
FLOW_CAPACITY = 10_000    # flows counted at once: a storm of ever-new ports must not grow memory


@dataclass
class FlowStat:
    """What a flow's first event told (its count is kept by the heavy-hitter counter)."""

    category: str = ""
    reason: str | None = None
    pod: str | None = None
    benign: bool = False
    first: datetime | None = None     # since the flow got its counter (it may have lost one before)
    last: datetime | None = None


@dataclass
class Recorder:
    outdir: OutputDir
    pcap_snaplen: int = 0              # 0: no pcap
    max_events: int | None = None
    written: int = 0                   # lines in events.jsonl
    delivered: int = 0                 # events seen (written or not)
    write_error: str | None = None
    flows: SpaceSaving[FlowKey, FlowStat] = field(default_factory=lambda: SpaceSaving(FLOW_CAPACITY))
    timeline: dict[int, collections.Counter[str]] = field(default_factory=dict)   # unix second -> category counts
    started: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        try:
            self._fd = self.outdir.create(EVENTS_FILE, os.O_APPEND)
            self._pcap_file = os.fdopen(self.outdir.create(PCAP_FILE), "wb") if self.pcap_snaplen else None
        except OSError as exc:
            raise UserError(f"cannot create a capture file in {self.outdir.path}: {exc.strerror}") from None
        self._good = 0                  # size of events.jsonl up to its last whole line
        self.pcap = PcapngWriter(self._pcap_file, self.pcap_snaplen) if self._pcap_file else None
        self._last_counts: dict[GroupKey, int] = {}
        self._line = LineEncoder().line     # events.jsonl: the lines of watch --json

    # -- sink --
    def emit(self, drop: Drop, verdict: Verdict, who: Attribution) -> None:
        self.delivered += 1
        if self.write_error is None and (self.max_events is None or self.written < self.max_events):
            self._write_line(self._line(drop, verdict, who))
        if self.pcap is not None and drop.packet:
            self.pcap.write(drop.time, drop.packet, drop.len, packet_comment(drop, verdict, who))
        key: FlowKey = (drop.proto, drop.src, drop.sport, drop.dst, drop.dport)
        f = self.flows.add(key, lambda: FlowStat(category=verdict.category, reason=drop.reason,
                                                 pod=who.pod.label if who.pod else None, benign=verdict.benign,
                                                 first=drop.time))
        f.last = drop.time

    def _write_line(self, line: str) -> None:
        data = line.encode()
        try:
            n = os.write(self._fd, data)
            if n != len(data):
                raise OSError(errno.ENOSPC, "short write")
        except OSError as exc:
            # A full disk: keep the file valid up to its last whole line, and stop.
            os.ftruncate(self._fd, self._good)
            self.write_error = f"{EVENTS_FILE} stopped after {self.written} events: {exc.strerror}"
            return
        self._good += len(data)
        self.written += 1

    def flush(self) -> None:
        if self.pcap is not None:
            self.pcap.flush()

    # -- ticks --
    def tick(self, groups: Groups, wall: datetime) -> None:
        """Exact drops per second and category, from the kernel counters' growth."""
        second = int(wall.timestamp())
        bucket = self.timeline.setdefault(second, collections.Counter())
        for key, g in groups.groups.items():
            grew = g.count - self._last_counts.get(key, 0)
            if grew:
                bucket[g.category] += grew
                self._last_counts[key] = g.count

    def top_flows(self, n: int = 10) -> list[dict[str, object]]:
        """The flows with most events; beyond FLOW_CAPACITY distinct flows a count
        may exceed the truth by at most events_error (Space-Saving, tracer/topk.py)."""
        return [{"proto": h.key[0], "src": h.key[1], "sport": h.key[2], "dst": h.key[3], "dport": h.key[4],
                 "events": h.count, "events_error": h.error,
                 "category": h.value.category, "benign": h.value.benign, "reason": h.value.reason,
                 "pod": h.value.pod,
                 "first_seen": summary_time(h.value.first), "last_seen": summary_time(h.value.last)}
                for h in self.flows.top(n)]

    def close(self) -> None:
        os.close(self._fd)
        if self._pcap_file is not None:
            self._pcap_file.close()


class Progress:
    """Time left, drops so far by category, events written and lost: a live line
    on a terminal, a plain line every PROGRESS_EVERY seconds otherwise."""

    def __init__(self, console: Console, stream: TextIO) -> None:
        """console: where the live line goes on a terminal; stream: the plain lines otherwise
        (both the run's stderr, from its Environment)."""
        from rich.live import Live

        self.console = console
        self.live = Live("", console=self.console, transient=True, refresh_per_second=4) \
            if self.console.is_terminal else None
        if self.live:
            self.live.start()
        self._printed = 0.0
        self._stderr = stream

    @staticmethod
    def line(groups: Groups, stats: Stats, recorder: Recorder, elapsed: float, remaining: float | None) -> str:
        by_cat: collections.Counter[str] = collections.Counter()
        for g in groups.groups.values():
            by_cat[g.category] += g.count
        cats = ", ".join(f"{c} {n:,}" for c, n in by_cat.most_common() if n) or "none yet"
        left = f"{remaining:.0f}s left" if remaining is not None else f"{elapsed:.0f}s"
        return (f"capture: {left} · {stats.matched:,} drops ({cats}) · {recorder.written:,} events written · "
                f"{stats.lost:,} lost · {stats.sampled_out:,} sampled out")

    def update(self, groups: Groups, stats: Stats, recorder: Recorder, elapsed: float, remaining: float | None) -> None:
        text = self.line(groups, stats, recorder, elapsed, remaining)
        if self.live:
            self.live.update(text)
        elif elapsed - self._printed >= PROGRESS_EVERY:
            print(f"netdrop: {text}", file=self._stderr, flush=True)
            self._printed = elapsed

    def close(self) -> None:
        if self.live:
            self.live.stop()
