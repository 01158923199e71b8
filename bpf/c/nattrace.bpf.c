// SPDX-License-Identifier: GPL-2.0
/*
 * nattrace's packet probes. Where netfilter tracing cannot look: which
 * interface a packet arrived on or left by (in every namespace), why the
 * kernel freed it, and which routes were looked up for it.
 *
 * A packet is followed ("tracked", by skb address) from the first probe
 * where it is of interest: its headers match the session's filter in a
 * traced namespace, its tuple belongs to a followed connection, or
 * netfilter tracing selected it (skb->nf_trace). A tracked skb is followed
 * into every namespace it crosses (veth moves the skb) until it is freed.
 * Everything else costs a map lookup and a header parse.
 */
#include "vmlinux.h"
#include <bpf_helpers.h>
#include <bpf_core_read.h>
#include <bpf_tracing.h>
#include <bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

#define MAX_CLAUSES 16
#define MAX_LITS 10
#define HDR_LEN 64

enum lit_kind { LIT_FAMILY = 1, LIT_PROTO = 2, LIT_ADDR = 3, LIT_PORT = 4, LIT_FRAG = 5 };
enum field { FIELD_SRC = 1, FIELD_DST = 2 };
enum event_kind { EV_RX = 1, EV_TX = 2, EV_DROP = 3, EV_ROUTE = 4, EV_FREE = 5, EV_NF = 6, EV_RPF = 7 };
enum counter { CNT_EVENTS = 0, CNT_LOST = 1, CNT_TRACKED = 2, CNT_MAX = 4 };

/* One literal of a DNF clause (see package filter). */
struct lit {
	__u8 kind;
	__u8 neg;
	__u8 field;
	__u8 family;
	__u8 nprotos;
	__u8 protos[3];
	__u16 lo;
	__u16 hi;
	__u8 addr[16];
	__u8 mask[16];
};

struct clause {
	__u32 n;
	struct lit lits[MAX_LITS];
};

struct config {
	__u32 nclauses;
	__u32 match_all;
};

struct tuple {
	__u8 family;
	__u8 proto;
	__u16 sport;
	__u16 dport;
	__u16 pad;
	__u8 src[16];
	__u8 dst[16];
};

struct event {
	__u64 ts;
	__u64 skb;
	__u64 location;
	__u32 kind;
	__u32 netns;
	__u32 ifindex;
	__u32 reason;
	__s32 err;
	__u32 table;
	__u32 flow_saddr;
	__u32 flow_daddr;
	__u32 flow_iif;
	__u32 flow_oif;
	__u32 gw;
	__u32 res_ifindex;
	__u32 len;
	__u8 nf_trace;
	__u8 hdr_len;
	__u8 nf_hook;  /* EV_NF: NF_INET_* hook */
	__u8 nf_phase; /* EV_NF: 0 before NAT, 1 after NAT */
	char ifname[16];
	char res_ifname[16];
	__u8 hdr[HDR_LEN];
	/* EV_NF: the conntrack entry's tuples (IPv4), 0 without one */
	__u32 ct_orig_src;
	__u32 ct_orig_dst;
	__u32 ct_reply_src;
	__u32 ct_reply_dst;
	__u16 ct_orig_sport;
	__u16 ct_orig_dport;
	__u16 ct_reply_sport;
	__u16 ct_reply_dport;
	__u8 ct_proto;
	__u8 pad2[7];
};

/* The packet being received on this CPU: route lookups in the same
 * softirq belong to it. */
struct current {
	__u64 skb;
	__u64 ts;
	__u32 netns;
	__u32 saddr;
	__u32 daddr;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_CLAUSES);
	__type(key, __u32);
	__type(value, struct clause);
} clauses SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} traced_netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct tuple);
	__type(value, __u8);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} tracked SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct current);
} rx_current SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

/* Force the event type into BTF for bpf2go. */
const struct event *unused_event __attribute__((unused));

struct parsed {
	__u8 family;
	__u8 proto;
	__u8 frag;
	__u8 has_ports;
	__u16 sport;
	__u16 dport;
	__u8 src[16];
	__u8 dst[16];
	__u8 raw[HDR_LEN];
	__u32 raw_len;
};

static __always_inline void count(__u32 c)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &c);
	if (v)
		*v += 1;
}

