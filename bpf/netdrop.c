// SPDX-License-Identifier: GPL-2.0
/*
 * netdrop: kernel side. Compiled by bcc at run time (tracer/kernel/loader.py).
 *
 * skb:kfree_skb fires for every skb freed as a drop (kfree_skb_reason() in
 * net/core/skbuff.c; consumed skbs go to skb:consume_skb instead). For each
 * drop that passes the filters we
 *   1. add the packet and its length to an exact per-CPU counter keyed by
 *      (netns, reason, location, pod),
 *   2. and, within the event rate limit and if the ring buffer has room,
 *      send one nd_event with the flow, the devices and the route MTU.
 *      Otherwise only a per-CPU counter (sampled_out or lost) moves.
 * So counts stay exact however far the Python side falls behind.
 *
 * Both programs run for every such drop, so their hot paths hold only what
 * the exact count needs: the namespace (three dependent kernel reads: plain
 * loads in the tp_btf form), the filters, one per-CPU slot or hash update.
 * Helper calls and hash lookups dominate what is left (each
 * bpf_probe_read_kernel about 30 ns, a hash lookup about 65 ns,
 * bpf_ktime_get_ns about 100 ns on our Firecracker guests): everything else
 * an event carries is read only once it is known that an event is sent.
 *
 * Macros set by the loader (numbers read from the running kernel, never text
 * from the user): ND_HAVE_REASON, ND_HAVE_ICMP_TP, ND_HAVE_NFCT, ND_REASON_CONSUMED,
 * ND_REASON_NOT_SPECIFIED,
 * ND_TP_BTF (1: the tp_btf entry points, else the classic tracepoints), ND_STACKS (1: events
 * carry their kernel stack),
 * ND_RINGBUF_PAGES, ND_MAX_COUNTERS, ND_MAX_FILTER, ND_PAGE_SIZE; for bpf/funchooks.c
 * ND_CT_MAX_ADDR, ND_MAX_CAUSE_COUNTERS. The loader compiles this
 * file and funchooks.c as one text: bcc takes programs from its main file only.
 */
#ifdef ND_KERNEL_HEADERS
#include <linux/skbuff.h>
#include <linux/netdevice.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <net/sock.h>
#include <net/dst.h>
#include <net/route.h>
#endif
#include "netdrop.h"

/* BTF types come without the kernel's compiler.h */
#ifndef NULL
#define NULL ((void *)0)
#endif
#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ND_NTOHS(x) __builtin_bswap16(x)
#else
#define ND_NTOHS(x) (x)
#endif

#define ND_ETH_P_IP   0x0800
#define ND_ETH_P_IPV6 0x86DD
#define ND_IP_DF      0x4000
#define ND_IP_OFFMASK 0x1fff
#define ND_PROTO_TCP  6
#define ND_PROTO_UDP  17
#define ND_IFF_LOOPBACK 0x8 /* include/uapi/linux/if.h */
/* skb->_skb_refdst: low bit is SKB_DST_NOREF (include/linux/skbuff.h) */
#define ND_SKB_DST_PTRMASK (~1UL)
/* dst->_metrics: low bits are DST_METRICS_* flags (include/net/dst.h) */
#define ND_DST_METRICS_PTRMASK (~3UL)
/* An icmp_send() for the same skb counts only if it was in the same jiffy
 * as the drop or the one before (1-2 ms at HZ=1000, 4-8 ms at HZ=250). */
#define ND_ICMP_WINDOW_JIFFIES 1
#define ND_ICMP_DEST_UNREACH 3 /* include/uapi/linux/icmp.h */
/* Notes kept per CPU (a power of two), see struct nd_icmp_notes. */
#define ND_ICMP_NOTES 4
/* skb->pkt_type (include/uapi/linux/if_packet.h) */
#define ND_PACKET_HOST      0
#define ND_PACKET_BROADCAST 1
#define ND_PACKET_MULTICAST 2
#define ND_PACKET_LOOPBACK  5   /* this host's own broadcast or multicast, looped back (dev_loopback_xmit) */
/* struct rtable's rt_flags (include/uapi/linux/in_route.h) */
#define ND_RTCF_BROADCAST 0x10000000U
#define ND_RTCF_MULTICAST 0x20000000U
#define ND_RTCF_LOCAL     0x80000000U
/* dst_entry.flags: a tunnel's metadata, not a route (include/net/dst.h) */
#define ND_DST_F_METADATA 0x0080
#define ND_AF_INET  2
#define ND_AF_INET6 10
/* With the event budget spent, look at the clock every 64th drop only. */
#define ND_WINDOW_CHECK_MASK 63

BPF_PERCPU_HASH(counts, struct nd_count_key, struct nd_count_val, ND_MAX_COUNTERS);
BPF_PERCPU_ARRAY(cpu_state, struct nd_cpu_state, 1);
BPF_RINGBUF_OUTPUT(events, ND_RINGBUF_PAGES);
/* An nd_event is too big for comfort on the 512-byte BPF stack. */
BPF_PERCPU_ARRAY(scratch, struct nd_event, 1);

/* An event with packet bytes behind it: its size varies, so it is built here
 * and copied into the ring buffer (bpf_ringbuf_output) instead of reserved. */
struct nd_pkt {
	struct nd_event ev;
	/* Twice the largest capture: the verifier bounds a variable length by a
	 * power-of-two mask (ND_PKT_MASK), not by the comparison with the maximum. */
	u8 data[2 * ND_MAX_SNAPLEN];
};
#define ND_PKT_MASK (2 * ND_MAX_SNAPLEN - 1)
BPF_PERCPU_ARRAY(pktbuf, struct nd_pkt, 1);

