// Package ctflow reads conntrack in a network namespace: a dump of the
// existing entries when a session starts and the new, update and destroy
// events after that, as event.CTFlow values.
package ctflow

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"

	"github.com/nattrace/nattrace/event"
	"github.com/nattrace/nattrace/filter"
	"github.com/nattrace/nattrace/netns"
)

// Convert turns a ti-mo/conntrack flow into the shared model.
func Convert(f *conntrack.Flow, ev string) *event.CTFlow {
	c := &event.CTFlow{Event: ev, ID: f.ID, Orig: tuple(f.TupleOrig), Reply: tuple(f.TupleReply), Status: uint32(f.Status.Value)}
	if f.ProtoInfo.TCP != nil {
		c.TCPState, c.HasTCP = f.ProtoInfo.TCP.State, true
	}
	return c
}

func tuple(t conntrack.Tuple) event.Tuple {
	out := event.Tuple{Proto: filter.ProtoName(t.Proto.Protocol), Src: t.IP.SourceAddress.Unmap(), Dst: t.IP.DestinationAddress.Unmap()}
	switch t.Proto.Protocol {
	case filter.ProtoICMP, filter.ProtoICMPv6:
		// The echo id stands in for both ports (nf_conntrack does so).
		out.Sport, out.Dport = t.Proto.ICMPID, t.Proto.ICMPID
		typ, code := t.Proto.ICMPType, t.Proto.ICMPCode
		out.ICMPType, out.ICMPCode = &typ, &code
	default:
		out.Sport, out.Dport = t.Proto.SourcePort, t.Proto.DestinationPort
	}
	return out
}

// Fields returns a tuple as filter fields: the packet it describes.
func Fields(t event.Tuple) *filter.Fields {
	f := &filter.Fields{Src: t.Src, Dst: t.Dst, Sport: t.Sport, Dport: t.Dport}
	if t.Src.Is4() {
		f.Family = 4
	} else if t.Src.Is6() {
		f.Family = 6
	}
	f.Proto, _ = filter.ProtoNumber(t.Proto)
	f.HasPorts = f.Proto == filter.ProtoTCP || f.Proto == filter.ProtoUDP || f.Proto == filter.ProtoSCTP || f.Proto == 136
	return f
}

// Matches reports whether a connection belongs to a filter: its first
// packet (the original tuple) or its replies (the reply tuple, as they
// arrive) match it.
func Matches(n filter.Node, c *event.CTFlow) bool {
	return filter.Match(n, Fields(c.Orig)) || filter.Match(n, Fields(c.Reply))
}

// Source reads conntrack in one namespace.
type Source struct {
	ns       *netns.NS
	dump     *conntrack.Conn
	events   *conntrack.Conn
	ch       chan conntrack.Event
	overruns atomic.Uint64
	done     chan struct{}
}

// Open dials ctnetlink twice in ns: one socket for the dump, one for events.
func Open(ns *netns.NS) (*Source, error) {
	fd, err := ns.Open()
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	d, err := conntrack.Dial(&netlink.Config{NetNS: fd})
	if err != nil {
		return nil, fmt.Errorf("conntrack in %s: %w", ns, err)
	}
	e, err := conntrack.Dial(&netlink.Config{NetNS: fd})
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("conntrack in %s: %w", ns, err)
	}
	_ = e.SetReadBuffer(8 << 20)
	return &Source{ns: ns, dump: d, events: e, ch: make(chan conntrack.Event, 4096), done: make(chan struct{})}, nil
}

// Run subscribes to events, then dumps the table, and calls fn for every
// entry and event until Close. Subscribing first means no entry created
// during the dump is missed (it may be reported twice).
func (s *Source) Run(fn func(*event.CTFlow)) error {
	errc, err := s.events.Listen(s.ch, 1, []netfilter.NetlinkGroup{
		netfilter.GroupCTNew, netfilter.GroupCTUpdate, netfilter.GroupCTDestroy})
	if err != nil {
		return fmt.Errorf("conntrack events in %s: %w", s.ns, err)
	}
	flows, err := s.dump.Dump(nil)
	if err != nil {
		return fmt.Errorf("conntrack dump in %s: %w", s.ns, err)
	}
	for i := range flows {
		fn(Convert(&flows[i], event.CTDump))
	}
	go func() {
		for err := range errc {
			if err != nil && (errors.Is(err, unix.ENOBUFS) || strings.Contains(err.Error(), "no buffer space")) {
				s.overruns.Add(1)
			}
		}
	}()
	for {
		select {
		case ev := <-s.ch:
			if ev.Flow == nil {
				continue
			}
			var kind string
			switch ev.Type {
			case conntrack.EventNew:
				kind = event.CTNew
			case conntrack.EventUpdate:
				kind = event.CTUpdate
			case conntrack.EventDestroy:
				kind = event.CTDestroy
			default:
				continue
			}
			fn(Convert(ev.Flow, kind))
		case <-s.done:
			return nil
		}
	}
}

// Overruns counts event socket overflows (conntrack events lost).
func (s *Source) Overruns() uint64 { return s.overruns.Load() }

// Close stops Run.
func (s *Source) Close() error {
	close(s.done)
	s.events.Close()
	return s.dump.Close()
}

// TCPStateName names nf_conntrack's TCP states.
func TCPStateName(s uint8) string {
	names := []string{"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2"}
	if int(s) < len(names) {
		return names[s]
	}
	return fmt.Sprintf("STATE_%d", s)
}

// StatusNames names the set bits of a conntrack status.
func StatusNames(v uint32) []string {
	names := []string{"EXPECTED", "SEEN_REPLY", "ASSURED", "CONFIRMED", "SRC_NAT", "DST_NAT", "SEQ_ADJUST",
		"SRC_NAT_DONE", "DST_NAT_DONE", "DYING", "FIXED_TIMEOUT", "TEMPLATE", "UNTRACKED", "HELPER", "OFFLOAD", "HW_OFFLOAD"}
	var out []string
	for i, n := range names {
		if v&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return out
}

// Status bits used by nattrace.
const (
	StatusSeenReply = 1 << 1
	StatusAssured   = 1 << 2
	StatusSrcNAT    = 1 << 4
	StatusDstNAT    = 1 << 5
)
