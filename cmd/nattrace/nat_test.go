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

func natSteps(p *event.Packet) []event.Step {
	var out []event.Step
	for _, s := range p.Steps {
		if s.Kind == event.KindNAT {
			out = append(out, s)
		}
	}
	return out
}

func ep(src string, sport uint16, dst string, dport uint16) string {
	return src + ":" + strconv.Itoa(int(sport)) + ">" + dst + ":" + strconv.Itoa(int(dport))
}

func epOf(e *event.Endpoints) string {
	if e == nil {
		return "<nil>"
	}
	return ep(e.Src.String(), e.Sport, e.Dst.String(), e.Dport)
}

func packetWith(out labtest.Output, pred func(*event.Packet) bool) *event.Packet {
	for _, p := range out.Packets {
		if pred(p) {
			return p
		}
	}
	return nil
}

func flowOf(out labtest.Output, id uint64) *event.Flow {
	for _, f := range out.Flows {
		if f.ID == id {
			return f
		}
	}
	return nil
}

func flags(f string) func(*event.Packet) bool {
	return func(p *event.Packet) bool { return p.TCPFlags == f }
}

// traceNAT loads rules into the router, starts a trace of filter in the
// router and runs traffic, then returns the JSON output.
func traceNAT(t *testing.T, l *lab.Lab, extra []string, filter string, traffic func()) labtest.Output {
	t.Helper()
	bin := binary(t)
	args := append([]string{"flow", "--netns", l.Name("router"), "--json", "--duration", "1500ms"}, extra...)
	r := labtest.Start(t, bin, t.TempDir(), append(args, filter)...)
	traffic()
	if code := r.Wait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, r.Stderr.String())
	}
	return labtest.ParseJSON(t, r.Stdout.Bytes())
}

const (
	client, routerIn, routerOut, server = lab.ClientAddr, lab.RouterInAddr, lab.RouterOutAddr, lab.ServerAddr
)

// 1. DNAT to an internal host; 8. on iptables-legacy too.
func TestNATDNATBothDirections(t *testing.T) {
	for _, b := range []backendCase{iptNFT, iptLegacy, {name: "nft", nft: dnatNFT, backend: "nft"}} {
		t.Run(b.name, func(t *testing.T) {
			l := labtest.ClientRouterServer(t)
			load(t, l, "router", b, dnatRules)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			l.ListenTCP(ctx, "server", ":8080")
			out := traceNAT(t, l, b.flags, "tcp and dst port 80", func() {
				if _, err := l.Exchange("client", routerIn+":80", 3*time.Second); err != nil {
					t.Fatal(err)
				}
			})
			syn, synack := packetWith(out, flags("[S]")), packetWith(out, flags("[S.]"))
			if syn == nil || synack == nil {
				t.Fatalf("SYN and SYN-ACK not both traced (the SYN-ACK does not match the filter: it must be followed):\n%s", labtest.Describe(out.Packets))
			}
			ns := natSteps(syn)
			if len(ns) != 1 || ns[0].NAT != event.NATDNAT || ns[0].By != "rule" || ns[0].Hook != "prerouting" ||
				epOf(ns[0].Before) != ep(client, syn.Tuple.Sport, routerIn, 80) || epOf(ns[0].After) != ep(client, syn.Tuple.Sport, server, 8080) ||
				!strings.Contains(ns[0].Rule, "10.200.2.2:8080") || ns[0].CTID == 0 {
				t.Fatalf("SYN nat steps %+v\n%s", ns, labtest.Describe(out.Packets))
			}
			// The nat step stands right after the rule that made it.
			for i, s := range syn.Steps {
				if s.Kind == event.KindNAT && (i == 0 || syn.Steps[i-1].Table != "nat") {
					t.Errorf("nat step not after its rule: %s", labtest.Describe([]*event.Packet{syn}))
				}
			}
			rs := natSteps(synack)
			if len(rs) != 1 || rs[0].NAT != event.NATDNAT || !rs[0].Reverse || rs[0].By != "conntrack" || rs[0].Hook != "postrouting" ||
				epOf(rs[0].Before) != ep(server, 8080, client, syn.Tuple.Sport) || epOf(rs[0].After) != ep(routerIn, 80, client, syn.Tuple.Sport) ||
				!strings.HasPrefix(rs[0].SetupBy, "nat/") || !strings.HasSuffix(rs[0].SetupBy, " rule 1") || rs[0].CTID != ns[0].CTID {
				t.Fatalf("SYN-ACK nat steps %+v\n%s", rs, labtest.Describe(out.Packets))
			}
			if synack.Verdict != event.FateForwarded || synack.OIF != "r0" {
				t.Errorf("SYN-ACK %s out %s", synack.Verdict, synack.OIF)
			}
			f := flowOf(out, syn.Flow)
			if f == nil || synack.Flow != syn.Flow {
				t.Fatalf("flow %d / %d not emitted: %+v", syn.Flow, synack.Flow, out.Flows)
			}
			if f.CTID != ns[0].CTID || f.Orig.Dst.String() != routerIn || f.Orig.Dport != 80 || f.Reply.Src.String() != server || f.Reply.Sport != 8080 ||
				strings.Join(f.NAT, ",") != "dnat" || f.Packets.Orig < 2 || f.Packets.Reply < 2 || len(f.States) < 2 || f.States[0].State != "NEW" ||
				len(f.Translations) != 1 || f.Translations[0].After.Dport != 8080 {
				t.Errorf("flow %+v", f)
			}
		})
	}
}