#if ND_STACKS
/* The kernel stack of an event (nd_event.stack_id), taken where the event is
 * sent, never for a drop that is only counted. bpf_get_stackid() walks the
 * stack with the kernel's unwinder: ~2.4 us for the ~25 frames of a drop in
 * softirq here, ten times the rest of an event (docs/performance.md). So a
 * stack is also rationed: per CPU, per event window, at most ND_STACKS_PER_SLOT
 * for the events of each of ND_STACK_SLOTS slots of their location's hash. A
 * storm at one location pays for two stacks per window, and a drop elsewhere
 * during it still finds its own slot's budget untouched.
 *
 * With BPF_F_REUSE_STACKID a new stack takes the slot its hash lands on from
 * the one there: the map always has room, and the reader, who reads a stack as
 * it reads its event, checks that the stack holds the event's location. */
#define ND_STACK_SLOTS 16
#define ND_STACKS_PER_SLOT 2
struct nd_stack {
	u64 ip[ND_STACK_DEPTH];
};
BPF_TABLE("stacktrace", int, struct nd_stack, stacks, ND_STACK_ENTRIES);

struct nd_stack_budget {
	u64 window_start_ns;
	u8 taken[ND_STACK_SLOTS];
};
BPF_PERCPU_ARRAY(stack_budget, struct nd_stack_budget, 1);
#endif

/* ctx: the program's context, from which the kernel takes the registers to
 * unwind (the tracepoint's, or the raw tracepoint's in the tp_btf form).
 * -1: no stack (none asked for, or over this window's budget). */
static __always_inline s32 stack_id(void *ctx, u64 location, u64 now)
{
#if ND_STACKS
	int zero = 0;
	struct nd_stack_budget *b = stack_budget.lookup(&zero);
	if (!b)
		return -1;
	if (now - b->window_start_ns >= ND_EVENT_WINDOW_NS) {
		b->window_start_ns = now;
		__builtin_memset(b->taken, 0, sizeof(b->taken));
	}
	u32 slot = (u32)((location * 0x9E3779B97F4A7C15ULL) >> 60) & (ND_STACK_SLOTS - 1);
	if (b->taken[slot] >= ND_STACKS_PER_SLOT)
		return -1;
	b->taken[slot]++;
	return stacks.get_stackid(ctx, BPF_F_REUSE_STACKID);
#else
	return -1;
#endif
}

BPF_ARRAY(filter_cfg, struct nd_filter_cfg, 1);
BPF_HASH(filter_netns, u32, u8, ND_MAX_FILTER);
BPF_HASH(filter_ip, struct nd_ip_key, u8, ND_MAX_FILTER);
BPF_HASH(filter_port, u16, u8, ND_MAX_FILTER);

/* Pods of this node (tracer/pods/attribute.py builds them): their namespaces,
 * their host veths (in the node namespace) and their addresses. */
BPF_HASH(pod_netns, u32, struct nd_pod_val, ND_MAX_FILTER);
BPF_HASH(pod_veth, struct nd_if_key, struct nd_pod_val, ND_MAX_FILTER);
BPF_HASH(pod_ip, struct nd_ip_key, struct nd_pod_val, ND_MAX_FILTER);
/* hostNetwork pods share the node's namespace and addresses: only a port
 * that one of them alone declares, on a node address, names it. */
BPF_HASH(pod_hostport, u16, struct nd_pod_val, ND_MAX_FILTER);
BPF_HASH(node_ip, struct nd_ip_key, u8, ND_MAX_FILTER);

/* The last ND_ICMP_NOTES icmp_send() calls of this CPU, a ring written at
 * next++. Per CPU because every caller frees the skb on the CPU that sent the
 * error, right after icmp_send() returns: __udp4_lib_rcv() (port
 * unreachable), ip_forward() and ip_fragment() (fragmentation needed),
 * ip_error() (net/host unreachable), nf_hook_slow() after a REJECT target.
 * More than one note because __icmp_send() ends with local_bh_enable(): when
 * it was called from process context, softirqs can run there and send errors
 * of their own before the caller frees its skb. A per-CPU array slot costs a
 * few stores; the shared LRU hash it replaces cost ~300 ns per ICMP error
 * (bucket lock, eviction of a never-read entry under a storm). */
struct nd_icmp_notes {
	u64 skb[ND_ICMP_NOTES];
	u64 jiffies[ND_ICMP_NOTES]; /* bpf_jiffies64(): a load, ktime would be ~100 ns */
	u8 code[ND_ICMP_NOTES];
	u32 next;
};
BPF_PERCPU_ARRAY(icmp_notes, struct nd_icmp_notes, 1);

/* A hook's note joins the kfree_skb of its packet on the same CPU within
 * this many jiffies. The two are microseconds apart on one CPU, but a virtual
 * CPU preempted by its host in between (a node that is a VM; QEMU's emulation in
 * the kernel matrix, where one jiffy was seen to pass) stretches that: two
 * jiffies keep the join, and a note is used up by the drop it joins. */
#define ND_FN_WINDOW_JIFFIES 2
#define ND_FN_NOTES 4
/* Notes of the function hooks (bpf/funchooks.c) for finish_event(), a ring
 * per CPU as nd_icmp_notes: what a hook saw of a packet the kfree_skb event
 * that follows may carry (nd_event.cause). skb 0: the
 * conntrack allocation failure, which sees no skb, matched by ports and
 * protocol instead. */
struct nd_fn_notes {
	u64 skb[ND_FN_NOTES];
	u64 jiffies[ND_FN_NOTES];
	u32 value[ND_FN_NOTES];  /* table full: nf_conntrack_max; too big: the route's MTU */
	u32 ports[ND_FN_NOTES];  /* sport << 16 | dport, host order (skb 0 only) */
	u8 cause[ND_FN_NOTES];   /* ND_CAUSE_* */
	u8 l4proto[ND_FN_NOTES];
	u32 next;
	u64 newest;              /* jiffies of the newest note: older than the window, none can match */
};
BPF_PERCPU_ARRAY(fn_notes, struct nd_fn_notes, 1);

static __always_inline u32 net_inum(struct net *net)
{
	u32 inum = 0;
	if (net)
		bpf_probe_read_kernel(&inum, sizeof(inum), &net->ns.inum);
	return inum;
}

/* The namespace of the drop: the device's, or for device-less skbs (socket
 * paths) the socket's. */