static __always_inline int parse(const void *l3, struct parsed *p)
{
	if (!l3 || bpf_probe_read_kernel(p->raw, HDR_LEN, l3) < 0)
		return -1;
	p->raw_len = HDR_LEN;
	__u8 v = p->raw[0] >> 4;
	if (v == 4) {
		__u32 ihl = (p->raw[0] & 0x0f) * 4;
		p->family = 4;
		p->proto = p->raw[9];
		p->frag = ((p->raw[6] & 0x1f) | p->raw[7]) != 0;
		__builtin_memcpy(p->src, &p->raw[12], 4);
		__builtin_memcpy(p->dst, &p->raw[16], 4);
		if (!p->frag && (p->proto == 6 || p->proto == 17 || p->proto == 132) && ihl >= 20 && ihl <= 56) {
			__u16 sp = 0, dp = 0;
			if (bpf_probe_read_kernel(&sp, 2, l3 + ihl) == 0 && bpf_probe_read_kernel(&dp, 2, l3 + ihl + 2) == 0) {
				p->sport = bpf_ntohs(sp);
				p->dport = bpf_ntohs(dp);
				p->has_ports = 1;
			}
		}
		return 0;
	}
	if (v == 6) {
		p->family = 6;
		p->proto = p->raw[6];
		__builtin_memcpy(p->src, &p->raw[8], 16);
		__builtin_memcpy(p->dst, &p->raw[24], 16);
		if (p->proto == 6 || p->proto == 17 || p->proto == 132) {
			__u16 sp = 0, dp = 0;
			if (bpf_probe_read_kernel(&sp, 2, l3 + 40) == 0 && bpf_probe_read_kernel(&dp, 2, l3 + 42) == 0) {
				p->sport = bpf_ntohs(sp);
				p->dport = bpf_ntohs(dp);
				p->has_ports = 1;
			}
		}
		return 0;
	}
	return -1;
}

static __always_inline bool addr_in(const __u8 *a, const struct lit *l)
{
	int n = l->family == 4 ? 4 : 16;
	for (int i = 0; i < 16; i++) {
		if (i >= n)
			break;
		if ((a[i] & l->mask[i]) != l->addr[i])
			return false;
	}
	return true;
}

/* lit_value evaluates a literal with the kernel semantics of
 * filter.MatchClause; -1 means "false whether negated or not". */
static __always_inline int lit_value(const struct lit *l, const struct parsed *p)
{
	switch (l->kind) {
	case LIT_FAMILY:
		return p->family == l->family;
	case LIT_PROTO: {
		int n = l->nprotos;
		if (n == 0)
			return 1; /* a set that did not fit: broader */
		for (int i = 0; i < 3; i++)
			if (i < n && l->protos[i] == p->proto)
				return 1;
		return 0;
	}
	case LIT_ADDR:
		if (p->family != l->family)
			return -1;
		return addr_in(l->field == FIELD_SRC ? p->src : p->dst, l);
	case LIT_PORT: {
		if (!p->has_ports)
			return -1;
		__u16 v = l->field == FIELD_SRC ? p->sport : p->dport;
		return v >= l->lo && v <= l->hi;
	}
	case LIT_FRAG:
		if (l->neg)
			return 0; /* negated: implied, treated as true below */
		return p->frag;
	}
	return 1;
}

static __always_inline bool clause_matches(const struct clause *c, const struct parsed *p)
{
	__u32 n = c->n;
	for (int j = 0; j < MAX_LITS; j++) {
		if (j >= n)
			break;
		const struct lit *l = &c->lits[j];
		if (l->kind == LIT_FRAG && l->neg)
			continue;
		int v = lit_value(l, p);
		if (v < 0)
			return false;
		if ((v != 0) == (l->neg != 0))
			return false;
	}
	return true;
}

struct match_ctx {
	const struct parsed *p;
	bool matched;
};

/* One clause per bpf_loop iteration: the verifier checks the callback
 * once, instead of every clause of an unrolled loop at every call site. */
static long clause_cb(__u32 i, void *ctx)
{
	struct match_ctx *m = ctx;
	__u32 k = i;
	struct clause *c = bpf_map_lookup_elem(&clauses, &k);
	if (!c)
		return 1;
	if (clause_matches(c, m->p)) {
		m->matched = true;
		return 1;
	}
	return 0;
}

