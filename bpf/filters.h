/* SPDX-License-Identifier: GPL-2.0 */
/*
 * netdrop: whether a drop passes the user's filters, and which pod it
 * belongs to (the pod maps). The kfree_skb program and the conntrack hooks
 * decide alike (drop_passes()).
 */
#include "maps.h"
#include "packet.h"
#ifndef ND_FILTERS_H
#define ND_FILTERS_H

static __always_inline int v4mapped_key(struct nd_ip_key *k, struct nd_event *e, u8 *addr)
{
	__builtin_memset(k, 0, sizeof(*k));
	if (e->l3proto == ND_ETH_P_IP) {
		k->addr[10] = 0xff;
		k->addr[11] = 0xff;
		__builtin_memcpy(&k->addr[12], addr, 4);
	} else {
		__builtin_memcpy(k->addr, addr, 16);
	}
	return 0;
}

/* Filters other than netns need the parsed packet; all kinds in force must match. */
static __always_inline int packet_matches(u32 flags, struct nd_event *e)
{
	if (flags & ND_FILTER_IP) {
		struct nd_ip_key k;
		if (e->l3proto == 0)
			return 0;
		v4mapped_key(&k, e, e->saddr);
		if (!filter_ip.lookup(&k)) {
			v4mapped_key(&k, e, e->daddr);
			if (!filter_ip.lookup(&k))
				return 0;
		}
	}
	if (flags & ND_FILTER_PORT) {
		if (!(e->flags & ND_F_L4))
			return 0;
		if (!filter_port.lookup(&e->sport) && !filter_port.lookup(&e->dport))
			return 0;
	}
	return 1;
}

/* A drop in the node's namespace belongs to a pod by its addresses (the
 * source first: a pod's own packet), else by the veth it was on, else (a
 * hostNetwork pod) by a port on a node address. With
 * want_selected, a candidate of a pod the user did not ask for is passed
 * over: pod A's packet to pod B, dropped on the node, is A's and B's. */
static __always_inline u32 node_pod(struct nd_event *e, int want_selected, u32 *selected)
{
	struct nd_pod_val *v;
	if (e->l3proto) {
		struct nd_ip_key k;
		v4mapped_key(&k, e, e->saddr);
		v = pod_ip.lookup(&k);
		if (v && (v->selected || !want_selected)) {
			*selected = v->selected;
			return v->tag | ND_DIR_FROM_POD;
		}
		v4mapped_key(&k, e, e->daddr);
		v = pod_ip.lookup(&k);
		if (v && (v->selected || !want_selected)) {
			*selected = v->selected;
			return v->tag | ND_DIR_TO_POD;
		}
	}
	struct nd_if_key in = {.netns = e->netns, .ifindex = e->ifindex};
	v = pod_veth.lookup(&in);
	if (v && (v->selected || !want_selected)) {
		*selected = v->selected;
		return v->tag | ND_DIR_FROM_POD;
	}
	struct nd_if_key out = {.netns = e->netns, .ifindex = e->out_ifindex};
	v = pod_veth.lookup(&out);
	if (v && (v->selected || !want_selected)) {
		*selected = v->selected;
		return v->tag | ND_DIR_TO_POD;
	}
	if (e->flags & ND_F_L4) {
		struct nd_ip_key k;
		v4mapped_key(&k, e, e->daddr);
		if (node_ip.lookup(&k)) {
			v = pod_hostport.lookup(&e->dport);
			if (v && (v->selected || !want_selected)) {
				*selected = v->selected;
				return v->tag | ND_DIR_TO_POD;
			}
		}
		v4mapped_key(&k, e, e->saddr);
		if (node_ip.lookup(&k)) {
			v = pod_hostport.lookup(&e->sport);
			if (v && (v->selected || !want_selected)) {
				*selected = v->selected;
				return v->tag | ND_DIR_FROM_POD;
			}
		}
	}
	return 0;
}