static __always_inline u32 netns_of(struct sk_buff *skb, struct net_device *dev)
{
	struct net *net = NULL;
	if (dev) {
		bpf_probe_read_kernel(&net, sizeof(net), &dev->nd_net.net);
	} else {
		struct sock *sk = NULL;
		bpf_probe_read_kernel(&sk, sizeof(sk), &skb->sk);
		if (sk)
			bpf_probe_read_kernel(&net, sizeof(net), &sk->__sk_common.skc_net.net);
	}
	return net_inum(net);
}

static __always_inline void read_ports(struct nd_event *e, unsigned char *l4)
{
	u16 ports[2] = {};
	if (e->l4proto != ND_PROTO_TCP && e->l4proto != ND_PROTO_UDP)
		return;
	/* TCP and UDP both start with source port, destination port. */
	if (bpf_probe_read_kernel(ports, sizeof(ports), l4) == 0) {
		e->sport = ND_NTOHS(ports[0]);
		e->dport = ND_NTOHS(ports[1]);
		e->flags |= ND_F_L4;
	}
	/* A SYN-ACK that no socket takes is a reply that missed its NAT (tracer/explain/classify.py). */
	if (e->l4proto == ND_PROTO_TCP)
		bpf_probe_read_kernel(&e->tcp_flags, 1, l4 + 13);
}

/* The conntrack state the packet carried when it was dropped: skb->_nfct
 * holds the nf_conn pointer with enum ip_conntrack_info in its low 3 bits
 * (include/linux/skbuff.h, skb_nfct()). No entry at a netfilter drop means
 * conntrack saw the packet as INVALID (or never saw it). */
static __always_inline void read_conntrack(struct sk_buff *skb, struct nd_event *e)
{
#if ND_HAVE_NFCT
	unsigned long nfct = 0;
	if (bpf_probe_read_kernel(&nfct, sizeof(nfct), &skb->_nfct))
		return;
	e->flags |= ND_F_NFCT_READ;
	e->ctinfo = nfct & 7;
	struct nf_conn *ct = (struct nf_conn *)(nfct & ~7UL);
	if (ct) {
		unsigned long status = 0;
		bpf_probe_read_kernel(&status, sizeof(status), &ct->status);
		e->ct_status = (u32)status;
		e->flags |= ND_F_CT;
	}
#endif
}

/* Addresses and ports from the IP header. skb->network_header is set on
 * every path that has an IP packet (receive, forward, output); it is ~0 when
 * unset (skb_network_header_was_set()). */
static __always_inline void read_packet(struct sk_buff *skb, struct nd_event *e, u16 proto)
{
	unsigned char *head = NULL;
	u16 nh = 0;
	bpf_probe_read_kernel(&head, sizeof(head), &skb->head);
	bpf_probe_read_kernel(&nh, sizeof(nh), &skb->network_header);
	if (!head || nh == (u16)~0U)
		return;
	unsigned char *l3 = head + nh;
	if (proto != ND_ETH_P_IP && proto != ND_ETH_P_IPV6) {
		/* skb->protocol is not yet set on some output paths: trust the version nibble. */
		u8 first = 0;
		bpf_probe_read_kernel(&first, 1, l3);
		proto = (first >> 4) == 4 ? ND_ETH_P_IP : (first >> 4) == 6 ? ND_ETH_P_IPV6 : 0;
	}
	if (proto == ND_ETH_P_IP) {
		struct iphdr ip = {};
		if (bpf_probe_read_kernel(&ip, sizeof(ip), l3) || ip.version != 4)
			return;
		e->l3proto = ND_ETH_P_IP;
		/* The IP length, not skb->len: past the IP layer skb->data has moved on. */
		e->len = ND_NTOHS(ip.tot_len);
		e->l4proto = ip.protocol;
		__builtin_memcpy(e->saddr, &ip.saddr, 4);
		__builtin_memcpy(e->daddr, &ip.daddr, 4);
		u16 frag = ND_NTOHS(ip.frag_off);
		if (frag & ND_IP_DF)
			e->flags |= ND_F_DF;
		if (frag & ND_IP_OFFMASK)
			e->flags |= ND_F_FRAGMENT;
		else
			read_ports(e, l3 + ip.ihl * 4);
	} else if (proto == ND_ETH_P_IPV6) {
		struct ipv6hdr ip6 = {};
		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), l3) || ip6.version != 6)
			return;
		e->l3proto = ND_ETH_P_IPV6;
		e->len = ND_NTOHS(ip6.payload_len) + sizeof(ip6);
		/* Extension headers are not walked: ports only for a direct TCP/UDP header. */
		e->l4proto = ip6.nexthdr;
		__builtin_memcpy(e->saddr, &ip6.saddr, 16);
		__builtin_memcpy(e->daddr, &ip6.daddr, 16);
		read_ports(e, l3 + sizeof(ip6));
	}
}

/* Where the packet was going. At ip_forward() a too-big packet is dropped
 * while skb->dev is still the ingress device; the egress device and MTU are
 * only known from the route attached to the skb (skb_dst(), include/net/dst.h,
 * and ip_dst_mtu_maybe_forward() in include/net/ip.h). */
struct nd_route {
	struct dst_entry *dst;
	struct net_device *odev; /* NULL: no egress (none, or local delivery) */
};

/* The route's egress device: its ifindex is a pod key (node_pod()), the rest
 * (route_details()) only goes into events. */
static __always_inline struct nd_route route_dev(struct sk_buff *skb, struct nd_event *e)
{
	struct nd_route r = {};
	unsigned long refdst = 0;
	bpf_probe_read_kernel(&refdst, sizeof(refdst), &skb->_skb_refdst);
	struct dst_entry *dst = (struct dst_entry *)(refdst & ND_SKB_DST_PTRMASK);
	if (!dst)
		return r;
	struct net_device *odev = NULL;
	bpf_probe_read_kernel(&odev, sizeof(odev), &dst->dev);
	if (!odev)
		return r;
	u32 ifindex = 0;
	unsigned int dev_flags = 0;
	bpf_probe_read_kernel(&ifindex, sizeof(ifindex), &odev->ifindex);
	bpf_probe_read_kernel(&dev_flags, sizeof(dev_flags), &odev->flags);
	/* Local delivery and error routes (ip_error, ip6_pkt_discard) point at the
	 * loopback device: no egress, no MTU to report. */
	if (ifindex == 0 || (dev_flags & ND_IFF_LOOPBACK))
		return r;
	e->out_ifindex = ifindex;
	e->flags |= ND_F_HAS_ROUTE;
	r.dst = dst;
	r.odev = odev;
	return r;
}

