"""netdrop: which packets the kernel drops on this Kubernetes node, where, and why.

A folder per role, data flowing one way: kernel/ (the BPF program's maps and events) -> pods/
(which pod) and explain/ (why) -> sinks/ (console, JSON, capture files); lab/ is the simulated
node, apart from the product; doctor/ (node checks and their report). Beside them: cli (the
commands), watch (the event loop), layout (report text for a width, commands whole), groups
(counts per group), jsonvalues (JSON nothing vouches for, read as typed values), errors,
textsafe, trust, topk, nsexec, memory.
"""
