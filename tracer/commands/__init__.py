"""commands: one module per command, each run(options, env) -> ExitStatus.

- watch: drops live on the console, or JSON lines (OUTPUTS: one entry per live output)
- capture: drops recorded into a directory (events, summary, pcapng)
- summary: a capture's report, or several nodes' merged
- doctor: the node checked for misconfigurations that drop packets
- demo: a simulated node, its drop cases played and watched
- serve: the node agent Prometheus scrapes
"""
