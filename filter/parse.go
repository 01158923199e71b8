package filter

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

type token struct {
	text string
	pos  int
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == ':' || c == '/' || c == '-' || c == '_' || c == '\\'
}

func lex(expr string) ([]token, error) {
	var toks []token
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(' || c == ')':
			toks = append(toks, token{string(c), i})
			i++
		case c == '!':
			toks = append(toks, token{"!", i})
			i++
		case c == '&' || c == '|':
			if i+1 < len(expr) && expr[i+1] == c {
				toks = append(toks, token{expr[i : i+2], i})
				i += 2
				continue
			}
			return nil, &SyntaxError{Expr: expr, Pos: i, Token: string(c), Reason: fmt.Sprintf("expected %q", string([]byte{c, c}))}
		case isWordByte(c):
			j := i
			for j < len(expr) && isWordByte(expr[j]) {
				j++
			}
			toks = append(toks, token{expr[i:j], i})
			i = j
		case c == '[':
			return nil, &SyntaxError{Expr: expr, Pos: i, Token: "[", Reason: "byte-offset expressions (such as tcp[13] & 2 != 0) are not supported"}
		case strings.ContainsRune("<>=+*%^", rune(c)):
			return nil, &SyntaxError{Expr: expr, Pos: i, Token: string(c), Reason: "arithmetic and comparison expressions are not supported"}
		default:
			return nil, &SyntaxError{Expr: expr, Pos: i, Token: string(rune(c)), Reason: "unexpected character"}
		}
	}
	return toks, nil
}

// qual is the set of qualifiers of the last primitive, inherited by a bare
// value after "and"/"or" ("port 80 or 443").
type qual struct {
	family uint8
	proto  uint8
	dir    Dir
	kind   string // host, net, port, portrange
}

type parser struct {
	expr string
	toks []token
	i    int
	last *qual
}

// unsupported are pcap-filter keywords nattrace rejects by name rather
// than misreading them.
var unsupported = map[string]bool{
	"vlan": true, "mpls": true, "pppoed": true, "pppoes": true, "geneve": true, "greater": true, "less": true,
	"len": true, "ether": true, "arp": true, "rarp": true, "broadcast": true, "multicast": true, "gateway": true,
	"inbound": true, "outbound": true, "ifname": true, "on": true, "rnr": true, "rulenum": true, "reason": true,
	"rset": true, "ruleset": true, "srnr": true, "subrulenum": true, "action": true, "wlan": true, "type": true,
	"subtype": true, "dir": true, "atalk": true, "aarp": true, "decnet": true, "iso": true, "stp": true, "ipx": true,
	"netbeui": true, "llc": true, "fddi": true, "tr": true, "ah": false, "esp": false, "protochain": true,
}

// MaxLength is the longest expression accepted.
const MaxLength = 4096

// maxDepth bounds nesting of parentheses and "not".
const maxDepth = 64

// Parse parses a pcap-filter style expression. An empty expression returns a
// nil Node, which matches every packet.
func Parse(expr string) (Node, error) {
	if len(expr) > MaxLength {
		return nil, &SyntaxError{Expr: expr, Pos: MaxLength, Token: "", Reason: fmt.Sprintf("expression longer than %d bytes", MaxLength)}
	}
	toks, err := lex(expr)
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 {
		return nil, nil
	}
	p := &parser{expr: expr, toks: toks}
	n, err := p.parseOr(0)
	if err != nil {
		return nil, err
	}
	if p.i < len(p.toks) {
		t := p.toks[p.i]
		if t.text == ")" {
			return nil, p.errAt(t, "unbalanced ')'")
		}
		return nil, p.errAt(t, `expected "and", "or" or the end of the expression`)
	}
	return n, nil
}

// MustParse is Parse for tests and constants; it panics on error.
func MustParse(expr string) Node {
	n, err := Parse(expr)
	if err != nil {
		panic(err)
	}
	return n
}

func (p *parser) errAt(t token, reason string) error {
	return &SyntaxError{Expr: p.expr, Pos: t.pos, Token: t.text, Reason: reason}
}

