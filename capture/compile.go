package capture

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/net/bpf"

	"github.com/nattrace/nattrace/filter"
)

// LinkType is a pcap link type (DLT).
type LinkType uint32

const (
	LinkEthernet  LinkType = 1   // DLT_EN10MB (also Linux loopback)
	LinkRaw       LinkType = 101 // LINKTYPE_RAW: IPv4 or IPv6 from byte 0 (tun, WireGuard)
	LinkLinuxSLL  LinkType = 113 // Linux cooked v1
	LinkLinuxSLL2 LinkType = 276 // Linux cooked v2
)

// layout is where a link type keeps the ethertype and the network header.
type layout struct {
	etype  int32 // offset of the 16-bit protocol, -1: none (raw IP)
	l3     uint32
	hasARP bool
}

func layoutOf(lt LinkType) (layout, error) {
	switch lt {
	case LinkEthernet:
		return layout{etype: 12, l3: 14, hasARP: true}, nil
	case LinkLinuxSLL:
		return layout{etype: 14, l3: 16, hasARP: true}, nil
	case LinkLinuxSLL2:
		return layout{etype: 0, l3: 20, hasARP: true}, nil
	case LinkRaw:
		return layout{etype: -1, l3: 0}, nil
	}
	return layout{}, fmt.Errorf("link type %d is not supported", lt)
}

// ErrTooLarge is returned for a program whose jumps do not fit classic BPF.
var ErrTooLarge = errors.New("filter too large for classic BPF")

type label int

// inst is an instruction; cond jumps name labels until assembly.
type inst struct {
	op   bpf.Instruction
	cond bpf.JumpTest
	val  uint32
	t, f label
	jump bool
}

type compiler struct {
	ly     layout
	ins    []inst
	labels []int // label -> instruction index
}

func (c *compiler) newLabel() label {
	c.labels = append(c.labels, -1)
	return label(len(c.labels) - 1)
}

func (c *compiler) mark(l label)            { c.labels[l] = len(c.ins) }
func (c *compiler) emit(op bpf.Instruction) { c.ins = append(c.ins, inst{op: op}) }
func (c *compiler) jmp(cond bpf.JumpTest, val uint32, t, f label) {
	c.ins = append(c.ins, inst{jump: true, cond: cond, val: val, t: t, f: f})
}

// cond is a test that jumps to t when true and to f when false.
type cond func(t, f label)

// chain tests conds in turn: with all, each must hold (a false one jumps
// to f); without, one is enough (a true one jumps to t).
func (c *compiler) chain(conds []cond, all bool) cond {
	return func(t, f label) {
		for i, x := range conds {
			if i == len(conds)-1 {
				x(t, f)
				return
			}
			next := c.newLabel()
			if all {
				x(next, f)
			} else {
				x(t, next)
			}
			c.mark(next)
		}
	}
}

func (c *compiler) and(conds ...cond) cond { return c.chain(conds, true) }
func (c *compiler) or(conds ...cond) cond  { return c.chain(conds, false) }

func (c *compiler) not(x cond) cond { return func(t, f label) { x(f, t) } }

// loadEq loads size bytes at off (masked when mask != 0) and compares.
func (c *compiler) loadEq(off uint32, size int, mask, val uint32) cond {
	return func(t, f label) {
		c.emit(bpf.LoadAbsolute{Off: off, Size: size})
		if mask != 0 {
			c.emit(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: mask})
		}
		c.jmp(bpf.JumpEqual, val, t, f)
	}
}

const (
	etherIPv4 = 0x0800
	etherIPv6 = 0x86dd
	etherARP  = 0x0806
	etherRARP = 0x8035
)

func (c *compiler) family(v uint8) cond {
	if c.ly.etype < 0 {
		want := uint32(0x40)
		if v == 6 {
			want = 0x60
		}
		return c.loadEq(0, 1, 0xf0, want)
	}
	want := uint32(etherIPv4)
	if v == 6 {
		want = etherIPv6
	}
	return c.loadEq(uint32(c.ly.etype), 2, 0, want)
}

func (c *compiler) etherIs(vals ...uint32) cond {
	var cs []cond
	for _, v := range vals {
		cs = append(cs, c.loadEq(uint32(c.ly.etype), 2, 0, v))
	}
	return c.or(cs...)
}

// ipProto: the IPv4 protocol, or the IPv6 next header (also behind one
// fragment header, as libpcap does).
func (c *compiler) ipProto(fam uint8, p uint8) cond {
	l3 := c.ly.l3
	v4 := c.and(c.family(4), c.loadEq(l3+9, 1, 0, uint32(p)))
	v6 := c.and(c.family(6), c.or(c.loadEq(l3+6, 1, 0, uint32(p)),
		c.and(c.loadEq(l3+6, 1, 0, 44), c.loadEq(l3+40, 1, 0, uint32(p)))))
	switch fam {
	case 4:
		return v4
	case 6:
		return v6
	}
	return c.or(v6, v4)
}

func mask32(bits int) uint32 {
	if bits <= 0 {
		return 0
	}
	return ^uint32(0) << (32 - bits)
}

// addrAt compares the address at off with a prefix.
func (c *compiler) addrAt(off uint32, p netip.Prefix) cond {
	b := p.Masked().Addr().AsSlice()
	bits := p.Bits()
	var cs []cond
	for w := 0; w*4 < len(b); w++ {
		wb := bits - w*32
		if wb <= 0 {
			break
		}
		m := mask32(min(wb, 32))
		v := uint32(b[w*4])<<24 | uint32(b[w*4+1])<<16 | uint32(b[w*4+2])<<8 | uint32(b[w*4+3])
		if m == ^uint32(0) {
			m = 0
		}
		cs = append(cs, c.loadEq(off+uint32(w*4), 4, m, v))
	}
	if len(cs) == 0 {
		return func(t, f label) { c.jmp(bpf.JumpEqual, 0, t, t) } // a /0 prefix: always true
	}
	return c.and(cs...)
}

