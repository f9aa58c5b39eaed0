"""kubelet: a DaemonSet's container turned into the `podman run` a kubelet and its runtime would make.

No cluster exists on our machines, so the lab plays the kubelet for the one pod a DaemonSet
puts on this node: its security context, volumes, environment, arguments, host namespaces,
limits and probes, read from deploy/daemonset.yaml. Only what this module understands may
be in the manifest: any other field fails loudly (ManifestError), so that what the tests ran
cannot drift from what deploy/ ships. Fields that only place or schedule the pod (selector,
tolerations, priority) have no effect on one machine: IGNORED lists them with the reason.

What the kubelet does that is copied here, with where it does it:
- emptyDir: a new directory, mode 0777 (pkg/volume/emptydir/empty_dir.go, setupDir); its
  sizeLimit is enforced by eviction, not by the file system (checked by the runner after);
  medium Memory: a tmpfs of that size.
- $(VAR) in env values and args: expanded from the variables defined before it, "$$" is "$",
  an unknown reference is left as written (third_party/forked/golang/expansion).
- hostNetwork shares the node's UTS namespace too (the CRI's NamespaceOption).
- seccompProfile unset means Unconfined (the kubelet's SeccompDefault is off by default);
  RuntimeDefault is the runtime's own profile (podman's).
- allowPrivilegeEscalation: false is no_new_privs; limits.memory the memory cgroup's limit,
  without swap; limits.cpu a CFS quota; requests.cpu the CPU shares (millicores * 1024 / 1000).
- Probes are the runner's (tracer/lab/container.py): an HTTP GET, 200-399 healthy, HTTPS not
  verified, each with its delay, period, timeout and thresholds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"

# Known, and without effect when the one pod runs on this machine.
IGNORED = {
    "metadata.labels": "labels select the pods; nothing selects here",
    "metadata.annotations": "annotations are read by other controllers",
    "spec.selector": "the DaemonSet's pods are found by it: one pod here",
    "spec.updateStrategy": "how a new version rolls over the nodes: one node, one version here",
    "spec.minReadySeconds": "rollout pacing",
    "spec.revisionHistoryLimit": "rollout history",
    "spec.template.metadata.labels": "labels select the pods; nothing selects here",
    "spec.template.metadata.annotations": "annotations are read by other controllers",
    "spec.template.spec.tolerations": "scheduling: which nodes run the pod; this machine does",
    "spec.template.spec.priorityClassName": "scheduling and eviction order among pods; one pod here",
    "spec.template.spec.nodeSelector": "scheduling: which nodes run the pod; this machine does",
    "spec.template.spec.affinity": "scheduling: which nodes run the pod; this machine does",
    "spec.template.spec.dnsPolicy": "netdrop resolves no names (the API by address); podman gives the host's"
                                    " resolv.conf, as dnsPolicy Default would",
    "container.ports": "documentation with hostNetwork (the port is the host's); probes use their names",
    "container.resources.requests.memory": "scheduling; on cgroup v1 the kubelet sets nothing for it",
    "container.imagePullPolicy": "nothing is pulled: the image is built here",
}


# include/uapi/linux/capability.h: a capability's number, its bit in /proc/PID/status.
CAPS = {name: i for i, name in enumerate((
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE"))}


def _bounding() -> int:
    """This process's capability bounding set: what any container started from here may have."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            return int(line.split()[1], 16)
    return 0


class ManifestError(Exception):
    """The manifest has something this runner does not know how to run as the kubelet would."""


@dataclass(frozen=True)
class ServiceAccount:
    """What the kubelet gives a pod for its service account: a directory with token, ca.crt
    and namespace, mounted read-only at SA_MOUNT, and the API's address in
    KUBERNETES_SERVICE_HOST and _PORT (in-cluster configuration)."""

    directory: Path
    host: str
    port: int


