// Package legacy reads iptables-legacy TRACE output.
//
// The TRACE target (or an nf_tables "meta nftrace set 1" rule: both set the
// one skb->nf_trace bit) makes the legacy tables log every rule a packet
// matches through nf_log. With net.netfilter.nf_log.<family> bound to
// nfnetlink_log in the namespace, the lines arrive on nflog group 0 with the
// prefix "TRACE: <table>:<chain>:<rule|return|policy>:<position>" and the
// packet from its network header on.
package legacy
