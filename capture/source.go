package capture

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket/afpacket"
	vnl "github.com/vishvananda/netlink"
	"golang.org/x/net/bpf"

	"github.com/nattrace/nattrace/filter"
	"github.com/nattrace/nattrace/netns"
)

// RingConfig sizes each socket's TPACKET_V3 ring.
type RingConfig struct {
	BlockSize int // bytes, a multiple of the page size
	NumBlocks int
}

// blockTimeout is how long the kernel keeps a partly filled ring block
// before handing it over.
const blockTimeout = 10 * time.Millisecond

// markMargin is how far before an idle poll a socket's watermark stays.
const markMargin = 200 * time.Millisecond

// DefaultRing is 4 MiB per interface.
var DefaultRing = RingConfig{BlockSize: 1 << 20, NumBlocks: 4}

// source captures one interface in one namespace.
type source struct {
	ifc      *Interface
	tp       *afpacket.TPacket
	vm       *bpf.VM // the same program, run again in user space (see open)
	mac      net.HardwareAddr
	captured atomic.Uint64
	filtered atomic.Uint64
	closed   atomic.Bool
	// mark is the time (Unix ns) before which this socket has delivered
	// every packet: the merge writes nothing newer than the lowest mark.
	mark atomic.Int64
	// kernel counters, accumulated (reading them resets them)
	kpackets, kdrops atomic.Uint64
}

// linkTypeOf maps a device's encapsulation to the link type of its
// AF_PACKET frames.
func linkTypeOf(l vnl.Link) LinkType {
	switch l.Attrs().EncapType {
	case "ether", "loopback":
		return LinkEthernet
	case "none", "ppp", "ipip", "sit", "gre", "tunnel", "tunnel6", "ip6tnl":
		return LinkRaw
	}
	if l.Type() == "wireguard" || l.Type() == "tun" {
		return LinkRaw
	}
	return LinkEthernet
}

// openSource opens a TPACKET_V3 socket on iface, on a thread inside ns, and
// attaches the compiled filter. The socket is bound before the filter is
// attached, so packets of that moment could pass unfiltered: the program
// also runs in user space, which keeps the output exact.
func openSource(ns *netns.NS, iface string, expr filter.Node, snaplen uint32, ring RingConfig) (*source, error) {
	var s *source
	err := ns.Do(func() error {
		h, err := ns.Netlink()
		if err != nil {
			return err
		}
		defer h.Close()
		link, err := h.LinkByName(iface)
		if err != nil {
			return fmt.Errorf("interface %q not found in namespace %s", iface, ns)
		}
		lt := linkTypeOf(link)
		prog, err := Compile(expr, lt, snaplen)
		if err != nil {
			return err
		}
		raw, err := bpf.Assemble(prog)
		if err != nil {
			return err
		}
		vm, err := bpf.NewVM(prog)
		if err != nil {
			return err
		}
		opened := time.Now() // no packet in the ring is older
		tp, err := afpacket.NewTPacket(afpacket.OptInterface(iface), afpacket.TPacketVersion3,
			afpacket.OptFrameSize(min(65536, ring.BlockSize)), afpacket.OptBlockSize(ring.BlockSize), afpacket.OptNumBlocks(ring.NumBlocks),
			afpacket.OptPollTimeout(100*time.Millisecond), afpacket.OptBlockTimeout(blockTimeout))
		if err != nil {
			return fmt.Errorf("AF_PACKET socket on %s/%s: %w", ns, iface, err)
		}
		if err := tp.SetBPF(raw); err != nil {
			tp.Close()
			return fmt.Errorf("attach filter on %s/%s: %w", ns, iface, err)
		}
		name := iface
		if !ns.IsCurrent() || ns.Name != "host" {
			name = ns.Name + "/" + iface
		}
		s = &source{ifc: &Interface{Name: name, LinkType: lt, Snaplen: snaplen}, tp: tp, vm: vm, mac: link.Attrs().HardwareAddr}
		s.mark.Store(opened.UnixNano())
		return nil
	})
	return s, err
}

// run reads packets until close, calling fn for those the filter accepts.
func (s *source) run(fn func(*Packet)) {
	for !s.closed.Load() {
		started := time.Now()
		data, ci, err := s.tp.ZeroCopyReadPacketData()
		if err != nil {
			if errors.Is(err, afpacket.ErrTimeout) {
				// Nothing retired: every packet stamped well before the
				// poll began has been read. The margin covers a block's
				// retire timer firing late (seen under emulation) and
				// transmit stamps taken before the packet reached the tap.
				s.mark.Store(started.Add(-markMargin).UnixNano())
				continue
			}
			if errors.Is(err, afpacket.ErrPoll) {
				continue
			}
			if s.closed.Load() {
				return
			}
			continue
		}
		n, _ := s.vm.Run(data)
		if n == 0 {
			s.filtered.Add(1)
			continue
		}
		if n < len(data) {
			data = data[:n]
		}
		p := &Packet{Time: ci.Timestamp, Iface: s.ifc, Data: append([]byte(nil), data...), OrigLen: ci.Length, Dir: s.direction(data)}
		s.captured.Add(1)
		fn(p)
		// One socket delivers in order. The mark moves after the packet
		// is handed over, never before (see merger.tick).
		s.mark.Store(ci.Timestamp.UnixNano())
	}
}

// direction: AF_PACKET's sll_pkttype is not exposed by afpacket; on
// Ethernet a frame is outbound when it leaves from the interface's address.
func (s *source) direction(data []byte) Direction {
	if s.ifc.LinkType != LinkEthernet || len(s.mac) != 6 || len(data) < 12 {
		return DirUnknown
	}
	if bytes.Equal(data[6:12], s.mac) {
		return DirOut
	}
	return DirIn
}

// stats reads the kernel's counters (packets that passed the socket
// filter, packets dropped because the ring was full).
func (s *source) stats() (passed, dropped uint64) {
	if _, v3, err := s.tp.SocketStats(); err == nil {
		s.kpackets.Add(uint64(v3.Packets()))
		s.kdrops.Add(uint64(v3.Drops()))
	}
	return s.kpackets.Load(), s.kdrops.Load()
}

func (s *source) close() {
	s.closed.Store(true)
	s.tp.Close()
}
