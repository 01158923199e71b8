package trace

import (
	"fmt"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/nattrace/nattrace/bpf"
	"github.com/nattrace/nattrace/event"
	"github.com/nattrace/nattrace/netns"
)

// SourceBPF is the name of the BPF probe source.
const SourceBPF = "bpf"

// probeSource turns BPF probe events into observations.
type probeSource struct {
	p       *bpf.Probes
	reasons *bpf.DropReasons
	syms    bpf.Kallsyms
	mu      sync.Mutex
	names   map[uint32]string // namespace inode -> display name
}

func newProbeSource(p *bpf.Probes, traced []*netns.NS) *probeSource {
	s := &probeSource{p: p, names: map[uint32]string{}}
	for _, ns := range traced {
		s.names[uint32(ns.Inode)] = ns.Name
	}
	s.reasons, _ = bpf.LoadDropReasons()
	s.syms.Load()
	return s
}

// nsName names a namespace by inode: a traced one by its --netns name,
// another by "ip netns" name or holder pid, else by inode.
func (s *probeSource) nsName(ino uint32) string {
	if ino == 0 {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if n, ok := s.names[ino]; ok {
		return n
	}
	n := "netns:" + strconv.FormatUint(uint64(ino), 10)
	if ns, ok := netns.FindByInode(uint64(ino)); ok {
		n = ns.Name
	}
	s.names[ino] = n
	return n
}

var tableNames = map[uint32]string{253: "default", 254: "main", 255: "local"}

func (s *probeSource) observe(e *bpf.Event) *event.Observation {
	o := &event.Observation{Source: SourceBPF, Time: e.Time, SKB: e.SKB, Netns: s.nsName(e.Netns), Probe: e.Kind.String(), Selected: e.NFTrace}
	if len(e.Header) > 0 {
		if h, err := event.DecodeIP(e.Header, nil); err == nil {
			o.Header = h
		}
	}
	st := event.Step{Netns: o.Netns, Dev: e.Ifname}
	switch e.Kind {
	case bpf.KindRx:
		st.Kind = event.KindRx
		o.IIF = e.Ifname
	case bpf.KindTx:
		st.Kind = event.KindTx
		o.OIF = e.Ifname
	case bpf.KindRoute:
		st = event.Step{Kind: event.KindRoute, Netns: o.Netns, Dst: e.Dst.String(), Dev: e.ResIfname}
		st.Table = tableNames[e.Table]
		if st.Table == "" {
			st.Table = strconv.FormatUint(uint64(e.Table), 10)
		}
		if e.Gateway.IsValid() {
			st.GW = e.Gateway.String()
		}
		if e.Err != 0 {
			st.Error = unix.ErrnoName(unix.Errno(-e.Err))
			if st.Error == "" {
				st.Error = fmt.Sprintf("errno %d", -e.Err)
			}
			st.Dev = ""
		}
	case bpf.KindDrop:
		st.Kind = event.KindDrop
		st.Reason = s.reasons.Name(e.Reason)
		st.Location = s.syms.Symbol(e.Location)
	case bpf.KindFree:
		st.Kind = ""
	case bpf.KindRPF:
		// The kernel's input route verdict: not a step, it decides the
		// rpfilter step (-EXDEV: rp_filter rejected the source).
		st.Kind = ""
		st.Result = "pass"
		if e.Err == -int32(unix.EXDEV) {
			st.Result = "fail"
		}
		st.By = bpf.RouteInputProbe
	case bpf.KindNF:
		// A header snapshot before or after NAT, not a step.
		st.Kind = ""
		o.Hook = map[uint8]event.Hook{0: event.HookPrerouting, 1: event.HookInput, 3: event.HookOutput, 4: event.HookPostrouting}[e.Hook]
		o.Priority = bpf.NFPriority(e.Hook, e.AfterNAT)
	}
	o.Step = st
	return o
}
