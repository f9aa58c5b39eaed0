"""capture: `kubectl netdrop capture`: create a NetdropCapture, follow the nodes, fetch, merge.

1. The output directory is refused if it exists and is not empty, the selection
   is checked (pods exist, nodes exist) and the spec is read back by the same
   parser the agents use (captures/spec.py): nothing is created for a request
   the agents would refuse.
2. The capture is created; the nodes expected to report are the selected pods'
   nodes, the named nodes, or every node; any other node that reports for it
   (a pod rescheduled) joins them.
3. Its reports are listed once, then watched (captures/api.py ReportFollower:
   a report written reaches the plugin as one watch event, not as a list of
   every node's report every poll); the state is shown every POLL_SECONDS
   until every node's report is final, or until
   duration + GRACE_SECONDS: then a node without a final report is named as
   failed, with the command that shows its agent.
4. Each Done node's files are fetched from its agent (fetch.py, trusting the
   certificate its report names) into DIR/<node>/, a few nodes at once; their
   summaries are merged into DIR/summary.json and printed.

Exit status: 0 when every node is Done; 1 (ExitStatus.PROBLEMS) when some
failed, did not report or their files could not be fetched (the others'
merged summary is still written); 2 for a user error; 130 after Ctrl-C, which
leaves the capture running on the agents.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType
from rich.live import Live

from ..captures.api import ReportFollower
from ..captures.report import REPORT_PLURAL, Report
from ..captures.spec import AGENTS_NAMESPACE, CaptureSpec, NodeSelection, PodSelection, SpecError, \
    capture_object, parse_spec
from ..errors import ExitStatus, UserError
from ..messages import say
from ..pods import apitext
from ..pods.apicall import KubeUnavailable
from ..pods.objects import api_field
from ..sinks.summary.merge import merge
from ..sinks.summary.render import render
from ..sinks.summary.schema import MAX_BYTES as SUMMARY_MAX_BYTES, load
from ..textsafe import printable
from . import progress
from .kubeapi import ApiRefused, PluginApi, not_served, object_name, refusal
from .options import CaptureOptions
from .wiring import Wiring

PROG = "kubectl netdrop"
SUMMARY_FILE = "summary.json"
# What an agent serves for a capture (docs/captures.md), each with the most the plugin reads of it:
# a summary as `netdrop summary` reads one, the others the agent's whole capture budget at most.
FILES = {SUMMARY_FILE: SUMMARY_MAX_BYTES, "events.jsonl": 512 << 20, "drops.pcapng": 512 << 20}


@dataclass(frozen=True)
class Outcome:
    """How the capture ended, node by node."""

    rows: list[progress.NodeState]
    reports: dict[str, Report]
    interrupted: bool = False


def check_output(path: Path) -> None:
    """Refuse a DIR that exists and is not an empty directory (its files would mix with old ones)."""
    try:
        entries = next(os.scandir(path), None) if path.is_dir() else None
    except OSError as exc:
        raise UserError(f"cannot read output directory {path}: {exc.strerror}") from None
    if path.exists() and (not path.is_dir() or entries is not None):
        raise UserError(f"output {path} exists and is not an empty directory: choose a new --output")


def build_spec(opts: CaptureOptions, namespace: str) -> CaptureSpec:
    if opts.node_scope:
        spec = CaptureSpec(None, NodeSelection(opts.nodes, opts.all_nodes), opts.duration, opts.since,
                           opts.filters, opts.packets)
    else:
        spec = CaptureSpec(PodSelection(opts.pods, opts.selector), None, opts.duration, opts.since,
                           opts.filters, opts.packets)
    try:
        # What the agents will read, read the agents' way: their refusal said now, not in a report.
        return parse_spec(spec.to_json(), namespace)
    except SpecError as exc:
        raise UserError(str(exc)) from None


def capture_namespace(opts: CaptureOptions, context_namespace: str) -> str:
    if not opts.node_scope:
        return opts.namespace or context_namespace
    if opts.namespace not in (None, AGENTS_NAMESPACE):
        raise UserError(f"a node capture sees every pod of its nodes: it is created in the agents' namespace "
                        f"{AGENTS_NAMESPACE}, not {opts.namespace} (leave out -n)")
    return AGENTS_NAMESPACE


def expected_nodes(opts: CaptureOptions, api: PluginApi, namespace: str, env_say: Any) -> set[str]:
    """The nodes that should report: the selected pods' nodes, the named nodes, or all."""
    if opts.all_nodes:
        nodes = set(api.node_names())
        if not nodes:
            raise UserError("the API server lists no nodes")
        return nodes
    if opts.nodes:
        for n in opts.nodes:
            if not api.node_exists(n):
                raise UserError(f"no node {n} (kubectl get nodes)")
        return set(opts.nodes)
    pods: list[dict[str, Any]] = []
    for name in opts.pods:
        pod = api.read_pod(namespace, name)
        if pod is None:
            raise UserError(f"no pod {name} in namespace {namespace}")
        pods.append(pod)
    if opts.selector:
        matched = api.list_pods(namespace, opts.selector)
        if not matched and not opts.pods:
            raise UserError(f"no pod in namespace {namespace} matches -l {opts.selector}")
        pods += matched
    found: set[str] = set()
    for pod in pods:
        node = apitext.field(api_field(api_field(pod, "spec"), "nodeName"), apitext.DNS_SUBDOMAIN)
        if node:
            found.add(node)
        else:
            env_say(f"{PROG}: pod {namespace}/{object_name(pod)} is not on a node yet: its node takes part "
                    f"once it is scheduled")
    if not found:
        raise UserError(f"none of the selected pods in namespace {namespace} runs on a node yet")
    return found