func (p *parser) errEnd(reason string) error {
	return &SyntaxError{Expr: p.expr, Pos: len(p.expr), Reason: reason}
}

func (p *parser) peek() (token, bool) {
	if p.i < len(p.toks) {
		return p.toks[p.i], true
	}
	return token{}, false
}

func (p *parser) peekIs(words ...string) bool {
	t, ok := p.peek()
	if !ok {
		return false
	}
	for _, w := range words {
		if strings.EqualFold(t.text, w) {
			return true
		}
	}
	return false
}

func (p *parser) next() (token, bool) {
	t, ok := p.peek()
	if ok {
		p.i++
	}
	return t, ok
}

func (p *parser) parseOr(depth int) (Node, error) {
	x, err := p.parseAnd(depth)
	if err != nil {
		return nil, err
	}
	for p.peekIs("or", "||") {
		p.i++
		y, err := p.parseAnd(depth)
		if err != nil {
			return nil, err
		}
		x = Or{x, y}
	}
	return x, nil
}

func (p *parser) parseAnd(depth int) (Node, error) {
	x, err := p.parseNot(depth)
	if err != nil {
		return nil, err
	}
	for p.peekIs("and", "&&") {
		p.i++
		y, err := p.parseNot(depth)
		if err != nil {
			return nil, err
		}
		x = And{x, y}
	}
	return x, nil
}

func (p *parser) parseNot(depth int) (Node, error) {
	if depth > maxDepth {
		t, _ := p.peek()
		return nil, p.errAt(t, fmt.Sprintf("expression nested deeper than %d levels", maxDepth))
	}
	t, ok := p.peek()
	if !ok {
		return nil, p.errEnd("expected a primitive (host, net, port, portrange, tcp, udp, icmp, proto, ...)")
	}
	switch strings.ToLower(t.text) {
	case "not", "!":
		p.i++
		x, err := p.parseNot(depth + 1)
		if err != nil {
			return nil, err
		}
		return Not{x}, nil
	case "(":
		p.i++
		x, err := p.parseOr(depth + 1)
		if err != nil {
			return nil, err
		}
		c, ok := p.next()
		if !ok {
			return nil, p.errEnd("expected ')'")
		}
		if c.text != ")" {
			return nil, p.errAt(c, `expected ')', "and" or "or"`)
		}
		return x, nil
	case ")":
		return nil, p.errAt(t, "expected a primitive before ')'")
	case "and", "&&", "or", "||":
		return nil, p.errAt(t, "expected a primitive before "+strconv.Quote(t.text))
	}
	return p.parsePrimitive()
}