static __always_inline void route_details(struct nd_event *e, struct nd_route r)
{
	if (!r.odev)
		return;
	u32 dev_mtu = 0, metric_mtu = 0;
	bpf_probe_read_kernel(&dev_mtu, sizeof(dev_mtu), &r.odev->mtu);
	unsigned long metrics = 0;
	bpf_probe_read_kernel(&metrics, sizeof(metrics), &r.dst->_metrics);
	u32 *m = (u32 *)(metrics & ND_DST_METRICS_PTRMASK);
	if (m)
		bpf_probe_read_kernel(&metric_mtu, sizeof(metric_mtu), &m[RTAX_MTU - 1]);
	e->mtu = metric_mtu ? metric_mtu : dev_mtu;
	bpf_probe_read_kernel_str(e->out_ifname, sizeof(e->out_ifname), r.odev->name);
}

/* What pod tagging and the IP/port filters look at: the packet's addresses
 * and ports, the ifindex of the device and of the route's device. */
static __always_inline struct nd_route fill_keys(struct nd_event *e, struct sk_buff *skb,
						  struct net_device *dev, u16 proto)
{
	__builtin_memset(e, 0, sizeof(*e));
	if (dev)
		bpf_probe_read_kernel(&e->ifindex, sizeof(e->ifindex), &dev->ifindex);
	read_packet(skb, e, proto);
	return route_dev(skb, e);
}

/* The rest of an event, read only when one is sent: names, MTUs, conntrack. */
static __always_inline void fill_details(struct nd_event *e, struct sk_buff *skb,
					 struct net_device *dev, struct nd_route r)
{
	/* read_packet() set the IP length with l3proto; skb->len is the fallback. */
	if (!e->l3proto)
		bpf_probe_read_kernel(&e->len, sizeof(e->len), &skb->len);
	if (dev) {
		bpf_probe_read_kernel(&e->dev_mtu, sizeof(e->dev_mtu), &dev->mtu);
		bpf_probe_read_kernel_str(e->ifname, sizeof(e->ifname), dev->name);
	}
	route_details(e, r);
	read_conntrack(skb, e);
}

/* A whole event: from the keys read for pod tagging or filters (scr, route),
 * else from scratch. */
static __always_inline void fill_event(struct nd_event *e, struct sk_buff *skb, struct net_device *dev,
				       u16 proto, struct nd_event *scr, struct nd_route route, u32 netns)
{
	if (scr) {
		__builtin_memcpy(e, scr, sizeof(*e));
	} else {
		route = fill_keys(e, skb, dev, proto);
		e->netns = netns;
	}
	fill_details(e, skb, dev, route);
}

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

/* What the counting path needs of the sk_buff (the device, and the packet's
 * length from its IP header to the end of its data) in ONE read: each
 * bpf_probe_read_kernel() costs ~30 ns whatever its size (a few hundred
 * bytes copy in a few ns), so copying the ~200 bytes from skb->dev to
 * skb->data is cheaper than reading dev, len, network_header, head and data
 * apart. The fields keep their order in include/linux/skbuff.h: dev in the
 * first union, len, the "headers" group ending with network_header, then
 * tail, end, head, data. */
#define ND_SPAN_FROM __builtin_offsetof(struct sk_buff, dev)
#define ND_SPAN_LEN (__builtin_offsetof(struct sk_buff, data) + sizeof(void *) - ND_SPAN_FROM)
#define ND_SPAN_MAX 256
_Static_assert(ND_SPAN_LEN <= ND_SPAN_MAX, "sk_buff: dev .. data no longer fits the read span");
/* skb->pkt_type is a 3-bit field in the byte __pkt_type_offset marks
 * (include/linux/skbuff.h; PKT_TYPE_MAX in net/core/filter.c). */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ND_PKT_TYPE(byte) ((byte) & 7)
#else
#define ND_PKT_TYPE(byte) ((byte) >> 5)
#endif
/* dst_class(): from dst_entry.flags to rtable.rt_type, one read. */
#define ND_RT_SPAN_FROM __builtin_offsetof(struct dst_entry, flags)
#define ND_RT_SPAN_LEN (__builtin_offsetof(struct rtable, rt_type) + sizeof(__u16) - ND_RT_SPAN_FROM)
#define ND_RT_SPAN_MAX 128   /* on the 512-byte stack beside skb_head()'s span */
_Static_assert(ND_RT_SPAN_LEN <= ND_RT_SPAN_MAX, "rtable: dst.flags .. rt_type no longer fits the read span");
#define ND_SPAN_GET(span, field, out) \
	__builtin_memcpy(&(out), (span) + __builtin_offsetof(struct sk_buff, field) - ND_SPAN_FROM, sizeof(out))

struct nd_skb_head {
	struct net_device *dev;
	u32 len;            /* bytes from the IP header to the end of the data (bytes counter) */
	u8 pkt_type;        /* skb->pkt_type: how the link layer addressed it (packet_facts()) */
	unsigned long refdst;   /* skb->_skb_refdst */
	unsigned char *l3;  /* the IP header, NULL if unset */
	struct sock *sk;
};

/* len: the bytes the skb holds from its IP header on, (data + len) - (head +
 * network_header): skb->len counts from skb->data, wherever the layers have
 * pulled it to (past the UDP header in __udp4_lib_rcv, at the MAC header on
 * output), so this is the IP packet's length whatever layer drops it. It is the
 * IP header's length (nd_event.len) wherever ip_rcv_core()/ipv6_rcv() have
 * trimmed the skb to it (every drop past IP receive, and every locally sent
 * or forwarded packet); before that it includes an Ethernet frame's padding.
 * Without a network header: skb->len. */
