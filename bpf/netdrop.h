/* SPDX-License-Identifier: GPL-2.0 */
/*
 * netdrop: the records the BPF side shares with Python.
 *
 * tracer/kernel/event.py mirrors these structs field by field (ctypes) and
 * tests/unit/kernel/test_event_layout.py checks that both agree, so change them
 * together. Fields are ordered by size so that neither side needs padding
 * rules to agree. Every value here is raw kernel data ("_raw" on the Python
 * side): reason numbers, kernel addresses, network-byte-order addresses.
 */
#ifndef NETDROP_H
#define NETDROP_H

#define ND_IFNAMSIZ 16

/* nd_event.flags */
#define ND_F_DF         0x01 /* IPv4 "don't fragment" was set */
#define ND_F_ICMP_SENT  0x02 /* icmp_send() fired for this skb just before the drop */
#define ND_F_HAS_ROUTE  0x04 /* the skb carried a route (dst): out_* fields are valid */
#define ND_F_L4         0x08 /* sport/dport were read from a TCP/UDP header */
#define ND_F_FRAGMENT   0x10 /* IPv4 non-first fragment: no L4 header */
#define ND_F_CT         0x20 /* the skb had a conntrack entry: ct_status and ctinfo are valid */
#define ND_F_NFCT_READ  0x40 /* skb->_nfct was read (kernel with conntrack) */

/* filter_cfg.flags: which filter maps are in force (all must match) */
#define ND_FILTER_NETNS   0x01
#define ND_FILTER_IP      0x04
#define ND_FILTER_PORT    0x08
/* Set by the loader once the filters and pod maps are written: bcc attaches
 * the programs as it loads them, and until then they must neither count nor
 * report, or every drop of the machine would pass for that moment. */
#define ND_FILTER_READY   0x80

/* nd_event.pod and nd_count_key.pod: pod id << 2 | direction, 0 = no pod */
#define ND_DIR_IN_POD   1 /* dropped inside the pod's namespace */
#define ND_DIR_FROM_POD 2 /* in the node's namespace: sent by the pod */
#define ND_DIR_TO_POD   3 /* in the node's namespace: on its way to the pod */
#define ND_DIR_MASK     3

/* nd_filter_cfg.pod_flags */
#define ND_POD_TAG    0x01 /* look drops up in the pod maps and tag them */
#define ND_POD_FILTER 0x02 /* and keep only drops of selected pods */

/* nd_event.facts and nd_count_key.facts: what the kernel had decided about
 * the packet's destination when it was dropped (tracer/kernel/pktfacts.py
 * reads them; tracer/explain/benign.py decides by them). */
#define ND_PF_KNOWN      0x80 /* the facts were read (0: none, e.g. a function hook's record) */
#define ND_PF_TYPE_MASK  0x07 /* skb->pkt_type (include/uapi/linux/if_packet.h PACKET_*) */
#define ND_PF_DST_SHIFT  3
#define ND_PF_DST_MASK   0x38 /* ND_DST_* << ND_PF_DST_SHIFT */
#define ND_DST_UNREAD    0    /* not classified: only link-layer group frames (and their loopback) are */
#define ND_DST_LOCAL     1    /* IPv4 route RTCF_LOCAL only: an address of this namespace */
#define ND_DST_BROADCAST 2    /* IPv4 route RTCF_BROADCAST */
#define ND_DST_MULTICAST 3    /* IPv4 route RTCF_MULTICAST; IPv6 destination ff00::/8 */
#define ND_DST_UNICAST   4    /* IPv4 route neither local nor broadcast/multicast; IPv6 not ff00::/8 */
#define ND_DST_NOT_IP    5    /* not an IP packet: another ethertype, or queued on a non-inet socket */

/* Events are sampled in windows of this length (per CPU), see nd_filter_cfg. */
#define ND_EVENT_WINDOW_NS 100000000

struct nd_event {
	u64 ts_ns;          /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	u64 location;       /* kfree_skb location: return address in the dropping function */
	u32 reason;         /* enum skb_drop_reason; 0 if the kernel has none (< 5.17) */
	u32 netns;          /* inode of the network namespace the skb was in */
	u32 ifindex;        /* skb->dev: the device the skb was on when dropped */
	u32 dev_mtu;        /* skb->dev->mtu */
	u32 out_ifindex;    /* the route's device (skb_dst(skb)->dev) */
	u32 mtu;            /* MTU of the route: RTAX_MTU metric, else out device MTU */
	u32 len;            /* IP packet length from its header; skb->len if none */
	u32 pod;            /* pod id << 2 | ND_DIR_*, 0 if no pod (see pod maps) */
	u16 l3proto;        /* ETH_P_IP / ETH_P_IPV6 in host order, 0 if unknown */
	u16 sport;          /* host order */
	u16 dport;          /* host order */
	u8 l4proto;         /* IPPROTO_* */
	u8 flags;           /* ND_F_* */
	u8 icmp_type;       /* last icmp_send() type for this skb (valid with ND_F_ICMP_SENT) */
	u8 icmp_code;
	u16 caplen;         /* bytes of the packet (from its IP header) that follow this record */
	u32 ct_status;      /* the conntrack entry's status bits (IPS_*), with ND_F_CT; with
	                     * cause ND_CAUSE_CT_TABLE_FULL (no entry): nf_conntrack_max, 0 if unknown */
	u8 ctinfo;          /* enum ip_conntrack_info: skb->_nfct & 7 (NEW, ESTABLISHED, ..., UNTRACKED) */
	u8 tcp_flags;       /* TCP header flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10 ...) */
	u8 cause;           /* ND_CAUSE_*: what a function hook saw of this packet, 0 if none; the
	                     * codes come from tracer/kernel/registry.py as -D flags */
	u8 facts;           /* ND_PF_*: the packet's destination as the kernel classified it */
	u8 saddr[16];       /* IPv4 in the first 4 bytes, network order */
	u8 daddr[16];
	char ifname[ND_IFNAMSIZ];
	char out_ifname[ND_IFNAMSIZ];
	s32 stack_id;       /* the kernel stack in the stacks map (bpf/netdrop.c); < 0: none (not asked
	                     * for, or the kernel's error: -EFAULT no stack, -ENOMEM/-EEXIST map trouble) */
};