static __always_inline bool filter_matches(const struct parsed *p)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config_map, &zero);
	if (!cfg)
		return false;
	if (cfg->match_all)
		return true;
	__u32 n = cfg->nclauses;
	if (n > MAX_CLAUSES)
		n = MAX_CLAUSES;
	struct match_ctx m = {.p = p, .matched = false};
	bpf_loop(n, clause_cb, &m, 0);
	return m.matched;
}

static __always_inline bool flow_known(const struct parsed *p)
{
	struct tuple t = {};
	t.family = p->family;
	t.proto = p->proto;
	t.sport = p->sport;
	t.dport = p->dport;
	__builtin_memcpy(t.src, p->src, 16);
	__builtin_memcpy(t.dst, p->dst, 16);
	return bpf_map_lookup_elem(&flows, &t) != NULL;
}

static __always_inline __u32 dev_netns(const struct net_device *dev)
{
	if (!dev)
		return 0;
	return BPF_CORE_READ(dev, nd_net.net, ns.inum);
}

static __always_inline __u32 skb_netns(const struct sk_buff *skb)
{
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	if (dev)
		return dev_netns(dev);
	struct sock *sk = BPF_CORE_READ(skb, sk);
	if (sk)
		return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	return 0;
}

static __always_inline bool ns_traced(__u32 ns)
{
	return bpf_map_lookup_elem(&traced_netns, &ns) != NULL;
}

static __always_inline bool is_tracked(__u64 skb)
{
	return bpf_map_lookup_elem(&tracked, &skb) != NULL;
}

/* A packet's fingerprint: fields that forwarding and NAT leave alone
 * (IPv4 id and total length, IPv6 flow label and payload length). */
static __always_inline __u32 fingerprint(const struct parsed *p)
{
	if (p->family == 4)
		return ((__u32)p->raw[4] << 24 | (__u32)p->raw[5] << 16 | (__u32)p->raw[2] << 8 | p->raw[3]) ^ p->proto;
	return (((__u32)p->raw[1] & 0x0f) << 24 | (__u32)p->raw[2] << 16 | (__u32)p->raw[3] << 8 | p->raw[5]) ^ ((__u32)p->raw[4] << 4) ^ p->proto;
}

/* track follows an skb. The value holds the packet's fingerprint and the
 * namespace it was last seen in (a freed skb often has neither device nor
 * socket). */
static __always_inline void track(__u64 skb, __u32 netns, __u32 fp)
{
	__u64 v = (__u64)fp << 32 | netns;
	if (bpf_map_update_elem(&tracked, &skb, &v, BPF_NOEXIST) == 0)
		count(CNT_TRACKED);
	else
		bpf_map_update_elem(&tracked, &skb, &v, BPF_EXIST);
}

static __always_inline __u32 last_netns(__u64 skb)
{
	__u64 *v = bpf_map_lookup_elem(&tracked, &skb);
	return v ? (__u32)*v : 0;
}

/* tracked_as tells whether skb is tracked as this packet: some frees have
 * no tracepoint (__kfree_skb), so an address can come back as another
 * packet; then it is not tracked and goes through the filter again. */
static __always_inline bool tracked_as(__u64 skb, const struct parsed *p)
{
	__u64 *v = bpf_map_lookup_elem(&tracked, &skb);
	if (!v)
		return false;
	if ((__u32)(*v >> 32) == fingerprint(p))
		return true;
	bpf_map_delete_elem(&tracked, &skb);
	return false;
}

static __always_inline const void *l3_of(const struct sk_buff *skb, bool at_rx)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	if (at_rx || nh == 0xffff || !head)
		return BPF_CORE_READ(skb, data);
	return head + nh;
}

static __always_inline struct event *reserve(void)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(CNT_LOST);
		return NULL;
	}
	count(CNT_EVENTS);
	__builtin_memset(e, 0, sizeof(*e));
	e->ts = bpf_ktime_get_ns();
	return e;
}

