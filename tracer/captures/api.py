"""api: NetdropCaptures and their reports through the official client, within apicall's limits.

Every call is one of apicall.Api's (a deadline and a byte cap each; the
client's Calls cut off at stop) on kubernetes.client.CustomObjectsApi. The
agent lists and watches the captures of every namespace, as kube.py watches
pods (a watch resumed from the last resourceVersion, bookmarks included; a
list again on 410 Gone or after an error, with a backoff) and writes its own
report of each capture it takes part in: created, or on 409 Conflict read and
replaced with the resourceVersion read. The plugin follows a capture's reports
(ReportFollower: listed once, then watched), reads, lists and deletes.

Objects come from whoever may create NetdropCaptures: each is read into a
Capture, or a Refused with the one line that says why, in the watch's thread;
only those typed values are kept, at most MAX_KNOWN of them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from ..pods import apicall
from ..pods.apicall import KubeUnavailable
from ..pods.kube import MAX_WATCH_BYTES, WATCH_BACKOFF, WATCH_GRACE, WATCH_SECONDS, KubeClient, WatchExpired, \
    watch_events
from ..pods.objects import api_field, list_field, opaque
from .report import CAPTURE_LABEL, REPORT_PLURAL, Report, label_value, parse_report, report_name, report_object
from .spec import GROUP, MAX_NAME, PLURAL, VERSION, Capture, SpecError, parse_capture

MAX_KNOWN = 2048        # captures kept from the list and watch (all namespaces); more are left out, said once
MAX_FOLLOWED = 5000     # reports of one capture the plugin keeps: Kubernetes' largest supported cluster, in nodes
HTTP_CONFLICT = 409
HTTP_NOT_FOUND = 404


@dataclass(frozen=True)
class Refused:
    """A NetdropCapture the agents cannot carry out: why is one line for its Failed reports.
    node_names: the nodes its spec names (read as far as it can be), which report it
    in the agents' namespace (docs/captures.md)."""

    namespace: str
    name: str
    uid: str
    why: str
    node_names: tuple[str, ...] = ()


Seen = Capture | Refused


def _meta_text(meta: Any, key: str) -> str | None:
    v = api_field(meta, key)
    return v if isinstance(v, str) and 0 < len(v) <= MAX_NAME else None


def read_seen(obj: Any) -> Seen | None:
    """An object of the list or watch -> Capture, Refused, or None when it has no
    namespace, name and uid to report against."""
    try:
        return parse_capture(obj)
    except SpecError as exc:
        meta = api_field(obj, "metadata")
        ns, name, uid = _meta_text(meta, "namespace"), _meta_text(meta, "name"), _meta_text(meta, "uid")
        if ns is None or name is None or uid is None:
            return None
        names = list_field(api_field(api_field(obj, "spec"), "nodes"), "names")
        return Refused(ns, name, uid, str(exc),
                       tuple(n for n in names[:64] if isinstance(n, str) and 0 < len(n) <= MAX_NAME))


