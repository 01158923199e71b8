package capture

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"github.com/nattrace/nattrace/event"
)

// Line formats a packet the way tcpdump -n does, with the interface and
// direction: "15:04:05.000000 ns/eth0 In  IP 10.0.0.1.80 > 10.0.0.2.43512: tcp Flags [S.], length 60".
func Line(p *Packet) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %-3s ", p.Time.Format("15:04:05.000000"), p.Iface.Name, p.Dir)
	b.WriteString(decode(p.Data, p.Iface.LinkType, p.OrigLen))
	return b.String()
}

// Network returns the packet's network layer (IPv4 or IPv6), or nil.
func Network(data []byte, lt LinkType) []byte {
	switch lt {
	case LinkEthernet:
		if len(data) < 14 {
			return nil
		}
		etype, l3 := binary.BigEndian.Uint16(data[12:]), data[14:]
		for (etype == 0x8100 || etype == 0x88a8) && len(l3) >= 4 {
			etype, l3 = binary.BigEndian.Uint16(l3[2:]), l3[4:]
		}
		if etype == 0x0800 || etype == 0x86dd {
			return l3
		}
	case LinkLinuxSLL:
		if len(data) >= 16 {
			return data[16:]
		}
	case LinkLinuxSLL2:
		if len(data) >= 20 {
			return data[20:]
		}
	case LinkRaw:
		return data
	}
	return nil
}

func decode(data []byte, lt LinkType, origLen int) string {
	etype, l3 := uint16(0), []byte(nil)
	switch lt {
	case LinkEthernet:
		if len(data) < 14 {
			return "truncated ethernet frame"
		}
		etype, l3 = binary.BigEndian.Uint16(data[12:]), data[14:]
		for etype == 0x8100 || etype == 0x88a8 {
			if len(l3) < 4 {
				return "truncated VLAN tag"
			}
			etype, l3 = binary.BigEndian.Uint16(l3[2:]), l3[4:]
		}
	case LinkLinuxSLL:
		if len(data) < 16 {
			return "truncated cooked header"
		}
		etype, l3 = binary.BigEndian.Uint16(data[14:]), data[16:]
	case LinkLinuxSLL2:
		if len(data) < 20 {
			return "truncated cooked header"
		}
		etype, l3 = binary.BigEndian.Uint16(data[0:]), data[20:]
	case LinkRaw:
		l3 = data
		if len(data) > 0 && data[0]>>4 == 6 {
			etype = 0x86dd
		} else {
			etype = 0x0800
		}
	}
	switch etype {
	case 0x0800, 0x86dd:
		h, err := event.DecodeIP(l3, nil)
		if err != nil {
			return "IP, " + err.Error()
		}
		return ipLine(h)
	case 0x0806:
		return arpLine(l3)
	}
	return fmt.Sprintf("ethertype 0x%04x, length %d", etype, origLen)
}

func ipLine(h *event.Header) string {
	t := h.Tuple
	ipv := "IP"
	if h.Family == 6 {
		ipv = "IP6"
	}
	var b strings.Builder
	if h.HasPorts {
		fmt.Fprintf(&b, "%s %s.%d > %s.%d: %s", ipv, t.Src, t.Sport, t.Dst, t.Dport, t.Proto)
	} else {
		fmt.Fprintf(&b, "%s %s > %s: %s", ipv, t.Src, t.Dst, t.Proto)
	}
	if h.ProtoNum == 6 && h.HasPorts {
		fmt.Fprintf(&b, " Flags %s, seq %d", event.TCPFlagString(h.TCPFlags), h.Seq)
		if h.TCPFlags&0x10 != 0 {
			fmt.Fprintf(&b, ", ack %d", h.Ack)
		}
	}
	if t.ICMPType != nil {
		fmt.Fprintf(&b, " type %d code %d", *t.ICMPType, *t.ICMPCode)
		if t.Sport != 0 {
			fmt.Fprintf(&b, " id %d", t.Sport)
		}
	}
	if h.Fragment {
		b.WriteString(" (fragment)")
	}
	fmt.Fprintf(&b, ", length %d", h.Length)
	return b.String()
}

func arpLine(b []byte) string {
	if len(b) < 28 {
		return "ARP, truncated"
	}
	spa, tpa := netip.AddrFrom4([4]byte(b[14:18])), netip.AddrFrom4([4]byte(b[24:28]))
	switch binary.BigEndian.Uint16(b[6:]) {
	case 1:
		return fmt.Sprintf("ARP, Request who-has %s tell %s", tpa, spa)
	case 2:
		return fmt.Sprintf("ARP, Reply %s is-at %x", spa, b[8:14])
	}
	return "ARP"
}
