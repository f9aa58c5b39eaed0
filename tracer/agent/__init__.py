"""agent: the HTTP side of netdrop serve.

- endpoints: /metrics, /healthz and / (the Agent), --listen's address
- httpd: the HTTP server (one asyncio loop in a thread, h11), bounded against hostile clients
- access: who may read /metrics (open, or bearer tokens the API server reviews), cached and rate-limited
- reviews: TokenReview and SubjectAccessReview through the API (access's Reviewer)
- serveauth: the plan from serve's flags: which Gate, whether TLS (certificates: tracer/tlsconf.py)
- podevents: which Events on pods whose traffic breaks (series, interval, the node's rate cap), pure
- podeventswriter: those Events written through the API from a thread of their own; serve's side of them
- capturefiles: the node's capture store (root's directories, within a time and a byte budget)
- capturepaths: a capture's names as path components and in the files URL, checked
- capturehttp: GET /captures/<namespace>/<name>/<file>, streamed from the store
"""
