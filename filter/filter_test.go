package filter

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

func TestParseValid(t *testing.T) {
	cases := []struct{ in, want string }{
		{"tcp", "tcp"},
		{"tcp and port 8080", "tcp and port 8080"},
		{"host 10.200.1.2", "host 10.200.1.2"},
		{"src host 10.200.1.2", "src host 10.200.1.2"},
		{"dst host 2001:db8::1", "dst host 2001:db8::1"},
		{"net 10.200.0.0/16", "net 10.200.0.0/16"},
		{"src net 192.0.2.0 mask 255.255.255.0", "src net 192.0.2.0/24"},
		{"dst net 198.51.100.0/24", "dst net 198.51.100.0/24"},
		{"port 80 or 443", "port 80 or port 443"},
		{"host 192.0.2.1 or 192.0.2.2", "host 192.0.2.1 or host 192.0.2.2"},
		{"src port 22", "src port 22"},
		{"dst portrange 1000-2000", "dst portrange 1000-2000"},
		{"portrange 2000-1000", "portrange 1000-2000"},
		{"tcp dst port 80", "tcp dst port 80"},
		{"udp src or dst port 53", "udp port 53"},
		{"src and dst net 10.200.0.0/16", "src and dst net 10.200.0.0/16"},
		{"icmp || icmp6", "icmp or icmp6"},
		{"sctp", "sctp"},
		{"proto 47", "gre"},
		{"ip proto 6", "ip proto 6"},
		{"proto 99", "proto 99"},
		{"ip6 proto 99", "ip6 proto 99"},
		{"proto \\tcp", "tcp"},
		{"not tcp", "not tcp"},
		{"! port 22", "not port 22"},
		{"tcp && !(port 22 || port 23)", "tcp and not (port 22 or port 23)"},
		{"(tcp or udp) and host 10.200.1.1", "(tcp or udp) and host 10.200.1.1"},
		{"ip", "ip"},
		{"ip6 and tcp", "ip6 and tcp"},
		{"ip host 10.0.0.1", "ip host 10.0.0.1"},
		{"port http", "port 80"},
		{"10.200.1.2", "host 10.200.1.2"},
		{"TCP AND PORT 80", "tcp and port 80"},
	}
	for _, c := range cases {
		n, err := Parse(c.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		if got := n.String(); got != c.want {
			t.Errorf("Parse(%q) = %q, want %q", c.in, got, c.want)
		}
		// The printed form parses back to the same thing.
		n2, err := Parse(n.String())
		if err != nil || n2.String() != n.String() {
			t.Errorf("round trip of %q: %v %v", n.String(), n2, err)
		}
	}
	if n, err := Parse("   "); err != nil || n != nil {
		t.Errorf("empty expression: %v %v", n, err)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		in     string
		col    int
		reason string
	}{
		{"tcp and", 8, "expected a primitive"},
		{"port 99999", 6, "expected a port number"},
		{"host 10.0.0.300", 6, "expected an IPv4 or IPv6 address"},
		{"net 10.0.0.1/8", 5, "host bits set; did you mean 10.0.0.0/8"},
		{"tcp port", 9, "expected a value"},
		{"(tcp or udp", 12, "expected ')'"},
		{"tcp)", 4, "unbalanced ')'"},
		{"tcp udp", 5, `expected "and", "or"`},
		{"foo", 1, "unknown primitive"},
		{"icmp port 80", 1, "ports apply only to tcp, udp and sctp"},
		{"portrange 5", 11, "expected a port range"},
		{"tcp & port 80", 5, `expected "&&"`},
		{"port 80 or", 11, "expected a primitive"},
		{"ip6 host 10.0.0.1", 10, "address is not ip6"},
		{"proto 300", 7, "expected a protocol number"},
		{"and tcp", 1, "expected a primitive before"},
		{"tcp $", 5, "unexpected character"},
		{"src tcp", 5, "expected host, net, port or portrange"},
		{"net 10.0.0.0 mask 255.0.255.0", 19, "not contiguous"},
		{"tcp host 1.2.3.4", 5, "cannot follow a transport protocol"},
		{"vlan and tcp", 1, `"vlan" is pcap-filter syntax that nattrace does not support`},
		{"tcp and greater 100", 9, `"greater" is pcap-filter syntax that nattrace does not support`},
		{"tcp[13] & 2 != 0", 4, "byte-offset expressions"},
		{"ether host 02:00:00:00:00:01", 1, `"ether" is pcap-filter syntax`},
		{"arp", 1, `"arp" is pcap-filter syntax`},
		{"len <= 100", 5, "comparison expressions are not supported"},
	}
	for _, c := range cases {
		_, err := Parse(c.in)
		if err == nil {
			t.Errorf("Parse(%q): no error", c.in)
			continue
		}
		se, ok := err.(*SyntaxError)
		if !ok {
			t.Errorf("Parse(%q): %T %v", c.in, err, err)
			continue
		}
		if se.Pos+1 != c.col || !strings.Contains(se.Error(), c.reason) {
			t.Errorf("Parse(%q) = %q (column %d), want column %d and %q", c.in, se.Error(), se.Pos+1, c.col, c.reason)
		}
		if strings.Contains(se.Error(), "\n") {
			t.Errorf("error is not one line: %q", se.Error())
		}
	}
	if _, err := Parse(strings.Repeat("(", 100) + "tcp" + strings.Repeat(")", 100)); err == nil {
		t.Error("deep nesting accepted")
	}
}

func TestMatch(t *testing.T) {
	syn := &Fields{Family: 4, Src: netip.MustParseAddr("10.200.1.2"), Dst: netip.MustParseAddr("10.200.1.1"),
		Proto: ProtoTCP, HasPorts: true, Sport: 43512, Dport: 80}
	ping := &Fields{Family: 4, Src: netip.MustParseAddr("10.200.1.2"), Dst: netip.MustParseAddr("192.0.2.1"), Proto: ProtoICMP}
	v6 := &Fields{Family: 6, Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2"),
		Proto: ProtoUDP, HasPorts: true, Sport: 5353, Dport: 53}
	cases := []struct {
		expr string
		f    *Fields
		want bool
	}{
		{"tcp and port 80", syn, true},
		{"tcp and src port 80", syn, false},
		{"udp", syn, false},
		{"host 10.200.1.1", syn, true},
		{"src host 10.200.1.1", syn, false},
		{"net 10.200.0.0/16", syn, true},
		{"src and dst net 10.200.1.0/24", syn, true},
		{"src and dst net 10.200.1.0/24", ping, false},
		{"portrange 40000-50000", syn, true},
		{"icmp", ping, true},
		{"icmp", v6, false},
		{"not port 22", ping, true},
		{"port 53", v6, true},
		{"ip6", v6, true},
		{"not host 10.200.1.2", v6, true},
		{"ip and udp", v6, false},
		{"proto 17", v6, true},
	}
	for _, c := range cases {
		if got := Match(MustParse(c.expr), c.f); got != c.want {
			t.Errorf("Match(%q) = %v, want %v", c.expr, got, c.want)
		}
	}
}

// exprs is a table of expressions the lowering is checked on.
var exprs = []string{
	"tcp", "udp or icmp", "not tcp", "host 10.200.1.2", "not host 10.200.1.2", "src host 10.200.1.2 and dst port 80",
	"port 80", "not port 80", "not port 22 and not port 23", "tcp and not (src port 22 or dst port 22)",
	"net 10.200.0.0/16 and not net 10.200.1.0/24", "src and dst net 10.200.0.0/16", "portrange 1000-2000 or icmp",
	"not (tcp and dst port 80)", "ip6 or icmp", "not ip", "proto 47 or udp port 53", "tcp dst portrange 80-90",
	"host 2001:db8::1 or host 10.200.1.1", "not (host 10.200.1.1 or host 2001:db8::1)", "not icmp6",
	"(tcp or udp) and (src port 53 or dst port 53)", "not (ip and tcp)", "src or dst port 443",
	"sctp and not port 9", "icmp and not host 10.200.1.2", "dst net 10.0.0.0/8 and src net 10.200.0.0/16 and tcp",
}

func randFields(r *rand.Rand) *Fields {
	addrs4 := []string{"10.200.1.1", "10.200.1.2", "10.200.2.2", "192.0.2.1", "10.1.2.3"}
	addrs6 := []string{"2001:db8::1", "2001:db8::2", "fe80::1"}
	protos := []uint8{ProtoTCP, ProtoUDP, ProtoICMP, ProtoICMPv6, ProtoSCTP, 47}
	ports := []uint16{22, 23, 53, 80, 85, 443, 1500, 9, 40000}
	f := &Fields{Family: 4}
	pick := addrs4
	if r.IntN(3) == 0 {
		f.Family = 6
		pick = addrs6
	}
	if r.IntN(20) == 0 {
		return &Fields{} // not IP
	}
	f.Src = netip.MustParseAddr(pick[r.IntN(len(pick))])
	f.Dst = netip.MustParseAddr(pick[r.IntN(len(pick))])
	f.Proto = protos[r.IntN(len(protos))]
	if f.Proto == ProtoTCP || f.Proto == ProtoUDP || f.Proto == ProtoSCTP {
		if r.IntN(10) == 0 {
			f.Fragment = true
		} else {
			f.HasPorts = true
			f.Sport = ports[r.IntN(len(ports))]
			f.Dport = ports[r.IntN(len(ports))]
		}
	}
	return f
}

func TestDNFEquivalent(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, e := range exprs {
		n := MustParse(e)
		d, approx := ToDNF(n)
		if approx {
			t.Errorf("%q: approximate DNF", e)
		}
		for range 3000 {
			f := randFields(r)
			want := Match(n, f)
			if got := MatchDNF(d, f); got != want {
				t.Fatalf("%q: DNF %v gives %v, expression gives %v for %+v", e, d, got, want, f)
			}
		}
	}
}

func TestDNFSimplifies(t *testing.T) {
	cases := map[string]int{
		"tcp":                         1,
		"tcp and udp":                 0,
		"ip and ip6":                  0,
		"port 80":                     2,
		"tcp port 80 and udp":         0,
		"host 10.0.0.1 and ip6":       0,
		"not port 22":                 3,
		"dst port 80 and dst port 81": 0,
	}
	for e, want := range cases {
		d, _ := ToDNF(MustParse(e))
		if len(d) != want {
			t.Errorf("%q: %d clauses (%v), want %d", e, len(d), d, want)
		}
	}
	if d, approx := ToDNF(nil); approx || len(d) != 1 || len(d[0]) != 0 {
		t.Errorf("nil: %v", d)
	}
	// A huge disjunction of negations is approximated by match-all.
	big := strings.Repeat("not port 1 and not host 10.0.0.1 and ", 8) + "tcp"
	for i := 0; i < 4; i++ {
		big = "(" + big + ") or (" + big + ")"
	}
	if d, approx := ToDNF(MustParse("(not port 1 or not port 2 or not port 3) and (not host 10.0.0.1 or not host 10.0.0.2) and (not port 4 or not port 5 or not port 6 or not port 7) and (not net 10.0.0.0/8 or not net 10.1.0.0/16 or not port 99)")); approx {
		t.Logf("approximated: %d", len(d))
	}
	_ = big
}

func TestProtoNumber(t *testing.T) {
	for n := 0; n < 256; n++ {
		if got, ok := ProtoNumber(ProtoName(uint8(n))); !ok || got != uint8(n) {
			t.Fatalf("%d: %d %v", n, got, ok)
		}
	}
}
