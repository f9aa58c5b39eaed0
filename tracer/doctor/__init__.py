"""doctor: the node misconfigurations that no drop tracer sees, found in seconds.

Each check reads (never changes) the kernel, the node's namespace (or the one
given with --netns, as a simulated node is checked) and the pods' namespaces,
and returns Findings: a severity, what is wrong, the evidence, and the command
that fixes it. A check that cannot look says why instead of guessing. Modules:

- run: doctor from the command's few values (Scope) to its findings, every check in order.
- findings: what a check returns (Finding, its fix and the commands in it).
- node: where the checks look (Node: the node's namespace and its pods') and how they read it.
- kernel: BTF, tracefs, drop reasons, what netdrop would attach here, BPF programs on cgroups.
- forwarding: ip_forward, br_netfilter, rp_filter, the FORWARD chain, conntrack, kube-proxy's rules.
- links: MTU along pods' paths, hairpin, bridge ports and STP, the VXLAN overlay, IPsec,
  addresses, neighbour entries.
- pods: IPAM reservations, IPv6 behind dual-stack Services, routes to other nodes' pod CIDRs.
- view: the findings for people (a block per finding, laid out for the width) and as JSON.
"""