const snatRules = `*nat
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -o r1 -p tcp -j SNAT --to-source 10.200.2.100
-A POSTROUTING -o r1 -p icmp -j SNAT --to-source 10.200.2.100
COMMIT
`

const masqRules = `*nat
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -o r1 -j MASQUERADE
COMMIT
`

// 2. SNAT --to-source and MASQUERADE; 8. on iptables-legacy too.
func TestNATSNATAndMasquerade(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		for _, c := range []struct {
			name, rules, kind, addr string
		}{{"snat", snatRules, event.NATSNAT, "10.200.2.100"}, {"masquerade", masqRules, event.NATMasquerade, routerOut}} {
			name := c.name + map[bool]string{false: "/iptables-nft", true: "/iptables-legacy"}[legacy]
			t.Run(name, func(t *testing.T) {
				l := labtest.ClientRouterServer(t)
				if err := l.IP("router", "addr", "add", "10.200.2.100/24", "dev", "r1"); err != nil {
					t.Fatal(err)
				}
				if err := l.Iptables("router", legacy, c.rules); err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				l.ListenTCP(ctx, "server", ":8080")
				out := traceNAT(t, l, nil, "tcp and dst port 8080", func() {
					if _, err := l.Exchange("client", server+":8080", 3*time.Second); err != nil {
						t.Fatal(err)
					}
				})
				syn, synack := packetWith(out, flags("[S]")), packetWith(out, flags("[S.]"))
				if syn == nil || synack == nil {
					t.Fatalf("SYN / SYN-ACK missing:\n%s", labtest.Describe(out.Packets))
				}
				ns := natSteps(syn)
				if len(ns) != 1 || ns[0].NAT != c.kind || ns[0].Hook != "postrouting" || ns[0].By != "rule" ||
					ns[0].After.Src.String() != c.addr || ns[0].Before.Src.String() != client || ns[0].After.Dst.String() != server {
					t.Fatalf("SYN nat %+v\n%s", ns, labtest.Describe(out.Packets))
				}
				if c.kind == event.NATMasquerade && ns[0].OIF != "r1" {
					t.Errorf("masquerade: output interface %q, want r1", ns[0].OIF)
				}
				rs := natSteps(synack)
				if len(rs) != 1 || rs[0].NAT != c.kind || !rs[0].Reverse || rs[0].Hook != "prerouting" ||
					rs[0].Before.Dst.String() != c.addr || rs[0].After.Dst.String() != client || rs[0].After.Dport != syn.Tuple.Sport {
					t.Fatalf("reply nat %+v\n%s", rs, labtest.Describe(out.Packets))
				}
				if synack.Verdict != event.FateForwarded || synack.OIF != "r0" {
					t.Errorf("reply %s out %q: not traced back to the client", synack.Verdict, synack.OIF)
				}
				if f := flowOf(out, syn.Flow); f == nil || strings.Join(f.NAT, ",") != c.kind {
					t.Errorf("flow %+v", f)
				}
			})
		}
	}
}

// 3. REDIRECT: redirect kind, local delivery.
func TestNATRedirect(t *testing.T) {
	l := labtest.ClientRouterServer(t)
	load(t, l, "router", iptNFT, redirectRules)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l.ListenTCP(ctx, "router", ":1234")
	out := traceNAT(t, l, nil, "tcp and dst port 12345", func() {
		if _, err := l.Exchange("client", routerIn+":12345", 3*time.Second); err != nil {
			t.Fatal(err)
		}
	})
	syn, synack := packetWith(out, flags("[S]")), packetWith(out, flags("[S.]"))
	if syn == nil || synack == nil {
		t.Fatalf("packets:\n%s", labtest.Describe(out.Packets))
	}
	ns := natSteps(syn)
	if len(ns) != 1 || ns[0].NAT != event.NATRedirect || ns[0].After.Dport != 1234 || syn.Verdict != event.FateDelivered {
		t.Fatalf("SYN:\n%s", labtest.Describe([]*event.Packet{syn}))
	}
	rs := natSteps(synack)
	if len(rs) != 1 || rs[0].NAT != event.NATRedirect || !rs[0].Reverse || rs[0].After.Sport != 12345 || synack.Verdict != event.FateSent {
		t.Fatalf("SYN-ACK:\n%s", labtest.Describe([]*event.Packet{synack}))
	}
}

