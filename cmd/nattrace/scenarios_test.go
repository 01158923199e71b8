package main_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nattrace/nattrace/event"
	"github.com/nattrace/nattrace/lab"
	"github.com/nattrace/nattrace/lab/labtest"
)

var (
	iptNFT = backendCase{name: "iptables-nft", backend: "iptables-nft"}
	// auto: nf_tables selects and the legacy tables trace
	iptLegacy = backendCase{name: "iptables-legacy", legacy: true, backend: "iptables-legacy"}
	// the TRACE rule in raw
	iptLegacyTRACE = backendCase{name: "iptables-legacy-TRACE-rule", legacy: true, backend: "iptables-legacy", flags: []string{"--backend", "legacy"}}
)

// Seed 001 "转发到内网IP某端口": router :80 -> server :8080.
const dnatRules = `*nat
:PREROUTING ACCEPT [0:0]
-A PREROUTING -d 10.200.1.1/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.200.2.2:8080
COMMIT
*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -p udp -j ACCEPT
-A FORWARD -d 10.200.2.2/32 -p tcp -m tcp --dport 8080 -j ACCEPT
COMMIT
`

const dnatNFT = `table ip nat {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr 10.200.1.1 tcp dport 80 dnat to 10.200.2.2:8080
	}
}
table inet filter {
	chain forward {
		type filter hook forward priority filter; policy accept;
		meta l4proto udp accept
		ip daddr 10.200.2.2 tcp dport 8080 accept
	}
}
`

func TestDNATPortForward(t *testing.T) {
	for _, b := range []backendCase{iptNFT, iptLegacy, iptLegacyTRACE, {name: "nft", nft: dnatNFT, backend: "nft"}} {
		t.Run(b.name, func(t *testing.T) {
			bin := binary(t)
			l := labtest.ClientRouterServer(t)
			load(t, l, "router", b, dnatRules)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if _, err := l.ListenTCP(ctx, "server", ":8080"); err != nil {
				t.Fatal(err)
			}
			r := labtest.Start(t, bin, t.TempDir(), append(append([]string{"flow", "--netns", l.Name("router"), "--json", "-c", "1"}, b.flags...), "tcp and dst port 80")...)
			if got, err := l.Exchange("client", lab.RouterInAddr+":80", 3*time.Second); err != nil || !strings.Contains(got, "server") {
				t.Fatalf("port forward: %q %v", got, err)
			}
			if code := r.Wait(t, 15*time.Second); code != 0 {
				t.Fatalf("exit %d: %s", code, r.Stderr.String())
			}
			out := labtest.ParseJSON(t, r.Stdout.Bytes())
			if len(out.Packets) != 1 || out.Stats == nil {
				t.Fatalf("want 1 packet and stats:\n%s", r.Stdout.String())
			}
			syn := out.Packets[0]
			natTable, natChain, fwdTable, fwdChain := "nat", "PREROUTING", "filter", "FORWARD"
			if b.nft != "" {
				natChain, fwdChain = "prerouting", "forward"
			}
			ni, nat := findStep(syn, natTable, natChain)
			fi, fwd := findStep(syn, fwdTable, fwdChain)
			if syn.TCPFlags != "[S]" || nat == nil || fwd == nil || ni > fi {
				t.Fatalf("SYN timeline lacks nat then filter steps:\n%s", labtest.Describe(out.Packets))
			}
			if nat.Position != 1 || !strings.Contains(nat.Rule, "10.200.2.2:8080") || !strings.Contains(strings.ToLower(nat.Rule), "dnat") ||
				nat.Verdict != event.VerdictAccept || nat.Backend != b.backend || nat.Hook != "prerouting" {
				t.Errorf("nat step: %+v", *nat)
			}
			if fwd.Position != 2 || fwd.Verdict != event.VerdictAccept || !strings.Contains(fwd.Rule, "8080") {
				t.Errorf("forward step: %+v", *fwd)
			}
			if b.nft == "" && !strings.HasPrefix(nat.Rule, "-A PREROUTING ") {
				t.Errorf("iptables rule not in iptables-save syntax: %q", nat.Rule)
			}
			if syn.Verdict != event.FateForwarded || syn.OIF != "r1" || syn.IIF != "r0" || syn.Tuple.Dport != 80 {
				t.Errorf("fate %s out %q in %q tuple %+v", syn.Verdict, syn.OIF, syn.IIF, syn.Tuple)
			}
		})
	}
}

// Seed 004 "封22端口", in FORWARD.
const dropRules = `*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -p udp -j ACCEPT
-A FORWARD -p tcp -m tcp --dport 22 -j DROP
COMMIT
`

const dropNFT = `table inet filter {
	chain forward {
		type filter hook forward priority filter; policy accept;
		meta l4proto udp accept
		tcp dport 22 drop
	}
}
`

