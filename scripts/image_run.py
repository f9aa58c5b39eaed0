"""scripts/image run and caps: the DaemonSet's container on this machine (see scripts/image.py).

caps measures, in the container, what each capability the manifest adds is for: the agent is
started without it (then with hostPID off, then under another seccomp profile) and a second
container with the same settings runs the operations netdrop performs, one by one, through
`podman exec` (which gives them the container's capabilities, profile and namespaces):

  start        netdrop serve answers its readiness probe (else: its one error line)
  attach       the tp_btf program on skb:kfree_skb is attached (netdrop_hook_attached)
  count        UDP datagrams dropped in a namespace of the script's own are counted in /metrics
  kallsyms     /proc/kallsyms shows real addresses (drop locations named)
  named netns  setns into a namespace named under /run/netns (a CNI's pod sandbox)
  held netns   /proc/PID/ns/net of another user's process opened (the pause container: 65535)
  enter held   and entered (setns)
  memlock      RLIMIT_MEMLOCK raised (BPF memory before kernel 5.11)
"""

from __future__ import annotations

import dataclasses
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tracer.lab import image as lab_image  # noqa: E402
from tracer.lab.api import KubeAPI  # noqa: E402
from tracer.lab.container import Container, cluster_api, scratch_dir  # noqa: E402
from tracer.lab.kubelet import DaemonSet, PodRun, ServiceAccount, Variation, load_daemonset  # noqa: E402

NOBODY = 65534
NODE = "caps-node"
DATAGRAMS = 31


def run_for(node: str, seconds: float | None) -> int:
    """The manifest's container until Ctrl-C (or seconds), then stopped as the kubelet stops it."""
    lab_image.ensure_image()     # the checkout's code: cached layers make it quick
    ds = load_daemonset(lab_image.DAEMONSET)
    scratch = scratch_dir()
    with cluster_api(node) as (api, sa):
        run = ds.run(node, scratch, sa=sa, suffix=str(os.getpid()))
        print("$ " + " ".join(run.command()), file=sys.stderr)
        for note in run.notes:
            print(f"note: {note}", file=sys.stderr)
        token = api.add_user("system:serviceaccount:monitoring:prometheus")
        api.grant("system:serviceaccount:monitoring:prometheus", "get", "nodes", "metrics", node)
        print(f"the lab's API: {api.url}; a token that may scrape: {token}", file=sys.stderr)
        return _run(run, scratch, seconds)


def _run(run: PodRun, scratch: Path, seconds: float | None) -> int:
    with Container(run, scratch) as c:
        ready = c.wait_ready(120)
        print(f"ready after {ready:.1f} s; probes: "
              + ", ".join(f"{k} {c.probe_now(k)[1]}" for k in {p.kind for p in run.probes}), file=sys.stderr)
        try:
            deadline = None if seconds is None else time.monotonic() + seconds
            while c.running() and (deadline is None or time.monotonic() < deadline):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        took = c.stop()
    sys.stderr.write(c.output())
    print(f"stopped {took:.2f} s after SIGTERM (grace {run.grace_seconds} s), exit status {c.exit_status}; "
          f"liveness restarts the kubelet would make: {len(c.restarts_wanted)}", file=sys.stderr)
    return 0 if c.exit_status == 0 else 1


# ---- caps ---------------------------------------------------------------------------------

@contextmanager
def namespaces() -> Iterator[tuple[str, int]]:
    """A named namespace (loopback up) and one held only by a process of another user."""
    name = f"ndcaps{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    holder = subprocess.Popen(["unshare", "--net", "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                               "--clear-groups", "sleep", "600"])
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        time.sleep(0.2)
        yield name, holder.pid
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.wait()
        subprocess.run(["ip", "netns", "del", name])


INSECURE = ssl.create_default_context()
INSECURE.check_hostname, INSECURE.verify_mode = False, ssl.CERT_NONE     # as Prometheus scrapes kubelets


def scrape(port: int, token: str) -> str:
    req = urllib.request.Request(f"https://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5, context=INSECURE) as r:
        return str(r.read().decode())


def no_socket(text: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("netdrop_drops_total{") and 'reason="NO_SOCKET"' in line)


def agent(ds: DaemonSet, variation: Variation, netns: str, api: KubeAPI, sa: ServiceAccount) -> dict[str, str]:
    """Start, attach and count, as netdrop serve in the container shows them."""
    scratch = scratch_dir()
    run = ds.run(NODE, scratch, sa=sa, variation=variation, suffix=f"caps{os.getpid()}")
    token = api.add_user("system:serviceaccount:monitoring:prometheus")
    api.grant("system:serviceaccount:monitoring:prometheus", "get", "nodes", "metrics", NODE)
    (port,) = {p.port for p in run.probes}
    got: dict[str, str] = {}
    with Container(run, scratch) as c:
        try:
            got["start"] = f"yes ({c.wait_ready(90):.1f} s)"
        except AssertionError:
            errors = [line for line in c.output().splitlines() if "error" in line]
            got["start"] = "NO: " + (errors[-1].removeprefix("netdrop: error: ") if errors else why(c.output()))
            return got
        text = scrape(port, token)
        got["attach"] = "yes" if f'hook="tp_btf skb:kfree_skb",node="{NODE}"}} 1.0' in text else "NO"
        before = no_socket(text)
        send = ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f"for _ in range({DATAGRAMS}): s.sendto(b'x', ('127.0.0.1', 9))")
        subprocess.run(["ip", "netns", "exec", netns, "python3", "-c", send], check=True)
        deadline = time.monotonic() + 10
        while (counted := no_socket(scrape(port, token)) - before) < DATAGRAMS and time.monotonic() < deadline:
            time.sleep(0.5)
        got["count"] = "yes" if counted >= DATAGRAMS else f"NO ({counted:.0f} of {DATAGRAMS})"
        said = [line.split("netdrop: ", 1)[-1] for line in c.output().splitlines() if "kallsyms" in line]
        if said:
            got["agent says"] = said[0][:90]
        c.stop()
    return got


