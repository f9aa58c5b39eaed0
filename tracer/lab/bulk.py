"""bulk: many pods on the simulated node's node1, for scale tests and the pod-scale benchmark.

Each pod is a real sandbox made by SimNode.add_pod (a CNI-style namespace,
a veth on cni0, its addresses) and a Pod object of its own name in the lab's
API, as a Deployment's replicas would be. They take node1's free addresses
10.244.1.2-254 (the seed pods keep theirs): at most MAX_PODS. Removed with the
lab (SimNode.destroy removes every namespace it made).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from . import api as labapi
from .node import SimNode
from .topology import POD_SPECS, Pod

ROLE = "web"          # node1, default namespace: the sandbox add_pod makes for it
NAMESPACE = "bulk"


def free_hosts() -> list[int]:
    """node1's addresses 10.244.1.<host> no seed pod has (.0 is flannel.1's, .1 cni0's)."""
    taken = {spec[3] for spec in POD_SPECS.values() if spec[2] == 1}
    return [h for h in range(2, 255) if h not in taken]


MAX_PODS = len(free_hosts())


@dataclass(frozen=True)
class BulkPod:
    name: str
    host: int
    sandbox: Pod       # as add_pod made it (its name there is the role's, not this pod's)

    @property
    def ipv4(self) -> str:
        return self.sandbox.ipv4


class Pods:
    """Pods added to and removed from a simulated node. Not thread-safe: one caller at a time."""

    def __init__(self, node: SimNode):
        self.node = node
        self.pods: dict[int, BulkPod] = {}      # host -> pod
        self._made = 0

    def add(self, host: int | None = None, name: str | None = None) -> BulkPod:
        """A new pod: its sandbox first, then its Pod object (as kubelet reports it running)."""
        free = [h for h in free_hosts() if h not in self.pods]
        if host is None:
            if not free:
                raise ValueError(f"node1 has room for {MAX_PODS} bulk pods")
            host = free[0]
        elif host not in free:
            raise ValueError(f"10.244.1.{host} is not free")
        seed = self.node.pods.get(ROLE)
        try:
            sandbox = self.node.add_pod(ROLE, host)
        finally:
            if seed is not None:       # add_pod records the sandbox as the role's pod: the seed stays that
                self.node.pods[ROLE] = seed
        self._made += 1
        pod = BulkPod(name or f"bulk-{self._made:04d}-{secrets.token_hex(3)}", host, sandbox)
        self.pods[host] = pod
        if self.node.api is not None:
            self.node.api.put_pod(self.pod_object(pod))
        return pod

    def pod_object(self, pod: BulkPod) -> labapi.Obj:
        ips = [ip for ip in (pod.sandbox.ipv4, pod.sandbox.ipv6) if ip is not None]
        return labapi.pod_object(pod.name, NAMESPACE, self.node.node_name(pod.sandbox), ips, "192.168.100.1",
                                 labels={"app": "bulk"}, ports=[8080], owner="bulk-5d8c7")

    def remove(self, pod: BulkPod) -> None:
        """Its Pod object deleted, then its sandbox, as kubelet tears one down."""
        if self.node.api is not None:
            self.node.api.delete_pod(NAMESPACE, pod.name)
        self.node.remove_sandbox(pod.sandbox)
        del self.pods[pod.host]

    def recreate(self, pod: BulkPod) -> BulkPod:
        """Deleted and made again with the same name and address (a StatefulSet's pod):
        a new uid, a new namespace, a new veth."""
        self.remove(pod)
        return self.add(pod.host, pod.name)

    def replace(self, pod: BulkPod) -> BulkPod:
        """Deleted and made again at its address under a new name, as a Deployment replaces a pod."""
        self.remove(pod)
        return self.add(pod.host)