static __always_inline void fill(struct event *e, __u32 kind, const struct sk_buff *skb,
				 const struct net_device *dev, const struct parsed *p)
{
	e->kind = kind;
	e->skb = (__u64)skb;
	e->len = BPF_CORE_READ(skb, len);
	e->nf_trace = BPF_CORE_READ_BITFIELD_PROBED(skb, nf_trace);
	if (dev) {
		e->ifindex = BPF_CORE_READ(dev, ifindex);
		BPF_CORE_READ_STR_INTO(&e->ifname, dev, name);
		e->netns = dev_netns(dev);
	} else {
		e->netns = skb_netns(skb);
	}
	if (p) {
		__builtin_memcpy(e->hdr, p->raw, HDR_LEN);
		e->hdr_len = HDR_LEN;
	}
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(on_rx, struct sk_buff *skb)
{
	struct parsed p = {};
	__u64 key = (__u64)skb;
	if (parse(l3_of(skb, true), &p) < 0)
		return 0;
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	if (!tracked_as(key, &p)) {
		if (!ns_traced(dev_netns(dev)))
			return 0;
		if (!filter_matches(&p) && !flow_known(&p))
			return 0;
	}
	track(key, dev_netns(dev), fingerprint(&p));
	__u32 zero = 0;
	struct current *cur = bpf_map_lookup_elem(&rx_current, &zero);
	if (cur && p.family == 4) {
		cur->skb = key;
		cur->ts = bpf_ktime_get_ns();
		cur->netns = dev_netns(dev);
		__builtin_memcpy(&cur->saddr, p.src, 4);
		__builtin_memcpy(&cur->daddr, p.dst, 4);
	}
	struct event *e = reserve();
	if (!e)
		return 0;
	fill(e, EV_RX, skb, dev, &p);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(on_tx, const struct sk_buff *skb, const struct net_device *dev)
{
	struct parsed p = {};
	__u64 key = (__u64)skb;
	if (parse(l3_of(skb, false), &p) < 0)
		return 0;
	__u32 ns = dev_netns(dev);
	if (!tracked_as(key, &p)) {
		if (!ns_traced(ns))
			return 0;
		bool sel = BPF_CORE_READ_BITFIELD_PROBED(skb, nf_trace);
		if (!sel && !filter_matches(&p) && !flow_known(&p))
			return 0;
	}
	track(key, ns, fingerprint(&p));
	struct event *e = reserve();
	if (!e)
		return 0;
	fill(e, EV_TX, skb, dev, &p);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(on_kfree, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	__u64 key = (__u64)skb;
	bool was = is_tracked(key);
	__u32 ns = last_netns(key);
	if (was)
		bpf_map_delete_elem(&tracked, &key);
	if (!was) {
		/* Selected by netfilter tracing in a traced namespace, and
		 * dropped before it reached a probe that would track it. */
		if (!BPF_CORE_READ_BITFIELD_PROBED(skb, nf_trace) || !ns_traced(skb_netns(skb)))
			return 0;
	}
	struct parsed p = {};
	bool ok = parse(l3_of(skb, false), &p) == 0;
	struct event *e = reserve();
	if (!e)
		return 0;
	fill(e, EV_DROP, skb, BPF_CORE_READ(skb, dev), ok ? &p : NULL);
	if (!e->netns)
		e->netns = ns;
	e->reason = reason;
	e->location = (__u64)location;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* consume_skb gained its location argument in 6.3: read only the skb. */
SEC("tp_btf/consume_skb")
int BPF_PROG(on_consume, struct sk_buff *skb)
{
	__u64 key = (__u64)skb;
	if (!is_tracked(key))
		return 0;
	__u32 ns = last_netns(key);
	bpf_map_delete_elem(&tracked, &key);
	/* The end of the packet's journey: the skb address may be reused. */
	struct event *e = reserve();
	if (!e)
		return 0;
	fill(e, EV_FREE, skb, BPF_CORE_READ(skb, dev), NULL);
	if (!e->netns)
		e->netns = ns;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* The input route's verdict for a followed packet, from a kernel with
 * fentry (not this project's 6.18, which refuses it; Debian's 6.1 has it).
 * ip_route_input_noref returns -EXDEV exactly when rp_filter rejected the
 * source (ip_rcv_finish_core then drops with IP_RPFILTER). Its five
 * arguments fit the 6-argument trampolines of older kernels, which
 * fib_validate_source's eight do not. Loaded apart from the tracepoint
 * programs. */
SEC("fexit/ip_route_input_noref")
int BPF_PROG(on_route_input, struct sk_buff *skb, __u32 daddr, __u32 saddr, __u8 tos, struct net_device *dev, int ret)
{
	__u64 key = (__u64)skb;
	if (!is_tracked(key))
		return 0;
	struct event *e = reserve();
	if (!e)
		return 0;
	fill(e, EV_RPF, skb, dev, NULL);
	e->err = ret;
	e->flow_saddr = saddr;
	e->flow_daddr = daddr;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp_btf/fib_table_lookup")
int BPF_PROG(on_fib, __u32 tb_id, const struct flowi4 *flp, const struct fib_nh_common *nhc, int err)
{
	__u32 zero = 0;
	struct current *cur = bpf_map_lookup_elem(&rx_current, &zero);
	if (!cur || !cur->skb)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	if (now - cur->ts > 200000) /* 200 us: not this packet's processing any more */
		return 0;
	__u32 saddr = BPF_CORE_READ(flp, saddr);
	__u32 daddr = BPF_CORE_READ(flp, daddr);
	/* The packet's input route (from its source, to its destination as
	 * DNAT left it) or rp_filter's reverse lookup (to its source); not
	 * the lookups ARP and address checks make (source 0). */
	bool forward = saddr == cur->saddr && daddr != cur->saddr;
	bool reverse = daddr == cur->saddr && saddr != 0;
	if (!forward && !reverse)
		return 0;
	struct event *e = reserve();
	if (!e)
		return 0;
	e->kind = EV_ROUTE;
	e->skb = cur->skb;
	e->netns = cur->netns;
	e->table = tb_id;
	e->err = err;
	e->flow_saddr = saddr;
	e->flow_daddr = daddr;
	e->flow_iif = BPF_CORE_READ(flp, __fl_common.flowic_iif);
	e->flow_oif = BPF_CORE_READ(flp, __fl_common.flowic_oif);
	if (nhc && err == 0) {
		struct net_device *dev = BPF_CORE_READ(nhc, nhc_dev);
		if (dev) {
			e->res_ifindex = BPF_CORE_READ(dev, ifindex);
			BPF_CORE_READ_STR_INTO(&e->res_ifname, dev, name);
			/* The lookup's namespace: the same skb may be processed
			 * by the next namespace on this CPU already. */
			e->netns = dev_netns(dev);
		}
		if (BPF_CORE_READ(nhc, nhc_gw_family) == 2 /* AF_INET */)
			e->gw = BPF_CORE_READ(nhc, nhc_gw.ipv4);
	}
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* The conntrack entry's tuples, from the skb. */
static __always_inline void ct_tuples(struct event *e, const struct sk_buff *skb)
{
	unsigned long nfct = BPF_CORE_READ(skb, _nfct);
	struct nf_conn *ct = (struct nf_conn *)(nfct & ~7UL);
	if (!ct)
		return;
	e->ct_orig_src = BPF_CORE_READ(ct, tuplehash[0].tuple.src.u3.ip);
	e->ct_orig_dst = BPF_CORE_READ(ct, tuplehash[0].tuple.dst.u3.ip);
	e->ct_orig_sport = bpf_ntohs(BPF_CORE_READ(ct, tuplehash[0].tuple.src.u.all));
	e->ct_orig_dport = bpf_ntohs(BPF_CORE_READ(ct, tuplehash[0].tuple.dst.u.all));
	e->ct_reply_src = BPF_CORE_READ(ct, tuplehash[1].tuple.src.u3.ip);
	e->ct_reply_dst = BPF_CORE_READ(ct, tuplehash[1].tuple.dst.u3.ip);
	e->ct_reply_sport = bpf_ntohs(BPF_CORE_READ(ct, tuplehash[1].tuple.src.u.all));
	e->ct_reply_dport = bpf_ntohs(BPF_CORE_READ(ct, tuplehash[1].tuple.dst.u.all));
	e->ct_proto = BPF_CORE_READ(ct, tuplehash[0].tuple.dst.protonum);
}

/* BPF netfilter programs, attached inside each traced namespace just before
 * and after NAT (DNAT in prerouting and output, SNAT in postrouting): the
 * packet's headers on both sides of the translation, and the conntrack
 * entry's tuples from the skb. */
static __always_inline int nf_snapshot(struct bpf_nf_ctx *ctx, __u8 phase)
{
	struct sk_buff *skb = ctx->skb;
	const struct nf_hook_state *state = ctx->state;
	struct parsed p = {};
	if (parse(l3_of(skb, false), &p) < 0)
		return 1; /* NF_ACCEPT */
	__u64 key = (__u64)skb;
	__u32 ns = BPF_CORE_READ(state, net, ns.inum);
	if (!tracked_as(key, &p)) {
		/* Locally generated packets are tracked from their first probe
		 * after netfilter tracing selected them. */
		if (!BPF_CORE_READ_BITFIELD_PROBED(skb, nf_trace) || !ns_traced(ns))
			return 1;
		track(key, ns, fingerprint(&p));
	}
	struct event *e = reserve();
	if (!e)
		return 1;
	fill(e, EV_NF, skb, NULL, &p);
	e->netns = ns;
	e->nf_hook = BPF_CORE_READ(state, hook);
	e->nf_phase = phase;
	struct net_device *out = BPF_CORE_READ(state, out);
	if (out) {
		e->ifindex = BPF_CORE_READ(out, ifindex);
		BPF_CORE_READ_STR_INTO(&e->ifname, out, name);
	}
	ct_tuples(e, skb);
	bpf_ringbuf_submit(e, 0);
	return 1;
}

SEC("netfilter")
int on_nf_before(struct bpf_nf_ctx *ctx)
{
	return nf_snapshot(ctx, 0);
}

SEC("netfilter")
int on_nf_after(struct bpf_nf_ctx *ctx)
{
	return nf_snapshot(ctx, 1);
}

/* Kernels without BPF netfilter programs (before 6.4) but with fentry (6.1):
 * the same snapshots from nf_nat_manip_pkt, on entry (before the
 * translation) and exit (after). nf_nat_packet would give the hook, but it
 * is inlined into its caller; nf_nat_manip_pkt lives in another file. Its
 * manip type gives the hook: a destination change happens in prerouting,
 * or in output for a packet with no device yet; a source change in
 * postrouting. The output device comes from the skb's route. */
static __always_inline int nat_snapshot(struct sk_buff *skb, unsigned int mtype, __u8 phase)
{
	struct parsed p = {};
	if (parse(l3_of(skb, false), &p) < 0)
		return 0;
	__u64 key = (__u64)skb;
	__u32 ns = skb_netns(skb);
	if (!tracked_as(key, &p)) {
		if (!BPF_CORE_READ_BITFIELD_PROBED(skb, nf_trace) || !ns_traced(ns))
			return 0;
		track(key, ns, fingerprint(&p));
	}
	struct event *e = reserve();
	if (!e)
		return 0;
	fill(e, EV_NF, skb, NULL, &p);
	e->netns = ns;
	if (mtype == 1 /* NF_NAT_MANIP_DST */)
		e->nf_hook = BPF_CORE_READ(skb, dev) ? 0 /* PRE_ROUTING */ : 3 /* LOCAL_OUT */;
	else
		e->nf_hook = 4; /* POST_ROUTING */
	e->nf_phase = phase;
	struct dst_entry *dst = (struct dst_entry *)(BPF_CORE_READ(skb, _skb_refdst) & ~1UL);
	if (dst && e->nf_hook == 4) {
		struct net_device *out = BPF_CORE_READ(dst, dev);
		if (out) {
			e->ifindex = BPF_CORE_READ(out, ifindex);
			BPF_CORE_READ_STR_INTO(&e->ifname, out, name);
		}
	}
	ct_tuples(e, skb);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("fentry/nf_nat_manip_pkt")
int BPF_PROG(on_nat_enter, struct sk_buff *skb, struct nf_conn *ct, unsigned int mtype, unsigned int dir)
{
	return nat_snapshot(skb, mtype, 0);
}

SEC("fexit/nf_nat_manip_pkt")
int BPF_PROG(on_nat_exit, struct sk_buff *skb, struct nf_conn *ct, unsigned int mtype, unsigned int dir, unsigned int ret)
{
	return nat_snapshot(skb, mtype, 1);
}
