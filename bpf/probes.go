package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/nattrace/nattrace/event"
	"github.com/nattrace/nattrace/filter"
)

// Kind is what a probe event reports.
type Kind uint32

const (
	KindRx    Kind = 1 // netif_receive_skb: received on Ifname
	KindTx    Kind = 2 // net_dev_start_xmit: sent on Ifname
	KindDrop  Kind = 3 // kfree_skb: freed with a drop reason
	KindRoute Kind = 4 // fib_table_lookup for the packet being received
	KindFree  Kind = 5 // consume_skb: the packet's journey ended normally
	KindNF    Kind = 6 // netfilter hook program: headers before/after NAT
	KindRPF   Kind = 7 // fexit ip_route_input_noref: the input route's verdict (Err)
)

// RouteInputProbe names the fentry-family probe that gives the kernel's own
// rp_filter verdict, where the kernel allows fexit.
const RouteInputProbe = "fexit:ip_route_input_noref"

func (k Kind) String() string {
	switch k {
	case KindRx:
		return "rx"
	case KindTx:
		return "tx"
	case KindDrop:
		return "drop"
	case KindRoute:
		return "route"
	case KindFree:
		return "free"
	case KindNF:
		return "nf"
	case KindRPF:
		return "rpf"
	}
	return "unknown"
}

// Event is one probe event.
type Event struct {
	Kind     Kind
	Time     time.Time
	SKB      uint64 // skb address: the same packet across devices and namespaces
	Netns    uint32 // namespace inode
	Ifindex  uint32
	Ifname   string
	Len      uint32
	NFTrace  bool   // netfilter tracing had selected the packet
	Header   []byte // from the network header on (64 bytes)
	Reason   uint32 // drop
	Location uint64 // drop: kernel address
	// route
	Table      uint32
	Err        int32
	Src, Dst   netip.Addr // the lookup's flow
	IIF, OIF   uint32
	Gateway    netip.Addr
	ResIfindex uint32
	ResIfname  string
	// nf: the hook (NF_INET_*), before (0) or after (1) NAT, and the
	// conntrack entry's tuples read from the skb
	Hook      uint8
	AfterNAT  bool
	CTOrig    event.Tuple
	CTReply   event.Tuple
	HasCTInfo bool
}

// Options configure the probes.
type Options struct {
	DNF   filter.DNF
	Netns []uint32 // inodes of the traced namespaces: packets start being followed there
}

// Probe names, as doctor and the output name them.
var probeNames = map[string]string{
	"on_rx": "netif_receive_skb", "on_tx": "net_dev_start_xmit", "on_kfree": "kfree_skb",
	"on_consume": "consume_skb", "on_fib": "fib_table_lookup",
}

// coreObjects are the tracepoint programs and the maps (every kernel with
// BTF tracepoints); the netfilter programs are loaded separately, where the
// kernel has BPF_PROG_TYPE_NETFILTER (6.4+).
type coreObjects struct {
	probesMaps
	OnRx      *ebpf.Program `ebpf:"on_rx"`
	OnTx      *ebpf.Program `ebpf:"on_tx"`
	OnKfree   *ebpf.Program `ebpf:"on_kfree"`
	OnConsume *ebpf.Program `ebpf:"on_consume"`
	OnFib     *ebpf.Program `ebpf:"on_fib"`
}

func (o *coreObjects) Close() error {
	for _, p := range []*ebpf.Program{o.OnRx, o.OnTx, o.OnKfree, o.OnConsume, o.OnFib} {
		if p != nil {
			p.Close()
		}
	}
	return o.probesMaps.Close()
}

type natObjects struct {
	OnNatEnter *ebpf.Program `ebpf:"on_nat_enter"`
	OnNatExit  *ebpf.Program `ebpf:"on_nat_exit"`
}

// NATTracingProbe names the fentry/fexit pair that takes the NAT snapshots
// where BPF netfilter programs are missing.
const NATTracingProbe = "fentry/fexit:nf_nat_manip_pkt"

