package report

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/nattrace/nattrace/event"
)

// A connection is one conversation as the report shows it: the flows that
// conntrack keeps for it in each traced namespace (linked through their
// tuples, before and after NAT) and the packets of those flows. Packets of
// no flow (untracked, or conntrack not loaded) form connections by their
// addresses and ports.
type connection struct {
	ID      int
	Flows   []*event.Flow
	Packets []*event.Packet
	Client  event.Endpoints // as the client sent it
	Server  event.Endpoints // as the server received it
	Proto   string
	Hops    []hop // the namespaces that translated it, in path order
	keys    map[endKey]bool
	orig    map[endKey]bool // the request direction's views
}

// hop is one translating namespace on a connection's path.
type hop struct {
	Netns        string
	Translations []event.Translation
	Before       event.Endpoints
	After        event.Endpoints
}

type endKey struct {
	proto    string
	src, dst netip.Addr
	sp, dp   uint16
}

func keyOf(proto string, e event.Endpoints) endKey {
	return endKey{proto, e.Src, e.Dst, e.Sport, e.Dport}
}

func endpointsOf(t event.Tuple) event.Endpoints {
	return event.Endpoints{Src: t.Src, Dst: t.Dst, Sport: t.Sport, Dport: t.Dport}
}

func reverseEndpoints(e event.Endpoints) event.Endpoints {
	return event.Endpoints{Src: e.Dst, Dst: e.Src, Sport: e.Dport, Dport: e.Sport}
}

// serverView is a flow's connection as its server sees it: the reply
// tuple reversed. An entry that was never confirmed (its first packet was
// dropped) has no reply tuple: its last translation tells.
func serverView(f *event.Flow) event.Endpoints {
	if f.Reply.Src.IsValid() {
		return reverseEndpoints(endpointsOf(f.Reply))
	}
	if n := len(f.Translations); n > 0 {
		return f.Translations[n-1].After
	}
	return endpointsOf(f.Orig)
}

func natting(f *event.Flow) bool { return serverView(f) != endpointsOf(f.Orig) }

// groupConnections links flows and packets into connections, in the order
// their first packet (or flow) was seen.
func groupConnections(rec *Recording) []*connection {
	parent := make([]int, len(rec.Flows))
	for i := range parent {
		parent[i] = i
	}
	var find func(int) int
	find = func(i int) int {
		for parent[i] != i {
			parent[i] = parent[parent[i]]
			i = parent[i]
		}
		return i
	}
	byKey := map[endKey]int{}
	for i, f := range rec.Flows {
		keys := []endKey{keyOf(f.Orig.Proto, endpointsOf(f.Orig))}
		if natting(f) {
			keys = append(keys, keyOf(f.Orig.Proto, serverView(f)))
		}
		for _, k := range keys {
			if j, ok := byKey[k]; ok {
				parent[find(i)] = find(j)
			} else {
				byKey[k] = i
			}
		}
	}
	// The stream may hold several objects of one flow (updates): the last wins.
	flowByID := map[uint64]int{}
	for i, f := range rec.Flows {
		flowByID[f.ID] = i
	}
	conns := map[int]*connection{}
	var order []*connection
	get := func(root int) *connection {
		c := conns[root]
		if c == nil {
			c = &connection{keys: map[endKey]bool{}, orig: map[endKey]bool{}}
			conns[root] = c
			order = append(order, c)
		}
		return c
	}
	loose := map[endKey]*connection{} // packets of no flow
	for _, p := range rec.Packets {
		if i, ok := flowByID[p.Flow]; ok && p.Flow != 0 {
			get(find(i)).Packets = append(get(find(i)).Packets, p)
			continue
		}
		e := endpointsOf(p.Tuple)
		k, rk := keyOf(p.Tuple.Proto, e), keyOf(p.Tuple.Proto, reverseEndpoints(e))
		if i, ok := byKey[k]; ok {
			get(find(i)).Packets = append(get(find(i)).Packets, p)
			continue
		}
		if i, ok := byKey[rk]; ok {
			get(find(i)).Packets = append(get(find(i)).Packets, p)
			continue
		}
		c := loose[k]
		if c == nil {
			c = loose[rk]
		}
		if c == nil {
			c = &connection{keys: map[endKey]bool{}, orig: map[endKey]bool{}, Client: e, Server: e, Proto: p.Tuple.Proto}
			c.keys[k], c.orig[k] = true, true
			loose[k] = c
			order = append(order, c)
		}
		c.Packets = append(c.Packets, p)
	}
	seen := map[uint64]bool{}
	for i := len(rec.Flows) - 1; i >= 0; i-- { // the last object of each flow
		f := rec.Flows[i]
		if seen[f.ID] {
			continue
		}
		seen[f.ID] = true
		c := get(find(i))
		c.Flows = append(c.Flows, f)
	}
	for _, c := range order {
		slices.Reverse(c.Flows)
		if len(c.Flows) > 0 {
			c.path()
		}
	}
	slices.SortStableFunc(order, func(a, b *connection) int { return a.first().Compare(b.first()) })
	for i, c := range order {
		c.ID = i + 1
	}
	return order
}

