package trace

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/nattrace/nattrace/event"
	"github.com/nattrace/nattrace/filter"
	"github.com/nattrace/nattrace/trace/selector"
)

// Correlator groups observations into packets and connections. It is not
// safe for concurrent use: one goroutine feeds it.
type Correlator struct {
	Filter   filter.Node // exact post-filter
	Idle     time.Duration
	Emit     func(*event.Packet)
	EmitFlow func(*event.Flow)

	nextID   uint64
	nextFlow uint64
	flows    map[string]uint64 // flow ids of packets without a conntrack entry
	open     []*pkt
	byTrace  map[traceKey]*pkt // nftrace: current packet of a trace id
	orphans  []*event.Observation
	conns    *connTable

	journeys    map[uint64]*journey // open journeys by skb address
	journeyList []*journey
	// RPFilter checks a received packet against rp_filter (set by the
	// session; nil: no rpfilter steps).
	RPFilter func(netns, iif string, src, dst netip.Addr, k RPKernel) *event.Step
	// Stopped is set when no more packets are wanted (--count reached):
	// later packets are neither emitted nor counted in their flows.
	Stopped bool
	// Rate limits packets known only from the BPF probes, per second.
	Rate int
	// Traced are the namespaces traced with netfilter (nil: all); packets
	// known only from the probes are emitted when they were dropped there.
	Traced    map[string]bool
	bpfWindow time.Time
	bpfCount  int

	Stats CorrStats
}

// CorrStats are the correlator's counters.
type CorrStats struct {
	Events     uint64
	Markers    map[string]uint64 // per namespace: packets this session selected and saw
	Emitted    uint64
	Filtered   uint64
	Unmatched  uint64 // events that belonged to no packet of this session
	Flows      uint64
	BPFLimited uint64 // packets seen only by the probes, left out by the rate limit
}

type traceKey struct {
	netns string
	id    uint32
}

// sourceState follows one source's walk through the chains of one packet.
type sourceState struct {
	hook  event.Hook
	prio  int32
	base  string // current base chain
	stack []string
	seq   int
}

// snapshot is the packet's headers at one point of its path.
type snapshot struct {
	order int
	prio  int32
	seq   int
	hook  event.Hook
	t     event.Tuple
	oif   string
}

type pkt struct {
	p        *event.Packet
	netns    string
	fp       uint64
	last     time.Time
	steps    []sortStep
	snaps    []snapshot
	hooks    map[event.Hook]bool
	oif      string
	src      map[string]*sourceState
	complete bool
	tkey     *traceKey
	fields   *filter.Fields // the headers the packet was selected with
	byCT     bool           // selected after conntrack (by the flow-following rules)
	local    bool           // locally generated (selected at output)
	ctDir    int            // conntrack direction: 0 original, 1 reply, -1 unknown
	seq      int
	prepared bool // steps, NAT and fate computed
	keep     bool // passed the filter
	merged   bool // part of another packet's timeline
}

type sortStep struct {
	order int
	prio  int32
	seq   int
	sub   int // 1: a nat step placed right after the rule that made it
	step  event.Step
}

// NewCorrelator returns a correlator that calls emit for every finished
// packet that passes the filter.
func NewCorrelator(f filter.Node, emit func(*event.Packet)) *Correlator {
	return &Correlator{Filter: f, Idle: 150 * time.Millisecond, Emit: emit,
		flows: map[string]uint64{}, byTrace: map[traceKey]*pkt{}, conns: newConnTable(), journeys: map[uint64]*journey{},
		Stats: CorrStats{Markers: map[string]uint64{}}}
}

// Add feeds one observation.
func (c *Correlator) Add(o *event.Observation) {
	c.Stats.Events++
	switch o.Source {
	case SourceNFTrace:
		c.addNFT(o)
	case SourceLegacy:
		c.addLegacy(o)
	case SourceConntrack:
		c.conns.observe(c.Filter, o)
	case SourceBPF:
		c.addBPF(o)
	}
}

func (c *Correlator) addNFT(o *event.Observation) {
	k := traceKey{o.Netns, o.TraceID}
	if o.Marker {
		if old := c.byTrace[k]; old != nil && !old.complete {
			// The same packet selected twice (before and after conntrack,
			// possible only when the filter had to be approximated).
			if o.Header != nil && old.fp == o.Header.Fingerprint() && o.Time.Sub(old.last) < 10*time.Millisecond {
				return
			}
			old.complete = true
		}
		p := c.newPacket(o)
		p.tkey = &k
		c.byTrace[k] = p
		c.adoptOrphans(p)
		return
	}
	if o.Boundary {
		if old := c.byTrace[k]; old != nil {
			old.complete = true
			delete(c.byTrace, k)
		}
		return
	}
	p := c.byTrace[k]
	if p == nil || p.complete {
		c.Stats.Unmatched++
		return
	}
	c.apply(p, o)
}

