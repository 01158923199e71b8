package ruleset

import (
	"os"
	"strings"
	"testing"

	"github.com/nattrace/nattrace/event"
)

func read(t *testing.T, name string) string {
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseNFTAndIptablesNFT(t *testing.T) {
	nft, err := ParseNFT(read(t, "router.nft"))
	if err != nil {
		t.Fatal(err)
	}
	ipt, err := ParseIptablesSave(read(t, "router.iptables-nft"), "ip", BackendIptablesNFT)
	if err != nil {
		t.Fatal(err)
	}
	attachIptables(nft, ipt)
	s := NewSnapshot(nft, nil)

	pre := s.NFT("ip", "nat", "PREROUTING")
	if pre == nil || !pre.Base || pre.Hook != event.HookPrerouting || pre.Priority != -100 || pre.Policy != "accept" {
		t.Fatalf("nat PREROUTING: %+v", pre)
	}
	pos, r := pre.ByHandle(2)
	if pos != 1 || r == nil || r.Text != "-A PREROUTING -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.200.2.2:8080" || pre.Syntax != SyntaxIptables {
		t.Errorf("handle 2: %d %+v", pos, r)
	}
	fw := s.NFT("inet", "fw", "fwdchk")
	if fw == nil || fw.Priority != 10 || fw.Hook != event.HookForward || fw.Syntax != SyntaxNFT {
		t.Fatalf("fwdchk: %+v", fw)
	}
	if pos, r := fw.ByHandle(8); pos != 2 || r.Text != "tcp dport 8081 goto deny" {
		t.Errorf("handle 8: %d %+v", pos, r)
	}
	if sub := s.NFT("inet", "fw", "sub"); sub == nil || sub.Base || len(sub.Rules) != 2 {
		t.Errorf("sub: %+v", sub)
	}
	own := s.NFT("inet", "nattrace_t1", "pre")
	if own == nil || !own.Own || own.Priority != -350 {
		t.Errorf("own table: %+v", own)
	}
}

func TestParseNFTSkipsSetsAndQuotes(t *testing.T) {
	text := `table inet t { # handle 7
	set blocked { # handle 3
		type ipv4_addr
		elements = { 192.0.2.1, 192.0.2.2,
			     192.0.2.3 }
	}

	chain c { # handle 1
		type filter hook input priority filter - 5; policy drop;
		ip saddr @blocked drop # handle 4
		meta l4proto tcp comment "a } brace" accept # handle 5
	}
}
`
	chains, err := ParseNFT(text)
	if err != nil {
		t.Fatal(err)
	}
	if len(chains) != 1 || len(chains[0].Rules) != 2 || chains[0].Priority != -5 || chains[0].Policy != "drop" {
		t.Fatalf("%+v", chains[0])
	}
	if chains[0].Rules[1].Text != `meta l4proto tcp comment "a } brace" accept` {
		t.Errorf("%q", chains[0].Rules[1].Text)
	}
}

func TestLegacyPositionsSkipOwnRule(t *testing.T) {
	text := `*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:NATTRACE-abcd - [0:0]
-A PREROUTING -m comment --comment nattrace:abcd -j NATTRACE-abcd
-A PREROUTING -p icmp -j CT --notrack
-A NATTRACE-abcd -p tcp -j TRACE
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:CHAIN-A - [0:0]
-A INPUT -p icmp -m comment --comment "two words" -g CHAIN-A
-A CHAIN-A -j RETURN
COMMIT
`
	chains, err := ParseIptablesSave(text, "ip", BackendLegacy)
	if err != nil {
		t.Fatal(err)
	}
	s := NewSnapshot(nil, chains)
	pre := s.Legacy("ip", "raw", "PREROUTING")
	if pos, r := pre.ByPosition(2); pos != 1 || r == nil || !strings.Contains(r.Text, "--notrack") {
		t.Errorf("kernel position 2 -> %d %+v", pos, r)
	}
	if pos, r := pre.ByPosition(3); pos != 2 || r != nil {
		t.Errorf("policy position 3 -> %d %+v", pos, r)
	}
	if !pre.Rules[0].Own || !s.Legacy("ip", "raw", "NATTRACE-abcd").Own {
		t.Error("own rule or chain not marked")
	}
	in := s.Legacy("ip", "filter", "INPUT")
	if r := in.Rules[0]; r.Target != "CHAIN-A" || !r.Goto {
		t.Errorf("goto: %+v", r)
	}
	if fwd := s.Legacy("ip", "filter", "FORWARD"); fwd.Policy != "drop" || fwd.PolicyText() != ":FORWARD DROP" || fwd.Hook != event.HookForward {
		t.Errorf("forward: %+v", fwd)
	}
	if got := Tokens(`-A INPUT -m comment --comment "two words" -j ACCEPT`); len(got) != 8 || got[5] != "two words" {
		t.Errorf("tokens %q", got)
	}
}

func TestParseErrors(t *testing.T) {
	if _, err := ParseNFT("table ip t {\n chain c {\n tcp dport 80 accept\n }\n}\n"); err == nil {
		t.Error("rule without handle accepted")
	}
	if _, err := ParseIptablesSave("*filter\n-A INPUT -j ACCEPT\nCOMMIT\n", "ip", BackendLegacy); err == nil {
		t.Error("undeclared chain accepted")
	}
}
