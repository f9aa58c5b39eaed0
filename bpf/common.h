/* SPDX-License-Identifier: GPL-2.0 */
/*
 * netdrop: what every BPF source of netdrop's needs first: the kernel's
 * types (its headers, or the BTF include tree the loader made: then without
 * the kernel's compiler.h), the records shared with Python (netdrop.h), and
 * the protocol numbers both programs use.
 */
#ifndef ND_COMMON_H
#define ND_COMMON_H

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
#define ND_IP_OFFMASK 0x1fff
#define ND_PROTO_TCP  6
#define ND_AF_INET  2
#define ND_AF_INET6 10

#endif /* ND_COMMON_H */
