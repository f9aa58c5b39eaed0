"""explain: why a packet was dropped, in plain words, and what to check first.

From a decoded Drop (and, for netfilter drops, the rulesets and conntrack statistics sampled in
the namespace of the drop) to a Verdict: one category and a one-line hint. Modules, lower ones first:

- verdict: the Verdict, and the ICMP and TCP constants and phrases classify and netfilter_verdict share.
- categories: the registry, one entry per category (patterns, summary sentence, style, colour, hint); category_of.
- rules: rulesets (iptables-save, nft JSON) and conntrack statistics parsed, drop points matched to a packet.
- explainer: samples rule counters and conntrack statistics per namespace in the background (Context).
- netfilter_verdict: which rule, policy or conntrack decision dropped a netfilter drop.
- classify: the Verdict of one drop: its category, and the hint of its entry or of netfilter_verdict.
"""
