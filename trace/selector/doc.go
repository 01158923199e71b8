// Package selector installs and removes the kernel rules that choose which
// packets are traced: a session-owned nf_tables table that sets
// "meta nftrace set 1", or, for namespaces with only iptables-legacy, one
// TRACE rule per hook in the raw table. Both are built from the filter's DNF
// and sit behind one rate limit whose counters say how many packets were
// selected and how many the limit left out.
package selector

import "strings"

// Names of the nf_tables selector's chains.
const (
	ChainSelect = "select"
	ChainPre    = "prerouting"
	ChainOut    = "output"
	// Observer chains: empty, at the last priority of their hook, so that
	// a traced packet that reaches them reports that it passed every other
	// chain of the hook, with its output interface.
	ChainInput     = "input_end"
	ChainForward   = "forward_end"
	ChainPost      = "postrouting_end"
	SelectorPrio   = -350
	ObserverPrio   = 2147483646
	tableFlagOwner = 0x2 // NFT_TABLE_F_OWNER: the kernel deletes the table with its socket
)

// TableName is the nft table of a session.
func TableName(id string) string { return "nattrace_" + id }

// LegacyChain is the iptables-legacy chain of a session; LegacyChain(id)+"-S"
// is its selection chain.
func LegacyChain(id string) string { return "NATTRACE-" + id }

// Comment tags the rules a session inserts into built-in chains.
func Comment(id string) string { return "nattrace:" + id }

// IsObserverChain reports whether a chain of a selector table is an
// end-of-hook observer.
func IsObserverChain(name string) bool {
	return strings.HasSuffix(name, "_end")
}