type rpfObjects struct {
	OnRouteInput *ebpf.Program `ebpf:"on_route_input"`
}

type nfObjects struct {
	OnNfBefore *ebpf.Program `ebpf:"on_nf_before"`
	OnNfAfter  *ebpf.Program `ebpf:"on_nf_after"`
}

// Probes are the loaded and attached programs.
type Probes struct {
	spec     *ebpf.CollectionSpec
	objs     coreObjects
	nf       *nfObjects
	nfErr    error
	rpf      *rpfObjects
	nat      *natObjects
	links    []link.Link
	rd       *ringbuf.Reader
	boot     time.Time // wall clock at monotonic zero
	Attached []string
	Missing  map[string]string // probe -> why it is not attached
	closing  sync.Once
}

// ErrUnsupported is returned when no probe could be loaded at all.
var ErrUnsupported = errors.New("BPF probes unavailable")

// Load loads the programs, fills the filter maps and attaches every probe
// it can. A probe that cannot attach is listed in Missing; only when none
// attaches is it an error.
func Load(o Options) (*Probes, error) {
	_ = rlimit.RemoveMemlock()
	p := &Probes{Missing: map[string]string{}}
	spec, err := loadProbes()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnsupported, err)
	}
	p.spec = spec
	if err := spec.LoadAndAssign(&p.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("%w: verifier: %v", ErrUnsupported, ve)
		}
		return nil, fmt.Errorf("%w: %v", ErrUnsupported, err)
	}
	if err := p.configure(o); err != nil {
		p.objs.Close()
		return nil, err
	}
	for _, x := range []struct {
		name string
		prog *ebpf.Program
	}{{"on_rx", p.objs.OnRx}, {"on_tx", p.objs.OnTx}, {"on_kfree", p.objs.OnKfree},
		{"on_consume", p.objs.OnConsume}, {"on_fib", p.objs.OnFib}} {
		name := x.name
		l, err := link.AttachTracing(link.TracingOptions{Program: x.prog})
		if err != nil {
			p.Missing[probeNames[name]] = err.Error()
			continue
		}
		p.links = append(p.links, l)
		p.Attached = append(p.Attached, probeNames[name])
	}
	if len(p.links) == 0 {
		p.objs.Close()
		return nil, fmt.Errorf("%w: no tracepoint attached (%v)", ErrUnsupported, p.Missing)
	}
	if err := p.attachRouteInput(); err != nil {
		p.Missing[RouteInputProbe] = err.Error()
	}
	rd, err := ringbuf.NewReader(p.objs.Events)
	if err != nil {
		p.Close()
		return nil, err
	}
	p.rd = rd
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	p.boot = time.Now().Add(-time.Duration(ts.Nano()))
	return p, nil
}

const (
	maxClauses = 16
	maxLits    = 10
)

// configure writes the filter and the traced namespaces into the maps. A
// DNF that does not fit the kernel's table is replaced by "everything" in
// the traced namespaces: broader, never narrower.
func (p *Probes) configure(o Options) error {
	var cfg probesConfig
	clauses, ok := compile(o.DNF)
	if !ok {
		cfg.MatchAll = 1
	}
	for i, c := range clauses {
		if err := p.objs.Clauses.Put(uint32(i), c); err != nil {
			return err
		}
	}
	cfg.Nclauses = uint32(len(clauses))
	if err := p.objs.ConfigMap.Put(uint32(0), cfg); err != nil {
		return err
	}
	for _, ns := range o.Netns {
		if err := p.objs.TracedNetns.Put(ns, uint8(1)); err != nil {
			return err
		}
	}
	return nil
}

