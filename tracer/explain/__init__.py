"""explain: why a packet was dropped, in plain words, and what to check first.

From a decoded Drop (and, for netfilter drops, the rulesets and conntrack statistics sampled in
the namespace of the drop) to a Verdict: one category and a one-line hint. Modules, lower ones first:

- verdict: the Verdict, and the ICMP and TCP constants and phrases classify and netfilter_verdict share.
- causes: what a drop means on a node, in plain words: its reason's (CAUSES), or its freeing function's (PLACES).
- lead: the fact that decides a drop's why, in a few words, for a row of the console.
- xfrm: a namespace's IPsec policies and states, and which inbound policy refused a packet.
- evidence: the node's facts behind a drop (devices, overlay, IPsec, BPF programs), read off the event path.
- hints: each category's one-line hint, from the drop and the node's evidence.
- categories: the registry, one entry per category (patterns, summary sentence, style, colour, hint, lead);
  category_of.
- benign: drops every healthy node makes, decided by the packet facts, never by the place alone.
- functionhooks: the verdict of a drop that a function hook saw (bpf/funchooks.c).
- droppoints: DropPoint, a place in a ruleset that can drop, and Parsed, what a parser could and could not read.
- iptables: drop points of `iptables-save -c` (legacy and nft backends).
- nft: drop points of `nft -j list ruleset`.
- matcher: which drop points a dropped packet could have met (RuleIndex), and on which chain.
- conntrack: conntrack statistics, /proc/net/stat/nf_conntrack.
- explainer: samples rule counters and conntrack statistics per namespace in the background (Context).
- netfilter_verdict: which rule, policy or conntrack decision dropped a netfilter drop.
- classify: the Verdict of one drop: its category, and the hint of its entry or of netfilter_verdict.
- holding: a group's first events wait, briefly, for their namespace's evidence.
"""
