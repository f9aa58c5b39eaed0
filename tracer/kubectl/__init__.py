"""kubectl: `kubectl netdrop`, the plugin that runs captures across the cluster.

docs/captures.md says what it does through the API server and the agents.
"""
