package filter

import "net/netip"

// Fields are the decoded header fields a filter is evaluated on.
type Fields struct {
	Family   uint8 // 4 or 6; 0 when not IP
	Src, Dst netip.Addr
	Proto    uint8 // transport protocol (after IPv6 extension headers)
	Fragment bool  // a non-first fragment: no transport header
	HasPorts bool  // Sport/Dport are valid (tcp, udp, sctp; not a non-first fragment)
	Sport    uint16
	Dport    uint16
}

// Match reports whether the packet fields satisfy the expression, with the
// semantics of pcap-filter(7). A nil node matches everything.
func Match(n Node, f *Fields) bool {
	if n == nil {
		return true
	}
	switch n := n.(type) {
	case And:
		return Match(n.X, f) && Match(n.Y, f)
	case Or:
		return Match(n.X, f) || Match(n.Y, f)
	case Not:
		return !Match(n.X, f)
	case Family:
		return f.Family == n.Version
	case Proto:
		return f.Family != 0 && (n.Family == 0 || n.Family == f.Family) && f.Proto == n.Num
	case Addr:
		if f.Family == 0 {
			return false
		}
		s := n.Prefix.Contains(f.Src)
		d := n.Prefix.Contains(f.Dst)
		return dirMatch(n.Dir, s, d)
	case Port:
		if f.Family == 0 || !f.HasPorts || f.Fragment {
			return false
		}
		if n.Proto != 0 {
			if f.Proto != n.Proto {
				return false
			}
		} else if f.Proto != ProtoTCP && f.Proto != ProtoUDP && f.Proto != ProtoSCTP {
			return false
		}
		s := f.Sport >= n.Lo && f.Sport <= n.Hi
		d := f.Dport >= n.Lo && f.Dport <= n.Hi
		return dirMatch(n.Dir, s, d)
	}
	return false
}

func dirMatch(d Dir, s, dst bool) bool {
	switch d {
	case Src:
		return s
	case Dst:
		return dst
	case SrcAndDst:
		return s && dst
	}
	return s || dst
}