static __always_inline struct nd_skb_head skb_head(struct sk_buff *skb)
{
	struct nd_skb_head h = {};
	u8 span[ND_SPAN_MAX];
	if (bpf_probe_read_kernel(span, ND_SPAN_LEN, (u8 *)skb + ND_SPAN_FROM))
		return h;
	unsigned char *head = NULL, *data = NULL;
	u16 nh = 0;
	ND_SPAN_GET(span, dev, h.dev);
	ND_SPAN_GET(span, len, h.len);
	ND_SPAN_GET(span, network_header, nh);
	ND_SPAN_GET(span, head, head);
	ND_SPAN_GET(span, data, data);
	ND_SPAN_GET(span, _skb_refdst, h.refdst);
	ND_SPAN_GET(span, sk, h.sk);
	u8 pt = 0;
	ND_SPAN_GET(span, __pkt_type_offset, pt);
	h.pkt_type = ND_PKT_TYPE(pt);
	if (head && nh != (u16)~0U) {
		unsigned char *l3 = head + nh, *end = data + h.len;
		h.len = end > l3 ? (u32)(end - l3) : 0;
		h.l3 = l3;
	}
	return h;
}

/* What the kernel had decided about the packet's destination (ND_PF_*), for
 * the counter key and the event alike: explain/benign.py calls a drop benign
 * only by these, so a group no event reached is judged like one events
 * reached. skb->pkt_type is the link layer's verdict (eth_type_trans(): our
 * MAC, broadcast, a multicast group, another host's; PACKET_OUTGOING on the
 * copy a packet socket takes of what this host sends). It costs nothing here
 * (read with the span). Only for a frame sent to a link-layer group (or this
 * host's own group traffic looped back to it) is the IP destination
 * classified too, the way the kernel's own paths decide:
 * IPv4 by the input route's flags (__udp4_lib_rcv() takes the multicast path
 * for rt_flags & (RTCF_BROADCAST|RTCF_MULTICAST); a route to an address of
 * ours carries RTCF_LOCAL alone), IPv6 by the destination address
 * (__udp6_lib_rcv() and ip6_mc_input() test ipv6_addr_is_multicast()). That
 * read (~30 ns) is paid by those frames only: no rule calls anything else
 * benign, so a unicast storm pays nothing for it. A unicast IP packet in a
 * link-layer broadcast frame is classified by its route as what it is.
 * An IPv4 frame to this host's MAC freed without a reason is classified too:
 * __udp4_lib_rcv() frees with NOT_SPECIFIED both a broadcast nobody wants that
 * came in such a frame (127.255.255.255 on lo, whose frames all carry its own
 * MAC, arp_constructor()) and unicast an IPsec policy refused; only the route
 * tells them apart. */
static __always_inline u32 dst_class(u16 proto, struct nd_skb_head *sh)
{
	if (proto == ND_ETH_P_IPV6) {
		u8 first = 0;
		if (!sh->l3 || bpf_probe_read_kernel(&first, 1, sh->l3 + __builtin_offsetof(struct ipv6hdr, daddr)))
			return ND_DST_UNREAD;
		return first == 0xff ? ND_DST_MULTICAST : ND_DST_UNICAST;
	}
	struct dst_entry *dst = (struct dst_entry *)(sh->refdst & ND_SKB_DST_PTRMASK);
	if (!dst)
		return ND_DST_UNREAD;
	/* dst.flags to rt_type in one read: an IPv4 skb's dst is a struct rtable
	 * (xfrm_dst starts with one too, its flags copied from the route by
	 * xfrm4_fill_dst()), unless it is a tunnel's metadata. */
	u8 span[ND_RT_SPAN_MAX];
	if (bpf_probe_read_kernel(span, ND_RT_SPAN_LEN, (u8 *)dst + ND_RT_SPAN_FROM))
		return ND_DST_UNREAD;
	unsigned short flags = 0;
	unsigned int rt_flags = 0;
	__builtin_memcpy(&flags, span + __builtin_offsetof(struct dst_entry, flags) - ND_RT_SPAN_FROM, sizeof(flags));
	__builtin_memcpy(&rt_flags, span + __builtin_offsetof(struct rtable, rt_flags) - ND_RT_SPAN_FROM,
			 sizeof(rt_flags));
	if (flags & ND_DST_F_METADATA)
		return ND_DST_UNREAD;
	/* A broadcast route carries RTCF_LOCAL as well (ip_route_input_slow()). */
	if (rt_flags & ND_RTCF_MULTICAST)
		return ND_DST_MULTICAST;
	if (rt_flags & ND_RTCF_BROADCAST)
		return ND_DST_BROADCAST;
	return rt_flags & ND_RTCF_LOCAL ? ND_DST_LOCAL : ND_DST_UNICAST;
}

static __always_inline u32 packet_facts(u16 proto, struct nd_skb_head *sh, u16 sk_family, u32 reason)
{
	u32 f = ND_PF_KNOWN | (sh->pkt_type & ND_PF_TYPE_MASK);
	if (proto == ND_ETH_P_IP || proto == ND_ETH_P_IPV6) {
		if (sh->pkt_type == ND_PACKET_BROADCAST || sh->pkt_type == ND_PACKET_MULTICAST ||
		    sh->pkt_type == ND_PACKET_LOOPBACK ||
		    (proto == ND_ETH_P_IP && sh->pkt_type == ND_PACKET_HOST && ND_HAVE_REASON &&
		     reason == ND_REASON_NOT_SPECIFIED))
			f |= dst_class(proto, sh) << ND_PF_DST_SHIFT;
		return f;
	}
	/* Another ethertype; or no device, no protocol and the skb on a socket that
	 * is not an inet one (a netlink message queued on its socket). skb->protocol
	 * is 0 on some IP output paths too: without a socket to tell, unread. */
	if (proto || (sk_family && sk_family != ND_AF_INET && sk_family != ND_AF_INET6))
		f |= ND_DST_NOT_IP << ND_PF_DST_SHIFT;
	return f;
}

