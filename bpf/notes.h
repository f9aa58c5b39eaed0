/* SPDX-License-Identifier: GPL-2.0 */
/*
 * netdrop: notes a hook leaves for the kfree_skb event of the same packet,
 * per CPU: the ICMP error icmp_send() answered it with, and what a function
 * hook (funchooks.c) saw of it (nd_event.cause). Writing a note is a few
 * stores; the event path joins them (icmp_join(), fn_join()); counts never
 * depend on them.
 *
 * A note is keyed by the skb's address, and the address outlives the skb:
 * the slab allocator hands a freed object to the next allocation on the same
 * CPU (its per-CPU freelist is LIFO, mm/slub.c), so the next packet made on
 * that CPU usually sits where the dropped one did. Every kfree_skb run uses
 * up the notes of its skb, the ones that send no event too (filtered out, over
 * the rate limit, ring full: notes_forget()). The notes live in the per-CPU
 * value the kfree_skb program looks up for every drop anyway (struct nd_cpu),
 * so forgetting costs no map lookup.
 */
#include "common.h"
#ifndef ND_NOTES_H
#define ND_NOTES_H

/* An icmp_send() for the same skb counts only if it was in the same jiffy
 * as the drop or the one before (1-2 ms at HZ=1000, 4-8 ms at HZ=250). */
#define ND_ICMP_WINDOW_JIFFIES 1
#define ND_ICMP_DEST_UNREACH 3 /* include/uapi/linux/icmp.h */
/* Notes kept per CPU (a power of two), see struct nd_icmp_notes. */
#define ND_ICMP_NOTES 4

/* The last ND_ICMP_NOTES icmp_send() calls of this CPU, a ring written at
 * next++. Per CPU because every caller frees the skb on the CPU that sent the
 * error, right after icmp_send() returns: __udp4_lib_rcv() (port
 * unreachable), ip_forward() and ip_fragment() (fragmentation needed),
 * ip_error() (net/host unreachable), nf_hook_slow() after a REJECT target.
 * More than one note because __icmp_send() ends with local_bh_enable(): when
 * it was called from process context, softirqs can run there and send errors
 * of their own before the caller frees its skb. A per-CPU array slot costs a
 * few stores, where a shared LRU hash cost ~300 ns per ICMP error (bucket
 * lock, eviction of a never-read entry under a storm). */
struct nd_icmp_notes {
	u64 skb[ND_ICMP_NOTES];
	u64 jiffies[ND_ICMP_NOTES]; /* bpf_jiffies64(): a load, ktime would be ~100 ns */
	u8 code[ND_ICMP_NOTES];
	u32 next;
	u32 live;   /* bit per slot holding a note not used up: none, and a drop need not look */
};

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
	u32 live;                /* bit per slot of a note with an skb not used up */
	u64 newest;              /* jiffies of the newest note: older than the window, none can match */
};

/* The kfree_skb program's per-CPU value (cpu_state): its bookkeeping, which
 * the reader sums (Tracer.cpu_totals()), and the notes for its events. */
struct nd_cpu {
	struct nd_cpu_state st;
	struct nd_icmp_notes icmp;
	struct nd_fn_notes fn;
};
BPF_PERCPU_ARRAY(cpu_state, struct nd_cpu, 1);

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
	struct nd_cpu *c = cpu_state.lookup(&zero);
	if (!c)
		return;
	struct nd_icmp_notes *n = &c->icmp;
	u32 slot = n->next++ & (ND_ICMP_NOTES - 1);
	n->live |= 1U << slot;
	n->skb[slot] = skbaddr;
	n->jiffies[slot] = bpf_jiffies64();
	n->code[slot] = code;
}

static __always_inline void fn_note(u64 skb, u8 cause, u32 value, u32 ports, u8 l4proto)
{
	int zero = 0;
	struct nd_cpu *c = cpu_state.lookup(&zero);
	if (!c)
		return;
	struct nd_fn_notes *n = &c->fn;
	u32 slot = n->next++ & (ND_FN_NOTES - 1);
	if (skb)
		n->live |= 1U << slot;
	else
		n->live &= ~(1U << slot);
	n->skb[slot] = skb;
	n->jiffies[slot] = n->newest = bpf_jiffies64();
	n->value[slot] = value;
	n->ports[slot] = ports;
	n->cause[slot] = cause;
	n->l4proto[slot] = l4proto;
}

/* The ICMP error noted for this skb: by the icmp:icmp_send tracepoint, or
 * where a kernel lacks it (5.10) by the __icmp_send function hook. */
static __always_inline void icmp_join(struct nd_icmp_notes *n, struct nd_event *e, struct sk_buff *skb)
{
	if (!n->live)
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
		n->live &= ~(1U << slot);
	}
}

/* What a function hook noted of this packet (bpf/funchooks.c): by its skb, or
 * for the conntrack allocation failure by its ports and protocol. Only the
 * event path pays for this: counts never depend on it. */
static __always_inline void fn_join(struct nd_fn_notes *n, struct nd_event *e, struct sk_buff *skb)
{
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
		/* Too big is a fact of the packet too: a note at this address that the
		 * packet contradicts (no DF, or within the MTU noted) was another's, one
		 * the hook saw forwarded after all (GSO segments that fit) and freed as
		 * consumed, which no kfree_skb run used up. */
		if (cause == ND_CAUSE_FWD_TOO_BIG && (!(e->flags & ND_F_DF) || e->len <= n->value[slot]))
			cause = 0;
		if (cause && !e->cause) {
			e->cause = cause;
			/* Table full: the packet has no entry (no ND_F_CT), so ct_status is free for nf_conntrack_max. */
			if (cause == ND_CAUSE_CT_TABLE_FULL && !(e->flags & ND_F_CT))
				e->ct_status = n->value[slot];
		}
		n->cause[slot] = 0;     /* used up: its packet is being freed */
		n->live &= ~(1U << slot);
	}
}

/* A drop that sends no event: its skb's notes are used up unread (see the
 * top of this file). One load each when there are none, which is the common
 * case but for the ICMP note of a drop icmp_send() answered (a closed port:
 * then four compares). A note of the conntrack allocation failure (skb 0,
 * matched by its flow) is left to its window: the failure passed the same
 * filters, and what follows within it is that flow's drop. */
static __always_inline void notes_forget(struct nd_cpu *c, struct sk_buff *skb)
{
	u64 skbaddr = (u64)skb;
	u32 live = c->icmp.live;
	if (live) {
		/* Its note, if any, is nearly always the newest: the others are walked only if some remain. */
		u32 newest = (c->icmp.next - 1) & (ND_ICMP_NOTES - 1);
		if (c->icmp.skb[newest] == skbaddr) {
			c->icmp.skb[newest] = 0;
			live &= ~(1U << newest);
		}
		if (live) {
#pragma unroll
			for (int i = 0; i < ND_ICMP_NOTES; i++) {
				if (c->icmp.skb[i] == skbaddr) {
					c->icmp.skb[i] = 0;
					live &= ~(1U << i);
				}
			}
		}
		c->icmp.live = live;
	}
	if (c->fn.live) {
#pragma unroll
		for (int i = 0; i < ND_FN_NOTES; i++) {
			if (c->fn.skb[i] == skbaddr) {
				c->fn.cause[i] = 0;
				c->fn.live &= ~(1U << i);
			}
		}
	}
}

#endif /* ND_NOTES_H */
