"""netdrop: which packets the kernel drops on this Kubernetes node, where, and why.

A folder per role, data flowing one way: kernel/ (the BPF program's maps and events) -> pods/
(which pod) and explain/ (why) -> sinks/ (console, JSON, capture files); lab/ is the simulated
node, apart from the product. Beside them: cli (the commands), watch (the event loop), doctor
(node checks) and doctorview (its report), layout (report text for a width, commands whole),
groups (counts per group), errors, textsafe, trust, topk, nsexec, memory.
"""
