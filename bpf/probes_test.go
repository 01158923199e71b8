package bpf

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nattrace/nattrace/event"
	"github.com/nattrace/nattrace/filter"
	"github.com/nattrace/nattrace/lab"
	"github.com/nattrace/nattrace/lab/labtest"
)

type collector struct {
	mu sync.Mutex
	ev []*Event
}

func (c *collector) all() []*Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Event(nil), c.ev...)
}

func start(t *testing.T, expr string, netns ...uint32) (*Probes, *collector) {
	t.Helper()
	d, _ := filter.ToDNF(filter.MustParse(expr))
	p, err := Load(Options{DNF: d, Netns: netns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	c := &collector{}
	go p.Read(func(e *Event) {
		c.mu.Lock()
		c.ev = append(c.ev, e)
		c.mu.Unlock()
	})
	return p, c
}

func syn(e *Event) bool {
	h, err := event.DecodeIP(e.Header, nil)
	return err == nil && h.TCPFlags == 0x02
}

// One SYN across client -- router -- server: followed by skb address from
// the router, where it starts matching, into the server's namespace.
func TestJourneyAcrossNamespaces(t *testing.T) {
	l := labtest.ClientRouterServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l.ListenTCP(ctx, "server", ":8080")
	p, c := start(t, "tcp and dst port 8080", uint32(l.NS("client").Inode), uint32(l.NS("router").Inode))
	if len(p.Missing) > 0 {
		t.Logf("probes not attached: %v", p.Missing)
	}
	if _, err := l.Exchange("client", lab.ServerAddr+":8080", 3*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	var journey []*Event
	var skb uint64
	for _, e := range c.all() {
		if e.Kind == KindTx && e.Ifname == "c0" && syn(e) {
			skb = e.SKB
		}
	}
	if skb == 0 {
		t.Fatal("no tx of the SYN on the client's c0")
	}
	for _, e := range c.all() {
		if e.SKB != skb {
			continue
		}
		journey = append(journey, e)
		if e.Kind == KindFree || e.Kind == KindDrop {
			break // the address may be reused by the next packet
		}
	}
	var got []string
	var route *Event
	ns := map[uint32]string{uint32(l.NS("client").Inode): "client", uint32(l.NS("router").Inode): "router", uint32(l.NS("server").Inode): "server"}
	for _, e := range journey {
		s := e.Kind.String() + "@" + ns[e.Netns]
		if e.Ifname != "" {
			s += "/" + e.Ifname
		}
		if e.Kind == KindRPF {
			continue // the input route's verdict, where fexit works (6.1)
		}
		if e.Kind == KindRoute {
			if e.Dst.String() == lab.ServerAddr && ns[e.Netns] == "router" {
				route = e
			}
			continue
		}
		got = append(got, s)
	}
	want := "tx@client/c0 rx@router/r0 tx@router/r1 rx@server/s0 free@server"
	if strings.Join(got, " ") != want {
		t.Fatalf("journey %q, want %q", strings.Join(got, " "), want)
	}
	if route == nil {
		// Debian's 6.1 does not report the first packet's lookup here (seen
		// under qemu); the connection's next packets carry it.
		for _, e := range c.all() {
			if e.Kind == KindRoute && e.Dst.String() == lab.ServerAddr && ns[e.Netns] == "router" {
				route = e
				break
			}
		}
	}
	if route == nil || route.ResIfname != "r1" || route.Err != 0 || route.Src.String() != lab.ClientAddr {
		t.Fatalf("the router's route lookup for the server: %+v", route)
	}
	for i := 1; i < len(journey); i++ {
		if journey[i].Time.Before(journey[i-1].Time) {
			t.Errorf("events out of order at %d", i)
		}
	}
	if events, lost, tracked := p.Counters(); events == 0 || lost != 0 || tracked == 0 {
		t.Errorf("counters: %d events, %d lost, %d tracked", events, lost, tracked)
	}
}

// Traffic that matches the filter in namespaces that are not traced
// produces no event at all.
func TestNoEventsFromOtherNamespaces(t *testing.T) {
	traced := labtest.ClientRouterServer(t)
	other := labtest.ClientRouterServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	other.ListenTCP(ctx, "server", ":8080")
	_, c := start(t, "tcp and dst port 8080", uint32(traced.NS("router").Inode))
	for i := 0; i < 5; i++ {
		if _, err := other.Exchange("client", lab.ServerAddr+":8080", 3*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if ev := c.all(); len(ev) != 0 {
		t.Fatalf("%d events from untraced namespaces, first %+v", len(ev), ev[0])
	}
}

// A FORWARD drop: kfree_skb with the reason named from kernel BTF.
func TestDropReason(t *testing.T) {
	l := labtest.ClientRouterServer(t)
	if err := l.Iptables("router", false, "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -p tcp -m tcp --dport 22 -j DROP\nCOMMIT\n"); err != nil {
		t.Fatal(err)
	}
	reasons, err := LoadDropReasons()
	if err != nil {
		t.Fatal(err)
	}
	_, c := start(t, "tcp and dst port 22", uint32(l.NS("router").Inode))
	l.DialTCP("client", lab.ServerAddr+":22", 300*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	var ks Kallsyms
	for _, e := range c.all() {
		if e.Kind == KindDrop && syn(e) {
			if name := reasons.Name(e.Reason); name != "NETFILTER_DROP" {
				t.Errorf("reason %d = %s, want NETFILTER_DROP", e.Reason, name)
			}
			if sym := ks.Symbol(e.Location); !strings.Contains(sym, "+0x") {
				t.Errorf("location %x -> %q", e.Location, sym)
			}
			return
		}
	}
	t.Fatalf("no drop event: %d events", len(c.all()))
}

func TestCompileDNF(t *testing.T) {
	d, _ := filter.ToDNF(filter.MustParse("tcp and dst port 80 and net 10.200.0.0/16"))
	cl, ok := compile(d)
	if !ok || len(cl) != 2 || cl[0].N == 0 {
		t.Fatalf("%v %+v", ok, cl)
	}
	var big filter.DNF
	for i := 0; i < maxClauses+1; i++ {
		big = append(big, filter.Clause{})
	}
	if _, ok := compile(big); ok {
		t.Error("a DNF larger than the kernel table must fall back to match-all")
	}
}
