// SPDX-License-Identifier: GPL-2.0
/*
 * netdrop: the kfree_skb and icmp_send programs. Compiled by bcc at run time
 * (tracer/kernel/bccload.py, with bpf/funchooks.c: tracer/kernel/bpfsource.py).
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
 * ND_RINGBUF_PAGES, ND_MAX_COUNTERS, ND_MAX_FILTER, ND_PAGE_SIZE, ND_CAUSE_* (the
 * function hooks' causes, tracer/kernel/registry.py); for bpf/funchooks.c
 * ND_CT_MAX_ADDR, ND_MAX_CAUSE_COUNTERS.
 *
 * The headers: common.h (kernel types, netdrop.h), maps.h (the maps the
 * function hooks share), packet.h (reading the sk_buff), filters.h (filters
 * and pod tags), notes.h (what icmp_send and the function hooks leave for
 * the event of the same packet).
 */
#include "common.h"
#include "maps.h"
#include "packet.h"
#include "filters.h"
#include "notes.h"

/* With the event budget spent, look at the clock every 64th drop (and sooner at first). */
#define ND_WINDOW_CHECK_MASK 63

BPF_PERCPU_HASH(counts, struct nd_count_key, struct nd_count_val, ND_MAX_COUNTERS);
BPF_RINGBUF_OUTPUT(events, ND_RINGBUF_PAGES);

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

static __always_inline void finish_event(struct nd_cpu *c, struct nd_event *e, struct sk_buff *skb, u64 now,
					 u64 location, u32 reason, u32 pod, u32 facts)
{
	e->ts_ns = now;
	e->location = location;
	e->reason = reason;
	e->pod = pod;
	e->facts = facts;
	e->caplen = 0;
	e->cause = 0;
	icmp_join(&c->icmp, e, skb);
	fn_join(&c->fn, e, skb);
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

static __always_inline void send_with_packet(void *ctx, struct nd_filter_cfg *cfg, struct nd_cpu *c,
					     struct sk_buff *skb, struct net_device *dev, u16 proto,
					     struct nd_event *scr, struct nd_route route, u32 netns, u64 now,
					     u64 location, u32 reason, u32 pod, u32 facts)
{
	int zero = 0;
	struct nd_pkt *pk = pktbuf.lookup(&zero);
	if (!pk) {
		notes_forget(c, skb);
		return;
	}
	fill_event(&pk->ev, skb, dev, proto, scr, route, netns);
	finish_event(c, &pk->ev, skb, now, location, reason, pod, facts);
	unsigned char *from = NULL;
	/* capture_len() is at most snaplen, which the loader keeps <= ND_MAX_SNAPLEN. */
	u32 n = capture_len(skb, &pk->ev, &from, cfg->snaplen, cfg->headers_only);
	asm volatile("" : "+r"(n));   /* keep the compiler from dropping the mask below */
	n &= ND_PKT_MASK;
	if (n && from && bpf_probe_read_kernel(pk->data, n, from) == 0)
		pk->ev.caplen = n;
	pk->ev.stack_id = stack_id(ctx, location, now);
	if (events.ringbuf_output(pk, sizeof(pk->ev) + (pk->ev.caplen & ND_PKT_MASK), wakeup_flags(&c->st)))
		c->st.lost++;
	else
		c->st.events++;
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
	struct nd_cpu *c = cpu_state.lookup(&zero);
	if (!cfg || !c)
		return 0;
	struct nd_cpu_state *st = &c->st;
	/* Filled only when pod tagging or a filter needs the packet (fill_keys). */
	struct nd_event *scr = NULL;
	struct nd_route route = {};
	u32 pod = 0;
	if (!drop_passes(cfg, skb, dev, proto, netns, &scr, &route, &pod, 1)) {
		notes_forget(c, skb);   /* whatever was noted of it, its address is the next skb's */
		return 0;
	}

	u32 facts = packet_facts(proto, &sh, sock_family(proto, &sh), reason);
	if (!count(netns, reason, location, pod, facts, sh.len))
		st->counter_full++;

	/* The exact count is done. An event costs many more reads, so in a
	 * storm only the first events_per_window of each window are sent. Past
	 * the budget, window_events goes on counting the drops, and the clock is
	 * read at the 1st, 2nd, 4th, ... 64th of them, then every 64th: a storm
	 * pays for a counter and a mask, not for bpf_ktime_get_ns(), and a quiet
	 * CPU's next drop, however late, still opens a new window (with a mask
	 * alone the 63 drops after a spent budget were never sent, minutes apart
	 * or not). */
	u32 budget = cfg->events_per_window;
	if (budget && st->window_events >= budget) {
		u64 past = st->window_events++ - budget;
		if (((past & (past - 1)) && (past & ND_WINDOW_CHECK_MASK) != ND_WINDOW_CHECK_MASK) ||
		    bpf_ktime_get_ns() - st->window_start_ns < ND_EVENT_WINDOW_NS) {
			st->sampled_out++;
			notes_forget(c, skb);
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
		send_with_packet(ctx, cfg, c, skb, dev, proto, scr, route, netns, now, location, reason, pod, facts);
		return 0;
	}
	/* Ring full: count the loss without paying for the packet reads. */
	struct nd_event *e = events.ringbuf_reserve(sizeof(struct nd_event));
	if (!e) {
		st->lost++;
		notes_forget(c, skb);
		return 0;
	}
	fill_event(e, skb, dev, proto, scr, route, netns);
	finish_event(c, e, skb, now, location, reason, pod, facts);
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
