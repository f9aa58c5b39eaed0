"""schema: summary.json read back (load) and checked against SCHEMA before anything renders it.

The file may be anyone's: load() bounds what it reads and how deep it nests,
and checks that every value a rendering reads has the type it expects.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from ...errors import UserError
from ...explain.categories import CATEGORIES
from ...textsafe import printable

Summary = dict[str, Any]    # summary.json as parsed: checked by load() against SCHEMA


MAX_BYTES = 64 * 1024 * 1024    # a real summary is kilobytes: its groups are bounded by the kernel's map
MAX_DEPTH = 32                  # summary.json nests 4 deep; json.dumps(indent=...) recurses in Python


@dataclass(frozen=True)
class Opt:
    """A value that may also be null."""

    of: Schema


@dataclass(frozen=True)
class MapOf:
    """An object of any keys, each value of one schema."""

    of: Schema


# A type (str, int, float meaning any number, bool, object meaning anything), Opt,
# MapOf, [item schema] or {key: schema} (a key ending in "?" may be absent).
Schema: TypeAlias = type | Opt | MapOf | list["Schema"] | dict[str, "Schema"]

_POD: Schema = {"namespace?": Opt(str), "name?": Opt(str), "uid?": Opt(str), "node?": Opt(str),
                "hostNetwork?": bool}
_PEER: Schema = {"namespace?": Opt(str), "name?": Opt(str), "direction?": Opt(str)}
_GROUP: Schema = {
    "pod": Opt(_POD), "pod_label": Opt(str), "direction": Opt(str), "peer?": Opt(_PEER), "peer_label?": Opt(str),
    "netns": int, "netns_name": Opt(str), "category": str, "benign?": bool, "reason": Opt(str),
    "location": Opt(str), "count": int, "rate_per_s": float,
    "first_seen": Opt(str), "last_seen": Opt(str), "events": int, "latest?": object, "hint": Opt(str),
    "detail?": object, "stacks?": [{"events": int, "frames": [str]}], "stacks_other_events?": int}
_FLOW: Schema = {
    "proto": Opt(str), "src": Opt(str), "sport": Opt(int), "dst": Opt(str), "dport": Opt(int), "events": int,
    "events_error?": int, "category": str, "benign?": bool, "reason": Opt(str), "pod": Opt(str),
    "first_seen?": Opt(str), "last_seen?": Opt(str)}
# What the renderings read, with the types build() writes.
SCHEMA: Schema = {
    "netdrop": str,
    "window": {"start": str, "end": str, "seconds": float, "ended": str},
    "node": {"hostname": str, "kubernetes_node": Opt(str), "kernel": str},
    "hooks": [{"name": str, "attached": bool, "detail?": Opt(str)}],
    "filters": [str],
    "pods": Opt(str),
    "totals": {"drops": int, "events_delivered": int, "events_written": int, "events_lost": int,
               "events_sampled_out": int, "drops_not_grouped?": int, "max_events?": Opt(int),
               "events_file_error?": Opt(str), "pcap_packets?": Opt(int), "benign_drops?": int},
    "by_category": MapOf(int),
    "by_pod?": MapOf(int),
    "verdicts": [{"category": str, "benign?": bool, "drops": int, "verdict": str, "where": str,
                  "hint": str}],
    "notices?": [str],
    "groups": [_GROUP],
    "top_flows": [_FLOW],
    "top_flows_exact?": bool,
    "top_flows_capacity?": int,
    "timeline": [{"second": str, **{f"{c}?": int for c in CATEGORIES}}],
}


class _Invalid(Exception):
    """Where summary.json departs from SCHEMA, as one line."""


def load(path: str | Path) -> Summary:
    """summary.json, read and checked, or UserError with one line saying what is wrong.

    The file may be anyone's (a shared directory, a ticket's attachment): a FIFO
    or a device must not block or stream forever, a huge file must not fill
    memory, deep nesting must not blow the stack, and every value a rendering
    reads must have the type it expects."""
    shown = printable(str(path))
    raw = _read_capped(Path(path), shown)
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise UserError(f"{shown}: not UTF-8 text, not a netdrop summary") from None
    except RecursionError:
        raise UserError(f"{shown}: nested too deeply, not a netdrop summary") from None
    except ValueError as exc:
        raise UserError(f"{shown}: not valid JSON ({printable(str(exc))[:200]})") from None
    try:
        _check_depth(data)
        if not isinstance(data, dict):
            raise _Invalid(f"the top level is {_kind(data)}, expected an object")
        if data.get("netdrop") != "capture":
            raise _Invalid('not a netdrop capture summary (no "netdrop": "capture")')
        _check(data, SCHEMA, "")
    except _Invalid as exc:
        raise UserError(f"{shown}: {exc}") from None
    return data


def _read_capped(path: Path, shown: str) -> bytes:
    # O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting
    # for a writer; fstat then refuses it, and devices, before any read.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UserError(f"no capture summary at {shown} (make one with: netdrop capture --output DIR)") from None
    except OSError as exc:
        raise UserError(f"cannot read {shown}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{shown}: not a regular file ({_file_kind(st.st_mode)}), not a netdrop summary")
        if st.st_size > MAX_BYTES:
            raise UserError(f"{shown}: {st.st_size:,} bytes, over the {MAX_BYTES >> 20} MiB a summary may have")
        chunks, size = [], 0
        while size <= MAX_BYTES:      # at most MAX_BYTES + 1: the file may grow while read
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise UserError(f"cannot read {shown}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > MAX_BYTES:
        raise UserError(f"{shown}: over the {MAX_BYTES >> 20} MiB a summary may have")
    return b"".join(chunks)


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a file"


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def _check_depth(data: object) -> None:
    """Without recursion: what json.loads accepted may still be too deep to render."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        if depth > MAX_DEPTH:
            raise _Invalid(f"nested more than {MAX_DEPTH} deep, not a netdrop summary")
        stack.extend((child, depth + 1) for child in children)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _expected(schema: Schema) -> str:
    if isinstance(schema, Opt):
        return _expected(schema.of) + " or null"
    if isinstance(schema, list):
        return "a list"
    if isinstance(schema, (dict, MapOf)):
        return "an object"
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}.get(schema, "a value")


