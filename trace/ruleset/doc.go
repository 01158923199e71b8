// Package ruleset snapshots a namespace's firewall rules so that trace
// events can be shown with the rule they name: its position in its chain and
// its text, in nft syntax for native nf_tables rules and in iptables-save
// syntax for iptables rules (iptables-nft and iptables-legacy).
//
// nattrace's own tables, chains and rules (named nattrace_*, NT-*, or
// commented nattrace:*) are marked Own: they are never shown, and positions
// in chains where nattrace inserted a rule are corrected for it.
package ruleset