/* The kernel stacks of events: frames kept per stack (the innermost ones) and
 * stacks the map holds. A stack id is the stack's hash modulo the entries; a
 * stack whose hash lands on a slot another holds replaces it (BPF_F_REUSE_STACKID):
 * the reader checks each stack against its event (tracer/kernel/stacks.py). */
#define ND_STACK_DEPTH 40
#define ND_STACK_ENTRIES 1024

/* Key of the exact per-group drop counters. */
struct nd_count_key {
	u64 location;
	u32 netns;
	u32 reason;
	u32 pod;            /* as nd_event.pod: counts are exact per pod and direction */
	u32 facts;          /* as nd_event.facts: a group no event reached is judged by them too */
};

/* Value of the exact per-group counters (per CPU: plain adds, summed by the
 * reader). bytes adds each packet's length as nd_event.len gives it: the IP
 * length from its header, else skb->len. */
struct nd_count_val {
	u64 packets;
	u64 bytes;
};

/* A slot of count_slots (bpf/netdrop.c, count()): per CPU, the first key to
 * land on a free slot holds its counts there for good, as nd_count_val does
 * in the counts map. packets comes first and is written last when a key takes
 * the slot: a reader that sees packets > 0 reads a whole key after it (and
 * the loader reads twice, keeping a slot only if its key did not change). */
struct nd_count_slot {
	u64 packets;        /* 0: the slot is free */
	u64 bytes;
	u64 location;
	u32 netns;
	u32 reason;
	u32 pod;
	u32 facts;
};

/* Slots of count_slots per CPU (a power of two). */
#define ND_COUNT_SLOTS 256

/* Value of the pod maps (pod_netns, pod_veth, pod_ip). */
struct nd_pod_val {
	u32 tag;            /* pod id << 2 */
	u32 selected;       /* 1 if the pod is one the user asked for */
};

/* Keys of pod_veth (an interface of a namespace) and of the address maps. */
struct nd_if_key {
	u32 netns;
	u32 ifindex;
};

struct nd_ip_key {
	u8 addr[16];        /* IPv4 as ::ffff:a.b.c.d */
};

/* Most packet bytes an event can carry (--snaplen). */
#define ND_MAX_SNAPLEN 2048

/* Up to this many namespaces are compared inline (no hash lookup per drop). */
#define ND_NETNS_INLINE 4

struct nd_filter_cfg {
	u32 flags;             /* ND_FILTER_* */
	u32 events_per_window; /* per CPU per ND_EVENT_WINDOW_NS; 0 = no limit */
	u32 netns_inline_n;    /* >0: the netns filter is netns_inline[0..n), else filter_netns */
	u32 netns_inline[ND_NETNS_INLINE];
	u32 pod_flags;         /* ND_POD_* */
	u32 node_netns;        /* the node's namespace: drops there are matched by veth and IP */
	u32 snaplen;           /* >0: each event carries up to this many packet bytes (capture --pcap) */
	u32 headers_only;      /* and none past the TCP/UDP/ICMP header: no payload */
	u32 pod_gen;           /* bumped by the loader after each change of the pod maps (pod_memo) */
};

/* What pod_netns said of a namespace, remembered per CPU (bpf/filters.h,
 * pod_of_netns()) while nd_filter_cfg.pod_gen stays the same. */
struct nd_pod_memo {
	u32 netns;
	u32 gen;               /* the pod_gen it was read under; 0: empty (pod_gen starts at 1) */
	u32 found;             /* 0: not a pod's namespace */
	u32 tag;
	u32 selected;
};

/* Entries of pod_memo per CPU (a power of two). */
#define ND_POD_MEMO 64

/* Per-CPU bookkeeping: one map lookup per drop serves all of it. Every drop
 * that passes the filters ends in exactly one of events, lost, sampled_out. */
struct nd_cpu_state {
	u64 events;          /* events handed to the ring buffer */
	u64 lost;            /* events the ring buffer had no room for */
	u64 sampled_out;     /* events not sent: over the event rate limit */
	u64 counter_full;    /* drops not counted per key: counter map full */
	u64 window_start_ns; /* start of this CPU's current sampling window */
	u64 window_events;   /* events sent in it, then drops past its budget */
};

#endif /* NETDROP_H */
