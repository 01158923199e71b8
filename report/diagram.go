package report

import (
	"fmt"
	"strings"

	"github.com/nattrace/nattrace/event"
)

// diagram is a connection drawn as the seeds draw NAT in ASCII: the client,
// each namespace on the path with what it translated, the server, and on
// each wire between them the addresses the request and the reply carry.
type diagram struct {
	Width, Height int
	Boxes         []diagBox
	Segs          []diagSeg
	Caption       string
}

type diagBox struct {
	X, Y, W, H int
	TX         int // text x (the box's centre)
	Class      string
	Lines      []diagText
}

type diagText struct {
	Y     int
	Text  string
	Class string
	Full  string // the untruncated text, as a tooltip
}

type diagSeg struct {
	X1, X2, MidX   int
	ReqY, RepY     int
	Req1, Req2     string
	Rep1, Rep2     string
	ReqTip, RepTip string // arrowheads
	NoReply        bool
}

const (
	boxW   = 190
	boxGap = 230
	boxY   = 40
	boxH   = 140
	// characters that fit a box line at the page's font size
	boxChars = 28
)

func clip(s string) (string, string) {
	r := []rune(s)
	if len(r) <= boxChars {
		return s, ""
	}
	return string(r[:boxChars-1]) + "…", s
}

// diagNode is one box before layout.
type diagNode struct {
	title, addr, netns string
	lines              []string
	class              string
	hop                *hop
}

func diagramOf(c *connection) diagram {
	origin, final, crossed := pathNamespaces(c)
	hopOf := map[string]*hop{}
	for i := range c.Hops {
		hopOf[c.Hops[i].Netns] = &c.Hops[i]
	}
	nodes := []diagNode{{title: "client", addr: hostPort(c.Client.Src, c.Client.Sport), netns: origin, class: "end"}}
	if origin != "" {
		nodes[0].hop = hopOf[origin] // e.g. SNAT on the client's own way out
	}
	var middle []string
	for _, ns := range crossed {
		if ns != origin && ns != final {
			middle = append(middle, ns)
		}
	}
	for _, h := range c.Hops { // a translating namespace no traced packet crossed
		if !contains(middle, h.Netns) && h.Netns != origin && h.Netns != final {
			middle = append(middle, h.Netns)
		}
	}
	for _, ns := range middle {
		n := diagNode{title: ns, class: "mid", hop: hopOf[ns]}
		if n.hop == nil {
			n.lines = append(n.lines, "no translation")
		}
		nodes = append(nodes, n)
	}
	last := diagNode{title: "server", addr: hostPort(c.Server.Dst, c.Server.Dport), netns: final, class: "end"}
	if final != "" {
		last.hop = hopOf[final] // e.g. REDIRECT on the server itself
	}
	nodes = append(nodes, last)
	for i := range nodes {
		h := nodes[i].hop
		if h == nil {
			continue
		}
		nodes[i].class += " nat"
		var l []string
		for _, t := range h.Translations {
			l = append(l, fmt.Sprintf("%s at %s", strings.ToUpper(t.NAT), t.Hook))
			if t.By != "" {
				l = append(l, "by "+t.By)
			}
		}
		if len(h.Translations) == 0 {
			l = append(l, "translated by conntrack")
		}
		nodes[i].lines = append(l, nodes[i].lines...)
	}
	// Where did it stop?
	caption := ""
	for _, p := range c.Packets {
		if p.Verdict != event.FateDropped {
			continue
		}
		dns := dropNetns(p)
		if dns == "" {
			dns = p.Netns
		}
		what := "request"
		if c.Reply(p) {
			what = "reply"
		}
		for i := range nodes {
			if nodes[i].title == dns || nodes[i].netns == dns {
				nodes[i].class += " drop"
				nodes[i].lines = append(nodes[i].lines, "✗ "+what+" dropped here")
				break
			}
		}
		caption = fmt.Sprintf("✗ %s %s [%s]", what, lowerFirst(Fate(p)), dns)
		break
	}
	orig, reply := c.Counts()
	d := diagram{Height: boxY + boxH + 40, Caption: valid(caption)}
	for i, n := range nodes {
		x := 10 + i*(boxW+boxGap)
		b := diagBox{X: x, Y: boxY, W: boxW, H: boxH, TX: x + boxW/2, Class: n.class}
		y := boxY + 22
		add := func(s, class string) {
			t, full := clip(valid(s))
			b.Lines = append(b.Lines, diagText{Y: y, Text: t, Full: full, Class: class})
			y += 18
		}
		add(n.title, "title")
		if n.addr != "" {
			add(n.addr, "addr")
		}
		if n.netns != "" && n.netns != n.title {
			add("["+n.netns+"]", "ns")
		}
		for _, l := range n.lines {
			cls := ""
			if strings.HasPrefix(l, "✗") {
				cls = "bad"
			}
			add(l, cls)
		}
		d.Boxes = append(d.Boxes, b)
	}
	// The wires: the request's addresses change after each translating box.
	cur := c.Client
	for i := 0; i+1 < len(nodes); i++ {
		if h := nodes[i].hop; h != nil {
			cur = h.After
		}
		x1 := 10 + i*(boxW+boxGap) + boxW
		s := diagSeg{X1: x1, X2: x1 + boxGap, MidX: x1 + boxGap/2, ReqY: boxY + 50, RepY: boxY + boxH - 40}
		s.ReqTip = fmt.Sprintf("%d,%d %d,%d %d,%d", s.X2, s.ReqY, s.X2-10, s.ReqY-5, s.X2-10, s.ReqY+5)
		s.RepTip = fmt.Sprintf("%d,%d %d,%d %d,%d", s.X1, s.RepY, s.X1+10, s.RepY-5, s.X1+10, s.RepY+5)
		s.Req1, s.Req2 = valid(hostPort(cur.Src, cur.Sport)+" →"), valid(hostPort(cur.Dst, cur.Dport))
		if reply > 0 || (len(c.Flows) > 0 && c.Flows[0].Reply.Src.IsValid() && orig == 0) {
			s.Rep1, s.Rep2 = valid(hostPort(cur.Dst, cur.Dport)+" →"), valid(hostPort(cur.Src, cur.Sport))
		} else {
			s.NoReply = true
			s.Rep1 = "no reply traced"
		}
		d.Segs = append(d.Segs, s)
	}
	d.Width = 20 + len(nodes)*boxW + (len(nodes)-1)*boxGap
	return d
}