func (c *Correlator) addLegacy(o *event.Observation) {
	if o.Marker {
		p := c.newPacket(o)
		c.adoptOrphans(p)
		return
	}
	if o.Boundary || o.Header == nil {
		c.Stats.Unmatched++
		return
	}
	fp := o.Header.Fingerprint()
	// The most recent packet of this namespace with the same fingerprint
	// that is not emitted yet (in mixed namespaces: the one the nft marker
	// opened, even when its trace id was already reused: legacy lines come
	// on another socket, later).
	for i := len(c.open) - 1; i >= 0; i-- {
		p := c.open[i]
		if p.netns == o.Netns && p.fp == fp {
			c.apply(p, o)
			return
		}
	}
	// The marker may still be on its way on the other socket.
	c.orphans = append(c.orphans, o)
}

func (c *Correlator) adoptOrphans(p *pkt) {
	kept := c.orphans[:0]
	for _, o := range c.orphans {
		if o.Netns == p.netns && o.Header != nil && o.Header.Fingerprint() == p.fp {
			c.apply(p, o)
		} else {
			kept = append(kept, o)
		}
	}
	c.orphans = kept
}

func (c *Correlator) newPacket(o *event.Observation) *pkt {
	c.Stats.Markers[o.Netns]++
	c.nextID++
	p := &pkt{
		p:     &event.Packet{Type: "packet", ID: c.nextID, Netns: o.Netns, FirstSeen: o.Time, Steps: []event.Step{}},
		netns: o.Netns, last: o.Time, hooks: map[event.Hook]bool{}, src: map[string]*sourceState{},
		byCT: o.CT.Valid, local: o.Hook == event.HookOutput, ctDir: -1,
	}
	if h := o.Header; h != nil {
		p.fp = h.Fingerprint()
		p.fields = h.Fields()
		p.p.Tuple = h.Tuple
		p.p.Length = h.Length
		p.p.IPID = h.IPID
		if h.ProtoNum == filter.ProtoTCP && h.HasPorts {
			p.p.TCPFlags = event.TCPFlagString(h.TCPFlags)
		}
	}
	p.p.IIF = o.IIF
	p.p.OIF = o.OIF
	if o.Hook != event.HookUnknown {
		p.hooks[o.Hook] = true
	}
	c.noteCT(p, o)
	if o.Header != nil {
		prio := int32(selector.SelectorPrio)
		if o.CT.Valid {
			prio = selector.FollowPrio
		}
		p.seq++
		p.snaps = append(p.snaps, snapshot{order: o.Hook.Order(), prio: prio, seq: p.seq, hook: o.Hook, t: o.Header.Tuple, oif: o.OIF})
	}
	c.open = append(c.open, p)
	return p
}

func (c *Correlator) noteCT(p *pkt, o *event.Observation) {
	if o.CT.Valid && p.p.CTID == 0 && o.CT.ID != 0 {
		p.p.CTID = o.CT.ID
		p.p.CTState = ctStateName(o.CT.State)
		p.ctDir = int(o.CT.Direction)
	}
}

// apply adds one observation to a packet.
func (c *Correlator) apply(p *pkt, o *event.Observation) {
	if o.Time.After(p.last) {
		p.last = o.Time
	}
	if p.p.IIF == "" && o.IIF != "" {
		p.p.IIF = o.IIF
	}
	if o.OIF != "" {
		p.oif = o.OIF
	}
	c.noteCT(p, o)
	if o.Hook != event.HookUnknown {
		p.hooks[o.Hook] = true
	}
	st := p.src[o.Source]
	if st == nil {
		st = &sourceState{}
		p.src[o.Source] = st
	}
	s := o.Step
	if !o.Internal && o.Hook != event.HookUnknown && o.BaseChain {
		// Entering a base chain: a new walk.
		if st.base != s.Table+"/"+s.Chain {
			st.stack = st.stack[:0]
		}
		st.hook, st.prio, st.base = o.Hook, o.Priority, s.Table+"/"+s.Chain
	}
	if o.Header != nil {
		order, prio, hook := st.hook.Order(), st.prio, st.hook
		if o.Internal && o.Hook != event.HookUnknown {
			order, prio, hook = o.Hook.Order(), o.Priority, o.Hook
		}
		p.seq++
		p.snaps = append(p.snaps, snapshot{order: order, prio: prio, seq: p.seq, hook: hook, t: o.Header.Tuple, oif: o.OIF})
	}
	if o.Internal {
		return
	}
	s.TNs = o.Time.Sub(p.p.FirstSeen).Nanoseconds()
	if s.TNs < 0 {
		s.TNs = 0
	}
	if s.Hook == "" && st.hook != event.HookUnknown {
		s.Hook = st.hook.String()
	}
	// Follow jumps, gotos and returns so that returns name their caller.
	switch {
	case s.Verdict == event.VerdictJump:
		st.stack = append(st.stack, s.Chain)
	case s.Verdict == event.VerdictReturn || s.Kind == event.KindReturn:
		if n := len(st.stack); n > 0 {
			s.Target = st.stack[n-1]
			st.stack = st.stack[:n-1]
		} else if st.base != "" {
			_, s.Target, _ = strings.Cut(st.base, "/")
		}
	}
	p.seq++
	p.steps = append(p.steps, sortStep{order: st.hook.Order(), prio: st.prio, seq: p.seq, step: s})
	if s.Verdict == event.VerdictDrop || s.Verdict == event.VerdictReject {
		p.complete = true
	}
}

