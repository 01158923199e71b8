// Package trace runs a tracing session: it installs the selectors
// (package selector) in each traced namespace, listens to the trace sources
// (nf_tables trace events, iptables-legacy TRACE over nflog), resolves each
// event to the rule it names (package ruleset), and correlates the events
// into one timeline per packet with its fate. Everything it changes is
// recorded in a state file (package state) and undone on every exit path.
package trace
