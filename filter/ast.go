package filter

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Dir is the direction qualifier of an address or port primitive.
type Dir uint8

const (
	SrcOrDst Dir = iota // the default: either side
	Src
	Dst
	SrcAndDst
)

func (d Dir) String() string {
	switch d {
	case Src:
		return "src "
	case Dst:
		return "dst "
	case SrcAndDst:
		return "src and dst "
	}
	return ""
}

// IP protocol numbers used by the filter language.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
	ProtoSCTP   uint8 = 132
)

// PortProtos are the protocols a bare "port" primitive applies to.
var PortProtos = []uint8{ProtoTCP, ProtoUDP, ProtoSCTP}

// Node is an expression of the filter AST.
type Node interface {
	String() string
	node()
}

// And is X and Y.
type And struct{ X, Y Node }

// Or is X or Y.
type Or struct{ X, Y Node }

// Not is not X.
type Not struct{ X Node }

// Family matches IPv4 (4) or IPv6 (6) packets: "ip", "ip6".
type Family struct{ Version uint8 }

// Proto matches the IP protocol (the transport protocol after IPv6 extension
// headers). Family restricts it to one IP version (icmp is IPv4 only, icmp6
// IPv6 only); 0 means both.
type Proto struct {
	Num    uint8
	Family uint8
}

// Addr matches a source and/or destination address inside Prefix.
// Host is true when it was written as "host" (Prefix is a single address).
// IPOnly is true when written with "ip"/"ip6" ("ip host X"): capture
// filters then leave ARP out, as libpcap does.
type Addr struct {
	Dir    Dir
	Prefix netip.Prefix
	Host   bool
	IPOnly bool
}

// Port matches transport ports in [Lo, Hi]. Proto is 0 for "any of tcp, udp,
// sctp". Range is true when written as "portrange".
type Port struct {
	Dir    Dir
	Proto  uint8
	Lo, Hi uint16
	Range  bool
}

func (And) node()    {}
func (Or) node()     {}
func (Not) node()    {}
func (Family) node() {}
func (Proto) node()  {}
func (Addr) node()   {}
func (Port) node()   {}

func (n And) String() string { return paren(n.X, true) + " and " + paren(n.Y, true) }
func (n Or) String() string  { return paren(n.X, false) + " or " + paren(n.Y, false) }
func (n Not) String() string { return "not " + paren(n.X, true) }
func (n Family) String() string {
	if n.Version == 6 {
		return "ip6"
	}
	return "ip"
}
func (n Proto) String() string {
	if name, ok := protoNameOf(n.Num, n.Family); ok {
		return name
	}
	s := "proto " + strconv.Itoa(int(n.Num))
	switch n.Family {
	case 4:
		s = "ip " + s
	case 6:
		s = "ip6 " + s
	}
	return s
}
func (n Addr) String() string {
	q := ""
	if n.IPOnly {
		q = "ip "
		if n.Prefix.Addr().Is6() {
			q = "ip6 "
		}
	}
	if n.Host {
		return q + n.Dir.String() + "host " + n.Prefix.Addr().String()
	}
	return q + n.Dir.String() + "net " + n.Prefix.String()
}
func (n Port) String() string {
	var b strings.Builder
	if n.Proto != 0 {
		name, _ := protoNameOf(n.Proto, 0)
		b.WriteString(name + " ")
	}
	b.WriteString(n.Dir.String())
	if n.Range {
		fmt.Fprintf(&b, "portrange %d-%d", n.Lo, n.Hi)
	} else {
		fmt.Fprintf(&b, "port %d", n.Lo)
	}
	return b.String()
}

// paren prints a sub-expression, parenthesised where precedence needs it.
func paren(n Node, inAnd bool) string {
	switch n.(type) {
	case Or:
		return "(" + n.String() + ")"
	case And:
		if !inAnd {
			return n.String()
		}
	}
	return n.String()
}

var protoNames = map[string]Proto{
	"tcp":   {Num: ProtoTCP},
	"udp":   {Num: ProtoUDP},
	"sctp":  {Num: ProtoSCTP},
	"icmp":  {Num: ProtoICMP, Family: 4},
	"icmp6": {Num: ProtoICMPv6, Family: 6},
	"igmp":  {Num: 2, Family: 4},
	"gre":   {Num: 47},
	"esp":   {Num: 50},
	"ah":    {Num: 51},
	"vrrp":  {Num: 112},
	"pim":   {Num: 103},
}

func protoNameOf(num, family uint8) (string, bool) {
	for name, p := range protoNames {
		if p.Num == num && (family == 0 || p.Family == family) {
			return name, true
		}
	}
	return "", false
}

var protoNumbers = func() map[string]uint8 {
	m := map[string]uint8{}
	for name, p := range protoNames {
		m[name] = p.Num
	}
	return m
}()

// ProtoNumber is the inverse of ProtoName.
func ProtoNumber(name string) (uint8, bool) {
	if n, ok := protoNumbers[name]; ok {
		return n, true
	}
	v, err := strconv.ParseUint(name, 10, 8)
	return uint8(v), err == nil
}

// ProtoName returns the lower-case name of an IP protocol number, or its
// decimal value.
func ProtoName(num uint8) string {
	if name, ok := protoNameOf(num, 0); ok {
		return name
	}
	return strconv.Itoa(int(num))
}

var serviceNames = map[string]uint16{
	"ftp-data": 20, "ftp": 21, "ssh": 22, "telnet": 23, "smtp": 25, "domain": 53,
	"bootps": 67, "bootpc": 68, "tftp": 69, "http": 80, "pop3": 110, "ntp": 123,
	"imap": 143, "snmp": 161, "bgp": 179, "ldap": 389, "https": 443, "syslog": 514,
	"submission": 587, "ldaps": 636, "imaps": 993, "openvpn": 1194, "mysql": 3306,
	"postgresql": 5432, "kubernetes": 6443, "http-alt": 8080, "vxlan": 4789, "geneve": 6081,
	"isakmp": 500, "ipsec-nat-t": 4500, "wireguard": 51820, "dns": 53,
}
