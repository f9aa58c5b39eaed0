/* SPDX-License-Identifier: GPL-2.0 */
/*
 * netdrop: reading the packet and its route out of the sk_buff: the
 * namespace, the addresses and ports, the route's device and MTU, the
 * conntrack state, and the span read that serves the counting path
 * (skb_head(), packet_facts()). Each bpf_probe_read_kernel() costs ~30 ns:
 * what only events carry is read apart from what counting needs.
 */
#include "common.h"
#ifndef ND_PACKET_H
#define ND_PACKET_H

#define ND_ETH_P_IPV6 0x86DD
#define ND_IP_DF      0x4000
#define ND_PROTO_UDP  17
#define ND_IFF_LOOPBACK 0x8 /* include/uapi/linux/if.h */
/* skb->_skb_refdst: low bit is SKB_DST_NOREF (include/linux/skbuff.h) */
#define ND_SKB_DST_PTRMASK (~1UL)
/* dst->_metrics: low bits are DST_METRICS_* flags (include/net/dst.h) */
#define ND_DST_METRICS_PTRMASK (~3UL)
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

#endif /* ND_PACKET_H */
