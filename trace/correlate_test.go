package trace

import (
	"net/netip"
	"testing"
	"time"

	"github.com/nattrace/nattrace/event"
	"github.com/nattrace/nattrace/filter"
)

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func hdr(src, dst string, sport, dport uint16, ipid uint32) *event.Header {
	return &event.Header{Family: 4, ProtoNum: filter.ProtoTCP, IPID: ipid, Length: 60, HasPorts: true, TCPFlags: 0x02,
		Tuple: event.Tuple{Proto: "tcp", Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Sport: sport, Dport: dport}}
}

func marker(id uint32, at time.Duration, h *event.Header) *event.Observation {
	return &event.Observation{Source: SourceNFTrace, Netns: "r", Time: t0.Add(at), TraceID: id, Marker: true, Header: h,
		IIF: "r0", Hook: event.HookPrerouting}
}

func step(src string, id uint32, at time.Duration, base bool, hook event.Hook, prio int32, s event.Step) *event.Observation {
	return &event.Observation{Source: src, Netns: "r", Time: t0.Add(at), TraceID: id, BaseChain: base, Hook: hook, Priority: prio, Step: s}
}

func collect(c *Correlator) *[]*event.Packet {
	var out []*event.Packet
	c.Emit = func(p *event.Packet) { out = append(out, p) }
	return &out
}

func TestCorrelatorCallStack(t *testing.T) {
	c := NewCorrelator(nil, nil)
	out := collect(c)
	c.Add(marker(7, 0, hdr("10.200.1.2", "10.200.1.1", 40000, 7000, 1)))
	add := func(base bool, chain string, pos int, kind, verdict, target string) {
		c.Add(step(SourceNFTrace, 7, time.Microsecond, base, event.HookInput, 0,
			event.Step{Kind: kind, Table: "filter", Chain: chain, Position: pos, Verdict: verdict, Target: target}))
	}
	add(true, "INPUT", 1, "rule", "jump", "CHAIN-PART")
	add(false, "CHAIN-PART", 1, "rule", "jump", "CHAIN-A")
	add(false, "CHAIN-A", 1, "rule", "goto", "CHAIN-SUB")
	add(false, "CHAIN-SUB", 1, "return", "return", "")
	add(false, "CHAIN-PART", 2, "return", "return", "")
	add(true, "INPUT", 2, "policy", "accept", "")
	c.Flush()
	if len(*out) != 1 {
		t.Fatalf("%d packets", len(*out))
	}
	p := (*out)[0]
	if p.Steps[3].Target != "CHAIN-PART" || p.Steps[4].Target != "INPUT" {
		t.Errorf("returns go to %q and %q, want CHAIN-PART (the last -j caller, not the -g one) and INPUT",
			p.Steps[3].Target, p.Steps[4].Target)
	}
	if p.Verdict != event.FateDelivered || p.Steps[0].Hook != "input" || p.Steps[2].Hook != "input" {
		t.Errorf("verdict %s hooks %q %q", p.Verdict, p.Steps[0].Hook, p.Steps[2].Hook)
	}
}