@dataclass(frozen=True)
class Variation:
    """A run that differs from the manifest on purpose, to measure what a setting is for:
    capabilities withheld, hostPID or the seccomp profile changed. The manifest's own run is
    Variation()."""

    withhold: frozenset[str] = frozenset()
    add: frozenset[str] = frozenset()
    host_pid: bool | None = None
    seccomp: str | None = None        # "RuntimeDefault" or "Unconfined"

    def __str__(self) -> str:
        parts = [f"without {', '.join(sorted(self.withhold))}"] if self.withhold else []
        if self.add:
            parts.append(f"with {', '.join(sorted(self.add))}")
        if self.host_pid is not None:
            parts.append(f"hostPID {str(self.host_pid).lower()}")
        if self.seccomp is not None:
            parts.append(f"seccomp {self.seccomp}")
        return ", ".join(parts) or "as the manifest says"


@dataclass(frozen=True)
class Probe:
    kind: str                 # readinessProbe, livenessProbe, startupProbe
    scheme: str               # HTTP or HTTPS
    port: int
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    initial_delay: float = 0
    period: float = 10
    timeout: float = 1
    failure_threshold: int = 3
    success_threshold: int = 1


@dataclass(frozen=True)
class HostDir:
    """A directory the runner makes on the host before the container starts."""

    path: Path
    mode: int
    size_limit: int | None = None      # bytes; an emptyDir's sizeLimit (eviction past it)


@dataclass(frozen=True)
class PodRun:
    image: str
    name: str
    podman: tuple[str, ...]            # `podman run` options, before the image
    args: tuple[str, ...]              # after the image (the container's args)
    host_dirs: tuple[HostDir, ...]
    probes: tuple[Probe, ...]
    grace_seconds: int
    notes: tuple[str, ...] = field(default=())

    def command(self) -> list[str]:
        return ["podman", "run", *self.podman, self.image, *self.args]


def load_daemonset(path: Path) -> DaemonSet:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    sets = [d for d in docs if isinstance(d, dict) and d.get("kind") == "DaemonSet"]
    if len(sets) != 1:
        raise ManifestError(f"{path}: expected one DaemonSet, found {len(sets)}")
    return DaemonSet(sets[0])


def _known(obj: Any, where: str, handled: set[str]) -> dict[str, Any]:
    """obj as a mapping whose every key is handled here or in IGNORED, else ManifestError."""
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected a mapping, got {type(obj).__name__}")
    for key in obj:
        path = f"{where}.{key}" if where else str(key)
        if key not in handled and path not in IGNORED:
            raise ManifestError(f"{path}: not understood by the runner (tracer/lab/kubelet.py); "
                                "run it as the kubelet would there, or list it in IGNORED with the reason")
    return obj


_SUFFIX: dict[str, int | Decimal] = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
           "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1,
           "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}


def quantity(value: object, where: str) -> Decimal:
    """A Kubernetes resource quantity ("320Mi", "20m", "1", "1.5", "1e3") as a number."""
    m = re.fullmatch(r"([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)", str(value))
    if m is None:
        raise ManifestError(f"{where}: {value!r} is not a quantity")
    number = Decimal(m.group(1))
    if m.group(2):
        return number * Decimal(10) ** int(m.group(2)[1:])
    return number * Decimal(_SUFFIX[m.group(3) or ""])