def ours(reports: dict[str, Report], name: str, uid: str) -> dict[str, Report]:
    """The reports of this capture (its uid: not an older capture's of the same name), by node."""
    return {node: r for node, r in reports.items()
            if r.capture == name and r.capture_uid == uid and apitext.DNS_SUBDOMAIN.accepts(r.node)}


def start_following(api: PluginApi, namespace: str, name: str, say_once: Any) -> ReportFollower:
    """The capture's reports listed now (a refusal is the user's one line), then watched."""
    follower = ReportFollower(api, api.custom, namespace, name)
    try:
        if not follower.list():
            raise not_served(api.server)
    except ApiRefused as exc:
        raise refusal(exc, "list", REPORT_PLURAL, namespace) from None
    except KubeUnavailable as exc:      # the API in trouble: the follower lists again, with a backoff
        say_once(str(exc))
    follower.start()
    return follower


def follow(w: Wiring, api: PluginApi, namespace: str, name: str, uid: str, expected: set[str],
           duration: float, grace: float) -> Outcome:
    """Show each node's progress until all are final or duration + grace seconds have passed
    (the capture's time left is shown, then the wait for its last reports)."""
    env = w.env
    key = f"{namespace}/{name}"
    ends = env.monotonic() + duration
    end = ends + grace
    reports: dict[str, Report] = {}
    rows = progress.states(expected, reports)
    console = env.console(stderr=True)
    told: list[str | None] = [None]

    def say_once(problem: str | None) -> None:
        if problem is not None and problem != told[0]:
            live.console.print(printable(f"{PROG}: {problem}; asking again"), markup=False, highlight=False)
        told[0] = problem

    def view(left: float | None) -> RenderableType:
        now = env.monotonic()
        return progress.view(key, rows, None if left is None else ends - now, console.width,
                             None if left is None else left)

    # Live on a terminal; into a file or a pipe only the last state, once (a log is not redrawn).
    with Live(view(duration + grace), console=console, auto_refresh=False, transient=False) \
            if env.stderr_isatty else _Final(console) as live:
        follower = start_following(api, namespace, name, say_once)
        try:
            while True:
                known, problem = follower.reports()
                reports = ours(known, name, uid)
                say_once(problem)
                left = end - env.monotonic()
                rows = progress.states(expected, reports)
                finished = all(n in reports and reports[n].final for n in expected | set(reports))
                if finished or left <= 0:
                    rows = progress.states(expected, reports, deadline_passed=True)
                    live.update(view(None if finished else left), refresh=True)
                    return Outcome(rows, reports)
                live.update(view(left), refresh=True)
                w.sleep(max(0.0, min(w.poll_seconds, left)))
        except KeyboardInterrupt:
            return Outcome(rows, reports, interrupted=True)
        finally:
            follower.close()