/* The family of the skb's socket, read only where packet_facts() needs it. */
static __always_inline u16 sock_family(u16 proto, struct nd_skb_head *sh)
{
	u16 family = 0;
	if (!proto && !sh->dev && sh->sk)
		bpf_probe_read_kernel(&family, sizeof(family), &sh->sk->__sk_common.skc_family);
	return family;
}

/* The counts of a key's first ND_COUNT_SLOTS-way slot on this CPU
 * (struct nd_count_slot): a per-CPU array element costs a few loads, where
 * the counts hash's lookup cost ~65 ns per drop here (hashing the 24-byte key
 * and walking its bucket: measured by cutting the program short before and
 * after it). A key whose slot another key holds is counted in the hash. No
 * count ever moves between the two: the reader adds both (Tracer.counts()),
 * and each only grows, so a read never goes backwards. */
BPF_PERCPU_ARRAY(count_slots, struct nd_count_slot, ND_COUNT_SLOTS);

static __always_inline u32 count_slot(u64 location, u32 netns, u32 reason, u32 pod, u32 facts)
{
	/* Fibonacci hashing: the multiply mixes every input bit into the high half. */
	u64 x = location ^ ((u64)netns << 32) ^ ((u64)reason << 20) ^ ((u64)pod << 44) ^ pod ^ ((u64)facts << 56);
	return (u32)((x * 0x9E3779B97F4A7C15ULL) >> 32) & (ND_COUNT_SLOTS - 1);
}

/* Returns 0 when the counter map is full and the drop could not be counted per key. */
static __always_inline int count(u32 netns, u32 reason, u64 location, u32 pod, u32 facts, u32 len)
{
	u32 i = count_slot(location, netns, reason, pod, facts);
	struct nd_count_slot *s = count_slots.lookup(&i);
	if (s) {
		if (s->packets && s->location == location && s->netns == netns && s->reason == reason && s->pod == pod
		    && s->facts == facts) {
			s->packets++;
			s->bytes += len;
			return 1;
		}
		if (!s->packets) {
			/* Free: this key takes it, key first, packets last (struct nd_count_slot). */
			s->location = location;
			s->netns = netns;
			s->reason = reason;
			s->pod = pod;
			s->facts = facts;
			s->bytes = len;
			asm volatile("" ::: "memory");
			s->packets = 1;
			return 1;
		}
	}
	struct nd_count_key key = {.location = location, .netns = netns, .reason = reason, .pod = pod, .facts = facts};
	struct nd_count_val *v = counts.lookup(&key);
	if (v) {
		v->packets++;
		v->bytes += len;
		return 1;
	}
	struct nd_count_val first = {.packets = 1, .bytes = len};
	if (counts.insert(&key, &first) == 0)
		return 1;
	/* Another CPU may have created the key first: our own slot is then 0. */
	v = counts.lookup(&key);
	if (!v)
		return 0;
	v->packets++;
	v->bytes += len;
	return 1;
}

/* What a function hook noted of this packet (bpf/funchooks.c): by its skb, or
 * for the conntrack allocation failure by its ports and protocol. Only the
 * event path pays for this: counts never depend on it. */
static __always_inline void fn_join(struct nd_event *e, struct sk_buff *skb)
{
	int zero = 0;
	struct nd_fn_notes *n = fn_notes.lookup(&zero);
	if (!n)
		return;
	u64 j = bpf_jiffies64();
	/* The common case, one load: no hook noted anything lately (none is
	 * attached, or nothing of interest happened). Walking the notes cost
	 * ~80 ns per event (measured with every drop an event). */
	if (j - n->newest > ND_FN_WINDOW_JIFFIES)
		return;
	u64 skbaddr = (u64)skb;
	u32 last = n->next;
	u32 ports = (u32)e->sport << 16 | e->dport;
#pragma unroll
	for (int i = 1; i <= ND_FN_NOTES; i++) {
		u32 slot = (last - i) & (ND_FN_NOTES - 1);
		u8 cause = n->cause[slot];
		if (!cause || j - n->jiffies[slot] > ND_FN_WINDOW_JIFFIES)
			continue;
		if (n->skb[slot] ? n->skb[slot] != skbaddr
				 : !(e->flags & ND_F_L4) || n->ports[slot] != ports || n->l4proto[slot] != e->l4proto)
			continue;
		if (!e->cause) {
			e->cause = cause;
			/* Table full: the packet has no entry (no ND_F_CT), so ct_status is free for nf_conntrack_max. */
			if (cause == ND_CAUSE_CT_TABLE_FULL && !(e->flags & ND_F_CT))
				e->ct_status = n->value[slot];
		}
		n->cause[slot] = 0;     /* used up: its packet is being freed */
	}
}

static __always_inline void finish_event(struct nd_event *e, struct sk_buff *skb, u64 now, u64 location,
					 u32 reason, u32 pod, u32 facts)
{
	e->ts_ns = now;
	e->location = location;
	e->reason = reason;
	e->pod = pod;
	e->facts = facts;
	e->caplen = 0;
	e->cause = 0;
	/* The ICMP error noted for this skb: by the icmp:icmp_send tracepoint, or
	 * where a kernel lacks it (5.10) by the __icmp_send function hook. */
	int zero = 0;
	struct nd_icmp_notes *n = icmp_notes.lookup(&zero);
	if (!n)
		return;
	u64 skbaddr = (u64)skb;
	u64 j = bpf_jiffies64();
	u32 last = n->next;
	/* Newest first: the last icmp_send() for this skb is the one reported.
	 * Every note for it is used up (its skb is being freed). */
#pragma unroll
	for (int i = 1; i <= ND_ICMP_NOTES; i++) {
		u32 slot = (last - i) & (ND_ICMP_NOTES - 1);
		if (n->skb[slot] != skbaddr)
			continue;
		if (!(e->flags & ND_F_ICMP_SENT) && j - n->jiffies[slot] <= ND_ICMP_WINDOW_JIFFIES) {
			e->flags |= ND_F_ICMP_SENT;
			e->icmp_type = ND_ICMP_DEST_UNREACH;
			e->icmp_code = n->code[slot];
		}
		n->skb[slot] = 0;
	}
	fn_join(e, skb);
}

