package trace

import (
	"math"
	"sort"
	"time"

	"github.com/nattrace/nattrace/event"
)

// A journey is what the BPF probes saw of one skb: rx, route, tx and drop
// events in every namespace it crossed, until it was freed. Netfilter
// packets of the same journey (one per traced namespace) are merged into
// one timeline when they are emitted.
type journey struct {
	obs    []*event.Observation
	fp     uint64
	start  time.Time
	last   time.Time
	closed bool // freed or dropped: the skb address may be reused
	used   bool // merged into an emitted packet
}

func (c *Correlator) addBPF(o *event.Observation) {
	j := c.journeys[o.SKB]
	if j == nil || j.closed {
		j = &journey{start: o.Time}
		c.journeys[o.SKB] = j
		c.journeyList = append(c.journeyList, j)
	}
	if j.fp == 0 && o.Header != nil {
		j.fp = o.Header.Fingerprint()
	}
	j.obs = append(j.obs, o)
	if o.Time.After(j.last) {
		j.last = o.Time
	}
	if o.Probe == "free" || o.Probe == "drop" {
		j.closed = true
		delete(c.journeys, o.SKB)
	}
}

// journeyOf finds the journey a netfilter packet belongs to: same
// fingerprint, a probe event in the packet's namespace, close in time.
func (c *Correlator) journeyOf(p *pkt) *journey {
	var best *journey
	bestD := time.Duration(math.MaxInt64)
	for _, j := range c.journeyList {
		if j.used || j.fp != p.fp || p.fp == 0 {
			continue
		}
		d := j.start.Sub(p.p.FirstSeen)
		if d < 0 {
			d = -d
		}
		if d > time.Second || d >= bestD {
			continue
		}
		for _, o := range j.obs {
			if o.Netns == p.netns {
				best, bestD = j, d
				break
			}
		}
	}
	return best
}

// Ordering of probe steps inside one namespace's part of a timeline.
func probeOrder(kind string) (int, int32) {
	switch kind {
	case event.KindRx:
		return 0, math.MinInt32
	case event.KindRoute, event.KindRPF:
		return 1, math.MaxInt32 // after prerouting, before input/forward
	case event.KindTx:
		return 4, 0
	case event.KindDrop:
		return 5, 0
	}
	return 5, 0
}

// merge builds one timeline from a journey and the netfilter packets of it.
func (c *Correlator) merge(j *journey, group []*pkt) {
	sort.SliceStable(j.obs, func(a, b int) bool { return j.obs[a].Time.Before(j.obs[b].Time) })
	byNS := map[string]*pkt{}
	for _, q := range group {
		byNS[q.netns] = q
	}
	var order []string
	seen := map[string]bool{}
	for _, o := range j.obs {
		if o.Netns != "" && !seen[o.Netns] {
			seen[o.Netns] = true
			order = append(order, o.Netns)
		}
	}
	for _, q := range group {
		if !seen[q.netns] {
			seen[q.netns] = true
			order = append(order, q.netns)
		}
	}
	multi := len(order) > 1
	lead := group[0]
	var steps []event.Step
	for _, ns := range order {
		var seg []sortStep
		if q := byNS[ns]; q != nil {
			for _, s := range q.steps {
				if multi && s.step.Netns == "" {
					s.step.Netns = ns
				}
				seg = append(seg, s)
			}
		}
		for i, o := range j.obs {
			if o.Netns != ns || o.Step.Kind == "" {
				continue
			}
			st := o.Step
			st.TNs = o.Time.Sub(lead.p.FirstSeen).Nanoseconds()
			ord, prio := probeOrder(st.Kind)
			seg = append(seg, sortStep{order: ord, prio: prio, seq: i, sub: 2, step: st})
			if st.Kind == event.KindRx {
				if rp := c.rpfilterStep(o, j); rp != nil {
					o2, p2 := probeOrder(event.KindRPF)
					seg = append(seg, sortStep{order: o2, prio: p2, seq: i, sub: 3, step: *rp})
				}
			}
		}
		sortSteps(seg)
		for _, s := range seg {
			steps = append(steps, s.step)
		}
	}
	lead.p.Steps = steps
	if len(order) > 0 && order[len(order)-1] != lead.netns {
		lead.p.EndNetns = order[len(order)-1]
	}
	// The fate: a kernel drop decides; else the last traced namespace's,
	// or delivery in a later namespace the packet reached.
	last := group[len(group)-1]
	for _, q := range group {
		if q.p.Verdict == event.FateDropped {
			last = q
		}
	}
	lead.p.Verdict, lead.p.Drop, lead.p.Note = last.p.Verdict, last.p.Drop, last.p.Note
	if last != lead && last.p.OIF != "" {
		lead.p.OIF = last.p.OIF
	}
	for _, o := range j.obs {
		if o.Probe != "drop" {
			continue
		}
		if lead.p.Drop == nil {
			lead.p.Verdict = event.FateDropped
			lead.p.Drop = &event.Drop{By: "kernel", Reason: o.Step.Reason, Location: o.Step.Location, Dev: o.Step.Dev}
			lead.p.Note = ""
		} else {
			lead.p.Drop.Reason, lead.p.Drop.Location = o.Step.Reason, o.Step.Location
		}
		for _, s := range steps {
			if s.Kind == event.KindRPF && s.Result == "fail" {
				lead.p.Drop.By, lead.p.Drop.Dev, lead.p.Drop.Mode = "rp_filter", s.Dev, s.Mode
				lead.p.Drop.Fix = rpfilterFix(s)
			}
		}
	}
	if lead.p.Drop == nil && len(j.obs) > 0 {
		end := j.obs[len(j.obs)-1]
		if end.Probe == "free" && end.Netns != "" && byNS[end.Netns] == nil && lead.p.EndNetns != "" {
			// The verdict is the traced namespace's; the probes saw where
			// the packet went on.
			lead.p.Note = "then received in " + end.Netns + " and consumed there"
		}
	}
}