func (c *compiler) dir(d filter.Dir, src, dst cond) cond {
	switch d {
	case filter.Src:
		return src
	case filter.Dst:
		return dst
	case filter.SrcAndDst:
		return c.and(src, dst)
	}
	return c.or(src, dst)
}

func (c *compiler) addr(n filter.Addr) cond {
	l3 := c.ly.l3
	if n.Prefix.Addr().Is6() {
		return c.and(c.family(6), c.dir(n.Dir, c.addrAt(l3+8, n.Prefix), c.addrAt(l3+24, n.Prefix)))
	}
	ip := c.and(c.family(4), c.dir(n.Dir, c.addrAt(l3+12, n.Prefix), c.addrAt(l3+16, n.Prefix)))
	if n.IPOnly || !c.ly.hasARP {
		return ip
	}
	// libpcap: an IPv4 host or net also matches ARP and RARP packets'
	// sender and target addresses.
	arp := c.and(c.etherIs(etherARP, etherRARP), c.dir(n.Dir, c.addrAt(l3+14, n.Prefix), c.addrAt(l3+24, n.Prefix)))
	return c.or(ip, arp)
}

// portTest compares the 16-bit value at a load with a port range.
func (c *compiler) portTest(load func(), lo, hi uint16) cond {
	return func(t, f label) {
		load()
		if lo == hi {
			c.jmp(bpf.JumpEqual, uint32(lo), t, f)
			return
		}
		ge := c.newLabel()
		c.jmp(bpf.JumpGreaterOrEqual, uint32(lo), ge, f)
		c.mark(ge)
		c.jmp(bpf.JumpGreaterThan, uint32(hi), f, t)
	}
}

func (c *compiler) port(n filter.Port) cond {
	l3 := c.ly.l3
	protos := []uint8{filter.ProtoSCTP, filter.ProtoTCP, filter.ProtoUDP}
	if n.Proto != 0 {
		protos = []uint8{n.Proto}
	}
	protoIs := func(off uint32) cond {
		var cs []cond
		for _, p := range protos {
			cs = append(cs, c.loadEq(off, 1, 0, uint32(p)))
		}
		return c.or(cs...)
	}
	ld6 := func(o uint32) func() { return func() { c.emit(bpf.LoadAbsolute{Off: l3 + 40 + o, Size: 2}) } }
	v6 := c.and(c.family(6), protoIs(l3+6),
		c.dir(n.Dir, c.portTest(ld6(0), n.Lo, n.Hi), c.portTest(ld6(2), n.Lo, n.Hi)))
	notFrag := func(t, f label) {
		c.emit(bpf.LoadAbsolute{Off: l3 + 6, Size: 2})
		c.jmp(bpf.JumpBitsSet, 0x1fff, f, t)
	}
	ld4 := func(o uint32) func() {
		return func() {
			c.emit(bpf.LoadMemShift{Off: l3})
			c.emit(bpf.LoadIndirect{Off: l3 + o, Size: 2})
		}
	}
	v4 := c.and(c.family(4), protoIs(l3+9), notFrag,
		c.dir(n.Dir, c.portTest(ld4(0), n.Lo, n.Hi), c.portTest(ld4(2), n.Lo, n.Hi)))
	return c.or(v6, v4)
}

func (c *compiler) node(n filter.Node) cond {
	switch n := n.(type) {
	case filter.And:
		return c.and(c.node(n.X), c.node(n.Y))
	case filter.Or:
		return c.or(c.node(n.X), c.node(n.Y))
	case filter.Not:
		return c.not(c.node(n.X))
	case filter.Family:
		return c.family(n.Version)
	case filter.Proto:
		return c.ipProto(n.Family, n.Num)
	case filter.Addr:
		return c.addr(n)
	case filter.Port:
		return c.port(n)
	}
	panic(fmt.Sprintf("capture: unknown filter node %T", n))
}

// Compile returns the classic BPF program of a filter for a link type: it
// returns snaplen for accepted packets and 0 for the others. A nil filter
// accepts everything.
func Compile(n filter.Node, lt LinkType, snaplen uint32) ([]bpf.Instruction, error) {
	ly, err := layoutOf(lt)
	if err != nil {
		return nil, err
	}
	if n == nil {
		return []bpf.Instruction{bpf.RetConstant{Val: snaplen}}, nil
	}
	c := &compiler{ly: ly}
	t, f := c.newLabel(), c.newLabel()
	c.node(n)(t, f)
	c.mark(t)
	c.emit(bpf.RetConstant{Val: snaplen})
	c.mark(f)
	c.emit(bpf.RetConstant{Val: 0})
	return c.assemble()
}

func (c *compiler) assemble() ([]bpf.Instruction, error) {
	out := make([]bpf.Instruction, len(c.ins))
	for pc, in := range c.ins {
		if !in.jump {
			out[pc] = in.op
			continue
		}
		t, f := c.labels[in.t]-pc-1, c.labels[in.f]-pc-1
		if t < 0 || f < 0 || t > 255 || f > 255 {
			return nil, ErrTooLarge
		}
		out[pc] = bpf.JumpIf{Cond: in.cond, Val: in.val, SkipTrue: uint8(t), SkipFalse: uint8(f)}
	}
	if len(out) > 4096 {
		return nil, ErrTooLarge
	}
	return out, nil
}
