"""node: the simulated Kubernetes node, built of network namespaces only.

SimNode puts the lab together: namespaces it owns (ownership), the network
between them (topology), pods made by the CNI plugins or by hand (cni), and a
Kubernetes API for them served on 127.0.0.1 (api). Pods live in namespaces
named like a CNI plugin names them, behind the lab's prefix
(<prefix>-cni-<uuid>), on host veths named veth<hex>, except cache, whose
namespace only a process holds (as Docker leaves them).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from . import api as labapi
from . import topology
from .cni import CNI_NETWORK, Plugins, cni_wanted, ipam_dir_of, reserve_by_hand
from .ownership import Ownership
from .shell import LabError, in_netns, run
from .topology import NODE_NAMES, POD_SPECS, UNNAMED_PODS, Pod

CNI_DEL_BUDGET = 0.5        # seconds destroy() spends on CNI DELs (signals end a run within 2 s)


@dataclass
class SimNode:
    node1: str
    node2: str
    client: str
    owned: Ownership
    pods: dict[str, Pod] = field(default_factory=dict)
    api: labapi.KubeAPI | None = None
    kubeconfig: Path | None = None
    pod_mtu: int = topology.POD_MTU
    hairpin: bool = False
    healthy: bool = False
    plugins: Plugins | None = None     # the CNI plugins make the pods; None: by hand
    _bridges: set[int] = field(default_factory=set, init=False, repr=False)  # nodes whose cni0 is pinned

    @classmethod
    def create(cls, prefix: str | None = None, with_api: bool = True, healthy: bool = False,
               cni: bool | None = None) -> SimNode:
        """healthy=True: pods at the overlay's MTU, hairpin on, a route to node3's pod CIDR: a node
        netdrop doctor finds nothing wrong with (the seed cases' misconfigurations are absent).
        cni: pods made by the CNI plugins (True), by hand (False), or by the plugins when they are
        installed and NETDROP_LAB_CNI is not 0 (None)."""
        prefix = prefix if prefix is not None else f"ndt{os.getpid()}"
        owned = Ownership(prefix)
        pod_mtu = topology.OVERLAY_MTU if healthy else topology.POD_MTU
        cni_dir = cni_wanted(cni)
        plugins = Plugins(cni_dir, owned.lab_dir, pod_mtu, healthy) if cni_dir is not None else None
        node = cls(f"{prefix}-node1", f"{prefix}-node2", f"{prefix}-client", owned,
                   pod_mtu=pod_mtu, hairpin=healthy, healthy=healthy, plugins=plugins)
        owned.cleanup_leftovers()
        try:
            node._build()
            if with_api:
                node._start_api()
            node.wait_ready()
        except BaseException:
            node.destroy()
            raise
        return node

    @property
    def prefix(self) -> str:
        return self.owned.prefix

    @property
    def cni_dir(self) -> Path | None:
        return self.plugins.cni_dir if self.plugins is not None else None

    @property
    def ipam_dir(self) -> Path:
        """host-local IPAM state of node1's network, as /var/lib/cni/networks holds it."""
        return ipam_dir_of(self.owned.lab_dir, 1)

    def netns_inodes(self) -> dict[str, int]:
        return self.owned.netns_inodes()

    def _netns(self, name: str) -> None:
        self.owned.add_netns(name)
        topology.setup_netns(name)

    def _node_of(self, i: int) -> str:
        return self.node1 if i == 1 else self.node2

    def _build(self) -> None:
        for ns in (self.node1, self.node2, self.client):
            self._netns(ns)
        topology.underlay(self.node1, self.node2, self.client)
        for i, ns in ((1, self.node1), (2, self.node2)):
            topology.forwarding(ns)
            if self.plugins is None:     # else the bridge plugin makes it with the node's first pod
                topology.bridge(ns, i)
            topology.vxlan(ns, i)
        topology.overlay_routes(self.node1, self.node2)
        if self.healthy:    # node3 is only in the API; its route is what matters here
            topology.node3_route(self.node1)
        for role in POD_SPECS:
            self.add_pod(role)
        self.pods["node-exporter"] = Pod("node-exporter-4kq9z", "monitoring", self.node1, self.node1,
                                         topology.NODE1_EXT, None, None, host_network=True)
        topology.client_return_route(self.node2)
        topology.kube_proxy(self.node1)

    def _start_api(self) -> None:
        self.api = labapi.KubeAPI()
        self.api.start()
        # As flannel's vxlan backend annotates each node: its VNI and VTEP MAC.
        for i in (1, 2):
            backend = json.dumps({"VNI": 1, "VtepMAC": topology.vtep_mac(i)})
            self.api.add_node(labapi.node_object(NODE_NAMES[i], [f"192.168.100.{i}"], f"10.244.{i}.0/24",
                                                 {"flannel.alpha.coreos.com/backend-data": backend}))
        # A third node, whose pod CIDR node1 has no route to (the no-route case).
        self.api.add_node(labapi.node_object("sim-node3", ["192.168.100.3"], "10.244.3.0/24"))
        for pod in self.pods.values():
            self.api.put_pod(self.pod_object(pod))
        kubeconfig = self.owned.kubeconfig_file
        try:
            self.kubeconfig = self.api.write_kubeconfig(kubeconfig)
        except OSError as exc:
            raise LabError(f"cannot write the lab's kubeconfig {kubeconfig}: {exc.strerror}") from None

    def node_name(self, pod: Pod) -> str:
        return NODE_NAMES[1 if pod.node == self.node1 else 2]

    def pod_object(self, pod: Pod) -> labapi.Obj:
        if pod.host_network:
            return labapi.pod_object(pod.name, pod.namespace, NODE_NAMES[1], [topology.NODE1_EXT],
                                     topology.NODE1_EXT, labels={"app": "node-exporter"}, host_network=True,
                                     ports=[topology.HOSTNET_PORT])
        role = next(r for r, spec in POD_SPECS.items() if spec[0] == pod.name)
        host_ip = "192.168.100.1" if pod.node == self.node1 else "192.168.100.2"
        ips = [ip for ip in (pod.ipv4, pod.ipv6) if ip is not None]
        return labapi.pod_object(pod.name, pod.namespace, self.node_name(pod), ips, host_ip,
                                 labels=POD_SPECS[role][4], ports=[8080],
                                 owner=pod.name.rsplit("-", 1)[0] if pod.name.count("-") >= 2 else None)

    def wait_ready(self, seconds: float = 10.0) -> None:
        """Until the client reaches every node1 pod over IPv4 and IPv6: neighbour
        discovery must be done, or the first packets of a case wait in (and may
        be purged from) the neighbour queue instead of meeting their drop."""
        deadline = time.monotonic() + seconds
        targets = [a for p in self.pods.values() if p.node == self.node1 and not p.host_network
                   for a in (p.ipv4, p.ipv6) if a is not None]
        targets.append(self.pods["api"].ipv4)
        for addr in targets:
            while subprocess.run(["ip", "netns", "exec", self.client, "ping", "-c1", "-W1", addr],
                                 capture_output=True, timeout=5).returncode != 0:
                if time.monotonic() >= deadline:
                    raise LabError(f"simulated node not ready: client cannot reach {addr}")
                time.sleep(0.1)

    def add_pod(self, role: str, host: int | None = None) -> Pod:
        """A pod sandbox as a CNI plugin makes it, behind the lab's prefix: netns
        <prefix>-cni-<uuid>, veth<hex> on cni0; made by the plugins themselves
        when the lab has them, else by hand."""
        name, namespace, i, default_host, _labels = POD_SPECS[role]
        host = host or default_host
        node = self._node_of(i)
        ns = f"{self.prefix}-cni-{uuid.uuid4()}"
        container_id = secrets.token_hex(32)      # as containerd names a sandbox
        self._netns(ns)
        v4, v6 = topology.pod_addresses(i, host)
        if self.plugins is not None:
            veth = self.plugins.add(i, node, ns, container_id, v4, v6)
            if i not in self._bridges:      # the plugin has just made cni0, with the node's first pod
                run("ip", "-n", node, "link", "set", "cni0", "address", topology.bridge_mac(i))
                self._bridges.add(i)
        else:
            veth = topology.veth_by_hand(node, i, ns, v4, v6, self.pod_mtu, self.hairpin)
            if node == self.node1:
                reserve_by_hand(self.owned.lab_dir, v4, container_id)
        if role in UNNAMED_PODS:
            ns = self.owned.unname(ns)
        pod = Pod(name, namespace, ns, node, v4, v6, veth, container_id=container_id)
        self.pods[role] = pod
        return pod

    def recreate_pod(self, role: str, host: int) -> Pod:
        """Delete the pod's sandbox and start a new one with the same name, a new
        uid, a new namespace and the address 10.244.<node>.<host>, as a
        controller restarting it would; the API sees DELETED then ADDED."""
        old = self.pods[role]
        if self.api:
            self.api.delete_pod(old.namespace, old.name)
        self.remove_sandbox(old)
        pod = self.add_pod(role, host)
        if self.api:
            self.api.put_pod(self.pod_object(pod))
        return pod

    def remove_sandbox(self, pod: Pod) -> None:
        """Tear down a sandbox add_pod made, as kubelet does: CNI DEL (its veth and
        its addresses' reservations go), then its namespace. Its Pod object is the
        caller's to delete first."""
        self._cni_del(pod)
        self.owned.remove_netns(pod.netns)
        if self.plugins is None and pod.node == self.node1:
            (self.ipam_dir / CNI_NETWORK / pod.ipv4).unlink(missing_ok=True)   # what a CNI DEL frees

    def _cni_del(self, pod: Pod, timeout: float = 30) -> None:
        """CNI DEL of a pod the plugins made."""
        if self.plugins is None or pod.container_id is None or pod.host_network:
            return
        i = 1 if pod.node == self.node1 else 2
        self.plugins.delete(i, pod.node, pod.netns, pod.container_id, timeout=timeout)

    def traffic(self, ns: str, *args: str, timeout: float = 40) -> int:
        """Run tracer.lab.traffic inside ns (a /run/netns name or a /proc/PID/ns/net
        path, see in_netns); returns the number of packets it sent."""
        out = run(sys.executable, "-m", "tracer.lab.traffic", *args, ns=ns, timeout=timeout)
        return int(out.strip().splitlines()[-1])

    def serve(self, role: str, *args: str) -> subprocess.Popen[str]:
        """Start a server of tracer.lab.traffic (listen, dns-server) in a pod, once it
        is listening; bounded by its --seconds, and the caller kills it when done."""
        server = subprocess.Popen([*in_netns(self.pods[role].netns), sys.executable, "-m", "tracer.lab.traffic",
                                   *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None
        if server.stdout.readline().strip() != "listening":
            server.kill()
            server.wait()
            raise LabError(f"the {args[0]} server in pod {role} did not start")
        return server

    def destroy(self) -> None:
        """Remove everything the lab made, and nothing else: its namespaces and the
        processes holding them, its API server and its files. Safe to call again,
        and on a lab whose build stopped half-way; takes well under a second."""
        if self.api:
            self.api.stop()
            self.api = None
        self._cni_del_all()
        self.owned.remove_all()
        self.kubeconfig = None

    def _cni_del_all(self) -> None:
        """CNI DEL of each pod, as a node deletes its sandboxes, within CNI_DEL_BUDGET:
        what is left then goes with the namespaces (its veth) and the lab's
        directory (host-local's reservations), so a stop is never held up."""
        deadline = time.monotonic() + CNI_DEL_BUDGET
        for pod in list(self.pods.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if pod.netns in self.owned.made or pod.netns in self.owned.holders:
                # On failure, the namespace's removal below takes the veth all the same.
                with contextlib.suppress(LabError, subprocess.TimeoutExpired):
                    self._cni_del(pod, timeout=left)