// compile turns a DNF into the kernel's clause table; ok is false when it
// does not fit (then everything matches).
func compile(d filter.DNF) ([]probesClause, bool) {
	if len(d) > maxClauses {
		return nil, false
	}
	var out []probesClause
	for _, c := range d {
		if len(c) > maxLits {
			return nil, false
		}
		var pc probesClause
		for _, l := range c {
			pl := probesLit{Neg: b2u(l.Neg), Lo: l.Lo, Hi: l.Hi}
			switch l.Kind {
			case filter.LitFamily:
				pl.Kind, pl.Family = 1, l.Family
			case filter.LitProto:
				pl.Kind = 2
				if len(l.Protos) <= 3 {
					pl.Nprotos = uint8(len(l.Protos))
					copy(pl.Protos[:], l.Protos)
				} else if l.Neg {
					continue // leaving a negated literal out is broader
				}
			case filter.LitAddr:
				pl.Kind, pl.Field, pl.Family = 3, uint8(l.Field), 4
				a := l.Prefix.Masked().Addr()
				if a.Is6() {
					pl.Family = 6
				}
				copy(pl.Addr[:], a.AsSlice())
				for i := 0; i < l.Prefix.Bits(); i++ {
					pl.Mask[i/8] |= 0x80 >> (i % 8)
				}
			case filter.LitPort:
				pl.Kind, pl.Field = 4, uint8(l.Field)
			case filter.LitFrag:
				pl.Kind = 5
			}
			pc.Lits[pc.N] = pl
			pc.N++
		}
		out = append(out, pc)
	}
	return out, true
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// Follow adds a connection's tuples (as packets carry them: original and
// reply) so that its packets are followed from their first probe.
func (p *Probes) Follow(tuples ...event.Tuple) error {
	for _, t := range tuples {
		k, ok := tupleKey(t)
		if !ok {
			continue
		}
		if err := p.objs.Flows.Put(k, uint8(1)); err != nil {
			return err
		}
	}
	return nil
}

// Unfollow removes tuples added with Follow.
func (p *Probes) Unfollow(tuples ...event.Tuple) {
	for _, t := range tuples {
		if k, ok := tupleKey(t); ok {
			p.objs.Flows.Delete(k)
		}
	}
}

func tupleKey(t event.Tuple) (probesTuple, bool) {
	var k probesTuple
	if !t.Src.IsValid() || !t.Dst.IsValid() {
		return k, false
	}
	k.Family = 4
	if t.Src.Is6() {
		k.Family = 6
	}
	num, ok := filter.ProtoNumber(t.Proto)
	if !ok {
		return k, false
	}
	k.Proto = num
	if t.ICMPType == nil {
		k.Sport, k.Dport = t.Sport, t.Dport
	}
	copy(k.Src[:], t.Src.AsSlice())
	copy(k.Dst[:], t.Dst.AsSlice())
	return k, true
}

// Read calls fn for every event until Close.
func (p *Probes) Read(fn func(*Event)) error {
	for {
		rec, err := p.rd.Read()
		if err != nil {
			if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return err
		}
		var raw probesEvent
		if err := binary.Read(bytes.NewReader(rec.RawSample), binary.NativeEndian, &raw); err != nil {
			continue
		}
		fn(p.decode(&raw))
	}
}

func cstr(b [16]int8) string {
	out := make([]byte, 0, 16)
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}

func ip4(v uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v) // network order in memory
	return netip.AddrFrom4(b)
}

