"""pipeline: what every command that traces builds, in one place.

- startup: the checks and inputs before anything is loaded (root, tracefs,
  filters, the node's namespace, the pod source built while bcc compiles)
- loaded: the kernel side loaded once: program, pod maps, decoder (serve too)
- session: groups, explainer, evidence and the console's view on top of it,
  run through the event loop (tracer/watch.py) into the run's sinks
"""