func TestCorrelatorTraceIDReuseAndOrder(t *testing.T) {
	c := NewCorrelator(nil, nil)
	out := collect(c)
	// Packet 1 with trace id 5; packet 2 reuses id 5; a dropped packet 3
	// (id 9) completes first but is emitted after the earlier ones.
	c.Add(marker(5, 0, hdr("10.200.1.2", "10.200.2.2", 1, 80, 1)))
	c.Add(step(SourceNFTrace, 5, 1*time.Microsecond, true, event.HookForward, 0, event.Step{Kind: "rule", Table: "filter", Chain: "FORWARD", Verdict: "accept"}))
	c.Add(marker(5, 2*time.Microsecond, hdr("10.200.1.2", "10.200.2.2", 1, 80, 2)))
	c.Add(marker(9, 3*time.Microsecond, hdr("10.200.1.2", "10.200.2.2", 2, 22, 3)))
	c.Add(step(SourceNFTrace, 9, 4*time.Microsecond, true, event.HookForward, 0, event.Step{Kind: "rule", Table: "filter", Chain: "FORWARD", Position: 2, Rule: "-A FORWARD -p tcp -m tcp --dport 22 -j DROP", Verdict: "drop"}))
	c.Add(step(SourceNFTrace, 5, 5*time.Microsecond, true, event.HookInput, 0, event.Step{Kind: "policy", Table: "filter", Chain: "INPUT", Verdict: "accept"}))
	// Packet 1 is complete (its id was reused); packet 3 (dropped) is
	// complete too but waits behind the open packet 2.
	c.Tick(t0.Add(c.Idle / 2))
	if len(*out) != 1 || (*out)[0].ID != 1 {
		t.Fatalf("emitted %d packets early", len(*out))
	}
	c.Tick(t0.Add(time.Second))
	if len(*out) != 3 {
		t.Fatalf("%d packets", len(*out))
	}
	p1, p2, p3 := (*out)[0], (*out)[1], (*out)[2]
	if p1.ID != 1 || p2.ID != 2 || p3.ID != 3 {
		t.Errorf("order %d %d %d", p1.ID, p2.ID, p3.ID)
	}
	if p1.Verdict != event.FateForwarded || len(p2.Steps) != 1 || p2.Verdict != event.FateDelivered {
		t.Errorf("id reuse: p1 %s %d steps, p2 %s %d steps", p1.Verdict, len(p1.Steps), p2.Verdict, len(p2.Steps))
	}
	if p3.Verdict != event.FateDropped || p3.Drop == nil || p3.Drop.Position != 2 || p3.Drop.Reason != "rule verdict drop" {
		t.Errorf("drop: %+v", p3.Drop)
	}
	if p1.Flow != p2.Flow || p1.Flow == p3.Flow {
		t.Errorf("flows %d %d %d", p1.Flow, p2.Flow, p3.Flow)
	}
}

func TestCorrelatorJoinsLegacyByFingerprint(t *testing.T) {
	c := NewCorrelator(nil, nil)
	out := collect(c)
	h := hdr("10.200.1.2", "10.200.1.1", 40000, 80, 4242)
	// The legacy line arrives before the nft marker (two sockets).
	leg := step(SourceLegacy, 0, 3*time.Microsecond, true, event.HookForward, 0,
		event.Step{Kind: "rule", Table: "filter", Chain: "FORWARD", Position: 1, Verdict: "accept", Backend: "iptables-legacy"})
	after := *h
	after.Tuple.Dst = netip.MustParseAddr("10.200.2.2") // post-DNAT: same fingerprint
	leg.Header = &after
	c.Add(leg)
	c.Add(marker(1, 0, h))
	c.Add(step(SourceNFTrace, 1, 1*time.Microsecond, true, event.HookPrerouting, -100,
		event.Step{Kind: "rule", Table: "nat", Chain: "pre", Verdict: "accept", Backend: "nft", Syntax: "nft", Rule: "tcp dport 80 dnat to 10.200.2.2"}))
	// Another packet's legacy line: different ip id, never joined.
	other := step(SourceLegacy, 0, 4*time.Microsecond, true, event.HookForward, 0, event.Step{Kind: "rule", Table: "filter", Chain: "FORWARD"})
	other.Header = hdr("10.200.1.2", "10.200.1.1", 40000, 80, 4243)
	c.Add(other)
	c.Flush()
	if len(*out) != 1 {
		t.Fatalf("%d packets", len(*out))
	}
	p := (*out)[0]
	// The nat rule, the translation it made (seen in the legacy line's
	// headers), the legacy filter step.
	if len(p.Steps) != 3 || p.Steps[0].Table != "nat" || p.Steps[1].Kind != "nat" || p.Steps[1].By != "rule" ||
		p.Steps[1].After.Dst.String() != "10.200.2.2" || p.Steps[2].Backend != "iptables-legacy" {
		t.Fatalf("steps %+v", p.Steps)
	}
	if c.Stats.Unmatched != 1 {
		t.Errorf("unmatched %d", c.Stats.Unmatched)
	}
}

func TestCorrelatorPostFilterAndBoundary(t *testing.T) {
	c := NewCorrelator(filter.MustParse("tcp and not port 22"), nil)
	out := collect(c)
	c.Add(marker(1, 0, hdr("10.200.1.2", "10.200.2.2", 40000, 22, 1))) // selected by a broader rule
	c.Add(marker(2, 0, hdr("10.200.1.2", "10.200.2.2", 40000, 80, 2)))
	// Another session's selector starts a packet on id 2: later events are not ours.
	c.Add(&event.Observation{Source: SourceNFTrace, Netns: "r", Time: t0, TraceID: 2, Boundary: true})
	c.Add(step(SourceNFTrace, 2, time.Microsecond, true, event.HookForward, 0, event.Step{Kind: "rule", Table: "filter", Chain: "FORWARD", Verdict: "drop"}))
	c.Flush()
	if len(*out) != 1 || (*out)[0].Tuple.Dport != 80 || len((*out)[0].Steps) != 0 {
		t.Fatalf("out %+v", *out)
	}
	if c.Stats.Filtered != 1 || c.Stats.Unmatched != 1 {
		t.Errorf("filtered %d unmatched %d", c.Stats.Filtered, c.Stats.Unmatched)
	}
}