class CaptureClient:
    """NetdropCaptures and NetdropCaptureReports through one KubeClient (its
    credentials, its Calls: close() ends every call of it at once)."""

    def __init__(self, kube: KubeClient, warn: Callable[[str], None] = lambda msg: None) -> None:
        from kubernetes import client

        self.kube = kube
        self.custom = client.CustomObjectsApi(kube.api_client)
        self.warn = warn
        self._stream: Any = None
        self._told_full = False

    # -- captures --
    def list_captures(self, namespace: str | None = None) -> tuple[list[Any], str]:
        """The captures (raw objects) of a namespace, or of all of them; and the list's resourceVersion."""
        if namespace is None:
            fn: Callable[..., Any] = self.custom.list_cluster_custom_object
            args: tuple[str, ...] = (GROUP, VERSION, PLURAL)
        else:
            fn, args = self.custom.list_namespaced_custom_object, (GROUP, VERSION, namespace, PLURAL)
        items: list[Any] = []
        rv = ""
        for page in self.kube.pages(_bound(fn, *args)):
            items += list_field(page, "items")
            rv = opaque(api_field(api_field(page, "metadata"), "resourceVersion")) or rv
        return items, rv

    def get_capture(self, namespace: str, name: str) -> Any:
        """The capture's object, None if there is none."""
        return self.kube.call_json(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name)

    def delete_capture(self, namespace: str, name: str) -> bool:
        """Delete it (its reports go with it: ownerReferences); False if there was none."""
        got = self.kube.call_json(self.custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                                  name, body={"propagationPolicy": "Background"})
        return got is not None

    def create_capture(self, body: dict[str, Any]) -> Any:
        namespace = body["metadata"]["namespace"]
        return self.kube.call_json(self.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                                   body)

    # -- reports --
    def list_reports(self, namespace: str, capture: str) -> list[Report]:
        """The reports of a capture, read back as untrusted (report.parse_report)."""
        fn = _bound(self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, REPORT_PLURAL)
        out = []
        for page in self.kube.pages(fn, label_selector=f"{CAPTURE_LABEL}={label_value(capture)}"):
            for item in list_field(page, "items"):
                r = parse_report(item)
                if r is not None and r.capture == capture:
                    out.append(r)
        return out

    def write_report(self, capture: Capture, report: Report, rv: str | None = None) -> str | None:
        """Create this node's report of capture, or replace it: with rv (what the
        last write answered), else on 409 with the resourceVersion read. Returns the
        resourceVersion now; KubeUnavailable if the API refused or did not answer."""
        body = report_object(capture, report)
        name = body["metadata"]["name"]
        if rv is None:
            try:
                made = self.kube.call_json(self.custom.create_namespaced_custom_object, GROUP, VERSION,
                                           capture.namespace, REPORT_PLURAL, body)
                return _rv(made)
            except KubeUnavailable as exc:
                if exc.status != HTTP_CONFLICT:
                    raise
            rv = self._read_rv(capture.namespace, name)
        for attempt in range(2):
            body["metadata"]["resourceVersion"] = rv
            try:
                got = self.kube.call_json(self.custom.replace_namespaced_custom_object, GROUP, VERSION,
                                          capture.namespace, REPORT_PLURAL, name, body)
            except KubeUnavailable as exc:
                # Someone else wrote it meanwhile (another incarnation of this agent): read, once more.
                if exc.status != HTTP_CONFLICT or attempt:
                    raise
                rv = self._read_rv(capture.namespace, name)
                continue
            if got is None:     # deleted meanwhile (its capture too, or by hand): made anew
                body["metadata"].pop("resourceVersion", None)
                return _rv(self.kube.call_json(self.custom.create_namespaced_custom_object, GROUP, VERSION,
                                               capture.namespace, REPORT_PLURAL, body))
            return _rv(got)
        return rv

    def _read_rv(self, namespace: str, name: str) -> str | None:
        got = self.kube.call_json(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace,
                                  REPORT_PLURAL, name)
        return _rv(got)

    def report_of(self, capture: Capture, node: str) -> Report | None:
        got = self.kube.call_json(self.custom.get_namespaced_custom_object, GROUP, VERSION, capture.namespace,
                                  REPORT_PLURAL, report_name(capture.name, node))
        return parse_report(got)

    # -- the watch --
    def watch_captures(self, on_change: Callable[[dict[str, Seen]], None], stop: threading.Event,
                       on_error: Callable[[str | None], None] = lambda msg: None) -> None:
        """List, then follow changes until stop; on_change gets every capture
        known (uid -> Capture or Refused) after each change. Resumed and
        relisted as kube.KubeClient.watch_pods is (its docstring says why)."""
        backoff = WATCH_BACKOFF[0]
        rv: str | None = None
        current: dict[str, Seen] = {}
        listed = False
        while not stop.is_set():
            try:
                if rv is None:
                    items, rv = self.list_captures()
                    current = {}
                    for item in items:
                        self._keep(current, "ADDED", item)
                    on_change(dict(current))
                    listed = True
                rv = self._watch_once(rv, current, on_change, stop)
                if stop.is_set():
                    return
                on_error(None)
                backoff = WATCH_BACKOFF[0]
                continue
            except KubeUnavailable as exc:
                if stop.is_set():
                    return
                # An API server that never answered is said once, by the pod source (serve's
                # start line); an answer about captures (403: RBAC without them, 404: no CRD)
                # and a loss after the first list are the watch's own to say.
                if exc.status is not None or listed:
                    on_error(str(exc))
            # a broken stream, a strange answer: relist; this thread must not die
            except Exception as exc:  # noqa: BLE001
                if stop.is_set():
                    return
                on_error(f"capture watch interrupted ({type(exc).__name__}); relisting")
            rv = None
            stop.wait(backoff)
            backoff = min(backoff * 2, WATCH_BACKOFF[1])

    def _keep(self, current: dict[str, Seen], kind: str, obj: Any) -> bool:
        """One object of the list or watch into current; True when current changed."""
        uid = _meta_text(api_field(obj, "metadata"), "uid")
        if uid is None:
            return False
        if kind == "DELETED":
            return current.pop(uid, None) is not None
        seen = read_seen(obj)
        if seen is None:
            return current.pop(uid, None) is not None
        if uid not in current and len(current) >= MAX_KNOWN:
            if not self._told_full:
                self._told_full = True
                self.warn(f"captures: more than {MAX_KNOWN} NetdropCaptures in the cluster; the newest are "
                          f"left out until some are deleted (told once)")
            return False
        current[uid] = seen
        return True

    def _watch_once(self, rv: str, current: dict[str, Seen], on_change: Callable[[dict[str, Seen]], None],
                    stop: threading.Event) -> str | None:
        kw: dict[str, Any] = {"resource_version": rv, "watch": True, "allow_watch_bookmarks": True,
                              "timeout_seconds": WATCH_SECONDS}
        server = self.kube.server
        with self.kube.open(self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                            seconds=WATCH_SECONDS + WATCH_GRACE, max_bytes=MAX_WATCH_BYTES, what="capture watch",
                            **kw) as resp:
            if resp is None:
                raise KubeUnavailable(f"the API server at {server} does not serve {PLURAL} (is the CRD installed?)")
            self._stream = resp
            try:
                for kind, obj, seen_rv in watch_events(resp, stop, server, "capture watch"):
                    rv = seen_rv or rv
                    if kind != "BOOKMARK" and self._keep(current, kind, obj):
                        on_change(dict(current))
            except WatchExpired:
                return None
            finally:
                self._stream = None
        return rv

    def stop_watch(self) -> None:
        """End a watch waiting for its next event now (from another thread)."""
        resp = self._stream
        if resp is not None:
            with suppress(Exception):   # already closed, or never opened
                resp.shutdown()

    def close(self) -> None:
        """Every call in flight ended, no new one made."""
        self.kube.close()


