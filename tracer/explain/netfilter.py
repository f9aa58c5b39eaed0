"""Old import path, kept only while tests/kernel/test_netfilter.py and test_doctor.py import ct_stats from it.

Its parts moved: rules (parsing and matching), explainer (the background
sampler, ct_stats), netfilter_verdict (which rule or policy), nsexec (reading
in a namespace). Delete this module once those imports name explain.explainer.
"""

from .explainer import ct_stats

__all__ = ["ct_stats"]
