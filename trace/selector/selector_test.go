package selector

import (
	"strings"
	"testing"

	"github.com/nattrace/nattrace/filter"
)

func TestLegacyScript(t *testing.T) {
	cases := []struct {
		expr  string
		rules []string
		exact bool
		v6    bool
	}{
		{"tcp and dst port 80", []string{"-p tcp -m tcp --dport 80"}, true, true},
		{"port 53", []string{"-p tcp -m tcp --sport 53", "-p udp -m udp --sport 53", "-p sctp -m sctp --sport 53",
			"-p tcp -m tcp --dport 53", "-p udp -m udp --dport 53", "-p sctp -m sctp --dport 53"}, true, true},
		{"icmp and host 10.200.1.2", []string{"-p icmp -s 10.200.1.2/32", "-p icmp -d 10.200.1.2/32"}, true, false},
		{"not host 192.0.2.1", []string{"! -s 192.0.2.1/32 ! -d 192.0.2.1/32"}, true, true},
		{"net 10.200.0.0/16 and not net 10.200.1.0/24", []string{"-s 10.200.0.0/16 ! -s 10.200.1.0/24"}, false, false},
		{"ip6", nil, true, true},
		{"tcp portrange 1000-2000", []string{"-p tcp -m tcp --sport 1000:2000", "-p tcp -m tcp --dport 1000:2000"}, true, true},
	}
	for _, c := range cases {
		d, _ := filter.ToDNF(filter.MustParse(c.expr))
		s := &Legacy{ID: "abcd1234", DNF: d, Rate: 20}
		script := s.Script()
		var got []string
		for _, line := range strings.Split(script, "\n") {
			if strings.HasPrefix(line, "-A NATTRACE-abcd1234 ") {
				got = append(got, strings.TrimSuffix(strings.TrimPrefix(line, "-A NATTRACE-abcd1234 "), " -g NATTRACE-abcd1234-S"))
			}
		}
		if c.expr == "net 10.200.0.0/16 and not net 10.200.1.0/24" {
			// the second -s cannot be expressed: broader rule, not exact
			if len(got) == 0 || s.Exact {
				t.Errorf("%q: %v exact=%v", c.expr, got, s.Exact)
			}
			continue
		}
		if strings.Join(got, "|") != strings.Join(c.rules, "|") || s.Exact != c.exact || s.IPv6Untraced != c.v6 {
			t.Errorf("%q:\n got %q exact=%v v6=%v\nwant %q exact=%v v6=%v", c.expr, got, s.Exact, s.IPv6Untraced, c.rules, c.exact, c.v6)
		}
		for _, want := range []string{
			"-I PREROUTING 1 -m comment --comment nattrace:abcd1234 -j NATTRACE-abcd1234",
			"-I OUTPUT 1 -m comment --comment nattrace:abcd1234 -j NATTRACE-abcd1234",
			"-A NATTRACE-abcd1234-S -m limit --limit 20/sec --limit-burst 20 -j TRACE",
		} {
			if !strings.Contains(script, want+"\n") {
				t.Errorf("%q: script lacks %q", c.expr, want)
			}
		}
	}
}

func TestNFTClauseSplits(t *testing.T) {
	d, _ := filter.ToDNF(filter.MustParse("port 80"))
	n := 0
	for _, c := range d {
		n += len(nftClause(c))
	}
	if n != 6 { // {tcp,udp,sctp} x {sport,dport}
		t.Errorf("port 80: %d rules", n)
	}
	d, _ = filter.ToDNF(filter.MustParse("not port 80"))
	n = 0
	for _, c := range d {
		n += len(nftClause(c))
	}
	if n != 4 { // !ports protos, frag v4, frag v6, !sport&!dport
		t.Errorf("not port 80: %d rules (%v)", n, d)
	}
}
