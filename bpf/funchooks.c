// SPDX-License-Identifier: GPL-2.0
/*
 * netdrop: function hooks. Compiled with netdrop.c as one program (its maps
 * and helpers come from the headers both include: tracer/kernel/bpfsource.py);
 * each hook is an entry of tracer/kernel/registry.py, attached by
 * tracer/kernel/hooks.py only where the kernel allows function hooks, never
 * automatically:
 *
 *   __nf_conntrack_confirm() returning NF_DROP   an insert race lost: the
 *       packet's entry clashed with one another CPU inserted first and
 *       nf_ct_resolve_clash() could not keep it (net/netfilter/nf_conntrack_core.c);
 *       nf_hook_slow() then frees the skb as NETFILTER_DROP.
 *   __nf_conntrack_alloc() returning ERR_PTR(-ENOMEM)   the table is full:
 *       the count passed nf_conntrack_max and early_drop() found nothing to
 *       evict ("nf_conntrack: table full, dropping packet"); nf_conntrack_in()
 *       counts it as the `drop` statistic and returns NF_DROP.
 *   ip_forward() entry, for kernels whose kfree_skb has no reason (< 5.17):
 *       a DF packet longer than its route's MTU (ip_exceeds_mtu(),
 *       net/ipv4/ip_forward.c) is the MTU drop that follows.
 *   __icmp_send() entry, for kernels without the icmp:icmp_send tracepoint
 *       (5.10 has none): the ICMP error the drop that follows answered with.
 *
 * Each leaves a per-CPU note that the kfree_skb program joins to its event of
 * the same packet (finish_event(): by skb, or for the allocation failure, which
 * sees no skb, by the flow's ports and protocol within the same jiffy), so the
 * event carries the cause (nd_event.cause). The two conntrack causes are also
 * counted here, exactly, per namespace and pod (cause_counts), as drops are.
 *
 * Two forms of each program share one body: kprobe/kretprobe (nd_*: pt_regs,
 * an entry probe keeping the arguments for the return probe) and fentry/fexit
 * (nd_*_fexit, nd_*_fentry), which see arguments and return value at once;
 * tracer/kernel/hooks.py chooses per hook, the BTF form first.
 */
#include "common.h"
#include "maps.h"
#include "packet.h"
#include "filters.h"
#include "notes.h"
#ifdef ND_KERNEL_HEADERS
#include <net/netfilter/nf_conntrack.h>
#include <net/netfilter/nf_conntrack_tuple.h>
#endif

#define ND_NF_DROP 0            /* include/uapi/linux/netfilter.h */
#define ND_MAX_ERRNO 4095       /* include/linux/err.h: IS_ERR_VALUE() */
/* Depth of the entry -> return argument stacks, per CPU (a power of two):
 * a softirq may run the same function over a process-context call. */
#define ND_FN_STACK 4

/* Exact counts of the conntrack causes: nd_count_key with location = ND_CAUSE_*
 * and reason 0; bytes as the drop counters count them. */
BPF_PERCPU_HASH(cause_counts, struct nd_count_key, struct nd_count_val, ND_MAX_CAUSE_COUNTERS);

/* Arguments kept from entry to return (kprobe form only). */
struct nd_fn_stack {
	u64 a[ND_FN_STACK];
	u64 b[ND_FN_STACK];
	u32 depth;
};
BPF_PERCPU_ARRAY(confirm_args, struct nd_fn_stack, 1);
BPF_PERCPU_ARRAY(alloc_args, struct nd_fn_stack, 1);

static __always_inline void count_cause(u32 netns, u8 cause, u32 pod, u32 len)
{
	struct nd_count_key key = {.location = cause, .netns = netns, .pod = pod};
	struct nd_count_val *v = cause_counts.lookup(&key);
	if (!v) {
		struct nd_count_val zero = {};
		cause_counts.insert(&key, &zero);   /* fails only when full, or another CPU made it */
		v = cause_counts.lookup(&key);
		if (!v)
			return;
	}
	v->packets++;
	v->bytes += len;
}

static __always_inline void fn_stack_push(struct nd_fn_stack *s, u64 a, u64 b)
{
	u32 d = s->depth & (ND_FN_STACK - 1);
	s->a[d] = a;
	s->b[d] = b;
	s->depth++;
}