func byPosition(a, b int, ap, bp int32, as, bs int) bool {
	if a != b {
		return a < b
	}
	if ap != bp {
		return ap < bp
	}
	return as < bs
}

func sortSteps(s []sortStep) {
	sort.SliceStable(s, func(i, j int) bool {
		a, b := s[i], s[j]
		if a.seq == b.seq && a.order == b.order && a.prio == b.prio {
			return a.sub < b.sub
		}
		return byPosition(a.order, b.order, a.prio, b.prio, a.seq, b.seq)
	})
}

// Tick emits packets that are complete or idle, in the order they were
// first seen: a finished packet waits for earlier ones (at most Idle).
// Connections that ended are emitted after their packets.
func (c *Correlator) Tick(now time.Time) {
	sort.SliceStable(c.open, func(i, j int) bool { return c.open[i].p.FirstSeen.Before(c.open[j].p.FirstSeen) })
	n := 0
	for _, p := range c.open {
		if !(p.complete && now.Sub(p.last) >= c.Idle/3 || now.Sub(p.last) >= c.Idle) {
			break
		}
		c.finish(p)
		n++
	}
	c.open = append(c.open[:0], c.open[n:]...)
	orph := c.orphans[:0]
	for _, o := range c.orphans {
		if now.Sub(o.Time) < c.Idle {
			orph = append(orph, o)
		} else {
			c.Stats.Unmatched++
		}
	}
	c.orphans = orph
	c.emitJourneys(now, false)
	c.emitFlows(func(r *connRec) bool { return r.ended && now.Sub(r.endedAt) >= 2*c.Idle })
}

// Flush emits every open packet, then every connection that had packets.
func (c *Correlator) Flush() {
	c.FlushPackets()
	c.emitFlows(func(*connRec) bool { return true })
}

// FlushPackets emits every open packet.
func (c *Correlator) FlushPackets() {
	sort.SliceStable(c.open, func(i, j int) bool { return c.open[i].p.FirstSeen.Before(c.open[j].p.FirstSeen) })
	for _, p := range c.open {
		c.finish(p)
	}
	c.open = nil
	c.Stats.Unmatched += uint64(len(c.orphans))
	c.orphans = nil
	c.emitJourneys(time.Now(), true)
}

func (c *Correlator) emitFlows(ready func(*connRec) bool) {
	for _, r := range c.conns.ready(ready) {
		c.Stats.Flows++
		if c.EmitFlow != nil {
			c.EmitFlow(r.flow())
		}
	}
}

func (c *Correlator) finish(p *pkt) {
	if p.merged || c.Stopped {
		return
	}
	j := c.journeyOf(p)
	if j != nil && !p.prepared {
		addProbeSnapshots(p, j)
	}
	if !c.prepare(p) {
		return
	}
	if j != nil {
		group := []*pkt{p}
		for _, q := range c.open {
			if q == p || q.merged || c.journeyOf(q) != j {
				continue
			}
			if !q.prepared {
				addProbeSnapshots(q, j)
			}
			if c.prepare(q) {
				q.merged = true
				group = append(group, q)
			}
		}
		sort.SliceStable(group, func(a, b int) bool { return group[a].p.FirstSeen.Before(group[b].p.FirstSeen) })
		j.used = true
		p = c.merge(j, group)
		for _, q := range group {
			q.merged = true
		}
	}
	c.Stats.Emitted++
	if c.Emit != nil {
		c.Emit(p.p)
	}
}