// Seed 001 "转发到公网IP某端口": DNAT and SNAT on one router.
const doubleNATRules = `*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 10.200.1.1/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.200.2.2:8080
-A POSTROUTING -d 10.200.2.2/32 -p tcp -m tcp --dport 8080 -j SNAT --to-source 10.200.2.1
COMMIT
`

// 4. Double NAT: both on the first packet in hook order, both reversed on replies.
func TestNATDoubleNAT(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		t.Run(map[bool]string{false: "iptables-nft", true: "iptables-legacy"}[legacy], func(t *testing.T) {
			l := labtest.ClientRouterServer(t)
			if err := l.Iptables("router", legacy, doubleNATRules); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			l.ListenTCP(ctx, "server", ":8080")
			out := traceNAT(t, l, nil, "tcp and dst port 80", func() {
				if _, err := l.Exchange("client", routerIn+":80", 3*time.Second); err != nil {
					t.Fatal(err)
				}
			})
			syn, synack := packetWith(out, flags("[S]")), packetWith(out, flags("[S.]"))
			if syn == nil || synack == nil {
				t.Fatalf("packets:\n%s", labtest.Describe(out.Packets))
			}
			ns := natSteps(syn)
			if len(ns) != 2 || ns[0].NAT != event.NATDNAT || ns[0].Hook != "prerouting" || ns[1].NAT != event.NATSNAT || ns[1].Hook != "postrouting" ||
				epOf(ns[1].After) != ep(routerOut, ns[1].After.Sport, server, 8080) || ns[1].Before.Dst.String() != server {
				t.Fatalf("SYN:\n%s", labtest.Describe([]*event.Packet{syn}))
			}
			rs := natSteps(synack)
			if len(rs) != 2 || rs[0].NAT != event.NATSNAT || !rs[0].Reverse || rs[0].Hook != "prerouting" || rs[0].After.Dst.String() != client ||
				rs[1].NAT != event.NATDNAT || !rs[1].Reverse || rs[1].Hook != "postrouting" || epOf(rs[1].After) != ep(routerIn, 80, client, syn.Tuple.Sport) {
				t.Fatalf("SYN-ACK:\n%s", labtest.Describe([]*event.Packet{synack}))
			}
			if f := flowOf(out, syn.Flow); f == nil || strings.Join(f.NAT, ",") != "dnat,snat" || len(f.Translations) != 2 {
				t.Errorf("flow %+v", f)
			}
		})
	}
}

// 5. DNAT to 127.0.0.1: undelivered without route_localnet, delivered with it.
func TestNATDNATToLoopback(t *testing.T) {
	for _, localnet := range []string{"0", "1"} {
		t.Run("route_localnet="+localnet, func(t *testing.T) {
			l := labtest.ClientRouterServer(t)
			rules := "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:1234\nCOMMIT\n"
			if err := l.Iptables("router", false, rules); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"net.ipv4.conf.all.route_localnet", "net.ipv4.conf.r0.route_localnet"} {
				if err := l.Sysctl("router", k, localnet); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			l.ListenTCP(ctx, "router", "127.0.0.1:1234")
			var xerr error
			out := traceNAT(t, l, nil, "tcp and dst port 80", func() {
				_, xerr = l.Exchange("client", routerIn+":80", 1200*time.Millisecond)
			})
			syn := packetWith(out, flags("[S]"))
			if syn == nil {
				t.Fatalf("packets:\n%s", labtest.Describe(out.Packets))
			}
			ns := natSteps(syn)
			if len(ns) != 1 || ns[0].NAT != event.NATDNAT || ns[0].After.Dst.String() != "127.0.0.1" || ns[0].After.Dport != 1234 {
				t.Fatalf("SYN:\n%s", labtest.Describe([]*event.Packet{syn}))
			}
			if localnet == "0" {
				if xerr == nil || syn.Verdict == event.FateDelivered || syn.Verdict == event.FateForwarded {
					t.Fatalf("with route_localnet=0: connect %v, verdict %s", xerr, syn.Verdict)
				}
				return
			}
			if xerr != nil || syn.Verdict != event.FateDelivered {
				t.Fatalf("with route_localnet=1: connect %v, verdict %s", xerr, syn.Verdict)
			}
		})
	}
}