func (p *parser) parsePrimitive() (Node, error) {
	start, _ := p.peek()
	var q qual
	qualified := false
	// family qualifier
	if p.peekIs("ip", "ip6") {
		t, _ := p.next()
		q.family = 4
		if strings.EqualFold(t.text, "ip6") {
			q.family = 6
		}
		qualified = true
		if !p.peekIs("host", "net", "proto", "src", "dst", "tcp", "udp", "sctp", "icmp", "icmp6") {
			return Family{q.family}, nil
		}
	}
	// protocol qualifier
	if t, ok := p.peek(); ok {
		if pr, isProto := protoNames[strings.ToLower(t.text)]; isProto {
			p.i++
			if q.family != 0 && pr.Family != 0 && pr.Family != q.family {
				return nil, p.errAt(t, fmt.Sprintf("%s is not a protocol of %s", t.text, Family{q.family}))
			}
			fam := pr.Family
			if fam == 0 {
				fam = q.family
			}
			if p.peekIs("host", "net") {
				h, _ := p.peek()
				return nil, p.errAt(h, fmt.Sprintf("%q cannot follow a transport protocol; write e.g. \"%s and %s X\"", h.text, t.text, h.text))
			}
			if !p.peekIs("port", "portrange", "src", "dst") {
				return Proto{Num: pr.Num, Family: fam}, nil
			}
			if pr.Num != ProtoTCP && pr.Num != ProtoUDP && pr.Num != ProtoSCTP {
				return nil, p.errAt(t, "ports apply only to tcp, udp and sctp")
			}
			q.proto = pr.Num
			q.family = fam
			qualified = true
		}
	}
	// direction
	if p.peekIs("src", "dst") {
		t, _ := p.next()
		q.dir = Src
		if strings.EqualFold(t.text, "dst") {
			q.dir = Dst
		}
		// "src or dst" / "src and dst"
		if p.i+1 < len(p.toks) && (p.peekIs("or", "and")) {
			other := strings.ToLower(p.toks[p.i+1].text)
			if (q.dir == Src && other == "dst") || (q.dir == Dst && other == "src") {
				if p.peekIs("or") {
					q.dir = SrcOrDst
				} else {
					q.dir = SrcAndDst
				}
				p.i += 2
			}
		}
		qualified = true
	}
	t, ok := p.next()
	if !ok {
		if qualified {
			return nil, p.errEnd("expected host, net, port or portrange")
		}
		return nil, p.errEnd("expected a primitive")
	}
	kw := strings.ToLower(t.text)
	switch kw {
	case "host", "net", "port", "portrange":
		if (kw == "host" || kw == "net") && q.proto != 0 {
			return nil, p.errAt(t, fmt.Sprintf("%q cannot follow a transport protocol; write e.g. \"tcp and host X\"", kw))
		}
		if (kw == "port" || kw == "portrange") && q.family != 0 && q.proto == 0 {
			// "ip port 80": tcpdump accepts it; the family is an extra condition.
			q.kind = kw
			n, err := p.parseValue(q)
			if err != nil {
				return nil, err
			}
			return And{Family{q.family}, n}, nil
		}
		q.kind = kw
		return p.parseValue(q)
	case "proto":
		if q.proto != 0 || q.dir != SrcOrDst {
			return nil, p.errAt(t, `"proto" takes no direction or transport qualifier`)
		}
		v, ok := p.next()
		if !ok {
			return nil, p.errEnd("expected a protocol number or name after \"proto\"")
		}
		name := strings.TrimPrefix(strings.ToLower(v.text), "\\")
		if pr, isName := protoNames[name]; isName {
			fam := q.family
			if fam == 0 {
				fam = pr.Family
			}
			return Proto{Num: pr.Num, Family: fam}, nil
		}
		n, err := strconv.ParseUint(v.text, 0, 8)
		if err != nil {
			return nil, p.errAt(v, "expected a protocol number (0-255) or name (tcp, udp, icmp, sctp, ...)")
		}
		return Proto{Num: uint8(n), Family: q.family}, nil
	}
	if qualified {
		return nil, p.errAt(t, "expected host, net, port or portrange")
	}
	if unsupported[kw] {
		return nil, p.errAt(t, fmt.Sprintf("%q is pcap-filter syntax that nattrace does not support (supported: host, net, port, portrange, tcp, udp, icmp, icmp6, sctp, proto, ip, ip6, and, or, not)", t.text))
	}
	// A bare value: inherit the previous primitive's qualifiers.
	p.i--
	if p.last != nil {
		return p.parseValue(*p.last)
	}
	if a, err := netip.ParseAddr(t.text); err == nil {
		p.i++
		return Addr{Dir: SrcOrDst, Prefix: netip.PrefixFrom(a.Unmap(), a.BitLen()), Host: true}, nil
	}
	_ = start
	return nil, p.errAt(t, "unknown primitive; expected host, net, port, portrange, tcp, udp, icmp, sctp, proto, ip, ip6")
}