/* How many bytes of the packet, from its IP header, to copy: at most snaplen,
 * never past the linear data (skb->tail: paged data is not at head + offset),
 * and with headers_only never past the TCP/UDP/ICMP header. */
static __always_inline u32 capture_len(struct sk_buff *skb, struct nd_event *e, unsigned char **from,
				       u32 snaplen, u32 headers_only)
{
	unsigned char *head = NULL;
	u16 nh = 0;
	u32 tail = 0;
	bpf_probe_read_kernel(&head, sizeof(head), &skb->head);
	bpf_probe_read_kernel(&nh, sizeof(nh), &skb->network_header);
	bpf_probe_read_kernel(&tail, sizeof(tail), &skb->tail);
	if (!head || nh == (u16)~0U || tail <= nh || !e->l3proto)
		return 0;
	*from = head + nh;
	u32 want = snaplen;
	if (headers_only) {
		u32 hl = 40;
		if (e->l3proto == ND_ETH_P_IP) {
			u8 b0 = 0;
			bpf_probe_read_kernel(&b0, 1, head + nh);
			hl = (b0 & 0xf) * 4;
		}
		if (!(e->flags & ND_F_FRAGMENT)) {
			if (e->l4proto == ND_PROTO_TCP) {
				u8 doff = 0;
				bpf_probe_read_kernel(&doff, 1, head + nh + hl + 12);
				hl += (doff >> 4) * 4;
			} else if (e->l4proto == ND_PROTO_UDP || e->l4proto == 1 || e->l4proto == 58) {
				hl += 8;   /* UDP, ICMP, ICMPv6 headers */
			}
		}
		if (hl < want)
			want = hl;
	}
	if (tail - nh < want)
		want = tail - nh;
	if (e->len && e->len < want)
		want = e->len;
	return want;
}

/* Wake the reader on one event in ND_WAKEUP_EVERY of each CPU (the first among
 * them). By default bpf_ringbuf_submit() notifies whenever the reader has caught
 * up, which under an every-event storm is nearly every event: an irq_work and a
 * task wakeup per drop (kernel/bpf/ringbuf.c, bpf_ringbuf_commit), measured at
 * 2.9 us per kfree_skb run instead of 0.6 us, and a reader woken for one event
 * at a time. What is not announced the reader takes by its poll timeout
 * (loader.poll_records consumes after a poll that found nothing). */