static __always_inline int netns_matches(struct nd_filter_cfg *cfg, u32 netns)
{
	u32 n = cfg->netns_inline_n;
	if (!n)
		return filter_netns.lookup(&netns) != NULL;
#pragma unroll
	for (int i = 0; i < ND_NETNS_INLINE; i++)
		if (i < n && cfg->netns_inline[i] == netns)
			return 1;
	return 0;
}

/* The pod whose namespace netns is (pod_netns), remembered per CPU: the hash
 * lookup cost ~60 ns per drop here, an array element a few loads. The loader
 * bumps cfg->pod_gen after every change of the pod maps, which forgets all
 * that was remembered. memo = 0 for the function hooks: a hook that ran
 * nested inside the kfree_skb program on this CPU must not rewrite an entry
 * that program is reading. */
BPF_PERCPU_ARRAY(pod_memo, struct nd_pod_memo, ND_POD_MEMO);

static __always_inline int pod_of_netns(struct nd_filter_cfg *cfg, u32 netns, struct nd_pod_val *out, const int memo)
{
	struct nd_pod_memo *m = NULL;
	u32 gen = cfg->pod_gen;
	if (memo) {
		u32 i = (netns * 0x9E3779B1U) >> 26 & (ND_POD_MEMO - 1);
		m = pod_memo.lookup(&i);
		if (m && m->gen == gen && m->netns == netns) {
			out->tag = m->tag;
			out->selected = m->selected;
			return m->found;
		}
	}
	struct nd_pod_val *pv = pod_netns.lookup(&netns);
	if (pv) {
		out->tag = pv->tag;
		out->selected = pv->selected;
	}
	if (m) {
		m->netns = netns;
		m->gen = gen;
		m->found = pv != NULL;
		m->tag = pv ? pv->tag : 0;
		m->selected = pv ? pv->selected : 0;
	}
	return pv != NULL;
}

/* Whether a drop passes the filters, and its pod tag (*pod). *scr and *route
 * are filled when pod tagging or the address and port filters needed the
 * packet (fill_keys), for the event to reuse; a caller that knows the packet's
 * keys without an skb passes them in *scr. The kfree_skb program and the
 * conntrack hooks (bpf/funchooks.c) decide alike. */
static __always_inline int drop_passes(struct nd_filter_cfg *cfg, struct sk_buff *skb, struct net_device *dev,
				       u16 proto, u32 netns, struct nd_event **scr, struct nd_route *route, u32 *pod,
				       const int memo)
{
	int zero = 0;
	u32 flags = cfg->flags;
	if (!(flags & ND_FILTER_READY))     /* attached by bcc before the loader wrote the filters */
		return 0;
	if ((flags & ND_FILTER_NETNS) && !netns_matches(cfg, netns))
		return 0;
	if (cfg->pod_flags & ND_POD_TAG) {
		u32 selected = 0;
		struct nd_pod_val pv;
		if (pod_of_netns(cfg, netns, &pv, memo)) {
			*pod = pv.tag | ND_DIR_IN_POD;
			selected = pv.selected;
		} else if (netns == cfg->node_netns) {
			if (!*scr) {
				*scr = scratch.lookup(&zero);
				if (!*scr)
					return 0;
				*route = fill_keys(*scr, skb, dev, proto);
				(*scr)->netns = netns;
			}
			*pod = node_pod(*scr, cfg->pod_flags & ND_POD_FILTER, &selected);
		}
		if ((cfg->pod_flags & ND_POD_FILTER) && !selected)
			return 0;
	}
	if (flags & (ND_FILTER_IP | ND_FILTER_PORT)) {
		if (!*scr) {
			*scr = scratch.lookup(&zero);
			if (!*scr)
				return 0;
			*route = fill_keys(*scr, skb, dev, proto);
			(*scr)->netns = netns;
		}
		if (!packet_matches(flags, *scr))
			return 0;
	}
	return 1;
}

#endif /* ND_FILTERS_H */
