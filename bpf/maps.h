/* SPDX-License-Identifier: GPL-2.0 */
/*
 * netdrop: the maps both the kfree_skb program (netdrop.c) and the function
 * hooks (funchooks.c) read: the filter configuration and maps the loader
 * writes, the pod maps, and the per-CPU scratch event.
 */
#include "common.h"
#ifndef ND_MAPS_H
#define ND_MAPS_H

/* An nd_event is too big for comfort on the 512-byte BPF stack. */
BPF_PERCPU_ARRAY(scratch, struct nd_event, 1);

BPF_ARRAY(filter_cfg, struct nd_filter_cfg, 1);
BPF_HASH(filter_netns, u32, u8, ND_MAX_FILTER);
BPF_HASH(filter_ip, struct nd_ip_key, u8, ND_MAX_FILTER);
BPF_HASH(filter_port, u16, u8, ND_MAX_FILTER);

/* Pods of this node (tracer/pods/attribute.py says what they hold,
 * tracer/kernel/podmaps.py writes it): their namespaces, their host veths (in
 * the node namespace) and their addresses. */
BPF_HASH(pod_netns, u32, struct nd_pod_val, ND_MAX_FILTER);
BPF_HASH(pod_veth, struct nd_if_key, struct nd_pod_val, ND_MAX_FILTER);
BPF_HASH(pod_ip, struct nd_ip_key, struct nd_pod_val, ND_MAX_FILTER);
/* hostNetwork pods share the node's namespace and addresses: only a port
 * that one of them alone declares, on a node address, names it. */
BPF_HASH(pod_hostport, u16, struct nd_pod_val, ND_MAX_FILTER);
BPF_HASH(node_ip, struct nd_ip_key, u8, ND_MAX_FILTER);

#endif /* ND_MAPS_H */
