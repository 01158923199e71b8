package trace

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/nattrace/nattrace/event"
	"github.com/nattrace/nattrace/filter"
)

// Observation streams recorded with "nattrace flow --debug-observations"
// in a client-router-server lab (router 10.200.1.1:80 DNAT to
// 10.200.2.2:8080), filter "tcp and dst port 80":
//
//	dnat_iptables_nft.jsonl  iptables-nft DNAT
//	double_nat_legacy.jsonl  iptables-legacy DNAT + SNAT to 10.200.2.1
//	                         (nft selector, legacy TRACE lines)
func loadObservations(t *testing.T, name string) []*event.Observation {
	t.Helper()
	f, err := os.Open("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []*event.Observation
	s := bufio.NewScanner(f)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		o := &event.Observation{}
		if err := json.Unmarshal(s.Bytes(), o); err != nil {
			t.Fatal(err)
		}
		out = append(out, o)
	}
	return out
}

type replayResult struct {
	packets []*event.Packet
	flows   []*event.Flow
}

// replay feeds observations; lateCT delivers conntrack events only after
// every packet was emitted.
func replay(obs []*event.Observation, lateCT bool) replayResult {
	var r replayResult
	c := NewCorrelator(filter.MustParse("tcp and dst port 80"), func(p *event.Packet) { r.packets = append(r.packets, p) })
	c.EmitFlow = func(f *event.Flow) { r.flows = append(r.flows, f) }
	var ct []*event.Observation
	for _, o := range obs {
		if lateCT && o.Source == SourceConntrack {
			ct = append(ct, o)
			continue
		}
		c.Add(o)
	}
	c.FlushPackets()
	for _, o := range ct {
		c.Add(o)
	}
	c.Flush()
	return r
}

// summary is what must not depend on arrival order.
func (r replayResult) summary() string {
	var b strings.Builder
	for _, p := range r.packets {
		fmt.Fprintf(&b, "%s:%d>%s:%d %s %s flow=%d:", p.Tuple.Src, p.Tuple.Sport, p.Tuple.Dst, p.Tuple.Dport, p.TCPFlags, p.Verdict, p.Flow)
		for _, s := range p.Steps {
			if s.Kind == event.KindNAT {
				fmt.Fprintf(&b, " [%s rev=%v %s:%d>%s:%d => %s:%d>%s:%d by %s %s]", s.NAT, s.Reverse, s.Before.Src, s.Before.Sport, s.Before.Dst, s.Before.Dport,
					s.After.Src, s.After.Sport, s.After.Dst, s.After.Dport, s.By, s.SetupBy)
			} else {
				fmt.Fprintf(&b, " %s/%s#%d", s.Table, s.Chain, s.Position)
			}
		}
		b.WriteString("\n")
	}
	for _, f := range r.flows {
		fmt.Fprintf(&b, "flow %d nat=%v orig=%d reply=%d %s:%d>%s:%d / %s:%d>%s:%d\n", f.ID, f.NAT, f.Packets.Orig, f.Packets.Reply,
			f.Orig.Src, f.Orig.Sport, f.Orig.Dst, f.Orig.Dport, f.Reply.Src, f.Reply.Sport, f.Reply.Dst, f.Reply.Dport)
	}
	return b.String()
}

func natOf(p *event.Packet) []event.Step {
	var out []event.Step
	for _, s := range p.Steps {
		if s.Kind == event.KindNAT {
			out = append(out, s)
		}
	}
	return out
}

func TestReplayDNAT(t *testing.T) {
	r := replay(loadObservations(t, "dnat_iptables_nft.jsonl"), false)
	if len(r.packets) != 8 || len(r.flows) != 1 {
		t.Fatalf("%d packets, %d flows:\n%s", len(r.packets), len(r.flows), r.summary())
	}
	syn, synack := r.packets[0], r.packets[1]
	n, m := natOf(syn), natOf(synack)
	if syn.TCPFlags != "[S]" || len(n) != 1 || n[0].By != "rule" || n[0].After.Dst.String() != "10.200.2.2" || n[0].After.Dport != 8080 {
		t.Errorf("SYN:\n%s", r.summary())
	}
	if synack.TCPFlags != "[S.]" || len(m) != 1 || !m[0].Reverse || m[0].SetupBy != "nat/PREROUTING rule 1" || m[0].After.Sport != 80 {
		t.Errorf("SYN-ACK:\n%s", r.summary())
	}
	f := r.flows[0]
	if f.Packets.Orig+f.Packets.Reply != 8 || f.Packets.Reply == 0 || f.Reply.Sport != 8080 || len(f.States) == 0 {
		t.Errorf("flow %+v", f)
	}
}

