package event

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"

	"github.com/nattrace/nattrace/filter"
)

var errShort = errors.New("truncated header")

// DecodeIP decodes a network header and, when transport is nil, the
// transport header that follows it inside network. Sources that carry the
// transport header separately (nf_tables trace) pass it as transport.
func DecodeIP(network, transport []byte) (*Header, error) {
	if len(network) < 1 {
		return nil, errShort
	}
	h := &Header{}
	var rest []byte
	switch network[0] >> 4 {
	case 4:
		if len(network) < 20 {
			return nil, errShort
		}
		ihl := int(network[0]&0x0f) * 4
		if ihl < 20 || len(network) < ihl {
			return nil, errShort
		}
		h.Family = 4
		h.Length = binary.BigEndian.Uint16(network[2:4])
		h.IPID = uint32(binary.BigEndian.Uint16(network[4:6]))
		h.Fragment = binary.BigEndian.Uint16(network[6:8])&0x1fff != 0
		h.TTL = network[8]
		h.ProtoNum = network[9]
		h.Tuple.Src = netip.AddrFrom4([4]byte(network[12:16]))
		h.Tuple.Dst = netip.AddrFrom4([4]byte(network[16:20]))
		rest = network[ihl:]
	case 6:
		if len(network) < 40 {
			return nil, errShort
		}
		h.Family = 6
		h.IPID = binary.BigEndian.Uint32(network[0:4]) & 0xfffff
		h.Length = binary.BigEndian.Uint16(network[4:6]) + 40
		h.TTL = network[7]
		h.Tuple.Src = netip.AddrFrom16([16]byte(network[8:24]))
		h.Tuple.Dst = netip.AddrFrom16([16]byte(network[24:40]))
		next := network[6]
		rest = network[40:]
		// Walk extension headers to the transport protocol.
		for i := 0; i < 8; i++ {
			switch next {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(rest) < 8 {
					rest = nil
					break
				}
				n := (int(rest[1]) + 1) * 8
				next = rest[0]
				if len(rest) < n {
					rest = nil
					break
				}
				rest = rest[n:]
				continue
			case 44: // fragment
				if len(rest) < 8 {
					rest = nil
					break
				}
				h.Fragment = binary.BigEndian.Uint16(rest[2:4])&0xfff8 != 0
				next = rest[0]
				rest = rest[8:]
				continue
			}
			break
		}
		h.ProtoNum = next
	default:
		return nil, errors.New("not an IP header")
	}
	h.Tuple.Proto = filter.ProtoName(h.ProtoNum)
	if transport != nil {
		rest = transport
	}
	if h.Fragment {
		return h, nil
	}
	switch h.ProtoNum {
	case filter.ProtoTCP, filter.ProtoUDP, filter.ProtoSCTP, 136: // 136: UDP-Lite
		if len(rest) >= 4 {
			h.HasPorts = true
			h.Tuple.Sport = binary.BigEndian.Uint16(rest[0:2])
			h.Tuple.Dport = binary.BigEndian.Uint16(rest[2:4])
		}
		if h.ProtoNum == filter.ProtoTCP && len(rest) >= 14 {
			h.Seq = binary.BigEndian.Uint32(rest[4:8])
			h.Ack = binary.BigEndian.Uint32(rest[8:12])
			h.TCPFlags = rest[13]
		}
	case filter.ProtoICMP, filter.ProtoICMPv6:
		if len(rest) >= 2 {
			t, c := rest[0], rest[1]
			h.Tuple.ICMPType, h.Tuple.ICMPCode = &t, &c
			// Echo request/reply: the id is what conntrack and NAT use
			// as the "port" of both sides.
			if isEcho(h.ProtoNum, t) && len(rest) >= 6 {
				id := binary.BigEndian.Uint16(rest[4:6])
				h.Tuple.Sport, h.Tuple.Dport = id, id
			}
		}
	}
	return h, nil
}

func isEcho(proto, typ uint8) bool {
	if proto == filter.ProtoICMP {
		return typ == 8 || typ == 0
	}
	return typ == 128 || typ == 129
}

// Fields returns the header as filter fields.
func (h *Header) Fields() *filter.Fields {
	return &filter.Fields{
		Family: h.Family, Src: h.Tuple.Src, Dst: h.Tuple.Dst, Proto: h.ProtoNum,
		Fragment: h.Fragment, HasPorts: h.HasPorts, Sport: h.Tuple.Sport, Dport: h.Tuple.Dport,
	}
}

// TCPFlagString renders TCP flags the way tcpdump does: [S], [S.], [P.], [F.], [R].
func TCPFlagString(f uint8) string {
	var b strings.Builder
	b.WriteByte('[')
	for _, x := range []struct {
		bit uint8
		c   byte
	}{{0x01, 'F'}, {0x02, 'S'}, {0x04, 'R'}, {0x08, 'P'}, {0x20, 'U'}, {0x40, 'E'}, {0x80, 'W'}} {
		if f&x.bit != 0 {
			b.WriteByte(x.c)
		}
	}
	if f&0x10 != 0 {
		b.WriteByte('.')
	}
	if b.Len() == 1 {
		b.WriteString("none")
	}
	b.WriteByte(']')
	return b.String()
}
