package report

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nattrace/nattrace/event"
)

func samplePacket() *event.Packet {
	return &event.Packet{Type: "packet", ID: 1, Netns: "router", FirstSeen: time.Date(2026, 11, 22, 10, 1, 2, 345678000, time.UTC),
		Tuple:    event.Tuple{Proto: "tcp", Src: netip.MustParseAddr("10.200.1.2"), Dst: netip.MustParseAddr("10.200.1.1"), Sport: 40000, Dport: 80},
		TCPFlags: "[S]", Length: 60, IIF: "r0", CTState: "new",
		Steps: []event.Step{
			{Kind: "rule", Family: "ip", Table: "nat", Chain: "PREROUTING", Hook: "prerouting", Position: 1, Syntax: "iptables",
				Rule: "-A PREROUTING -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.200.2.2:8080", Verdict: "accept"},
			{Kind: "rule", Family: "inet", Table: "fw", Chain: "forward", Hook: "forward", Position: 2, Syntax: "nft", Rule: "jump sub", Verdict: "jump", Target: "sub"},
			{Kind: "return", Family: "inet", Table: "fw", Chain: "sub", Hook: "forward", Position: 3, Syntax: "nft", Verdict: "return", Target: "forward"},
			{Kind: "rule", Table: "filter", Chain: "FORWARD", Hook: "forward", Position: 2, Syntax: "iptables", Rule: "-A FORWARD -p tcp -m tcp --dport 8080 -j DROP", Verdict: "drop"},
		},
		Verdict: "dropped",
		Drop:    &event.Drop{By: "rule", Table: "filter", Chain: "FORWARD", Position: 2, Rule: "-A FORWARD -p tcp -m tcp --dport 8080 -j DROP", Reason: "rule verdict drop"},
	}
}

func TestTextPacket(t *testing.T) {
	var b bytes.Buffer
	NewText(&b, false).Packet(samplePacket())
	want := `10:01:02.345678 [router] IP 10.200.1.2.40000 > 10.200.1.1.80: tcp Flags [S], length 60, in r0, ct new
  prerouting  nat/PREROUTING               rule 1: -A PREROUTING -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.200.2.2:8080  => accept
  forward     inet fw/forward              rule 2: jump sub  => jump sub
  forward     inet fw/sub                  end of chain, return to forward
  forward     filter/FORWARD               rule 2: -A FORWARD -p tcp -m tcp --dport 8080 -j DROP  => drop
  => DROPPED by filter/FORWARD rule 2: -A FORWARD -p tcp -m tcp --dport 8080 -j DROP

`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	var c bytes.Buffer
	NewText(&c, true).Packet(samplePacket())
	if !strings.Contains(c.String(), "\x1b[31m") {
		t.Error("no colour for the drop when asked for colour")
	}
}

func TestFates(t *testing.T) {
	p := samplePacket()
	p.Drop, p.Verdict, p.OIF = nil, event.FateForwarded, "r1"
	if got := Fate(p); got != "forwarded out of r1 [router]" {
		t.Error(got)
	}
	p.Verdict, p.Note = event.FateUnknown, "no netfilter hook after prerouting"
	if got := Fate(p); !strings.Contains(got, "no netfilter hook") {
		t.Error(got)
	}
	p.Verdict, p.Drop = event.FateDropped, &event.Drop{By: "policy", Table: "filter", Chain: "INPUT", Rule: ":INPUT DROP"}
	if got := Fate(p); got != "DROPPED by filter/INPUT policy (:INPUT DROP)" {
		t.Error(got)
	}
	icmp := &event.Packet{Netns: "n", Tuple: event.Tuple{Proto: "icmp", Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2"),
		ICMPType: ptr(8), ICMPCode: ptr(0)}}
	if h := Header(icmp); !strings.Contains(h, "IP 192.0.2.1 > 192.0.2.2: icmp echo request, locally generated") {
		t.Error(h)
	}
}

func ptr(v uint8) *uint8 { return &v }

func TestJSONLines(t *testing.T) {
	var b bytes.Buffer
	j := NewJSON(&b)
	j.Session(event.Session{Type: "session", Version: 1, ID: "x"})
	j.Packet(samplePacket())
	j.Stats(event.Stats{Type: "stats", Packets: 1})
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], `{"type":"session","version":1,"id":"x"`) ||
		!strings.Contains(lines[0], `"netns":[]`) || !strings.Contains(lines[1], `"verdict":"dropped","drop":{"by":"rule"`) ||
		!strings.Contains(lines[1], `"rule":"-A FORWARD -p tcp -m tcp --dport 8080 -j DROP"`) || !strings.HasPrefix(lines[2], `{"type":"stats","packets":1`) {
		t.Errorf("%s", b.String())
	}
}