def why(stderr: str) -> str:
    """The reason at the end of a command's last line ("...: Permission denied")."""
    last = (stderr.strip().splitlines() or ["failed"])[-1]
    return last.rsplit(": ", 1)[-1][:80]


EXEC_CHECKS = {
    "kallsyms": ["python3", "-c", "import sys\nn = sum(1 for l in open('/proc/kallsyms') if int(l.split()[0], 16))\n"
                 "sys.exit(n == 0 and 'all addresses 0')"],
    "named netns": ["nsenter", "--net=/run/netns/{name}", "true"],
    "held netns": ["stat", "-L", "-c", "%i", "/proc/{pid}/ns/net"],
    "enter held": ["nsenter", "--net=/proc/{pid}/ns/net", "true"],
    "memlock": ["python3", "-c", "import resource\nr = resource.RLIM_INFINITY\n"
                "resource.setrlimit(resource.RLIMIT_MEMLOCK, (r, r))"],
}


def operations(ds: DaemonSet, variation: Variation, name: str, pid: int, sa: ServiceAccount) -> dict[str, str]:
    """Each of netdrop's privileged operations, run in a container with the same settings."""
    scratch = scratch_dir()
    run = ds.run(NODE, scratch, sa=sa, variation=variation, suffix=f"ops{os.getpid()}")
    idle = dataclasses.replace(run, podman=(*run.podman, "--entrypoint", "sleep"), args=("600",), probes=())
    got = {}
    with Container(idle, scratch) as c:
        deadline = time.monotonic() + 30
        while subprocess.run(["podman", "exec", run.name, "true"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline or not c.running():
                raise SystemExit(f"image caps: the idle container did not start:\n{c.output()}")
            time.sleep(0.2)
        for what, cmd in EXEC_CHECKS.items():
            res = subprocess.run(["podman", "exec", run.name, *(a.format(name=name, pid=pid) for a in cmd)],
                                 capture_output=True, text=True, timeout=60)
            got[what] = "yes" if res.returncode == 0 else f"NO: {why(res.stderr)}"
    return got


def variations(ds: DaemonSet) -> list[Variation]:
    sc = ds.container.get("securityContext", {})
    added = [str(c) for c in sc.get("capabilities", {}).get("add", [])]
    seccomp = sc.get("seccompProfile", {}).get("type", "Unconfined")
    out = [Variation()] + [Variation(withhold=frozenset({c})) for c in added]
    if ds.pod.get("hostPID"):
        out.append(Variation(host_pid=False))
    other = "Unconfined" if seccomp == "RuntimeDefault" else "RuntimeDefault"
    out.append(Variation(seccomp=other))
    # The narrower capabilities instead of SYS_ADMIN, under both profiles.
    if "SYS_ADMIN" in added:
        instead = frozenset({"BPF", "PERFMON", "NET_ADMIN"}) - set(added)
        out += [Variation(withhold=frozenset({"SYS_ADMIN"}), add=instead, seccomp=s)
                for s in ("RuntimeDefault", "Unconfined")]
    return out


COLUMNS = ("start", "attach", "count", "kallsyms", "named netns", "held netns", "enter held", "memlock")


def caps_table() -> int:
    lab_image.ensure_image()     # the checkout's code: cached layers make it quick
    ds = load_daemonset(lab_image.DAEMONSET)
    bounding = int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                        if line.startswith("CapBnd:")), 16)
    rows = []
    with namespaces() as (name, pid), cluster_api(NODE) as (api, sa):
        for v in variations(ds):
            t0 = time.monotonic()
            try:
                cells = {**agent(ds, v, name, api, sa), **operations(ds, v, name, pid, sa)}
            except (OSError, subprocess.SubprocessError, AssertionError) as exc:
                cells = {"start": f"NO: {exc}"}
            rows.append((v, cells))
            print(f"{v}: {cells} ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
    print(f"kernel {os.uname().release}; podman {lab_image.run(['podman', '--version']).split()[-1]}; "
          f"root's bounding set {bounding:#x}" + ("" if bounding >> 24 & 1 else " (no CAP_SYS_RESOURCE)"))
    print()
    print("| run | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for v, cells in rows:
        print(f"| {v} | " + " | ".join(cells.get(col, "-") for col in COLUMNS) + " |")
    notes = {k: text for _, cells in rows for k, text in cells.items() if k not in COLUMNS}
    for k, text in notes.items():
        print(f"\n{k}: {text}")
    if not bounding >> 24 & 1:
        print("\nmemlock: CAP_SYS_RESOURCE is not in this host's bounding set, so no container here has it"
              " (the runtime leaves it out without a word): the column shows the kernel's refusal without it.")
    return 0