func (p *Probes) decode(r *probesEvent) *Event {
	e := &Event{Kind: Kind(r.Kind), Time: p.boot.Add(time.Duration(r.Ts)), SKB: r.Skb, Netns: r.Netns,
		Ifindex: r.Ifindex, Ifname: cstr(r.Ifname), Len: r.Len, NFTrace: r.NfTrace != 0,
		Reason: r.Reason, Location: r.Location}
	if r.HdrLen > 0 {
		e.Header = append([]byte(nil), r.Hdr[:r.HdrLen]...)
	}
	if e.Kind == KindNF {
		e.Hook, e.AfterNAT = r.NfHook, r.NfPhase == 1
		if r.CtOrigSrc != 0 {
			proto := filter.ProtoName(r.CtProto)
			e.HasCTInfo = true
			e.CTOrig = event.Tuple{Proto: proto, Src: ip4(r.CtOrigSrc), Dst: ip4(r.CtOrigDst), Sport: r.CtOrigSport, Dport: r.CtOrigDport}
			e.CTReply = event.Tuple{Proto: proto, Src: ip4(r.CtReplySrc), Dst: ip4(r.CtReplyDst), Sport: r.CtReplySport, Dport: r.CtReplyDport}
		}
	}
	if e.Kind == KindRPF {
		e.Err, e.Src, e.Dst = r.Err, ip4(r.FlowSaddr), ip4(r.FlowDaddr)
	}
	if e.Kind == KindRoute {
		e.Table, e.Err, e.IIF, e.OIF = r.Table, r.Err, r.FlowIif, r.FlowOif
		e.Src, e.Dst = ip4(r.FlowSaddr), ip4(r.FlowDaddr)
		if r.Gw != 0 {
			e.Gateway = ip4(r.Gw)
		}
		e.ResIfindex, e.ResIfname = r.ResIfindex, cstr(r.ResIfname)
	}
	return e
}

// Netfilter hook positions: just before and after NAT in the hooks where
// NAT happens (NF_IP_PRI_NAT_DST -100, NF_IP_PRI_NAT_SRC 100).
var nfPositions = []struct {
	hook   uint32
	name   string
	before int32
	after  int32
}{
	{0, "prerouting", -101, -99}, // NF_INET_PRE_ROUTING
	{3, "output", -101, -99},     // NF_INET_LOCAL_OUT
	{4, "postrouting", 99, 101},  // NF_INET_POST_ROUTING
}

// Priority of the netfilter snapshots, for ordering them among chains.
func NFPriority(hook uint8, after bool) int32 {
	for _, p := range nfPositions {
		if uint8(p.hook) == hook {
			if after {
				return p.after
			}
			return p.before
		}
	}
	return 0
}

// AttachNetfilter attaches the NAT snapshot programs inside a namespace
// (BPF netfilter links are per namespace and must be created there; do
// is a function that runs code inside it). A priority already taken by
// another hook (EBUSY) is retried with its neighbours, on the same side of
// NAT.
func (p *Probes) AttachNetfilter(name string, do func(func() error) error) error {
	if p.nf == nil && p.nfErr == nil {
		nf := &nfObjects{}
		if err := p.spec.LoadAndAssign(nf, p.sharedMaps()); err != nil {
			p.nfErr = err
		} else {
			p.nf = nf
		}
	}
	if p.nfErr != nil {
		return fmt.Errorf("BPF netfilter programs: %w", p.nfErr)
	}
	return do(func() error {
		for _, pos := range nfPositions {
			for _, x := range []struct {
				prog *ebpf.Program
				prio int32
				step int32
			}{{p.nf.OnNfBefore, pos.before, -1}, {p.nf.OnNfAfter, pos.after, 1}} {
				var err error
				for i := int32(0); i < 20; i++ {
					var l link.Link
					l, err = link.AttachNetfilter(link.NetfilterOptions{Program: x.prog, ProtocolFamily: unix.NFPROTO_IPV4,
						HookNumber: pos.hook, Priority: x.prio + x.step*i})
					if err == nil {
						p.links = append(p.links, l)
						break
					}
					if !errors.Is(err, unix.EBUSY) {
						break
					}
				}
				if err != nil {
					return fmt.Errorf("%s in %s: %w", pos.name, name, err)
				}
			}
		}
		return nil
	})
}

// sharedMaps makes a separately loaded program use the core programs' maps.
func (p *Probes) sharedMaps() *ebpf.CollectionOptions {
	return &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{
		"tracked": p.objs.Tracked, "events": p.objs.Events, "counters": p.objs.Counters,
		"traced_netns": p.objs.TracedNetns, "flows": p.objs.Flows, "config_map": p.objs.ConfigMap,
		"clauses": p.objs.Clauses, "rx_current": p.objs.RxCurrent,
	}}
}