class _Final:
    """Live's calls, for a stream that is no terminal: the last view printed when it ends."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.last: RenderableType | None = None

    def __enter__(self) -> _Final:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.last is not None:
            self.console.print(self.last)

    def update(self, renderable: RenderableType, refresh: bool = False) -> None:
        self.last = renderable


def fetch_node(w: Wiring, token: str, namespace: str, name: str, report: Report, out: Path) -> str | None:
    """A Done node's files into out/<node>/; None, or why they could not all be fetched."""
    node_dir = out / report.node
    try:
        node_dir.mkdir(mode=0o755)
    except OSError as exc:
        return f"cannot create {node_dir}: {exc.strerror}"
    names = [f.name for f in report.files if f.name in FILES]
    if SUMMARY_FILE not in names:
        return f"its report lists no {SUMMARY_FILE}"
    for filename in dict.fromkeys(names):
        try:
            w.fetch(report.endpoint, report.cert_sha256, token, namespace, name, filename, node_dir / filename,
                    FILES[filename])
        # fetch.py's own errors (UserError, OSError, TLS, HTTP): one node's failure does not stop the others
        except Exception as exc:  # noqa: BLE001
            return f"cannot fetch {filename} from {report.endpoint or 'its agent'}: {' '.join(str(exc).split())[:300]}"
    return None


def write_summary(out: Path, summary: dict[str, Any]) -> Path:
    path = out / SUMMARY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(summary, indent=2) + "\n")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None
    return path


def run(opts: CaptureOptions, w: Wiring) -> ExitStatus:
    env = w.env
    out = opts.output
    check_output(out)
    # The request checked before the API is asked anything (-n's namespace or a stand-in for the
    # context's: only node captures depend on the namespace, and theirs is known now).
    spec = build_spec(opts, capture_namespace(opts, "default"))
    api = w.connect(opts.target)
    namespace = capture_namespace(opts, api.namespace)

    def tell(line: str) -> None:
        say(env, line)

    expected = expected_nodes(opts, api, namespace, tell)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory {out}: {exc.strerror}") from None
    created = api.create_capture(namespace, capture_object(namespace, spec, name=opts.name))
    meta = api_field(created, "metadata")
    name, uid = object_name(created), api_field(meta, "uid")
    if name is None or not isinstance(uid, str) or not uid:
        raise UserError(f"the API server at {api.server} answered the create without a name and uid")
    tell(f"{PROG}: capture {namespace}/{name} created: {spec.describe()}; "
         f"{len(expected)} node{'s' * (len(expected) != 1)} expected")
    later = f"kubectl netdrop get {name} -n {namespace}"
    outcome = follow(w, api, namespace, name, uid, expected, spec.duration, w.grace_seconds)
    if outcome.interrupted:
        tell(f"{PROG}: stopped waiting; capture {namespace}/{name} goes on on the agents until its end. "
             f"See it with: {later}")
        return ExitStatus.STOPPED_BY_SIGINT
    return finish(w, api, namespace, name, outcome, opts)


def finish(w: Wiring, api: PluginApi, namespace: str, name: str, outcome: Outcome,
           opts: CaptureOptions) -> ExitStatus:
    env, out = w.env, opts.output
    failed = 0
    for row in outcome.rows:
        if row.state == progress.MISSING:
            say(env, f"{PROG}: no report from {row.node}: is its netdrop agent running? "
                     f"kubectl -n {AGENTS_NAMESPACE} get pods -o wide --field-selector spec.nodeName={row.node}")
        elif row.state == "Failed":
            say(env, f"{PROG}: {row.node} failed: {printable(row.message) or 'its report gives no reason'}")
        elif row.state != "Done":
            say(env, f"{PROG}: {row.node} was still {row.state} at the deadline; its files are left out "
                     f"(kubectl netdrop get {name} -n {namespace})")
        failed += row.state != "Done"
    done = [outcome.reports[r.node] for r in outcome.rows if r.state == "Done"]
    token = api.token() if done else ""
    if done and not token:
        say(env, f"{PROG}: warning: your kubeconfig's user sends no bearer token; the agents serve files "
                 f"only to tokens")
    with ThreadPoolExecutor(max_workers=max(1, min(w.fetch_workers, len(done) or 1))) as pool:
        whys = list(pool.map(lambda r: fetch_node(w, token, namespace, name, r, out), done))
    parts = []
    for report, why in zip(done, whys, strict=True):
        if why is None:
            try:
                parts.append(load(out / report.node / SUMMARY_FILE))
                continue
            except UserError as exc:
                why = str(exc)
        failed += 1
        say(env, f"{PROG}: {report.node}: {printable(why)}")
    if not parts:
        say(env, f"{PROG}: no node's files to merge: no summary written")
        return ExitStatus.PROBLEMS
    summary = merge(parts)
    path = write_summary(out, summary)
    env.stdout.write(render(summary, opts.format, env.report_width()))
    env.stdout.flush()
    nodes = f"{len(parts)} node{'s' * (len(parts) != 1)}"
    say(env, f"{PROG}: {path}: the merged summary of {nodes}" + (f"; {failed} failed" if failed else ""))
    return ExitStatus.PROBLEMS if failed else ExitStatus.OK