// rpfilterStep asks the session's rp_filter checker about a received packet.
func (c *Correlator) rpfilterStep(o *event.Observation, j *journey) *event.Step {
	if c.RPFilter == nil || o.Header == nil || o.Step.Dev == "" || o.Header.Family != 4 {
		return nil
	}
	failed := false
	for _, x := range j.obs {
		if x.Probe == "drop" && x.Netns == o.Netns && x.Step.Reason == "IP_RPFILTER" {
			failed = true
		}
	}
	return c.RPFilter(o.Netns, o.Step.Dev, o.Header.Tuple.Src, o.Header.Tuple.Dst, failed)
}

// rpfilterFix says what would let a packet through rp_filter.
func rpfilterFix(s event.Step) string {
	if s.Mode == "strict" {
		return "the route back to the source leaves by " + orNone(s.ReverseDev) + ", not " + s.Dev +
			": set net.ipv4.conf." + s.Dev + ".rp_filter=2 and net.ipv4.conf.all.rp_filter=2 (loose), " +
			"or add a route to the source via " + s.Dev + " so that the path is symmetric"
	}
	return "there is no route back to the source: add one, or set net.ipv4.conf.all.rp_filter=0 and net.ipv4.conf." + s.Dev + ".rp_filter=0"
}

func orNone(s string) string {
	if s == "" {
		return "no device (no route)"
	}
	return s
}

// emitJourneys emits the journeys that ended in a kernel drop without any
// netfilter packet (dropped before or outside netfilter), and forgets the
// others once no packet can claim them.
func (c *Correlator) emitJourneys(now time.Time, all bool) {
	kept := c.journeyList[:0]
	for _, j := range c.journeyList {
		switch {
		case j.used:
		case !all && now.Sub(j.last) < 2*c.Idle:
			kept = append(kept, j) // a packet may still claim it
		default:
			c.emitJourney(j)
		}
	}
	c.journeyList = kept
}

func (c *Correlator) emitJourney(j *journey) {
	dropped, selected := false, false
	var first *event.Observation
	for _, o := range j.obs {
		if o.Probe == "drop" && (c.Traced == nil || c.Traced[o.Netns]) {
			dropped = true
		}
		selected = selected || o.Selected
		if first == nil && o.Header != nil {
			first = o
		}
	}
	j.used = true
	if !dropped || first == nil || selected {
		// Not dropped in a traced namespace, or netfilter tracing
		// selected it (then its rate limit left it out: counted there).
		return
	}
	if !c.bpfBudget(first.Time) {
		c.Stats.BPFLimited++
		return
	}
	h := first.Header
	if c.Filter != nil && !matchHeader(c, h) {
		return
	}
	c.nextID++
	p := &pkt{p: &event.Packet{Type: "packet", ID: c.nextID, Netns: first.Netns, FirstSeen: first.Time, Tuple: h.Tuple, Length: h.Length, Steps: []event.Step{}},
		netns: first.Netns, fp: h.Fingerprint(), ctDir: -1}
	if h.HasPorts && h.ProtoNum == 6 {
		p.p.TCPFlags = event.TCPFlagString(h.TCPFlags)
	}
	for _, o := range j.obs {
		if o.Probe == "rx" && p.p.IIF == "" {
			p.p.IIF = o.Step.Dev
		}
	}
	p.p.Verdict = event.FateUnknown
	c.merge(j, []*pkt{p})
	p.p.Flow = c.flowID(p.p)
	c.Stats.Emitted++
	if c.Emit != nil {
		c.Emit(p.p)
	}
}

// bpfBudget rate-limits packets known only from the probes (the kernel's
// limit applies to netfilter tracing only).
func (c *Correlator) bpfBudget(now time.Time) bool {
	if c.Rate == 0 {
		return true
	}
	if now.Sub(c.bpfWindow) >= time.Second {
		c.bpfWindow, c.bpfCount = now, 0
	}
	c.bpfCount++
	return c.bpfCount <= c.Rate
}
