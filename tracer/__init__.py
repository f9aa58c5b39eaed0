"""netdrop: which packets the kernel drops on this Kubernetes node, where, and why.

Layers, top to bottom: each imports only those below it (the contract in pyproject.toml,
checked by scripts/lint); modules on one line do not import each other, but for messages and
signals.

- cli: argv -> one frozen options object per command; main(argv, env) -> exit status
- commands/: one module per command (watch, capture, summary, doctor, demo, serve)
- agent/: the HTTP side of serve (/metrics, /healthz, who may scrape)
- pipeline/: the kernel side loaded once for every command that traces, the session on top of it
- sinks/ (console, JSON, capture files, metrics), doctor/ (node checks and their report),
  watch (the event loop: decode -> classify -> attribute -> groups -> sinks, counters on a tick),
  options (what each command was asked to do, typed)
- groups: exact counts per group, joined with their latest event
- explain/ (why) and pods/ (which pod); lab/, the simulated node for demo and tests, apart from
  the product (only the demo command imports it)
- kernel/: the BPF program's maps and events
- messages (stderr lines) and signals (stop signals)
- env: what a run is given (streams, terminal, clock, paths)
- node/: the node's own facts (namespaces, links, netlink)
- layout, memory, topk, textsafe, tlsconf (serving certificates), trust, jsonvalues (JSON nothing
  vouches for, read as typed values)
- errors: UserError and ExitStatus
"""