func TestForwardDrop(t *testing.T) {
	for _, b := range []backendCase{iptNFT, iptLegacy, iptLegacyTRACE, {name: "nft", nft: dropNFT, backend: "nft"}} {
		t.Run(b.name, func(t *testing.T) {
			bin := binary(t)
			l := labtest.ClientRouterServer(t)
			load(t, l, "router", b, dropRules)
			r := labtest.Start(t, bin, t.TempDir(), append(append([]string{"flow", "--netns", l.Name("router"), "--json", "-c", "1"}, b.flags...), "tcp port 22")...)
			if _, err := l.DialTCP("client", lab.ServerAddr+":22", 500*time.Millisecond); err == nil {
				t.Fatal("ssh went through the drop rule")
			}
			if code := r.Wait(t, 15*time.Second); code != 0 {
				t.Fatalf("exit %d: %s", code, r.Stderr.String())
			}
			out := labtest.ParseJSON(t, r.Stdout.Bytes())
			if len(out.Packets) != 1 {
				t.Fatalf("packets:\n%s", r.Stdout.String())
			}
			p := out.Packets[0]
			d := p.Drop
			wantRule := "-A FORWARD -p tcp -m tcp --dport 22 -j DROP"
			chain := "FORWARD"
			if b.nft != "" {
				wantRule, chain = "tcp dport 22 drop", "forward"
			}
			if p.Verdict != event.FateDropped || d == nil || d.By != "rule" || d.Table != "filter" || d.Chain != chain ||
				d.Position != 2 || d.Rule != wantRule {
				t.Fatalf("drop: verdict %s %+v\n%s", p.Verdict, d, labtest.Describe(out.Packets))
			}
		})
	}
}

// Seed 001 "转发到本地某端口（REDIRECT）".
const redirectRules = `*nat
:PREROUTING ACCEPT [0:0]
-A PREROUTING -p tcp -m tcp --dport 12345 -j REDIRECT --to-ports 1234
COMMIT
*filter
:INPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 1234 -j ACCEPT
COMMIT
`

func TestRedirect(t *testing.T) {
	for _, b := range []backendCase{iptNFT, iptLegacy, iptLegacyTRACE} {
		t.Run(b.name, func(t *testing.T) {
			bin := binary(t)
			l := labtest.ClientRouterServer(t)
			load(t, l, "router", b, redirectRules)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if _, err := l.ListenTCP(ctx, "router", ":1234"); err != nil {
				t.Fatal(err)
			}
			r := labtest.Start(t, bin, t.TempDir(), append(append([]string{"flow", "--netns", l.Name("router"), "--json", "-c", "1"}, b.flags...), "tcp", "dst", "port", "12345")...)
			if got, err := l.Exchange("client", lab.RouterInAddr+":12345", 3*time.Second); err != nil || !strings.Contains(got, "router") {
				t.Fatalf("redirect: %q %v", got, err)
			}
			if code := r.Wait(t, 15*time.Second); code != 0 {
				t.Fatalf("exit %d: %s", code, r.Stderr.String())
			}
			out := labtest.ParseJSON(t, r.Stdout.Bytes())
			p := out.Packets[0]
			ni, nat := findStep(p, "nat", "PREROUTING")
			ii, in := findStep(p, "filter", "INPUT")
			if nat == nil || in == nil || ni > ii || !strings.Contains(nat.Rule, "-j REDIRECT --to-ports 1234") || in.Position != 1 {
				t.Fatalf("timeline:\n%s", labtest.Describe(out.Packets))
			}
			if p.Verdict != event.FateDelivered {
				t.Errorf("verdict %s, want delivered", p.Verdict)
			}
		})
	}
}

// Seed 002's -j/-g example, with an explicit RETURN.
const chainRules = `*filter
:INPUT ACCEPT [0:0]
:CHAIN-PART - [0:0]
:CHAIN-A - [0:0]
:CHAIN-SUB - [0:0]
-A INPUT -p tcp -m tcp --dport 7000 -j CHAIN-PART
-A INPUT -p tcp -m comment --comment after-part
-A CHAIN-PART -j CHAIN-A
-A CHAIN-PART -m comment --comment chain-part
-A CHAIN-A -g CHAIN-SUB
-A CHAIN-A -m comment --comment chain-a
-A CHAIN-SUB -m comment --comment hello
-A CHAIN-SUB -p tcp -m tcp --dport 7000 -j RETURN
-A CHAIN-SUB -m comment --comment never
COMMIT
`

