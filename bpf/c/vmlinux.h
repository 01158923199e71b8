/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The kernel types nattrace's probes read, declared with
 * preserve_access_index: the loader relocates every field access against
 * the running kernel's BTF (CO-RE), so only names matter, not layouts.
 * Written by hand instead of a 3 MB bpftool dump; extend it when a probe
 * reads a new field.
 */
#ifndef __NATTRACE_VMLINUX_H__
#define __NATTRACE_VMLINUX_H__

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;
typedef __s64 s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
#define true 1
#define false 0

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	char name[16];
	int ifindex;
	possible_net_t nd_net;
};

struct sock_common {
	possible_net_t skc_net;
};

struct sock {
	struct sock_common __sk_common;
};

struct sk_buff {
	struct net_device *dev;
	struct sock *sk;
	unsigned int len;
	__u8 nf_trace : 1;
	__u16 mac_header;
	__u16 network_header;
	__u16 transport_header;
	unsigned char *head;
	unsigned char *data;
	int skb_iif;
	__u32 mark;
	unsigned long _nfct;
	unsigned long _skb_refdst;
};

struct dst_entry {
	struct net_device *dev;
};

struct nf_hook_state {
	__u8 hook;
	__u8 pf;
	struct net_device *in;
	struct net_device *out;
	struct net *net;
};

struct bpf_nf_ctx {
	const struct nf_hook_state *state;
	struct sk_buff *skb;
};

union nf_inet_addr {
	__u32 all[4];
	__be32 ip;
};

union nf_conntrack_man_proto {
	__be16 all;
};

struct nf_conntrack_man {
	union nf_inet_addr u3;
	union nf_conntrack_man_proto u;
};

struct nf_conntrack_tuple {
	struct nf_conntrack_man src;
	struct {
		union nf_inet_addr u3;
		union {
			__be16 all;
		} u;
		__u8 protonum;
	} dst;
};

struct nf_conntrack_tuple_hash {
	struct nf_conntrack_tuple tuple;
};

struct nf_conn {
	struct nf_conntrack_tuple_hash tuplehash[2];
};

struct flowi_common {
	int flowic_oif;
	int flowic_iif;
	__u32 flowic_mark;
	__u8 flowic_proto;
};

struct flowi4 {
	struct flowi_common __fl_common;
	__be32 saddr;
	__be32 daddr;
};

struct fib_nh_common {
	struct net_device *nhc_dev;
	int nhc_oif;
	__u8 nhc_gw_family;
	union {
		__be32 ipv4;
	} nhc_gw;
};

#pragma clang attribute pop

enum skb_drop_reason {
	SKB_DROP_REASON_NOT_SPECIFIED = 2,
};

#endif
