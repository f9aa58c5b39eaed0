"""explain: why a packet was dropped, in plain words, and what to check first.

From a decoded Drop (and, for netfilter drops, the rulesets and conntrack statistics sampled in
the namespace of the drop) to a Verdict: one category and a one-line hint. Modules:

- classify: every drop gets one category from a fixed list and a one-line hint.
- netfilter: which rule, policy or conntrack decision dropped a packet (rulesets sampled per namespace).
"""
