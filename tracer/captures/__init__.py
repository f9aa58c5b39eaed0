"""captures: the NetdropCapture and NetdropCaptureReport resources as typed values.

docs/captures.md is the contract: what a capture selects, what an agent reports.
"""