// loadExtra loads programs kept apart from the tracepoint ones (objs is a
// struct of programs) with the core programs' maps.
func (p *Probes) loadExtra(objs any) error {
	if err := p.spec.LoadAndAssign(objs, p.sharedMaps()); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fmt.Errorf("verifier: %v", ve)
		}
		return err
	}
	return nil
}

// attachRouteInput loads and attaches the fexit program on
// ip_route_input_noref, whose int result says whether rp_filter rejected a
// followed packet (-EXDEV). Kernels that refuse fexit (EPERM here), or
// whose function returns a drop reason instead (6.13+), go without it.
func (p *Probes) attachRouteInput() error {
	if ret, err := routeInputReturn(); err != nil {
		return err
	} else if ret != "int" {
		return fmt.Errorf("ip_route_input_noref returns %s on this kernel, not int", ret)
	}
	objs := &rpfObjects{}
	if err := p.loadExtra(objs); err != nil {
		return err
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: objs.OnRouteInput})
	if err != nil {
		objs.OnRouteInput.Close()
		return err
	}
	p.rpf = objs
	p.links = append(p.links, l)
	p.Attached = append(p.Attached, RouteInputProbe)
	return nil
}

// AttachNATTracing takes the NAT snapshots with fentry and fexit on
// nf_nat_manip_pkt (in the nf_nat module, which must be loaded), for kernels
// without BPF netfilter programs. The programs see every namespace; they
// report only followed packets.
func (p *Probes) AttachNATTracing() error {
	if p.nat != nil {
		return nil
	}
	objs := &natObjects{}
	if err := p.loadExtra(objs); err != nil {
		return err
	}
	var ls []link.Link
	for _, prog := range []*ebpf.Program{objs.OnNatEnter, objs.OnNatExit} {
		l, err := link.AttachTracing(link.TracingOptions{Program: prog})
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			objs.OnNatEnter.Close()
			objs.OnNatExit.Close()
			return err
		}
		ls = append(ls, l)
	}
	p.nat = objs
	p.links = append(p.links, ls...)
	p.Attached = append(p.Attached, NATTracingProbe)
	return nil
}

// routeInputReturn is the name of ip_route_input_noref's return type in
// the kernel's BTF.
func routeInputReturn() (string, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return "", err
	}
	var fn *btf.Func
	if err := spec.TypeByName("ip_route_input_noref", &fn); err != nil {
		return "", err
	}
	proto, ok := fn.Type.(*btf.FuncProto)
	if !ok {
		return "", fmt.Errorf("ip_route_input_noref: no prototype")
	}
	t := btf.UnderlyingType(proto.Return)
	switch t := t.(type) {
	case *btf.Int:
		return t.Name, nil
	case *btf.Enum:
		return "enum " + t.Name, nil
	}
	return fmt.Sprintf("%T", t), nil
}

// Counters returns how many events were sent, how many were lost because
// the ring buffer was full, and how many packets were followed.
func (p *Probes) Counters() (events, lost, tracked uint64) {
	sum := func(i uint32) uint64 {
		var vals []uint64
		if err := p.objs.Counters.Lookup(i, &vals); err != nil {
			return 0
		}
		var n uint64
		for _, v := range vals {
			n += v
		}
		return n
	}
	return sum(0), sum(1), sum(2)
}

// Close detaches the probes and frees the maps. Safe to call twice.
func (p *Probes) Close() error {
	p.closing.Do(func() {
		for _, l := range p.links {
			l.Close()
		}
		if p.rd != nil {
			p.rd.Close()
		}
		if p.nf != nil {
			p.nf.OnNfBefore.Close()
			p.nf.OnNfAfter.Close()
		}
		if p.rpf != nil {
			p.rpf.OnRouteInput.Close()
		}
		if p.nat != nil {
			p.nat.OnNatEnter.Close()
			p.nat.OnNatExit.Close()
		}
		p.objs.Close()
	})
	return nil
}
