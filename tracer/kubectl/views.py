"""views: `kubectl netdrop get`, `list`, `delete` and `watch`.

get: each node's report (state, packets, events, the top groups with their
verdicts, the message). list: captures with their age, what they select and
how many nodes reported, are done, failed. delete: the capture (its reports
go with it: the garbage collector follows their ownerReferences). watch: the
live console of the node a pod runs on, through that node's agent pod
(`kubectl exec`, which needs the kubelet; the command is printed with
--dry-run).
"""

from __future__ import annotations

import shlex
from datetime import datetime
from typing import Any

from rich.table import Table
from rich.text import Text

from ..captures.report import Report, parse_report
from ..captures.spec import AGENTS_NAMESPACE, GROUP, PLURAL, SpecError, parse_capture, parse_time
from ..errors import ExitStatus, UserError
from ..pods import apitext
from ..pods.objects import api_field
from ..textsafe import printable
from . import progress
from .kubeapi import PluginApi
from .options import DeleteOptions, GetOptions, ListOptions, WatchOptions
from .wiring import Wiring

TOP_GROUPS = 5      # groups shown per node by get (a report holds up to 20)


def age(created: datetime | None, now: datetime) -> str:
    """kubectl's short age: 45s, 12m, 3h, 5d."""
    if created is None:
        return "?"
    s = max(0, int((now - created).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def _reports(api: PluginApi, namespace: str | None, name: str | None = None) -> list[tuple[str, Report]]:
    """(namespace, report) for the reports that parse."""
    out = []
    for obj in api.list_reports(namespace, name):
        r = parse_report(obj)
        ns = api_field(api_field(obj, "metadata"), "namespace")
        if r is not None and isinstance(ns, str):
            out.append((ns, r))
    return out


def _capture_text(obj: Any, now: datetime) -> tuple[str, str, str]:
    """(what it selects, its age, its uid) of a capture object; what is wrong with it if it is invalid."""
    meta = api_field(obj, "metadata")
    uid = api_field(meta, "uid")
    created = parse_time(api_field(meta, "creationTimestamp"))
    try:
        what = parse_capture(obj).spec.describe()
    except SpecError as exc:
        what = f"invalid: {exc}"
    return printable(what), age(created, now), uid if isinstance(uid, str) else ""


def _group_line(g: Any) -> str:
    where = " at ".join(x for x in (g.reason, g.location) if x)
    text = f"{g.packets:>10,}  {g.category}  {where}  {g.pod or '(no pod)'}"
    return text + (f": {g.verdict}" if g.verdict else "")


def run_get(opts: GetOptions, w: Wiring) -> ExitStatus:
    env = w.env
    api = w.connect(opts.target)
    namespace = opts.namespace or api.namespace
    obj = api.get_capture(namespace, opts.name)
    if obj is None:
        raise UserError(f"no capture {opts.name} in namespace {namespace} (kubectl netdrop list -n {namespace})")
    what, old, uid = _capture_text(obj, env.now())
    reports = {r.node: r for _, r in _reports(api, namespace, opts.name) if r.capture_uid == uid}
    width = env.report_width()
    lines = [f"capture {namespace}/{opts.name}: {what}; created {old} ago"]
    rows = progress.states((), reports)
    if not rows:
        lines.append("no node has reported yet")
        env.stdout.write("\n".join(lines) + "\n")
        return ExitStatus.OK
    text = progress.to_text(progress.table(rows, width), width)
    details = []
    for r in sorted(reports.values(), key=lambda r: r.node):
        window = f"{r.window_from or '?'} to {r.window_to or 'now'}"
        details.append(f"{printable(r.node)} ({r.state}, {window}):")
        for g in r.groups[:TOP_GROUPS]:
            details.append("  " + printable(_group_line(g))[:max(20, width - 2)])
        more = len(r.groups) - TOP_GROUPS + r.groups_omitted
        if more > 0:
            details.append(f"  and {more} more group{'s' * (more != 1)}")
        if not r.groups:
            details.append("  no drops")
        if r.message:
            details.append("  " + printable(" ".join(r.message.split())))
    env.stdout.write("\n".join(lines) + "\n" + text + "\n" + "\n".join(details) + "\n")
    return ExitStatus.OK


def run_list(opts: ListOptions, w: Wiring) -> ExitStatus:
    env = w.env
    api = w.connect(opts.target)
    namespace = None if opts.all_namespaces else (opts.namespace or api.namespace)
    captures = api.list_captures(namespace, opts.selector)
    if not captures:
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        env.stdout.write(f"No captures found in {where}.\n")
        return ExitStatus.OK
    counts: dict[tuple[str, str], list[Report]] = {}
    for ns, r in _reports(api, namespace):
        counts.setdefault((ns, r.capture_uid), []).append(r)
    t = Table(box=None, pad_edge=False, padding=(0, 2, 0, 0), show_edge=False)
    if namespace is None:
        t.add_column("NAMESPACE", no_wrap=True, overflow="ellipsis")
    for col in ("NAME", "AGE", "NODES", "DONE", "FAILED"):
        t.add_column(col, no_wrap=True, overflow="ellipsis", justify="right" if col in ("NODES", "DONE", "FAILED")
                     else "left")
    t.add_column("SELECTS", no_wrap=True, overflow="ellipsis", ratio=1)
    now = env.now()
    for obj in sorted(captures, key=lambda o: (str(api_field(api_field(o, "metadata"), "namespace")),
                                               str(api_field(api_field(o, "metadata"), "name")))):
        meta = api_field(obj, "metadata")
        ns = apitext.field(api_field(meta, "namespace"), apitext.DNS_LABEL) or "?"
        name = apitext.field(api_field(meta, "name"), apitext.DNS_SUBDOMAIN) or "?"
        what, old, uid = _capture_text(obj, now)
        rs = counts.get((ns, uid), [])
        cells = [name, old, str(len(rs)), str(sum(r.state == "Done" for r in rs)),
                 str(sum(r.state == "Failed" for r in rs)), what]
        t.add_row(*(Text(c) for c in ([ns] if namespace is None else []) + cells))
    env.stdout.write(progress.to_text(t, env.report_width()))
    return ExitStatus.OK


def run_delete(opts: DeleteOptions, w: Wiring) -> ExitStatus:
    api = w.connect(opts.target)
    namespace = opts.namespace or api.namespace
    if not api.delete_capture(namespace, opts.name):
        raise UserError(f"no capture {opts.name} in namespace {namespace}")
    w.env.stdout.write(f"{PLURAL[:-1]}.{GROUP}/{opts.name} deleted\n")
    return ExitStatus.OK


def watch_command(opts: WatchOptions, namespace: str, agent_pod: str) -> list[str]:
    """The kubectl command that opens `netdrop watch` for the pod inside its node's agent."""
    target = opts.target
    return ["kubectl", *(["--kubeconfig", target.kubeconfig] if target.kubeconfig else []),
            *(["--context", target.context] if target.context else []),
            "exec", "-it", "-n", AGENTS_NAMESPACE, agent_pod, "-c", "netdrop", "--",
            "netdrop", "watch", "--pod", opts.pod, "-n", namespace]


def _running_first(pod: Any) -> tuple[bool, str]:
    phase = api_field(api_field(pod, "status"), "phase")
    name = api_field(api_field(pod, "metadata"), "name")
    return phase != "Running", str(name)


def run_watch(opts: WatchOptions, w: Wiring) -> ExitStatus:
    api = w.connect(opts.target)
    namespace = opts.namespace or api.namespace
    pod = api.read_pod(namespace, opts.pod)
    if pod is None:
        raise UserError(f"no pod {opts.pod} in namespace {namespace}")
    node = apitext.field(api_field(api_field(pod, "spec"), "nodeName"), apitext.DNS_SUBDOMAIN)
    if node is None:
        raise UserError(f"pod {namespace}/{opts.pod} is not on a node yet")
    agents = sorted(api.agent_pods(node), key=_running_first)
    agent = apitext.field(api_field(api_field(agents[0], "metadata"), "name"), apitext.DNS_SUBDOMAIN) \
        if agents else None
    if agent is None:
        raise UserError(f"no netdrop agent pod on node {node}: is the DaemonSet there? "
                        f"kubectl -n {AGENTS_NAMESPACE} get pods -o wide --field-selector spec.nodeName={node}")
    cmd = watch_command(opts, namespace, agent)
    if opts.dry_run:
        w.env.stdout.write(shlex.join(cmd) + "\n")
        return ExitStatus.OK
    w.env.stdout.flush()
    try:
        w.execvp(cmd[0], cmd)
    except FileNotFoundError:
        raise UserError(f"kubectl is not on PATH; run: {shlex.join(cmd)}") from None
    except OSError as exc:
        raise UserError(f"cannot run kubectl: {exc.strerror}") from None
    return ExitStatus.OK     # execvp returns only when a test replaced it
