"""netdrop: which packets the kernel drops on this Kubernetes node, where, and why.

Layers, top to bottom (each imports only those below it):

- cli: argv -> one frozen options object per command (options); main(argv, env) -> exit status
- commands/: one module per command (watch, capture, summary, doctor, demo, serve)
- pipeline/: the kernel side loaded once for every command that traces, the session on top of it;
  watch: the event loop (decode -> classify -> attribute -> groups -> sinks, counters on a tick)
- sinks/ (console, JSON, capture files, metrics), doctor/ (node checks and their report),
  agent/ (the HTTP side of serve)
- groups: counts per group
- explain/ (why) and pods/ (which pod), independent of each other
- kernel/: the BPF program's maps and events
- node/: the node's own facts (namespaces, links, netlink)
- utilities: env (what a run is given), errors (UserError, ExitStatus), messages (stderr lines),
  signals (stop signals), tlsconf (serving certificates), jsonvalues (JSON nothing vouches for,
  read as typed values), textsafe, trust, memory, layout, topk

lab/ is the simulated node for demo and tests, apart from the product.
"""
