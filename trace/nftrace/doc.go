// Package nftrace decodes nf_tables trace events (NFT_MSG_TRACE on the
// netlink group NFNLGRP_NFTRACE) and listens for them in a network namespace.
//
// Events are sent for packets whose skb->nf_trace bit is set ("meta nftrace
// set 1", or iptables' TRACE target, which shares the bit). The first event
// of each base chain invocation carries the packet headers, interfaces and,
// on kernels that have them, the conntrack attributes 18-21.
package nftrace
