"""sinks: where classified drops go, for people on a terminal, for machines, and for the incident ticket.

They get decoded drops with their verdicts and pods, and the exact counts; none of them reads
the kernel or the cluster itself. Modules:

- console: the live view of `netdrop watch`, built with rich; header (its top lines and View),
  podnames (pod names short and never alike), tui and keys (the terminal and its keys).
- jsonout: one JSON object per drop per line (`watch --json`, and the records of events.jsonl).
- capture: a time-boxed recording into a directory (events.jsonl, summary.json, drops.pcapng).
- pcapng: the dropped packets for Wireshark, each with a comment saying why it was dropped.
- summary (a package): what a capture found, as summary.json, and rendered as a table, Markdown,
  CSV or HTML; stackview (the kernel stacks of its groups).
- metrics: the kernel's exact drop counters as Prometheus metrics, read when scraped (`netdrop serve`).
"""
