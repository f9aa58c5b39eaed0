"""lab: the simulated Kubernetes node of `netdrop demo` and the kernel tests, apart from the product.

Built of network namespaces only, never touching the host's; in the product only the demo command
imports it. Modules:

- node: SimNode, the simulated node put together from the modules below, and torn down again.
- ownership: what a lab made and may remove (namespace identities, its state file, leftovers of a killed run).
- topology: the node's network (veths, bridge, VXLAN overlay, routes, kube-proxy's rules) and its pods' specs.
- cni: pods made by the real CNI plugins (bridge, host-local), or their IPAM state written by hand.
- cases: the drops the demo and the tests provoke, and the demo's player.
- shell: commands run inside the lab's namespaces, and LabError.
- api: its Kubernetes API server on 127.0.0.1, for the official client (apiserve: HTTP and verbs;
  apistore: custom resources and Events; apischema: the CRDs of deploy/crds; apirbac: RBAC from deploy/rbac.yaml).
- traffic: bounded test traffic, run inside a namespace (`python -m tracer.lab.traffic`).
- bulk: many pods on node1, for scale tests and the pod-scale benchmark.
- kubelet: a DaemonSet's container turned into the `podman run` a kubelet would make.
- container: such a run with podman, probed and stopped as the kubelet would.
- image: the agent's image, built with podman from deploy/Dockerfile.
- hostile: API servers that misbehave, for the tests of the client side.
"""
