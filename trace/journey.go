package trace

import (
	"fmt"
	"math"
	"sort"
	"strings"
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
	if j != nil && (o.Time.Sub(j.last) > time.Second || (o.Header != nil && j.fp != 0 && o.Header.Fingerprint() != j.fp)) {
		// The skb address came back as another packet (some frees have
		// no tracepoint).
		j.closed = true
	}
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

// addProbeSnapshots gives a packet the headers the probes saw in its
// namespace: on receive, around NAT (BPF netfilter programs) and on
// transmit; the NAT steps are computed from all snapshots.
func addProbeSnapshots(p *pkt, j *journey) {
	for _, o := range j.obs {
		if o.Netns != p.netns || o.Header == nil {
			continue
		}
		var sn snapshot
		switch o.Probe {
		case "rx":
			sn = snapshot{order: event.HookPrerouting.Order(), prio: math.MinInt32, hook: event.HookPrerouting}
		case "nf":
			sn = snapshot{order: o.Hook.Order(), prio: o.Priority, hook: o.Hook, oif: o.Step.Dev}
		case "tx":
			sn = snapshot{order: event.HookPostrouting.Order(), prio: math.MaxInt32, hook: event.HookPostrouting, oif: o.Step.Dev}
		default:
			continue
		}
		p.seq++
		sn.seq, sn.t = p.seq, o.Header.Tuple
		p.snaps = append(p.snaps, sn)
	}
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

// routeSummary reduces a namespace's route lookups for one packet: per
// destination the successful lookup, or one "no route" step when every
// table missed (-EAGAIN per table; the kernel's ENETUNREACH is not traced).
// A lookup to the packet's own source is rp_filter's reverse lookup.
func routeSummary(obs []*event.Observation) map[*event.Observation]event.Step {
	out := map[*event.Observation]event.Step{}
	var src string
	byDst := map[string][]*event.Observation{}
	var dsts []string
	for _, o := range obs {
		if o.Probe == "rx" && o.Header != nil && src == "" {
			src = o.Header.Tuple.Src.String()
		}
		if o.Probe != "route" {
			continue
		}
		if _, ok := byDst[o.Step.Dst]; !ok {
			dsts = append(dsts, o.Step.Dst)
		}
		byDst[o.Step.Dst] = append(byDst[o.Step.Dst], o)
	}
	for _, d := range dsts {
		var ok, miss *event.Observation
		for _, o := range byDst[d] {
			if o.Step.Error == "" {
				ok = o
			} else if miss == nil {
				miss = o
			}
		}
		pick := ok
		st := event.Step{}
		if pick != nil {
			st = pick.Step
		} else {
			pick = miss
			st = miss.Step
			if st.Error == "EAGAIN" {
				st.Error = "no route (ENETUNREACH)"
			}
		}
		if d == src {
			st.Result = "reverse"
		}
		out[pick] = st
	}
	return out
}

// merge builds one timeline from a journey and the netfilter packets of it,
// and returns the packet that carries it.
func (c *Correlator) merge(j *journey, group []*pkt) *pkt {
	sort.SliceStable(j.obs, func(a, b int) bool { return j.obs[a].Time.Before(j.obs[b].Time) })
	// A route lookup belongs to the packet only in a namespace where it was
	// received or sent: elsewhere it is another packet's that reused the
	// skb address (seen: the client's lookup for its next segment attached
	// to a forwarded FIN).
	devNS := map[string]bool{}
	for _, o := range j.obs {
		if o.Probe == "rx" || o.Probe == "tx" {
			devNS[o.Netns] = true
		}
	}
	if len(devNS) > 0 {
		kept := j.obs[:0:0]
		for _, o := range j.obs {
			if o.Probe != "route" || devNS[o.Netns] {
				kept = append(kept, o)
			}
		}
		j.obs = kept
	}
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
	// The first and last packets in the order the journey crossed the
	// namespaces (netfilter events of several namespaces come on several
	// sockets: their receive times do not order them).
	var inOrder []*pkt
	for _, ns := range order {
		if q := byNS[ns]; q != nil {
			inOrder = append(inOrder, q)
		}
	}
	lead := inOrder[0]
	if lead != group[0] {
		lead.p.ID, group[0].p.ID = group[0].p.ID, lead.p.ID // keep ids in emission order
		lead.p.FirstSeen = group[0].p.FirstSeen
	}
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
		var nsObs []*event.Observation
		for _, o := range j.obs {
			if o.Netns == ns {
				nsObs = append(nsObs, o)
			}
		}
		routes := routeSummary(nsObs)
		for i, o := range j.obs {
			if o.Netns != ns || o.Step.Kind == "" {
				continue
			}
			st := o.Step
			if o.Probe == "route" {
				r, ok := routes[o]
				if !ok {
					continue
				}
				st = r
			}
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
	last := inOrder[len(inOrder)-1]
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
		if c.Traced != nil && !c.Traced[o.Netns] && byNS[o.Netns] == nil {
			// Dropped later, in a namespace that is not traced: the traced
			// namespaces' verdict stands; say where it ended.
			lead.p.Note = fmt.Sprintf("then dropped in %s: %s", o.Netns, o.Step.Reason)
			continue
		}
		if lead.p.Drop == nil && pingDelivery(o, lead.p) {
			// Echo replies reach raw sockets (ping run as root) before
			// ping_rcv looks for an ICMP socket and frees the original.
			lead.p.Verdict, lead.p.Drop = event.FateDelivered, nil
			if o.Netns != lead.p.Netns {
				lead.p.EndNetns = o.Netns
			}
			lead.p.Note = "no ICMP socket took it (NO_SOCKET at ping_rcv): raw sockets, as ping run as root uses, get their copy before that check"
			continue
		}
		if lead.p.Drop == nil {
			lead.p.Verdict = event.FateDropped
			lead.p.Drop = &event.Drop{By: "kernel", Reason: o.Step.Reason, Location: o.Step.Location, Dev: o.Step.Dev}
			lead.p.Note = ""
		} else {
			lead.p.Drop.Reason, lead.p.Drop.Location = o.Step.Reason, o.Step.Location
		}
		explainDrop(lead.p, o)
		for _, s := range steps {
			if s.Kind == event.KindRPF && s.Result == "fail" {
				lead.p.Drop.By, lead.p.Drop.Dev, lead.p.Drop.Mode = "rp_filter", s.Dev, s.Mode
				lead.p.Drop.Fix = rpfilterFix(s)
			}
		}
	}
	if lead.p.Drop == nil && lead.p.Note == "" && len(j.obs) > 0 {
		end := j.obs[len(j.obs)-1]
		if end.Probe == "free" && end.Netns != "" && byNS[end.Netns] == nil && lead.p.EndNetns != "" {
			// The verdict is the traced namespace's; the probes saw where
			// the packet went on.
			lead.p.Note = "then received in " + end.Netns + " and consumed there"
		}
	}
	return lead
}

// explainDrop fills in what a kernel drop reason leaves implicit, and
// what older kernels do not report: a route lookup's miss (6.1's
// fib_table_lookup tracepoint fires only on hits), and a loopback
// destination after DNAT (IP_LOCALNET; 6.1 says NOT_SPECIFIED).
func explainDrop(p *event.Packet, o *event.Observation) {
	d := p.Drop
	switch {
	case d.Reason == "IP_INNOROUTES" || d.Reason == "IP_OUTNOROUTES":
		for _, s := range p.Steps {
			if s.Kind == event.KindRoute && s.Error != "" && s.Netns == o.Netns {
				return
			}
		}
		dst := p.Tuple.Dst
		if o.Header != nil {
			dst = o.Header.Tuple.Dst
		}
		st := event.Step{Kind: event.KindRoute, Netns: o.Netns, Dst: dst.String(), Table: "any",
			Error: "no route (ENETUNREACH; from the drop reason, the route lookup's miss was not traced)"}
		for i := range p.Steps {
			if p.Steps[i].Kind == event.KindDrop {
				p.Steps = append(p.Steps[:i], append([]event.Step{st}, p.Steps[i:]...)...)
				return
			}
		}
		p.Steps = append(p.Steps, st)
	case d.Reason == "IP_LOCALNET" || d.Reason == "NOT_SPECIFIED" && strings.HasPrefix(d.Location, "ip_rcv_finish_core"):
		for _, s := range p.Steps {
			if s.Kind == event.KindNAT && s.After != nil && s.After.Dst.IsLoopback() && !s.Reverse {
				dev := d.Dev
				if dev == "" {
					dev = p.IIF
				}
				d.Fix = fmt.Sprintf("the destination after %s is %s, a loopback address arriving on %s: the kernel drops it unless net.ipv4.conf.%s.route_localnet=1",
					strings.ToUpper(s.NAT), s.After.Dst, dev, dev)
				return
			}
		}
	}
}

// pingDelivery reports whether a drop is ping_rcv freeing an echo reply
// that no ICMP (datagram) socket wanted: not a drop for the network.
func pingDelivery(o *event.Observation, p *event.Packet) bool {
	t := p.Tuple.ICMPType
	return o.Step.Reason == "NO_SOCKET" && strings.HasPrefix(o.Step.Location, "ping_rcv") &&
		t != nil && (*t == 0 && p.Tuple.Proto == "icmp" || *t == 129 && p.Tuple.Proto == "icmp6")
}

// rpfilterStep asks the session's rp_filter checker about a received packet.
func (c *Correlator) rpfilterStep(o *event.Observation, j *journey) *event.Step {
	if c.RPFilter == nil || o.Header == nil || o.Step.Dev == "" || o.Header.Family != 4 {
		return nil
	}
	var k RPKernel
	for _, x := range j.obs {
		if x.Netns != o.Netns {
			continue
		}
		switch {
		case x.Probe == "drop" && x.Step.Reason == "IP_RPFILTER":
			k.Dropped = true
		case x.Probe == "rpf":
			k.Checked, k.Failed, k.By = true, x.Step.Result == "fail", x.Step.By
		}
	}
	return c.RPFilter(o.Netns, o.Step.Dev, o.Header.Tuple.Src, o.Header.Tuple.Dst, k)
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
