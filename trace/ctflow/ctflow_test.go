package ctflow

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/ti-mo/conntrack"

	"github.com/nattrace/nattrace/event"
	"github.com/nattrace/nattrace/filter"
)

func ctTuple(src, dst string, proto uint8, sport, dport uint16) conntrack.Tuple {
	return conntrack.Tuple{IP: conntrack.IPTuple{SourceAddress: netip.MustParseAddr(src), DestinationAddress: netip.MustParseAddr(dst)},
		Proto: conntrack.ProtoTuple{Protocol: proto, SourcePort: sport, DestinationPort: dport}}
}

func TestConvertAndMatch(t *testing.T) {
	f := &conntrack.Flow{ID: 7,
		TupleOrig:  ctTuple("10.200.1.2", "10.200.1.1", 6, 40000, 80),
		TupleReply: ctTuple("10.200.2.2", "10.200.1.2", 6, 8080, 40000),
		Status:     conntrack.Status{Value: conntrack.StatusConfirmed | conntrack.StatusDstNAT | conntrack.StatusSeenReply},
		ProtoInfo:  conntrack.ProtoInfo{TCP: &conntrack.ProtoInfoTCP{State: 3}},
	}
	c := Convert(f, event.CTNew)
	if c.ID != 7 || c.Orig.Proto != "tcp" || c.Orig.Dport != 80 || c.Reply.Sport != 8080 || !c.HasTCP || TCPStateName(c.TCPState) != "ESTABLISHED" {
		t.Fatalf("%+v", c)
	}
	if got := strings.Join(StatusNames(c.Status), ","); got != "SEEN_REPLY,CONFIRMED,DST_NAT" {
		t.Errorf("status %s", got)
	}
	for expr, want := range map[string]bool{
		"tcp and dst port 80": true,  // the first packet
		"src port 8080":       true,  // the replies as they arrive
		"host 10.200.2.2":     true,  // the server, behind the DNAT
		"udp":                 false, // another protocol
		"dst port 8080":       false, // no packet of this connection has it
	} {
		if got := Matches(filter.MustParse(expr), c); got != want {
			t.Errorf("%q: %v, want %v", expr, got, want)
		}
	}
}

func TestConvertICMP(t *testing.T) {
	orig := ctTuple("10.200.1.2", "10.200.2.2", 1, 0, 0)
	orig.Proto.ICMPID, orig.Proto.ICMPType = 4242, 8
	c := Convert(&conntrack.Flow{TupleOrig: orig}, event.CTNew)
	if c.Orig.Sport != 4242 || c.Orig.Dport != 4242 || *c.Orig.ICMPType != 8 || c.Orig.Proto != "icmp" {
		t.Fatalf("%+v", c.Orig)
	}
	if Fields(c.Orig).HasPorts || !Matches(filter.MustParse("icmp and host 10.200.2.2"), c) {
		t.Error("ICMP ids are not ports for the filter")
	}
	if TCPStateName(42) != "STATE_42" {
		t.Error(TCPStateName(42))
	}
}