/* Returns 0 when nothing was pushed (a return probe whose entry was missed). */
static __always_inline int fn_stack_pop(struct nd_fn_stack *s, u64 *a, u64 *b)
{
	if (!s->depth)
		return 0;
	s->depth--;
	u32 d = s->depth & (ND_FN_STACK - 1);
	*a = s->a[d];
	*b = s->b[d];
	return 1;
}

/* __nf_conntrack_confirm(skb) returned ret. */
static __always_inline int ct_confirm_done(struct sk_buff *skb, int ret)
{
	if (ret != ND_NF_DROP || !skb)
		return 0;
	int zero = 0;
	struct nd_filter_cfg *cfg = filter_cfg.lookup(&zero);
	if (!cfg)
		return 0;
	struct nd_skb_head sh = skb_head(skb);
	u32 netns = netns_of(skb, sh.dev);
	u16 protocol = 0;
	bpf_probe_read_kernel(&protocol, sizeof(protocol), &skb->protocol);
	struct nd_event *scr = NULL;
	struct nd_route route = {};
	u32 pod = 0;
	if (!drop_passes(cfg, skb, sh.dev, ND_NTOHS(protocol), netns, &scr, &route, &pod, 0))
		return 0;
	count_cause(netns, ND_CAUSE_CT_INSERT_FAILED, pod, sh.len);
	fn_note((u64)skb, ND_CAUSE_CT_INSERT_FAILED, 0, 0, 0);
	return 0;
}

/* __nf_conntrack_alloc(net, zone, orig, ...) returned ret: an error pointer
 * is the table full (the only other failure, the slab allocation, is rare
 * enough to share it; the kernel counts both as the `drop` statistic). The
 * packet is not known here: its flow is, from the original tuple. */
static __always_inline int ct_alloc_done(struct net *net, struct nf_conntrack_tuple *orig, unsigned long ret)
{
	if (ret < (unsigned long)-ND_MAX_ERRNO || !orig)
		return 0;
	int zero = 0;
	struct nd_filter_cfg *cfg = filter_cfg.lookup(&zero);
	struct nd_event *e = scratch.lookup(&zero);
	if (!cfg || !e)
		return 0;
	struct nf_conntrack_tuple t = {};
	if (bpf_probe_read_kernel(&t, sizeof(t), orig))
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	u32 netns = net_inum(net);
	e->netns = netns;
	if (t.src.l3num == ND_AF_INET) {
		e->l3proto = ND_ETH_P_IP;
		__builtin_memcpy(e->saddr, &t.src.u3, 4);
		__builtin_memcpy(e->daddr, &t.dst.u3, 4);
	} else if (t.src.l3num == ND_AF_INET6) {
		e->l3proto = ND_ETH_P_IPV6;
		__builtin_memcpy(e->saddr, &t.src.u3, 16);
		__builtin_memcpy(e->daddr, &t.dst.u3, 16);
	}
	e->l4proto = t.dst.protonum;
	if (e->l4proto == ND_PROTO_TCP || e->l4proto == ND_PROTO_UDP) {
		e->sport = ND_NTOHS(t.src.u.all);
		e->dport = ND_NTOHS(t.dst.u.all);
		e->flags |= ND_F_L4;
	}
	struct nd_route route = {};
	u32 pod = 0;
	if (!drop_passes(cfg, NULL, NULL, e->l3proto, netns, &e, &route, &pod, 0))
		return 0;
	u32 max = 0;
#if ND_CT_MAX_ADDR
	/* nf_conntrack_max (net/netfilter/nf_conntrack_core.c), at its kallsyms address. */
	bpf_probe_read_kernel(&max, sizeof(max), (void *)ND_CT_MAX_ADDR);
#endif
	count_cause(netns, ND_CAUSE_CT_TABLE_FULL, pod, 0);
	fn_note(0, ND_CAUSE_CT_TABLE_FULL, max, (u32)e->sport << 16 | e->dport, e->l4proto);
	return 0;
}