// 6. A connection opened before the session: both directions traced with
// the translation, attributed to the existing conntrack entry.
func TestNATExistingConnection(t *testing.T) {
	l := dnatLab(t)
	c, err := l.DialTCP("client", routerIn+":80", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	out := traceNAT(t, l, nil, "tcp and dst port 80", func() {
		c.Write([]byte("bye\n")) // the server reads it and closes: packets both ways
		c.Read(buf)
	})
	var orig, reply *event.Packet
	for _, p := range out.Packets {
		for _, s := range natSteps(p) {
			if s.Reverse && reply == nil {
				reply = p
			}
			if !s.Reverse && orig == nil {
				orig = p
			}
		}
	}
	if orig == nil || reply == nil {
		t.Fatalf("both directions must be traced with NAT:\n%s", labtest.Describe(out.Packets))
	}
	o, r := natSteps(orig)[0], natSteps(reply)[0]
	if o.By != "conntrack" || o.SetupBy != "" || o.NAT != event.NATDNAT || o.After.Dport != 8080 || o.CTID == 0 {
		t.Errorf("original direction: %+v", o)
	}
	if r.By != "conntrack" || r.NAT != event.NATDNAT || r.After.Sport != 80 || r.CTID != o.CTID {
		t.Errorf("reply direction: %+v", r)
	}
	f := flowOf(out, orig.Flow)
	if f == nil || !f.Existing || f.States[0].Event != event.CTDump || strings.Join(f.NAT, ",") != "dnat" {
		t.Errorf("flow %+v", f)
	}
}

// 7. UDP through DNAT and ICMP echo through MASQUERADE (the id as the port).
func TestNATUDPAndICMP(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		t.Run(map[bool]string{false: "iptables-nft", true: "iptables-legacy"}[legacy], func(t *testing.T) {
			l := labtest.ClientRouterServer(t)
			rules := `*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 10.200.1.1/32 -p udp -m udp --dport 5353 -j DNAT --to-destination 10.200.2.2:53
-A POSTROUTING -o r1 -p icmp -j MASQUERADE
COMMIT
`
			if err := l.Iptables("router", legacy, rules); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if err := l.ListenUDP(ctx, "server", ":53"); err != nil {
				t.Fatal(err)
			}
			out := traceNAT(t, l, nil, "(udp and dst port 5353) or (icmp and src host 10.200.1.2)", func() {
				if got, err := l.UDPExchange("client", routerIn+":5353", "q", 2*time.Second); err != nil || got != "echo: q" {
					t.Fatalf("udp: %q %v", got, err)
				}
				if err := l.Ping("client", server, 4242, 2*time.Second); err != nil {
					t.Fatal(err)
				}
			})
			isUDP := func(dir string) func(*event.Packet) bool {
				return func(p *event.Packet) bool {
					return p.Tuple.Proto == "udp" && (dir == "q") == (p.Tuple.Dport == 5353)
				}
			}
			q, a := packetWith(out, isUDP("q")), packetWith(out, isUDP("a"))
			if q == nil || a == nil || len(natSteps(q)) != 1 || natSteps(q)[0].After.Dport != 53 ||
				len(natSteps(a)) != 1 || !natSteps(a)[0].Reverse || natSteps(a)[0].After.Sport != 5353 {
				t.Fatalf("udp:\n%s", labtest.Describe(out.Packets))
			}
			isICMP := func(typ uint8) func(*event.Packet) bool {
				return func(p *event.Packet) bool {
					return p.Tuple.Proto == "icmp" && p.Tuple.ICMPType != nil && *p.Tuple.ICMPType == typ
				}
			}
			req, rep := packetWith(out, isICMP(8)), packetWith(out, isICMP(0))
			if req == nil || rep == nil {
				t.Fatalf("icmp:\n%s", labtest.Describe(out.Packets))
			}
			ns, rs := natSteps(req), natSteps(rep)
			if len(ns) != 1 || ns[0].NAT != event.NATMasquerade || ns[0].After.Src.String() != routerOut || ns[0].Before.Sport != 4242 ||
				len(rs) != 1 || !rs[0].Reverse || rs[0].After.Dst.String() != client || rs[0].After.Dport != 4242 {
				t.Fatalf("icmp nat:\n%s", labtest.Describe([]*event.Packet{req, rep}))
			}
			if req.Flow != rep.Flow || flowOf(out, req.Flow) == nil {
				t.Errorf("icmp request and reply in flows %d and %d", req.Flow, rep.Flow)
			}
		})
	}
}
