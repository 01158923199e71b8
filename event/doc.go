// Package event is nattrace's shared observation model.
//
// Every source (nf_tables trace, legacy TRACE over nflog, later conntrack,
// BPF probes and capture) emits [Observation] values; the correlator in
// package trace groups them into [Packet] timelines; renderers in package
// report read packets and never look back at sources. Data flows one way.
//
// The JSON encoding of [Session], [Packet] and [Stats] is the v1 JSON Lines
// contract documented in README.md: later versions may only add fields.
package event