// path finds the client's view, the translating namespaces in order and
// the server's view.
func (c *connection) path() {
	c.Proto = c.Flows[0].Orig.Proto
	after := map[endKey]bool{} // views that are some NAT's result
	for _, f := range c.Flows {
		if natting(f) {
			after[keyOf(c.Proto, serverView(f))] = true
		}
	}
	start := c.Flows[0]
	for _, f := range c.Flows {
		if !after[keyOf(c.Proto, endpointsOf(f.Orig))] {
			start = f
			break
		}
	}
	cur := endpointsOf(start.Orig)
	c.Client = cur
	used := map[*event.Flow]bool{}
	for range c.Flows {
		var next *event.Flow
		for _, f := range c.Flows {
			if !used[f] && natting(f) && endpointsOf(f.Orig) == cur {
				next = f
				break
			}
		}
		if next == nil {
			break
		}
		used[next] = true
		h := hop{Netns: next.Netns, Translations: next.Translations, Before: cur, After: serverView(next)}
		c.Hops = append(c.Hops, h)
		cur = h.After
	}
	c.Server = cur
	for _, f := range c.Flows {
		c.keys[keyOf(c.Proto, endpointsOf(f.Orig))] = true
		c.keys[keyOf(c.Proto, serverView(f))] = true
	}
	for k := range c.keys {
		c.orig[k] = true
	}
}

func (c *connection) first() (t time.Time) {
	for _, p := range c.Packets {
		if t.IsZero() || p.FirstSeen.Before(t) {
			t = p.FirstSeen
		}
	}
	for _, f := range c.Flows {
		for _, s := range f.States {
			if t.IsZero() || s.T.Before(t) {
				t = s.T
			}
		}
	}
	return t
}

// Reply reports whether a packet travels from the server to the client.
func (c *connection) Reply(p *event.Packet) bool {
	e := endpointsOf(p.Tuple)
	if p.Tuple.ICMPType != nil && (*p.Tuple.ICMPType == 0 || *p.Tuple.ICMPType == 129) {
		return true // an echo reply: ICMP ids are the same both ways
	}
	return !c.orig[keyOf(p.Tuple.Proto, e)] && c.orig[keyOf(p.Tuple.Proto, reverseEndpoints(e))]
}

// Counts are a connection's packets each way.
func (c *connection) Counts() (orig, reply int) {
	for _, p := range c.Packets {
		if c.Reply(p) {
			reply++
		} else {
			orig++
		}
	}
	return
}

// Fate sums a connection up in one line: the first drop, with what
// dropped it; otherwise whether it was answered, or where its last packet
// went.
func (c *connection) Fate() (class, text string) {
	for _, p := range c.Packets {
		if p.Verdict == event.FateDropped && p.Drop != nil {
			where := p.EndNetns
			if where == "" {
				where = p.Netns
			}
			if ns := dropNetns(p); ns != "" {
				where = ns
			}
			what := "request"
			if c.Reply(p) {
				what = "reply"
			}
			return "dropped", fmt.Sprintf("%s %s [%s]", what, lowerFirst(Fate(p)), where)
		}
	}
	orig, reply := c.Counts()
	if reply > 0 && orig > 0 {
		return "answered", fmt.Sprintf("answered: %s, %s", plural(uint64(orig), "request packet"), plural(uint64(reply), "reply packet"))
	}
	if len(c.Packets) == 0 {
		return "unknown", "no packet traced (conntrack only)"
	}
	last := c.Packets[len(c.Packets)-1]
	class = last.Verdict
	if reply == 0 {
		return class, lowerFirst(Fate(last)) + ", no reply traced"
	}
	return class, lowerFirst(Fate(last))
}

// dropNetns is the namespace of a packet's drop step or dropping rule.
func dropNetns(p *event.Packet) string {
	for i := len(p.Steps) - 1; i >= 0; i-- {
		s := p.Steps[i]
		if s.Kind == event.KindDrop || s.Verdict == event.VerdictDrop || s.Verdict == event.VerdictReject {
			return s.Netns
		}
	}
	return ""
}

func lowerFirst(s string) string {
	for _, w := range []string{"DROPPED", "REJECTED"} {
		if strings.HasPrefix(s, w) {
			return strings.ToLower(w) + s[len(w):]
		}
	}
	return s
}

// NATSummary is "DNAT→10.200.2.2:8080 [router]" for each translation.
func (c *connection) NATSummary() string {
	var parts []string
	for _, h := range c.Hops {
		for _, t := range h.Translations {
			to := hostPort(t.After.Dst, t.After.Dport)
			if t.NAT == event.NATSNAT || t.NAT == event.NATMasquerade {
				to = hostPort(t.After.Src, t.After.Sport)
			}
			parts = append(parts, fmt.Sprintf("%s→%s [%s]", strings.ToUpper(t.NAT), to, h.Netns))
		}
		if len(h.Translations) == 0 { // conntrack shows a translation it did not record a rule for
			parts = append(parts, fmt.Sprintf("NAT→%s [%s]", EndpointString(&h.After), h.Netns))
		}
	}
	return strings.Join(parts, ", ")
}