func TestReplayDoubleNATLegacy(t *testing.T) {
	r := replay(loadObservations(t, "double_nat_legacy.jsonl"), false)
	if len(r.packets) != 8 {
		t.Fatalf("%d packets:\n%s", len(r.packets), r.summary())
	}
	n, m := natOf(r.packets[0]), natOf(r.packets[1])
	if len(n) != 2 || n[0].NAT != "dnat" || n[1].NAT != "snat" || n[0].By != "rule" || n[1].By != "rule" || n[1].After.Src.String() != "10.200.2.1" {
		t.Errorf("first packet:\n%s", r.summary())
	}
	if len(m) != 2 || m[0].NAT != "snat" || m[1].NAT != "dnat" || !m[0].Reverse || !m[1].Reverse || m[0].SetupBy != "nat/POSTROUTING rule 1" {
		t.Errorf("reply:\n%s", r.summary())
	}
	// The legacy TRACE lines are steps of the nft-selected packets.
	legacy := 0
	for _, s := range r.packets[0].Steps {
		if s.Backend == "iptables-legacy" {
			legacy++
		}
	}
	if legacy < 3 {
		t.Errorf("first packet has %d legacy steps:\n%s", legacy, r.summary())
	}
}

// The same streams, delivered out of order, give the same result.
func TestReplayOutOfOrder(t *testing.T) {
	for _, name := range []string{"dnat_iptables_nft.jsonl", "double_nat_legacy.jsonl"} {
		obs := loadObservations(t, name)
		want := replay(obs, false).summary()

		if got := replay(obs, true).summary(); got != want {
			t.Errorf("%s: conntrack events after the packets:\n%s\nwant\n%s", name, got, want)
		}
		// Legacy lines first: the nft markers arrive after them.
		var reordered []*event.Observation
		for _, src := range []string{SourceLegacy, SourceConntrack, SourceNFTrace} {
			for _, o := range obs {
				if o.Source == src {
					reordered = append(reordered, o)
				}
			}
		}
		if got := replay(reordered, false).summary(); got != want {
			t.Errorf("%s: legacy lines first:\n%s\nwant\n%s", name, got, want)
		}
		// Random interleaving of the sources, each keeping its own order
		// (as three sockets deliver them).
		rng := rand.New(rand.NewPCG(7, uint64(len(obs))))
		for round := 0; round < 20; round++ {
			queues := map[string][]*event.Observation{}
			var names []string
			for _, o := range obs {
				if _, ok := queues[o.Source]; !ok {
					names = append(names, o.Source)
				}
				queues[o.Source] = append(queues[o.Source], o)
			}
			var mixed []*event.Observation
			for len(mixed) < len(obs) {
				src := names[rng.IntN(len(names))]
				if q := queues[src]; len(q) > 0 {
					mixed = append(mixed, q[0])
					queues[src] = q[1:]
				}
			}
			if got := replay(mixed, false).summary(); got != want {
				t.Fatalf("%s: interleaving %d:\n%s\nwant\n%s", name, round, got, want)
			}
		}
	}
}

func TestConnDirectionAndMatch(t *testing.T) {
	obs := loadObservations(t, "dnat_iptables_nft.jsonl")
	var cf *event.CTFlow
	for _, o := range obs {
		if o.Flow != nil && o.Flow.Event == event.CTNew {
			cf = o.Flow
			break
		}
	}
	if cf == nil {
		t.Fatal("no conntrack new event in the fixture")
	}
	r := &connRec{orig: cf.Orig, reply: cf.Reply}
	if r.direction(cf.Orig) != 0 || r.direction(cf.Reply) != 1 {
		t.Error("direction by tuple")
	}
	other := cf.Orig
	other.Sport++
	if r.direction(other) != -1 {
		t.Error("another connection's tuple matched")
	}
	tab := newConnTable()
	for _, f := range []string{"tcp and dst port 80", "src port 8080", "host 10.200.2.2"} {
		tab.observe(filter.MustParse(f), &event.Observation{Netns: "r", Flow: cf})
		if rec := tab.byID[connKey{"r", cf.ID}]; rec == nil || !rec.matched {
			t.Errorf("%q: the connection (orig or reply tuple) should match", f)
		}
		tab = newConnTable()
	}
	tab.observe(filter.MustParse("udp"), &event.Observation{Netns: "r", Flow: cf})
	if len(tab.byID) != 0 {
		t.Error("a connection that does not match is kept")
	}
}