// pathNamespaces finds, from the connection's request packets, the
// namespace the client sent from (when the probes or a trace saw it), the
// one the server received in, and every namespace crossed, in order.
func pathNamespaces(c *connection) (origin, final string, crossed []string) {
	var longest *event.Packet
	n := -1
	for _, p := range c.Packets {
		if c.Reply(p) {
			continue
		}
		if nss := stepNamespaces(p); len(nss) > n {
			longest, n = p, len(nss)
		}
	}
	if longest == nil {
		for _, f := range c.Flows {
			crossed = append(crossed, f.Netns)
		}
		return "", "", crossed
	}
	crossed = stepNamespaces(longest)
	first := crossed[0]
	switch {
	case first == longest.Netns && longest.IIF == "":
		origin = first // locally generated where it was traced
	default:
		for _, s := range longest.Steps {
			if s.Netns == first || (s.Netns == "" && first == longest.Netns) {
				if s.Kind == event.KindTx {
					origin = first // its first step there is leaving
				}
				break
			}
		}
	}
	for _, p := range c.Packets {
		if c.Reply(p) {
			continue
		}
		switch {
		case p.EndNetns != "" && p.Verdict != event.FateDropped:
			final = p.EndNetns
		case p.Verdict == event.FateDelivered:
			final = p.Netns
		default:
			continue
		}
		break
	}
	if final == origin {
		final = ""
	}
	return origin, final, crossed
}

// stepNamespaces lists the namespaces of a packet's steps in the order
// it reached them.
func stepNamespaces(p *event.Packet) []string {
	var out []string
	for _, s := range p.Steps {
		ns := s.Netns
		if ns == "" {
			ns = p.Netns
		}
		if !contains(out, ns) {
			out = append(out, ns)
		}
	}
	if !contains(out, p.Netns) {
		out = append([]string{p.Netns}, out...)
	}
	return out
}
