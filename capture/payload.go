package capture

import "encoding/binary"

// HeadersLen returns how many bytes of a frame are headers: link, network
// and, for TCP, UDP, SCTP and ICMP, transport. The rest is payload. Frames
// that are not IP, or too short to tell, are headers through the network
// header as far as it is there (never more than len(data)).
func HeadersLen(data []byte, lt LinkType) int {
	l3 := Network(data, lt)
	if len(l3) == 0 {
		return min(len(data), 64) // not IP: keep what identifies it
	}
	off := len(data) - len(l3)
	var proto byte
	switch l3[0] >> 4 {
	case 4:
		if len(l3) < 20 {
			return len(data)
		}
		ihl := int(l3[0]&0x0f) * 4
		if ihl < 20 || ihl > len(l3) {
			return len(data)
		}
		if binary.BigEndian.Uint16(l3[6:])&0x1fff != 0 {
			return off + ihl // a later fragment: all payload
		}
		proto, off = l3[9], off+ihl
	case 6:
		if len(l3) < 40 {
			return len(data)
		}
		proto, off = l3[6], off+40
		// Skip extension headers: hop-by-hop, routing, fragment, destination.
		for proto == 0 || proto == 43 || proto == 44 || proto == 60 {
			if off+8 > len(data) {
				return len(data)
			}
			next, n := data[off], int(data[off+1])*8+8
			if proto == 44 {
				if binary.BigEndian.Uint16(data[off+2:])&0xfff8 != 0 {
					return off + 8 // a later fragment
				}
				n = 8
			}
			proto, off = next, off+n
		}
	default:
		return min(len(data), off+1)
	}
	switch proto {
	case 6: // TCP: the data offset
		if off+13 <= len(data) {
			off += int(data[off+12]>>4) * 4
		} else {
			off = len(data)
		}
	case 17, 136: // UDP, UDP-Lite
		off += 8
	case 132: // SCTP common header
		off += 12
	case 1, 58: // ICMP, ICMPv6: type, code, checksum, and the rest of the header
		if off < len(data) && icmpError(proto, data[off]) && off+8 < len(data) {
			// An error quotes the offending packet: keep its IP header and
			// the first 8 bytes after it (ports), as the kernel quotes them.
			inner := data[off+8:]
			n := 40
			if inner[0]>>4 == 4 {
				n = int(inner[0]&0x0f) * 4
			}
			off += 8 + n + 8
		} else {
			off += 8
		}
	}
	return min(off, len(data))
}

// StripPayload cuts a packet after its headers (OrigLen keeps the length
// it had on the wire).
func StripPayload(p *Packet) {
	if p.OrigLen == 0 {
		p.OrigLen = len(p.Data)
	}
	p.Data = p.Data[:HeadersLen(p.Data, p.Iface.LinkType)]
}

func icmpError(proto, typ byte) bool {
	if proto == 1 {
		return typ == 3 || typ == 4 || typ == 5 || typ == 11 || typ == 12
	}
	return typ >= 1 && typ <= 4
}