def expand(text: str, defined: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: a defined variable's value, "$$" a literal "$", anything
    else (an unknown name, an unclosed "$(", "$x") as written."""
    out, i = [], 0
    while i < len(text):
        if text[i] != "$" or i + 1 == len(text):
            out.append(text[i])
            i += 1
        elif text[i + 1] == "$":
            out.append("$")
            i += 2
        elif text[i + 1] == "(":
            end = text.find(")", i + 2)
            if end < 0:
                out.append("$(")
                i += 2
            else:
                name = text[i + 2:end]
                out.append(defined.get(name, f"$({name})"))
                i = end + 1
        else:
            out.append(text[i:i + 2])
            i += 2
    return "".join(out)


class DaemonSet:
    """The DaemonSet's one container, checked field by field and translated."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = _known(doc, "", {"apiVersion", "kind", "metadata", "spec"})
        if doc.get("apiVersion") != "apps/v1":
            raise ManifestError(f"apiVersion {doc.get('apiVersion')!r}: the runner knows apps/v1")
        meta = _known(doc["metadata"], "metadata", {"name", "namespace"})
        self.name, self.namespace = str(meta["name"]), str(meta.get("namespace", "default"))
        spec = _known(doc["spec"], "spec", {"template"})
        template = _known(spec["template"], "spec.template", {"metadata", "spec"})
        _known(template.get("metadata", {}), "spec.template.metadata", set())
        self.pod = _known(template["spec"], "spec.template.spec",
                          {"serviceAccountName", "automountServiceAccountToken", "hostNetwork", "hostPID",
                           "hostIPC", "terminationGracePeriodSeconds", "containers", "volumes"})
        containers = self.pod["containers"]
        if not isinstance(containers, list) or len(containers) != 1:
            raise ManifestError("spec.template.spec.containers: the runner runs exactly one container")
        self.container = _known(containers[0], "container",
                                {"name", "image", "command", "args", "env", "readinessProbe", "livenessProbe",
                                 "startupProbe", "resources", "securityContext", "volumeMounts"})

    # ---- the pieces ----

    def env(self, node: str, pod_name: str, sa: ServiceAccount | None) -> dict[str, str]:
        """The container's environment, in the kubelet's order: the API's address first (for a
        service account), then the manifest's, each expanded from those before it."""
        defined: dict[str, str] = {}
        if sa is not None:
            defined |= {"KUBERNETES_SERVICE_HOST": sa.host, "KUBERNETES_SERVICE_PORT": str(sa.port),
                        "KUBERNETES_SERVICE_PORT_HTTPS": str(sa.port)}
        fields = {"spec.nodeName": node, "metadata.name": pod_name, "metadata.namespace": self.namespace,
                  "spec.serviceAccountName": str(self.pod.get("serviceAccountName", "default"))}
        for i, item in enumerate(self.container.get("env", [])):
            where = f"container.env[{i}]"
            item = _known(item, where, {"name", "value", "valueFrom"})
            if "valueFrom" in item:
                source = _known(item["valueFrom"], f"{where}.valueFrom", {"fieldRef"})
                ref = _known(source["fieldRef"], f"{where}.valueFrom.fieldRef", {"fieldPath", "apiVersion"})
                if ref["fieldPath"] not in fields:
                    raise ManifestError(f"{where}: fieldPath {ref['fieldPath']!r} not known to the runner")
                defined[str(item["name"])] = fields[ref["fieldPath"]]
            else:
                defined[str(item["name"])] = expand(str(item.get("value", "")), defined)
        return defined

    def security(self, variation: Variation) -> tuple[list[str], list[str]]:
        """podman's options, and the capabilities granted that this host cannot give."""
        sc = _known(self.container.get("securityContext", {}), "container.securityContext",
                    {"privileged", "runAsUser", "runAsGroup", "readOnlyRootFilesystem", "allowPrivilegeEscalation",
                     "capabilities", "seccompProfile"})
        opts: list[str] = []
        if sc.get("privileged"):
            opts.append("--privileged")
        if "runAsUser" in sc:
            opts += ["--user", f"{int(sc['runAsUser'])}:{int(sc.get('runAsGroup', 0))}"]
        if sc.get("readOnlyRootFilesystem"):
            # podman would also mount tmpfs on /tmp, /var/tmp and /run: the kubelet does not
            opts += ["--read-only", "--read-only-tmpfs=false"]
        if sc.get("allowPrivilegeEscalation") is False:
            opts += ["--security-opt", "no-new-privileges"]
        caps = _known(sc.get("capabilities", {}), "container.securityContext.capabilities", {"drop", "add"})
        for cap in caps.get("drop", []):
            opts += ["--cap-drop", str(cap)]
        added = [str(c) for c in caps.get("add", [])]
        unknown = variation.withhold - set(added)
        if unknown:
            raise ManifestError(f"withheld capabilities the manifest does not add: {sorted(unknown)}")
        granted = [c for c in added if c not in variation.withhold] + sorted(variation.add - set(added))
        for cap in granted:
            opts += ["--cap-add", cap]
        ungrantable = sorted(c for c in granted if c.upper() in CAPS and not _bounding() >> CAPS[c.upper()] & 1)
        profile = _known(sc.get("seccompProfile", {"type": "Unconfined"}), "container.securityContext.seccompProfile",
                         {"type"})
        kind = variation.seccomp or str(profile["type"])
        if kind == "Unconfined":
            opts += ["--security-opt", "seccomp=unconfined"]
        elif kind != "RuntimeDefault":       # podman's default profile is the runtime's default
            raise ManifestError(f"seccompProfile type {kind!r}: the runner knows RuntimeDefault and Unconfined")
        return opts, ungrantable

    def namespaces(self, variation: Variation) -> list[str]:
        if not self.pod.get("hostNetwork"):
            raise ManifestError("hostNetwork false: the runner runs host-network pods only (no pod network here)")
        opts = ["--network", "host", "--uts", "host"]
        host_pid = self.pod.get("hostPID", False) if variation.host_pid is None else variation.host_pid
        if host_pid:
            opts += ["--pid", "host"]
        if self.pod.get("hostIPC"):
            opts += ["--ipc", "host"]
        return opts

    def resources(self) -> tuple[list[str], list[str]]:
        res = _known(self.container.get("resources", {}), "container.resources", {"limits", "requests"})
        limits = _known(res.get("limits", {}), "container.resources.limits", {"memory", "cpu"})
        requests = _known(res.get("requests", {}), "container.resources.requests", {"cpu"})
        opts, notes = [], []
        if "memory" in limits:
            mem = int(quantity(limits["memory"], "limits.memory"))
            opts += ["--memory", str(mem), "--memory-swap", str(mem)]
        if "cpu" in limits:
            opts += ["--cpus", str(quantity(limits["cpu"], "limits.cpu"))]
        if "cpu" in requests:
            opts += ["--cpu-shares", str(max(2, int(quantity(requests["cpu"], "requests.cpu") * 1024)))]
        if "memory" in requests:
            notes.append(f"requests.memory {requests['memory']}: scheduling only here")
        return opts, notes

    def ports(self) -> dict[str, int]:
        return {str(p["name"]): int(p["containerPort"]) for p in self.container.get("ports", []) if "name" in p}

    def probes(self) -> list[Probe]:
        found = []
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if kind not in self.container:
                continue
            where = f"container.{kind}"
            p = _known(self.container[kind], where, {"httpGet", "initialDelaySeconds", "periodSeconds",
                                                     "timeoutSeconds", "failureThreshold", "successThreshold"})
            if "httpGet" not in p:
                raise ManifestError(f"{where}: the runner probes with httpGet only")
            get = _known(p["httpGet"], f"{where}.httpGet", {"path", "port", "scheme", "httpHeaders"})
            port = get["port"]
            if isinstance(port, str) and not port.isdigit():
                if port not in self.ports():
                    raise ManifestError(f"{where}: no container port named {port!r}")
                port = self.ports()[port]
            scheme = str(get.get("scheme", "HTTP"))
            if scheme not in ("HTTP", "HTTPS"):
                raise ManifestError(f"{where}: scheme {scheme!r}")
            headers = tuple((str(h["name"]), str(h["value"])) for h in get.get("httpHeaders", []))
            found.append(Probe(kind, scheme, int(port), str(get.get("path", "/")), headers,
                               float(p.get("initialDelaySeconds", 0)), float(p.get("periodSeconds", 10)),
                               float(p.get("timeoutSeconds", 1)), int(p.get("failureThreshold", 3)),
                               int(p.get("successThreshold", 1))))
        return found

    def volumes(self, scratch: Path, sa: ServiceAccount | None) -> tuple[list[str], list[HostDir], list[str]]:
        """-v options, the host directories to make first, and notes."""
        volumes: dict[str, dict[str, Any]] = {}
        for v in self.pod.get("volumes", []):
            volumes[str(v["name"])] = _known(v, f"volumes[{v['name']}]", {"name", "hostPath", "emptyDir"})
        opts: list[str] = []
        dirs: list[HostDir] = []
        notes: list[str] = []
        propagation = {None: "rprivate", "None": "rprivate", "HostToContainer": "rslave", "Bidirectional": "rshared"}
        for i, m in enumerate(self.container.get("volumeMounts", [])):
            where = f"container.volumeMounts[{i}]"
            m = _known(m, where, {"name", "mountPath", "readOnly", "mountPropagation"})
            vol = volumes.pop(str(m["name"]), None)
            if vol is None:
                raise ManifestError(f"{where}: no volume {m['name']!r}")
            if m.get("mountPropagation") not in propagation:
                raise ManifestError(f"{where}: mountPropagation {m['mountPropagation']!r}")
            flags = ["ro" if m.get("readOnly") else "rw", "rbind", propagation[m.get("mountPropagation")]]
            if "hostPath" in vol:
                source = self._host_path(vol, dirs)
            else:
                ed = _known(vol["emptyDir"] or {}, f"volumes[{m['name']}].emptyDir", {"sizeLimit", "medium"})
                limit = int(quantity(ed["sizeLimit"], "sizeLimit")) if "sizeLimit" in ed else None
                if ed.get("medium", "") == "Memory":
                    size = f",tmpfs-size={limit}" if limit else ""
                    opts += ["--mount", f"type=tmpfs,destination={m['mountPath']},tmpfs-mode=0777{size}"]
                    continue
                if ed.get("medium", ""):
                    raise ManifestError(f"volumes[{m['name']}].emptyDir: medium {ed['medium']!r}")
                source = scratch / "volumes" / "kubernetes.io~empty-dir" / str(m["name"])
                dirs.append(HostDir(source, 0o777, limit))
                if limit is not None:
                    notes.append(f"emptyDir {m['name']}: sizeLimit {ed['sizeLimit']} is the kubelet's eviction "
                                 "threshold, checked after the run")
            opts += ["-v", f"{source}:{m['mountPath']}:{','.join(flags)}"]
        if volumes:
            raise ManifestError(f"volumes {sorted(volumes)} are mounted nowhere")
        if sa is not None and self.pod.get("automountServiceAccountToken", True):
            opts += ["-v", f"{sa.directory}:{SA_MOUNT}:ro,rbind,rprivate"]
        return opts, dirs, notes

    @staticmethod
    def _host_path(vol: dict[str, Any], dirs: list[HostDir]) -> Path:
        hp = _known(vol["hostPath"], f"volumes[{vol['name']}].hostPath", {"path", "type"})
        path, kind = Path(str(hp["path"])), str(hp.get("type", ""))
        if kind == "DirectoryOrCreate":
            if not path.is_dir():
                dirs.append(HostDir(path, 0o755))
        elif kind == "Directory":
            if not path.is_dir():
                raise ManifestError(f"hostPath {path}: type Directory, and there is no such directory here")
        elif kind:
            raise ManifestError(f"hostPath {path}: type {kind!r} not known to the runner")
        return path

    # ---- the whole ----

    def run(self, node: str, scratch: Path, sa: ServiceAccount | None = None,
            variation: Variation = Variation(), suffix: str = "") -> PodRun:
        """The container as the kubelet of node would run it; emptyDirs under scratch."""
        name = f"{self.name}-{suffix}" if suffix else self.name
        env = self.env(node, name, sa)
        args = [expand(str(a), env) for a in self.container.get("args", [])]
        security, ungrantable = self.security(variation)
        opts = ["--name", name, "--pull=never", "--log-driver", "none", *self.namespaces(variation), *security]
        resources, notes = self.resources()
        volumes, dirs, vnotes = self.volumes(scratch, sa)
        opts += resources + volumes
        for key, value in env.items():
            opts += ["--env", f"{key}={value}"]
        if "command" in self.container:
            command = [expand(str(c), env) for c in self.container["command"]]
            opts += ["--entrypoint", command[0]]
            args = command[1:] + args
        grace = int(self.pod.get("terminationGracePeriodSeconds", 30))
        opts += ["--stop-timeout", str(grace)]
        if sa is None:
            notes.append("no API server: no service account mounted, no KUBERNETES_SERVICE_HOST")
        for cap in ungrantable:
            notes.append(f"CAP_{cap} is not in this host's bounding set: no container here can have it, "
                         "and the runtime leaves it out without a word")
        return PodRun(str(self.container["image"]), name, tuple(opts), tuple(args), tuple(dirs),
                      tuple(self.probes()), grace, tuple(notes + vnotes))