func TestUserChainsJumpGotoReturn(t *testing.T) {
	want := []string{
		"INPUT rule 1 jump CHAIN-PART",
		"CHAIN-PART rule 1 jump CHAIN-A",
		"CHAIN-A rule 1 goto CHAIN-SUB",
		"CHAIN-SUB rule 1 continue ",
		"CHAIN-SUB rule 2 return CHAIN-PART", // -g: back to the last -j caller, not CHAIN-A
		"CHAIN-PART rule 2 continue ",
		"CHAIN-PART return 3 return INPUT",
		"INPUT rule 2 continue ",
		"INPUT policy 3 accept ",
	}
	for _, b := range []backendCase{iptNFT, iptLegacy, iptLegacyTRACE} {
		t.Run(b.name, func(t *testing.T) {
			bin := binary(t)
			l := labtest.ClientRouterServer(t)
			load(t, l, "router", b, chainRules)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if _, err := l.ListenTCP(ctx, "router", ":7000"); err != nil {
				t.Fatal(err)
			}
			r := labtest.Start(t, bin, t.TempDir(), append(append([]string{"flow", "--netns", l.Name("router"), "--json", "-c", "1"}, b.flags...), "tcp dst port 7000")...)
			if _, err := l.Exchange("client", lab.RouterInAddr+":7000", 3*time.Second); err != nil {
				t.Fatal(err)
			}
			if code := r.Wait(t, 15*time.Second); code != 0 {
				t.Fatalf("exit %d: %s", code, r.Stderr.String())
			}
			out := labtest.ParseJSON(t, r.Stdout.Bytes())
			var got []string
			for _, s := range out.Packets[0].Steps {
				if s.Table != "filter" {
					continue
				}
				pos := s.Position
				got = append(got, strings.Join([]string{s.Chain, s.Kind, strconv.Itoa(pos), s.Verdict, s.Target}, " "))
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("got\n%s\nwant\n%s\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"), labtest.Describe(out.Packets))
			}
		})
	}
}

// A namespace with both: native nft NAT and an iptables-legacy filter.
const mixedNFT = `table ip nat2 {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		tcp dport 80 dnat to 10.200.2.2:8080
	}
}
`

const mixedLegacy = `*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -p tcp -m tcp --dport 8080 -m comment --comment legacy-forward -j ACCEPT
COMMIT
`

func TestMixedLegacyAndNFT(t *testing.T) {
	bin := binary(t)
	l := labtest.ClientRouterServer(t)
	if err := l.NFT("router", mixedNFT); err != nil {
		t.Fatal(err)
	}
	if err := l.Iptables("router", true, mixedLegacy); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := l.ListenTCP(ctx, "server", ":8080"); err != nil {
		t.Fatal(err)
	}
	r := labtest.Start(t, bin, t.TempDir(), "flow", "--netns", l.Name("router"), "--json", "-c", "1", "tcp and port 80")
	if _, err := l.Exchange("client", lab.RouterInAddr+":80", 3*time.Second); err != nil {
		t.Fatal(err)
	}
	if code := r.Wait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, r.Stderr.String())
	}
	out := labtest.ParseJSON(t, r.Stdout.Bytes())
	if len(out.Session.Backends) != 1 || !strings.HasSuffix(out.Session.Backends[0], ":nft+iptables-legacy") {
		t.Errorf("backends %v", out.Session.Backends)
	}
	p := out.Packets[0]
	ni, nat := findStep(p, "nat2", "pre")
	fi, fwd := findStep(p, "filter", "FORWARD")
	if nat == nil || fwd == nil || ni > fi || nat.Backend != "nft" || fwd.Backend != "iptables-legacy" ||
		nat.Rule != "tcp dport 80 dnat to 10.200.2.2:8080" || !strings.Contains(fwd.Rule, "legacy-forward") || fwd.Hook != "forward" {
		t.Fatalf("mixed timeline:\n%s", labtest.Describe(out.Packets))
	}
	if p.Verdict != event.FateForwarded {
		t.Errorf("verdict %s", p.Verdict)
	}
}

// With the TRACE rule inserted at raw PREROUTING 1, the kernel's positions
// in that chain are one higher than the user's: nattrace corrects them.
func TestLegacyPositionsCorrectedForInsertedRule(t *testing.T) {
	bin := binary(t)
	l := labtest.ClientRouterServer(t)
	if err := l.Iptables("router", true, legacyWithRaw); err != nil {
		t.Fatal(err)
	}
	r := labtest.Start(t, bin, t.TempDir(), "flow", "--netns", l.Name("router"), "--backend", "legacy", "--json", "-c", "1", "tcp dst port 9")
	l.DialTCP("client", lab.RouterInAddr+":9", 500*time.Millisecond) // refused: nothing listens
	if code := r.Wait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, r.Stderr.String())
	}
	out := labtest.ParseJSON(t, r.Stdout.Bytes())
	if !strings.HasSuffix(out.Session.Backends[0], ":iptables-legacy") {
		t.Fatalf("backend %v: this test needs the TRACE rule", out.Session.Backends)
	}
	_, raw := findStep(out.Packets[0], "raw", "PREROUTING")
	if raw == nil || raw.Position != 1 || raw.Rule != "-A PREROUTING -p tcp -m tcp --dport 9 -j ACCEPT" || raw.Verdict != event.VerdictAccept {
		t.Fatalf("raw step:\n%s", labtest.Describe(out.Packets))
	}
	for _, s := range out.Packets[0].Steps {
		if strings.Contains(s.Rule, "nattrace") || strings.HasPrefix(s.Chain, "NATTRACE") {
			t.Errorf("nattrace's own rule shown: %+v", s)
		}
	}
}
