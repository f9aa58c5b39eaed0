"""Old import path, kept only while cli.py (Explainer) and tests/kernel (ct_stats) still use it.

Its parts moved: rules (parsing and matching), explainer (the background
sampler), netfilter_verdict (which rule or policy), nsexec (reading in a
namespace). Delete this module once those imports name the new homes.
"""

from .explainer import Explainer, ct_stats

__all__ = ["Explainer", "ct_stats"]