// prepare computes a packet's steps, NAT steps, fate and flow; false when
// the exact filter leaves it out.
func (c *Correlator) prepare(p *pkt) bool {
	if p.prepared {
		return p.keep
	}
	p.prepared = true
	if p.tkey != nil && c.byTrace[*p.tkey] == p {
		delete(c.byTrace, *p.tkey)
	}
	rec := c.conns.lookup(p)
	if !c.matches(p, rec) {
		c.Stats.Filtered++
		return false
	}
	p.keep = true
	sort.SliceStable(p.snaps, func(i, j int) bool {
		a, b := p.snaps[i], p.snaps[j]
		return byPosition(a.order, b.order, a.prio, b.prio, a.seq, b.seq)
	})
	dir := p.ctDir
	if dir < 0 && rec != nil {
		dir = rec.direction(p.p.Tuple)
	}
	if rec != nil && p.p.CTID == 0 {
		p.p.CTID = rec.id
	}
	sortSteps(p.steps)
	c.addNATSteps(p, rec, dir)
	sortSteps(p.steps)
	for _, s := range p.steps {
		p.p.Steps = append(p.p.Steps, s.step)
	}
	c.fate(p)
	if rec != nil {
		p.p.Flow = rec.packet(p.p, dir, func() uint64 { c.nextFlow++; return c.nextFlow })
	} else {
		p.p.Flow = c.flowID(p.p)
	}
	return true
}

func matchHeader(c *Correlator, h *event.Header) bool {
	return filter.Match(c.Filter, h.Fields())
}

// matches applies the exact filter: to the headers the packet was selected
// with, or to its connection (replies and translated packets of a matching
// connection belong to it).
func (c *Correlator) matches(p *pkt, rec *connRec) bool {
	if c.Filter == nil {
		return true
	}
	if p.fields != nil && filter.Match(c.Filter, p.fields) {
		return true
	}
	if rec != nil && rec.known {
		return rec.matched
	}
	// Selected after conntrack by the exact flow-following rules, before
	// its conntrack event arrived.
	return p.byCT
}

// fate decides what happened to the packet.
func (c *Correlator) fate(p *pkt) {
	pp := p.p
	for _, s := range pp.Steps {
		if s.Verdict != event.VerdictDrop && s.Verdict != event.VerdictReject {
			continue
		}
		pp.Verdict = event.FateDropped
		d := &event.Drop{By: s.Kind, Family: s.Family, Table: s.Table, Chain: s.Chain, Position: s.Position, Rule: s.Rule}
		if s.Kind == event.KindPolicy {
			d.Reason = "chain policy drop"
		} else if s.Verdict == event.VerdictReject || isReject(s.Rule) {
			d.Reason = "rejected"
		} else {
			d.Reason = "rule verdict drop"
		}
		pp.Drop = d
		return
	}
	for _, s := range pp.Steps {
		switch s.Verdict {
		case event.VerdictQueue, event.VerdictStolen:
			pp.Verdict = event.FateUnknown
			pp.Note = fmt.Sprintf("%s by %s/%s: the packet left netfilter's view", s.Verdict, s.Table, s.Chain)
			return
		}
	}
	h := p.hooks
	for _, s := range pp.Steps {
		h[event.ParseHook(s.Hook)] = true
	}
	pp.OIF = p.oif
	switch {
	case h[event.HookForward] || (h[event.HookPrerouting] && h[event.HookPostrouting]):
		pp.Verdict = event.FateForwarded
	case h[event.HookInput]:
		pp.Verdict = event.FateDelivered
	case h[event.HookOutput]:
		pp.Verdict = event.FateSent
	default:
		pp.Verdict = event.FateUnknown
		pp.Note = "no netfilter hook after prerouting: not routed to input or forward (no route, rp_filter, martian destination, or dropped outside netfilter)"
	}
}

func isReject(rule string) bool {
	return strings.Contains(rule, "-j REJECT") || strings.Contains(rule, " reject")
}

// flowID groups packets that have no conntrack entry by their tuple.
func (c *Correlator) flowID(p *event.Packet) uint64 {
	t := p.Tuple
	a := fmt.Sprintf("%s:%d", t.Src, t.Sport)
	b := fmt.Sprintf("%s:%d", t.Dst, t.Dport)
	if a > b {
		a, b = b, a
	}
	k := fmt.Sprintf("%s|%s|%s|%s", p.Netns, t.Proto, a, b)
	if id, ok := c.flows[k]; ok {
		return id
	}
	c.nextFlow++
	c.flows[k] = c.nextFlow
	return c.nextFlow
}

// ctStateName renders an nft ct state bit set.
func ctStateName(s uint32) string {
	var names []string
	for _, x := range []struct {
		bit  uint32
		name string
	}{{1, "invalid"}, {2, "established"}, {4, "related"}, {8, "new"}, {64, "untracked"}} {
		if s&x.bit != 0 {
			names = append(names, x.name)
		}
	}
	return strings.Join(names, ",")
}

// RPKernel is what the kernel said about a packet's rp_filter check: an
// IP_RPFILTER drop, or (where fexit works) the input route's own verdict.
type RPKernel struct {
	Dropped bool   // freed with drop reason IP_RPFILTER
	Checked bool   // a probe saw the input route's verdict
	Failed  bool   // that verdict was rp_filter's rejection
	By      string // the probe
}