/* ip_forward(skb): the route is set (ip_route_input), the IP header is at
 * skb->network_header. A DF packet longer than the route's MTU is dropped
 * below unless GSO segments fit (not read here: the note is only evidence
 * for the event that follows, never a count). */
static __always_inline int fwd_entry(struct sk_buff *skb)
{
	int zero = 0;
	struct nd_filter_cfg *cfg = filter_cfg.lookup(&zero);
	struct nd_event *e = scratch.lookup(&zero);
	if (!cfg || !e || !(cfg->flags & ND_FILTER_READY) || !skb)
		return 0;
	struct nd_route r = fill_keys(e, skb, NULL, ND_ETH_P_IP);
	if (e->l3proto != ND_ETH_P_IP || !(e->flags & ND_F_DF) || !r.odev)
		return 0;
	route_details(e, r);
	if (e->mtu && e->len > e->mtu)
		fn_note((u64)skb, ND_CAUSE_FWD_TOO_BIG, e->mtu, 0, 0);
	return 0;
}

/* kprobe/kretprobe form: attached by name (registry.FUNCTION_HOOKS). */
int nd_ct_confirm_entry(struct pt_regs *ctx, struct sk_buff *skb)
{
	int zero = 0;
	struct nd_fn_stack *s = confirm_args.lookup(&zero);
	if (s)
		fn_stack_push(s, (u64)skb, 0);
	return 0;
}

int nd_ct_confirm_return(struct pt_regs *ctx)
{
	int zero = 0;
	struct nd_fn_stack *s = confirm_args.lookup(&zero);
	u64 skb = 0, unused = 0;
	if (!s || !fn_stack_pop(s, &skb, &unused))
		return 0;
	return ct_confirm_done((struct sk_buff *)skb, (int)PT_REGS_RC(ctx));
}

int nd_ct_alloc_entry(struct pt_regs *ctx, struct net *net, void *zone, struct nf_conntrack_tuple *orig)
{
	int zero = 0;
	struct nd_fn_stack *s = alloc_args.lookup(&zero);
	if (s)
		fn_stack_push(s, (u64)net, (u64)orig);
	return 0;
}

int nd_ct_alloc_return(struct pt_regs *ctx)
{
	int zero = 0;
	struct nd_fn_stack *s = alloc_args.lookup(&zero);
	u64 net = 0, orig = 0;
	if (!s || !fn_stack_pop(s, &net, &orig))
		return 0;
	return ct_alloc_done((struct net *)net, (struct nf_conntrack_tuple *)orig, (unsigned long)PT_REGS_RC(ctx));
}

int nd_ip_forward(struct pt_regs *ctx, struct sk_buff *skb)
{
	return fwd_entry(skb);
}

/* __icmp_send(skb_in, type, code, info, opt) (net/ipv4/icmp.c): on kernels
 * without the icmp:icmp_send tracepoint (5.10 has none) the same note, from the
 * function the tracepoint sits in. */
int nd_icmp_send_kprobe(struct pt_regs *ctx, struct sk_buff *skb, int type, int code)
{
	on_icmp_send((u64)skb, type, code);
	return 0;
}

/* fentry/fexit form: named plainly (BPF_PROG, not bcc's KFUNC_PROBE), so bcc
 * neither loads nor attaches them as it compiles; the loader loads them itself
 * against the function's BTF, vmlinux's or its module's (tracer/kernel/btfprog.py),
 * and uses the kprobe form above where the kernel refuses them. Compiled on
 * every kernel: the choice is made at attach time, without compiling again. */
BPF_PROG(nd_ct_confirm_fexit, struct sk_buff *skb, int ret)
{
	return ct_confirm_done(skb, ret);
}

BPF_PROG(nd_ct_alloc_fexit, struct net *net, void *zone, struct nf_conntrack_tuple *orig,
	 void *repl, unsigned int gfp, u32 hash, struct nf_conn *ret)
{
	return ct_alloc_done(net, orig, (unsigned long)ret);
}

BPF_PROG(nd_ip_forward_fentry, struct sk_buff *skb)
{
	return fwd_entry(skb);
}

BPF_PROG(nd_icmp_send_fentry, struct sk_buff *skb, int type, int code)
{
	on_icmp_send((u64)skb, type, code);
	return 0;
}