// parseValue parses the value of a host/net/port/portrange primitive.
func (p *parser) parseValue(q qual) (Node, error) {
	v, ok := p.next()
	if !ok {
		return nil, p.errEnd(fmt.Sprintf("expected a value after %q", q.kind))
	}
	qq := q
	p.last = &qq
	var n Node
	switch q.kind {
	case "host":
		a, err := netip.ParseAddr(v.text)
		if err != nil || a.Zone() != "" {
			return nil, p.errAt(v, "expected an IPv4 or IPv6 address (names are not resolved)")
		}
		a = a.Unmap()
		if q.family != 0 && !familyOK(a, q.family) {
			return nil, p.errAt(v, fmt.Sprintf("address is not %s", Family{q.family}))
		}
		n = Addr{Dir: q.dir, Prefix: netip.PrefixFrom(a, a.BitLen()), Host: true, IPOnly: q.family != 0}
	case "net":
		pfx, err := p.parseNet(v)
		if err != nil {
			return nil, err
		}
		if q.family != 0 && !familyOK(pfx.Addr(), q.family) {
			return nil, p.errAt(v, fmt.Sprintf("network is not %s", Family{q.family}))
		}
		n = Addr{Dir: q.dir, Prefix: pfx, IPOnly: q.family != 0}
	case "port":
		port, err := parsePort(v.text)
		if err != nil {
			return nil, p.errAt(v, "expected a port number (0-65535) or service name")
		}
		n = Port{Dir: q.dir, Proto: q.proto, Lo: port, Hi: port}
	case "portrange":
		lo, hi, ok := strings.Cut(v.text, "-")
		if !ok {
			return nil, p.errAt(v, "expected a port range LOW-HIGH")
		}
		l, err1 := parsePort(lo)
		h, err2 := parsePort(hi)
		if err1 != nil || err2 != nil {
			return nil, p.errAt(v, "expected a port range LOW-HIGH of numbers 0-65535")
		}
		if l > h {
			l, h = h, l
		}
		n = Port{Dir: q.dir, Proto: q.proto, Lo: l, Hi: h, Range: true}
	}
	return n, nil
}

func (p *parser) parseNet(v token) (netip.Prefix, error) {
	if strings.Contains(v.text, "/") {
		pfx, err := netip.ParsePrefix(v.text)
		if err != nil {
			return netip.Prefix{}, p.errAt(v, "expected a network in CIDR form, e.g. 10.200.0.0/16")
		}
		if pfx.Masked() != pfx {
			return netip.Prefix{}, p.errAt(v, fmt.Sprintf("network has host bits set; did you mean %s?", pfx.Masked()))
		}
		return pfx, nil
	}
	a, err := netip.ParseAddr(v.text)
	if err != nil {
		return netip.Prefix{}, p.errAt(v, "expected a network in CIDR form, e.g. 10.200.0.0/16")
	}
	a = a.Unmap()
	if p.peekIs("mask") {
		p.i++
		m, ok := p.next()
		if !ok {
			return netip.Prefix{}, p.errEnd("expected a netmask after \"mask\"")
		}
		ma, err := netip.ParseAddr(m.text)
		if err != nil || !ma.Is4() || !a.Is4() {
			return netip.Prefix{}, p.errAt(m, "expected an IPv4 netmask such as 255.255.255.0")
		}
		bits, ok := maskBits(ma.As4())
		if !ok {
			return netip.Prefix{}, p.errAt(m, "netmask is not contiguous")
		}
		pfx := netip.PrefixFrom(a, bits)
		if pfx.Masked() != pfx {
			return netip.Prefix{}, p.errAt(v, fmt.Sprintf("network has host bits set; did you mean %s?", pfx.Masked()))
		}
		return pfx, nil
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func maskBits(m [4]byte) (int, bool) {
	v := uint32(m[0])<<24 | uint32(m[1])<<16 | uint32(m[2])<<8 | uint32(m[3])
	bits := 0
	for v&0x80000000 != 0 {
		bits++
		v <<= 1
	}
	return bits, v == 0
}

func familyOK(a netip.Addr, family uint8) bool {
	return (family == 4 && a.Is4()) || (family == 6 && a.Is6())
}

func parsePort(s string) (uint16, error) {
	if v, ok := serviceNames[strings.ToLower(s)]; ok {
		return v, nil
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, err
	}
	return uint16(n), nil
}
