package trace

import (
	"net/netip"
	"slices"
	"time"

	"github.com/nattrace/nattrace/event"
	"github.com/nattrace/nattrace/filter"
	"github.com/nattrace/nattrace/trace/ctflow"
)

// SourceConntrack is the name of the conntrack source.
const SourceConntrack = "conntrack"

type connKey struct {
	netns string
	id    uint32
}

type tupleKey struct {
	netns, proto string
	src, dst     netip.Addr
	sport, dport uint16
}

func keyOf(netns string, t event.Tuple) tupleKey {
	return tupleKey{netns, t.Proto, t.Src, t.Dst, t.Sport, t.Dport}
}

// setupInfo is the nat rule that set a connection's translation up.
type setupInfo struct {
	kind string // dnat, redirect, snat, masquerade
	desc string // "nat/PREROUTING rule 1"
	rule string
}

// Classes of translation: the destination (DNAT, REDIRECT) is changed in
// prerouting/output, the source (SNAT, MASQUERADE) in postrouting/input.
const (
	classDst = "dst"
	classSrc = "src"
)

// connRec is one connection as conntrack and the traced packets show it.
type connRec struct {
	netns        string
	id           uint32
	known        bool // conntrack described it (dump or event)
	matched      bool // its original or reply tuple matches the filter
	orig, reply  event.Tuple
	status       uint32
	states       []event.FlowState
	existing     bool
	ended        bool
	endedAt      time.Time
	setup        map[string]setupInfo
	translations []event.Translation
	nat          []string
	packets      event.FlowPackets
	flowID       uint64
	traced       bool
	emitted      bool
}

type connTable struct {
	byID    map[connKey]*connRec
	byTuple map[tupleKey]*connRec
}

func newConnTable() *connTable {
	return &connTable{byID: map[connKey]*connRec{}, byTuple: map[tupleKey]*connRec{}}
}

// observe records a conntrack dump entry or event. Connections that do not
// match the filter are not kept unless a traced packet already named them.
func (t *connTable) observe(f filter.Node, o *event.Observation) {
	cf := o.Flow
	if cf == nil {
		return
	}
	k := connKey{o.Netns, cf.ID}
	matched := f == nil || ctflow.Matches(f, cf)
	r := t.byID[k]
	if r == nil {
		if !matched || cf.Event == event.CTDestroy {
			return
		}
		r = &connRec{netns: o.Netns, id: cf.ID, setup: map[string]setupInfo{}}
		t.byID[k] = r
	}
	r.known, r.matched = true, matched
	r.orig, r.reply, r.status = cf.Orig, cf.Reply, cf.Status
	t.byTuple[keyOf(o.Netns, cf.Orig)] = r
	t.byTuple[keyOf(o.Netns, cf.Reply)] = r
	if cf.Event == event.CTDump {
		r.existing = true
	}
	st := event.FlowState{T: o.Time, Event: cf.Event, State: "NEW", Status: ctflow.StatusNames(cf.Status)}
	if cf.Status&ctflow.StatusSeenReply != 0 {
		st.State = "ESTABLISHED"
	}
	if cf.Event == event.CTDestroy {
		st.State = "DESTROYED"
		r.ended, r.endedAt = true, o.Time
	}
	if cf.HasTCP {
		st.TCPState = ctflow.TCPStateName(cf.TCPState)
	}
	if n := len(r.states); n == 0 || cf.Event != event.CTUpdate || !sameState(r.states[n-1], st) {
		r.states = append(r.states, st)
	}
}

func sameState(a, b event.FlowState) bool {
	return a.State == b.State && a.TCPState == b.TCPState && slices.Equal(a.Status, b.Status)
}

// lookup finds a packet's connection by conntrack id or by tuple. A packet
// that names a conntrack id not reported yet gets a provisional record.
func (t *connTable) lookup(p *pkt) *connRec {
	if id := p.p.CTID; id != 0 {
		k := connKey{p.netns, id}
		if r := t.byID[k]; r != nil {
			return r
		}
		r := &connRec{netns: p.netns, id: id, setup: map[string]setupInfo{}}
		t.byID[k] = r
		return r
	}
	return t.byTuple[keyOf(p.netns, p.p.Tuple)]
}

// direction tells whether a packet entering with tuple u travels in the
// original (0) or reply (1) direction; -1 when it is neither.
func (r *connRec) direction(u event.Tuple) int {
	switch keyOf("", u) {
	case keyOf("", r.orig):
		return 0
	case keyOf("", r.reply):
		return 1
	}
	return -1
}

// packet accounts an emitted packet to the connection and returns its
// flow id.
func (r *connRec) packet(p *event.Packet, dir int, newID func() uint64) uint64 {
	if r.flowID == 0 {
		r.flowID = newID()
	}
	r.traced = true
	if dir == 1 {
		r.packets.Reply++
	} else {
		r.packets.Orig++
		if !r.known && !r.orig.Src.IsValid() {
			r.orig = p.Tuple
		}
	}
	for _, s := range p.Steps {
		if s.Kind != event.KindNAT || s.Reverse {
			continue
		}
		if !slices.Contains(r.nat, s.NAT) {
			r.nat = append(r.nat, s.NAT)
		}
		if s.By == "rule" {
			tr := event.Translation{NAT: s.NAT, Hook: s.Hook, Before: *s.Before, After: *s.After, Rule: s.Rule, OIF: s.OIF,
				By: describe(s.Table, s.Chain, s.Position)}
			if !slices.ContainsFunc(r.translations, func(x event.Translation) bool { return x.NAT == tr.NAT && x.Hook == tr.Hook }) {
				r.translations = append(r.translations, tr)
			}
		}
	}
	return r.flowID
}

// ready returns the connections to emit now (once each).
func (t *connTable) ready(pred func(*connRec) bool) []*connRec {
	var out []*connRec
	for k, r := range t.byID {
		if r.emitted || !pred(r) {
			continue
		}
		if r.traced {
			r.emitted = true
			out = append(out, r)
		}
		if r.ended || r.emitted {
			delete(t.byID, k)
			delete(t.byTuple, keyOf(r.netns, r.orig))
			delete(t.byTuple, keyOf(r.netns, r.reply))
		}
	}
	slices.SortFunc(out, func(a, b *connRec) int { return int(a.flowID) - int(b.flowID) })
	return out
}

// flow is the connection's JSON object.
func (r *connRec) flow() *event.Flow {
	f := &event.Flow{Type: "flow", ID: r.flowID, Netns: r.netns, CTID: r.id, Orig: r.orig, Reply: r.reply,
		NAT: slices.Clone(r.nat), Translations: r.translations, Packets: r.packets, States: r.states,
		Existing: r.existing, Ended: r.ended}
	if len(f.NAT) == 0 {
		if r.status&ctflow.StatusDstNAT != 0 {
			f.NAT = append(f.NAT, event.NATDNAT)
		}
		if r.status&ctflow.StatusSrcNAT != 0 {
			f.NAT = append(f.NAT, event.NATSNAT)
		}
	}
	if f.NAT == nil {
		f.NAT = []string{}
	}
	if f.States == nil {
		f.States = []event.FlowState{}
	}
	return f
}
