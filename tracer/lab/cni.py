"""cni: pods made as flannel makes them on a real node, by the real CNI plugins.

When Debian's containernetworking-plugins are installed (/usr/lib/cni), the
`bridge` plugin with `host-local` IPAM makes each pod (ADD when a pod starts,
DEL when it goes), run inside the simulated node's namespace, with host-local's
state in the lab's private directory (never the host's /var/lib/cni). Without
them, or with NETDROP_LAB_CNI=0, the lab does by hand what they do
(topology.veth_by_hand, reserve_by_hand).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..trust import check_tree, write_private
from .ownership import NETNS_DIR
from .shell import LabError, in_netns
from .topology import POD_IFNAME

# Debian's containernetworking-plugins. The network is flannel's: "cbr0", on
# bridge cni0, host-local IPAM (flannel's CNI plugin delegates to these two).
CNI_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local")
CNI_NETWORK = "cbr0"
CNI_IFNAME = POD_IFNAME
CNI_ENV = "NETDROP_LAB_CNI"            # "0": pods by hand even when the plugins are installed


def cni_plugins(cni_dir: Path | None = None) -> Path | None:
    """cni_dir when the bridge and host-local plugins are installed there, None when
    not. Root runs them: each must be a regular file that only root can change,
    in directories only root can change, else LabError (never run, never skipped
    in silence)."""
    cni_dir = CNI_DIR if cni_dir is None else cni_dir
    if not all(os.path.lexists(cni_dir / p) for p in CNI_PLUGINS):
        return None
    for name in CNI_PLUGINS:
        path = cni_dir / name
        try:
            check_tree(path, "the CNI plugin", owners={0})
        except UserError as exc:
            raise LabError(f"{exc} (remove it, or run the demo with {CNI_ENV}=0)") from None
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise LabError(f"cannot use the CNI plugin {path}: it is not a regular file")
    return cni_dir


def cni_wanted(choice: bool | None) -> Path | None:
    """The plugins' directory when the lab is to use them: choice=None lets
    NETDROP_LAB_CNI=0 or their absence decide; True requires them."""
    if choice is None:
        if os.environ.get(CNI_ENV, "").strip() == "0":
            return None
        return cni_plugins()
    if not choice:
        return None
    found = cni_plugins()
    if found is None:
        raise LabError(f"the CNI plugins {', '.join(CNI_PLUGINS)} are not installed in {CNI_DIR} "
                       f"(run scripts/setup)")
    return found


def ipam_dir_of(lab_dir: Path, i: int, make: bool = False) -> Path:
    """host-local's dataDir for node i, as /var/lib/cni/networks holds it: node1's is
    what `doctor --cni-dir` reads; made root's only (0700) down to the network's
    directory, which host-local then uses as is."""
    base = lab_dir / "cni" / ("networks" if i == 1 else f"networks-node{i}")
    if make:
        for d in (lab_dir, lab_dir / "cni", base, base / CNI_NETWORK):
            d.mkdir(mode=0o700, exist_ok=True)
    return base


def reserve_by_hand(lab_dir: Path, ip: str, container_id: str) -> None:
    """What host-local writes on node1 for a pod's address: the container's id and interface."""
    net = ipam_dir_of(lab_dir, 1, make=True) / CNI_NETWORK
    write_private(net, ip, f"{container_id}\r\n{CNI_IFNAME}")
    write_private(net, "last_reserved_ip.0", ip)


@dataclass(frozen=True)
class Plugins:
    """The bridge plugin (which runs host-local) as the container runtime runs it."""

    cni_dir: Path
    lab_dir: Path          # host-local's state goes under it (ipam_dir_of)
    pod_mtu: int
    hairpin: bool

    def netconf(self, i: int, ips: tuple[str, ...] = ()) -> dict[str, object]:
        """node i's network configuration, as flannel hands it to the bridge plugin
        (flannel's delegate: bridge cni0, the pods' MTU, host-local over the node's
        pod CIDRs), host-local's state in the lab's directory; `ips` asks host-local
        for those addresses (CNI's "ips" argument), as the lab's pods have fixed ones."""
        conf: dict[str, object] = {
            "cniVersion": "0.4.0", "name": CNI_NETWORK, "type": "bridge", "bridge": "cni0",
            "isGateway": True, "isDefaultGateway": True, "ipMasq": False, "hairpinMode": self.hairpin,
            "mtu": self.pod_mtu,
            "ipam": {"type": "host-local", "dataDir": str(ipam_dir_of(self.lab_dir, i)),
                     "ranges": [[{"subnet": f"10.244.{i}.0/24"}], [{"subnet": f"fd00:10:244:{i}::/64"}]],
                     "routes": [{"dst": "10.244.0.0/16"}]},
        }
        if ips:
            conf["args"] = {"cni": {"ips": list(ips)}}
        return conf

    def _call(self, command: str, i: int, node: str, netns: str, container_id: str,
              ips: tuple[str, ...] = (), timeout: float = 30) -> dict[str, object]:
        """Run the bridge plugin inside node i's namespace `node`, as the container
        runtime does on a real node: the CNI_* variables, the network's
        configuration on stdin, its result (or error) on stdout."""
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, "CNI_CONTAINERID": container_id,
               "CNI_NETNS": netns if netns.startswith("/") else str(NETNS_DIR / netns),
               "CNI_IFNAME": CNI_IFNAME, "CNI_PATH": str(self.cni_dir)}
        full = [*in_netns(node), str(self.cni_dir / "bridge")]
        res = subprocess.run(full, input=json.dumps(self.netconf(i, ips)), env=env, capture_output=True,
                             text=True, timeout=timeout)
        try:
            out = json.loads(res.stdout) if res.stdout.strip() else {}
        except ValueError:
            out = {}
        if not isinstance(out, dict):
            out = {}
        if res.returncode != 0:
            why = out.get("msg") or res.stderr.strip() or res.stdout.strip() or f"exit status {res.returncode}"
            raise LabError(f"CNI {command} of {netns} on {node} failed: {why}")
        return out

    def add(self, i: int, node: str, ns: str, container_id: str, v4: str, v6: str) -> str:
        """CNI ADD of sandbox ns on node i; returns the host veth the bridge plugin made."""
        ipam_dir_of(self.lab_dir, i, make=True)
        result = self._call("ADD", i, node, ns, container_id, (v4, v6))
        ifaces = result.get("interfaces")
        hosts = [f.get("name") for f in ifaces if isinstance(f, dict) and not f.get("sandbox")
                 and f.get("name") != "cni0"] if isinstance(ifaces, list) else []
        if len(hosts) != 1 or not isinstance(hosts[0], str):
            raise LabError(f"CNI ADD of {ns}: no host veth in the bridge plugin's result")
        return hosts[0]

    def delete(self, i: int, node: str, ns: str, container_id: str, timeout: float = 30) -> None:
        """CNI DEL of sandbox ns: its veth goes, host-local frees its addresses."""
        self._call("DEL", i, node, ns, container_id, timeout=timeout)