def _fits(value: object, schema: Schema) -> bool:
    """Whether value has the outer shape schema asks for (its contents aside)."""
    if isinstance(schema, list):
        return isinstance(value, list)
    if isinstance(schema, (dict, MapOf)):
        return isinstance(value, dict)
    if isinstance(schema, Opt):
        return value is None or _fits(value, schema.of)
    if schema is object:
        return True
    if schema in (int, float) and isinstance(value, bool):
        return False            # JSON true is no count
    if schema is float:
        return isinstance(value, (int, float))
    return isinstance(value, schema)


def _check(value: object, schema: Schema, where: str) -> None:
    if not _fits(value, schema):
        raise _Invalid(f"{where or 'the top level'} is {_kind(value)}, expected {_expected(schema)}")
    if isinstance(schema, Opt):
        schema = schema.of
    if isinstance(schema, list) and isinstance(value, list):
        for i, item in enumerate(value):
            _check(item, schema[0], f"{where}[{i}]")
    elif isinstance(schema, dict) and isinstance(value, dict):
        for key, sub in schema.items():
            name = key.removesuffix("?")
            inner = f"{where}.{name}" if where else name
            if name in value:
                _check(value[name], sub, inner)
            elif not key.endswith("?"):
                raise _Invalid(f"{inner} is missing")
    elif isinstance(schema, MapOf) and isinstance(value, dict):
        for key, item in value.items():
            _check(item, schema.of, f"{where}[{json.dumps(printable(key)[:40])}]")
