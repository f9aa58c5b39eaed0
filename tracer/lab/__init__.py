"""lab: the simulated Kubernetes node of `netdrop demo` and the kernel tests, apart from the product.

Built of network namespaces only, never touching the host's; in the product only the demo command
imports it. Modules:

- node: the simulated node (namespaces, veths, overlay, kube-proxy rules) and the cases it plays.
- api: its Kubernetes API server on 127.0.0.1, for the official client.
- traffic: bounded test traffic, run inside a namespace (`python -m tracer.lab.traffic`).
"""