#define ND_WAKEUP_EVERY 64
static __always_inline u64 wakeup_flags(struct nd_cpu_state *st)
{
	return (st->events & (ND_WAKEUP_EVERY - 1)) == 0 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

static __always_inline void send_with_packet(void *ctx, struct nd_filter_cfg *cfg, struct nd_cpu_state *st,
					     struct sk_buff *skb, struct net_device *dev, u16 proto,
					     struct nd_event *scr, struct nd_route route, u32 netns, u64 now,
					     u64 location, u32 reason, u32 pod, u32 facts)
{
	int zero = 0;
	struct nd_pkt *pk = pktbuf.lookup(&zero);
	if (!pk)
		return;
	fill_event(&pk->ev, skb, dev, proto, scr, route, netns);
	finish_event(&pk->ev, skb, now, location, reason, pod, facts);
	unsigned char *from = NULL;
	/* capture_len() is at most snaplen, which the loader keeps <= ND_MAX_SNAPLEN. */
	u32 n = capture_len(skb, &pk->ev, &from, cfg->snaplen, cfg->headers_only);
	asm volatile("" : "+r"(n));   /* keep the compiler from dropping the mask below */
	n &= ND_PKT_MASK;
	if (n && from && bpf_probe_read_kernel(pk->data, n, from) == 0)
		pk->ev.caplen = n;
	pk->ev.stack_id = stack_id(ctx, location, now);
	if (events.ringbuf_output(pk, sizeof(pk->ev) + (pk->ev.caplen & ND_PKT_MASK), wakeup_flags(st)))
		st->lost++;
	else
		st->events++;
}

/* The kfree_skb program's work, whichever way it is attached: sh and netns
 * are what the entry point read of the skb (skb_head(), netns_of(), or their
 * BTF forms). */
static __always_inline int on_drop(void *ctx, struct sk_buff *skb, u64 location, u32 reason, u16 proto,
				   struct nd_skb_head sh, u32 netns)
{
	struct net_device *dev = sh.dev;
	int zero = 0;
	struct nd_filter_cfg *cfg = filter_cfg.lookup(&zero);
	struct nd_cpu_state *st = cpu_state.lookup(&zero);
	if (!cfg || !st)
		return 0;
	/* Filled only when pod tagging or a filter needs the packet (fill_keys). */
	struct nd_event *scr = NULL;
	struct nd_route route = {};
	u32 pod = 0;
	if (!drop_passes(cfg, skb, dev, proto, netns, &scr, &route, &pod, 1))
		return 0;

	u32 facts = packet_facts(proto, &sh, sock_family(proto, &sh), reason);
	if (!count(netns, reason, location, pod, facts, sh.len))
		st->counter_full++;

	/* The exact count is done. An event costs many more reads, so in a
	 * storm only the first events_per_window of each window are sent. Once
	 * a window's budget is spent, the clock is read only every 64th drop:
	 * a storm pays for a counter and a mask, not for bpf_ktime_get_ns(). */
	u32 budget = cfg->events_per_window;
	if (budget && st->window_events >= budget) {
		if ((st->sampled_out & ND_WINDOW_CHECK_MASK) != ND_WINDOW_CHECK_MASK ||
		    bpf_ktime_get_ns() - st->window_start_ns < ND_EVENT_WINDOW_NS) {
			st->sampled_out++;
			return 0;
		}
		st->window_events = 0;
	}
	u64 now = bpf_ktime_get_ns();
	if (budget) {
		if (now - st->window_start_ns >= ND_EVENT_WINDOW_NS) {
			st->window_start_ns = now;
			st->window_events = 0;
		}
		st->window_events++;
	}
	if (cfg->snaplen) {
		send_with_packet(ctx, cfg, st, skb, dev, proto, scr, route, netns, now, location, reason, pod, facts);
		return 0;
	}
	/* Ring full: count the loss without paying for the packet reads. */
	struct nd_event *e = events.ringbuf_reserve(sizeof(struct nd_event));
	if (!e) {
		st->lost++;
		return 0;
	}
	fill_event(e, skb, dev, proto, scr, route, netns);
	finish_event(e, skb, now, location, reason, pod, facts);
	e->stack_id = stack_id(ctx, location, now);
	events.ringbuf_submit(e, wakeup_flags(st));
	st->events++;
	return 0;
}

/* The drop reason of the tracepoint's argument; 0 on a kernel whose kfree_skb
 * has none (< 5.17), where the argument is not there to read (the macro drops
 * its text). */
#if ND_HAVE_REASON
#define ND_REASON(arg) ((u32)(arg))
#else
#define ND_REASON(arg) 0U
#endif

#if ND_TP_BTF
/* The BTF-typed tracepoint (tp_btf, BPF_TRACE_RAW_TP with the kernel's
 * btf_trace_kfree_skb type; the loader loads and attaches these two programs
 * itself: bcc compiles them but has no tp_btf attach). Its arguments are the
 * tracepoint's TP_PROTO (include/trace/events/skb.h: skb, location, reason,
 * rx_sk) as typed pointers, so the verifier lets the program follow
 * skb->dev->nd_net.net->ns.inum with plain loads (PROBE_MEM: a fault reads 0)
 * instead of a bpf_probe_read_kernel() call (~30 ns) per step; and the kernel
 * calls it directly (__bpf_trace_kfree_skb), without filling the classic
 * tracepoint's perf record first. Only pointers the kernel types as struct
 * pointers can be followed so: what hides behind an integer (skb->head,
 * _skb_refdst, _nfct) is still read with bpf_probe_read_kernel(). */
static __always_inline struct nd_skb_head skb_head_btf(struct sk_buff *skb)
{
	struct nd_skb_head h = {.dev = skb->dev, .len = skb->len, .pkt_type = skb->pkt_type,
				.refdst = skb->_skb_refdst, .sk = skb->sk};
	u16 nh = skb->network_header;
	unsigned long head = (unsigned long)skb->head, data = (unsigned long)skb->data;
	/* As skb_head(): the bytes from the IP header to the end of the data. */
	if (head && nh != (u16)~0U) {
		unsigned long l3 = head + nh, end = data + h.len;
		h.len = end > l3 ? (u32)(end - l3) : 0;
		h.l3 = (unsigned char *)l3;
	}
	return h;
}

static __always_inline u32 netns_of_btf(struct sk_buff *skb, struct net_device *dev)
{
	struct net *net = NULL;
	if (dev) {
		net = dev->nd_net.net;
	} else {
		struct sock *sk = skb->sk;
		if (sk)
			net = sk->__sk_common.skc_net.net;
	}
	return net ? net->ns.inum : 0;
}

int nd_kfree_skb(unsigned long long *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	if (!skb)
		return 0;
	u32 reason = ND_REASON(ctx[2]);
	if (ND_HAVE_REASON && reason == ND_REASON_CONSUMED)
		return 0;
	struct nd_skb_head sh = skb_head_btf(skb);
	return on_drop(ctx, skb, ctx[1], reason, ND_NTOHS(skb->protocol), sh, netns_of_btf(skb, sh.dev));
}
#else
TRACEPOINT_PROBE(skb, kfree_skb)
{
	struct sk_buff *skb = (struct sk_buff *)args->skbaddr;
	u32 reason = ND_REASON(args->reason);
	if (ND_HAVE_REASON && reason == ND_REASON_CONSUMED)
		return 0;
	struct nd_skb_head sh = skb_head(skb);
	/* The record's protocol is in host order already: ntohs(skb->protocol) in
	 * TP_fast_assign (include/trace/events/skb.h). */
	return on_drop(args, skb, (u64)args->location, reason, args->protocol, sh, netns_of(skb, sh.dev));
}
#endif

/* icmp_send() (net/ipv4/icmp.c) runs just before the offending skb is
 * dropped: "fragmentation needed" (3/4) is the MTU evidence, "port
 * unreachable" (3/3) the no-listener evidence, on kernels without reasons too.
 * This runs for every ICMP error the node sends, so it only leaves a note for
 * finish_event(). Only "destination unreachable" is noted: every code of it
 * is evidence (net/host unreachable, or whatever a REJECT rule answers with),
 * no other type is used (tracer/explain/classify.py). Checked first because it is free (the
 * tracepoint record). The namespace filter is not checked here: it takes
 * three kernel reads, more than the note costs; the event rate limit is not
 * either: it cannot know what the kfree_skb program will decide. */
static __always_inline void on_icmp_send(u64 skbaddr, int type, int code)
{
	if (type != ND_ICMP_DEST_UNREACH)
		return;
	int zero = 0;
	struct nd_icmp_notes *n = icmp_notes.lookup(&zero);
	if (!n)
		return;
	u32 slot = n->next++ & (ND_ICMP_NOTES - 1);
	n->skb[slot] = skbaddr;
	n->jiffies[slot] = bpf_jiffies64();
	n->code[slot] = code;
}

#if ND_HAVE_ICMP_TP
#if ND_TP_BTF
/* tp_btf form (see nd_kfree_skb): TP_PROTO(skb, type, code), include/trace/events/icmp.h. */
int nd_icmp_send(unsigned long long *ctx)
{
	on_icmp_send(ctx[0], (int)ctx[1], (int)ctx[2]);
	return 0;
}
#else
TRACEPOINT_PROBE(icmp, icmp_send)
{
	on_icmp_send((u64)args->skbaddr, args->type, args->code);
	return 0;
}
#endif
#endif
