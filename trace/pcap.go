package trace

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nattrace/nattrace/capture"
	"github.com/nattrace/nattrace/event"
	"github.com/nattrace/nattrace/filter"
)

// recorder captures alongside a trace ("flow -w"): IP packets on every
// interface of the traced namespaces are held for a while and kept when
// they match the filter or belong to a followed connection (in any of its
// four views through NAT); each kept packet's comment is its trace.
type recorder struct {
	mu       sync.Mutex
	expr     filter.Node
	tuples   map[tupleKey]bool
	comments map[string][]noted // netns|fingerprint
	host     string             // name of the namespace nattrace runs in
	cancel   context.CancelFunc
	done     chan error
	stats    []capture.IfStats
}

type noted struct {
	at      time.Time
	comment string
}

func reversed(t event.Tuple) event.Tuple {
	r := t
	r.Src, r.Dst, r.Sport, r.Dport = t.Dst, t.Src, t.Dport, t.Sport
	return r
}

// follow adds a connection's tuples: the original and reply directions as
// they arrive and as they leave (after NAT).
func (r *recorder) follow(f *event.CTFlow) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range []event.Tuple{f.Orig, f.Reply, reversed(f.Orig), reversed(f.Reply)} {
		if t.Proto == "icmp" || t.Proto == "icmp6" {
			t.Sport, t.Dport = 0, 0
		}
		r.tuples[keyOf("", t)] = true
	}
}

// note records a traced packet's comment for each namespace it crossed.
func (r *recorder) note(p *event.Packet) {
	fp := p.Fingerprint()
	byNS := map[string][]string{}
	var order []string
	for _, s := range p.Steps {
		ns := s.Netns
		if ns == "" {
			ns = p.Netns
		}
		if _, ok := byNS[ns]; !ok {
			order = append(order, ns)
		}
		if c := stepComment(s); c != "" {
			byNS[ns] = append(byNS[ns], c)
		}
	}
	if len(order) == 0 {
		order = []string{p.Netns}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ns := range order {
		c := strings.Join(byNS[ns], "; ")
		if p.Verdict == event.FateDropped && p.Drop != nil && (ns == p.Netns || ns == p.EndNetns) {
			c = strings.TrimPrefix(c+"; dropped ("+p.Drop.Reason+")", "; ")
		}
		k := fmt.Sprintf("%s|%d", ns, fp)
		r.comments[k] = append(r.comments[k], noted{p.FirstSeen, c})
	}
}

func stepComment(s event.Step) string {
	switch s.Kind {
	case event.KindRule:
		c := fmt.Sprintf("%s/%s rule %d %s", s.Table, s.Chain, s.Position, s.Verdict)
		if s.Target != "" {
			c += " " + s.Target
		}
		if s.Verdict == event.VerdictContinue {
			return ""
		}
		return c
	case event.KindPolicy:
		return fmt.Sprintf("%s/%s policy %s", s.Table, s.Chain, s.Verdict)
	case event.KindNAT:
		kind := strings.ToUpper(s.NAT)
		if s.Reverse {
			kind = "reverse " + kind
		}
		return fmt.Sprintf("%s %s:%d > %s:%d => %s:%d > %s:%d", kind, s.Before.Src, s.Before.Sport, s.Before.Dst, s.Before.Dport,
			s.After.Src, s.After.Sport, s.After.Dst, s.After.Dport)
	case event.KindRPF:
		if s.Mode != "off" {
			return fmt.Sprintf("rp_filter %s %s", s.Mode, s.Result)
		}
	case event.KindRoute:
		if s.Error != "" {
			return "route to " + s.Dst + ": " + s.Error
		}
	}
	return ""
}

func (r *recorder) nsOf(p *capture.Packet) string {
	if ns, _, ok := strings.Cut(p.Iface.Name, "/"); ok {
		return ns
	}
	return r.host
}

func (r *recorder) keep(p *capture.Packet) bool {
	h, err := event.DecodeIP(capture.Network(p.Data, p.Iface.LinkType), nil)
	if err != nil {
		return false
	}
	if r.expr == nil || filter.Match(r.expr, h.Fields()) {
		return true
	}
	t := h.Tuple
	if t.ICMPType != nil {
		t.Sport, t.Dport, t.ICMPType, t.ICMPCode = 0, 0, nil, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tuples[keyOf("", t)]
}

func (r *recorder) annotate(p *capture.Packet) string {
	h, err := event.DecodeIP(capture.Network(p.Data, p.Iface.LinkType), nil)
	if err != nil {
		return ""
	}
	k := fmt.Sprintf("%s|%d", r.nsOf(p), h.Fingerprint())
	r.mu.Lock()
	defer r.mu.Unlock()
	best, bestD := "", time.Second
	for _, n := range r.comments[k] {
		d := n.at.Sub(p.Time)
		if d < 0 {
			d = -d
		}
		if d < bestD {
			best, bestD = n.comment, d
		}
	}
	return best
}

// startRecorder starts the capture of "flow -w".
func (s *Session) startRecorder(path string) (*recorder, error) {
	r := &recorder{expr: s.expr, tuples: map[tupleKey]bool{}, comments: map[string][]noted{}, done: make(chan error, 1), host: "host"}
	o := capture.Options{Interfaces: []string{"any"}, Filter: "ip or ip6", Write: path, Quiet: true,
		Window: 500 * time.Millisecond, Keep: r.keep, Annotate: r.annotate, NoPayload: s.opts.NoPayload}
	for _, n := range s.nss {
		o.Namespaces = append(o.Namespaces, n.ns)
		if n.ns.IsCurrent() {
			r.host = n.ns.Name
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	ready := make(chan struct{})
	o.Ready = func() { close(ready) }
	go func() {
		st, err := capture.Run(ctx, o, nil)
		r.stats = st
		r.done <- err
	}()
	select {
	case <-ready:
		return r, nil
	case err := <-r.done:
		cancel()
		if err == nil {
			err = fmt.Errorf("capture ended before it started")
		}
		return nil, err
	}
}

// finish writes what the capture still holds and closes the file.
func (r *recorder) finish() error {
	r.cancel()
	return <-r.done
}