func TestLegacyVerdicts(t *testing.T) {
	for _, c := range []struct {
		target  string
		isGoto  bool
		isChain bool
		verdict string
	}{
		{"ACCEPT", false, false, "accept"}, {"DROP", false, false, "drop"}, {"REJECT", false, false, "reject"},
		{"RETURN", false, false, "return"}, {"DNAT", false, false, "accept"}, {"LOG", false, false, "continue"},
		{"KUBE-SERVICES", false, true, "jump"}, {"CHAIN-SUB", true, true, "goto"}, {"", false, false, "continue"},
	} {
		r := &rulesetRule{Target: c.target, Goto: c.isGoto}
		if v, _ := legacyVerdict(r.rule(), c.isChain); v != c.verdict {
			t.Errorf("%s: %s, want %s", c.target, v, c.verdict)
		}
	}
}

// A legacy line still joins its packet after the packet's trace id was
// reused by the next packet (seen with MASQUERADE on a legacy router).
func TestCorrelatorLegacyAfterTraceIDReuse(t *testing.T) {
	c := NewCorrelator(nil, nil)
	out := collect(c)
	h1 := hdr("10.200.1.2", "10.200.2.2", 40000, 8080, 100)
	c.Add(marker(3, 0, h1))
	c.Add(marker(3, time.Microsecond, hdr("10.200.1.2", "10.200.2.2", 40000, 8080, 101)))
	leg := step(SourceLegacy, 0, 2*time.Microsecond, true, event.HookPostrouting, 100,
		event.Step{Kind: "rule", Table: "nat", Chain: "POSTROUTING", Position: 1, Syntax: "iptables", Rule: "-A POSTROUTING -o r1 -j MASQUERADE", Verdict: "accept"})
	leg.Header = h1
	c.Add(leg)
	c.Flush()
	if len(*out) != 2 || len((*out)[0].Steps) != 1 || len((*out)[1].Steps) != 0 {
		t.Fatalf("%+v", *out)
	}
}

// A packet forwarded by a traced namespace and dropped later in one that is
// not traced keeps the traced verdict; the drop is a note.
func TestJourneyDropInUntracedNamespace(t *testing.T) {
	c := NewCorrelator(nil, nil)
	c.Traced = map[string]bool{"r": true}
	out := collect(c)
	h := hdr("10.200.2.2", "10.200.1.2", 8080, 40000, 77)
	c.Add(marker(1, 0, h))
	c.Add(step(SourceNFTrace, 1, time.Microsecond, true, event.HookForward, 0, event.Step{Kind: "policy", Table: "filter", Chain: "FORWARD", Verdict: "accept"}))
	for i, o := range []*event.Observation{
		{Source: SourceBPF, Probe: "rx", Netns: "r", Header: h, Step: event.Step{Kind: event.KindRx, Dev: "r1"}},
		{Source: SourceBPF, Probe: "tx", Netns: "r", Header: h, Step: event.Step{Kind: event.KindTx, Dev: "r0"}},
		{Source: SourceBPF, Probe: "rx", Netns: "client", Header: h, Step: event.Step{Kind: event.KindRx, Dev: "c0"}},
		{Source: SourceBPF, Probe: "drop", Netns: "client", Header: h, Step: event.Step{Kind: event.KindDrop, Reason: "NO_SOCKET"}},
	} {
		o.SKB, o.Time = 0xabc, t0.Add(time.Duration(i)*time.Microsecond)
		c.Add(o)
	}
	c.Flush()
	if len(*out) != 1 {
		t.Fatalf("%d packets", len(*out))
	}
	p := (*out)[0]
	if p.Verdict != event.FateForwarded || p.Drop != nil || p.Note != "then dropped in client: NO_SOCKET" {
		t.Fatalf("verdict %s drop %+v note %q", p.Verdict, p.Drop, p.Note)
	}
}