class ReportFollower:
    """The reports of one capture, kept current for the plugin: listed once (its
    label, in pages), then watched from the list's resourceVersion in a thread of
    its own (the label selector, bookmarks; on 410 Gone or a broken watch listed
    again after a backoff). A report written costs the plugin one watch event of
    that report, where a list every poll read every node's report: about 12 MiB
    a poll at 1,000 nodes (docs/performance.md). reports() is a copy of what is
    known, at most MAX_FOLLOWED reports (by object name)."""

    def __init__(self, api: apicall.Api, custom: Any, namespace: str, capture: str) -> None:
        """custom: the kubernetes.client.CustomObjectsApi of api's ApiClient."""
        self.api, self.custom, self.namespace, self.capture = api, custom, namespace, capture
        self.selector = f"{CAPTURE_LABEL}={label_value(capture)}"
        self._reports: dict[str, Report] = {}
        self._problem: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stream: Any = None
        self._rv: str | None = None
        self._thread = threading.Thread(target=self._run, name="netdrop-report-watch", daemon=True)

    def list(self) -> bool:
        """List the reports now, in the caller's thread (its errors are the caller's:
        KubeUnavailable); False if the API does not serve them (no CRD)."""
        fn = _bound(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, REPORT_PLURAL)
        found: dict[str, Report] = {}
        rv = None
        served = False
        for page in self.api.pages(fn, label_selector=self.selector):
            served = True
            rv = opaque(api_field(api_field(page, "metadata"), "resourceVersion")) or rv
            for item in list_field(page, "items"):
                self._keep(found, "ADDED", item)
        with self._lock:
            self._reports, self._rv = found, rv
        return served

    def start(self) -> None:
        """Follow the changes from the last list on, until close()."""
        self._thread.start()

    def reports(self) -> tuple[dict[str, Report], str | None]:
        """The reports known now, by node, and the API's problem if the watch is failing."""
        with self._lock:
            return {r.node: r for r in self._reports.values()}, self._problem

    def close(self) -> None:
        self._stop.set()
        resp = self._stream
        if resp is not None:
            with suppress(Exception):   # already closed
                resp.shutdown()
        if self._thread.is_alive():
            self._thread.join(1.0)

    def _keep(self, into: dict[str, Report], kind: str, obj: Any) -> None:
        name = _meta_text(api_field(obj, "metadata"), "name")
        if name is None:
            return
        r = parse_report(obj) if kind != "DELETED" else None
        if r is None or r.capture != self.capture:
            into.pop(name, None)
        elif name in into or len(into) < MAX_FOLLOWED:
            into[name] = r

    def _run(self) -> None:
        backoff = WATCH_BACKOFF[0]
        while not self._stop.is_set():
            try:
                if self._rv is None:
                    self.list()
                self._watch()
                self._said(None)
                backoff = WATCH_BACKOFF[0]
                continue
            except KubeUnavailable as exc:
                self._said(str(exc))
            # a broken stream, a strange answer: list again; this thread must not die
            except Exception as exc:  # noqa: BLE001
                self._said(f"the report watch broke off ({type(exc).__name__})")
            self._rv = None
            self._stop.wait(backoff)
            backoff = min(backoff * 2, WATCH_BACKOFF[1])

    def _said(self, problem: str | None) -> None:
        if not self._stop.is_set():
            with self._lock:
                self._problem = problem

    def _watch(self) -> None:
        kw: dict[str, Any] = {"resource_version": self._rv, "watch": True, "allow_watch_bookmarks": True,
                              "timeout_seconds": WATCH_SECONDS, "label_selector": self.selector}
        with self.api.open(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, REPORT_PLURAL,
                           seconds=WATCH_SECONDS + WATCH_GRACE, max_bytes=MAX_WATCH_BYTES, what="report watch",
                           **kw) as resp:
            if resp is None:
                raise KubeUnavailable(f"the API server at {self.api.server} does not serve {REPORT_PLURAL}")
            self._stream = resp
            try:
                for kind, obj, seen_rv in watch_events(resp, self._stop, self.api.server, "report watch"):
                    self._rv = seen_rv or self._rv
                    if kind != "BOOKMARK":
                        with self._lock:
                            self._keep(self._reports, kind, obj)
            except WatchExpired:
                self._rv = None
            finally:
                self._stream = None


def _bound(fn: Callable[..., Any], *args: Any) -> Callable[..., Any]:
    """fn with its leading arguments (group, version, ...): Api.pages passes only keywords."""
    def call(**kw: Any) -> Any:
        return fn(*args, **kw)
    return call


def _rv(obj: Any) -> str | None:
    return opaque(api_field(api_field(obj, "metadata"), "resourceVersion"))
