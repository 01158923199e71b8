package filter

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// LitKind is the kind of a DNF literal.
type LitKind uint8

const (
	LitFamily LitKind = iota + 1 // IP version is Family
	LitProto                     // transport protocol is one of Protos
	LitAddr                      // the Field address is inside Prefix (implies its family)
	LitPort                      // the Field port is in [Lo, Hi] (meaningful with a port protocol)
	LitFrag                      // a non-first fragment (no transport header); targets omit it when negated
)

// Field names the header field of an address or port literal.
type Field uint8

const (
	FieldSrc Field = iota + 1
	FieldDst
)

func (f Field) String() string {
	if f == FieldSrc {
		return "src"
	}
	return "dst"
}

// Lit is one possibly negated condition of a clause. Every literal can be
// expressed by nft rule expressions; iptables can express most of them.
//
// The lowering keeps each literal next to the conditions it depends on
// ("port 80" becomes proto in {tcp,udp,sctp} and not fragment and port 80),
// so a literal whose kernel evaluation is undefined for a packet (a port of an
// ICMP packet, the IPv4 address of an IPv6 packet) never changes the value of
// the clause set: the negation of the whole primitive always contributes a
// clause that decides those packets.
type Lit struct {
	Kind   LitKind
	Neg    bool
	Family uint8   // LitFamily
	Protos []uint8 // LitProto, sorted
	Field  Field   // LitAddr, LitPort
	Prefix netip.Prefix
	Lo, Hi uint16
}

func (l Lit) String() string {
	var s string
	switch l.Kind {
	case LitFamily:
		s = fmt.Sprintf("ip%d", l.Family)
	case LitProto:
		names := make([]string, len(l.Protos))
		for i, p := range l.Protos {
			names[i] = ProtoName(p)
		}
		s = "proto{" + strings.Join(names, ",") + "}"
	case LitAddr:
		s = l.Field.String() + "=" + l.Prefix.String()
	case LitPort:
		s = fmt.Sprintf("%sport=%d-%d", l.Field, l.Lo, l.Hi)
	case LitFrag:
		s = "frag"
	}
	if l.Neg {
		return "!" + s
	}
	return s
}

// Clause is a conjunction of literals; an empty clause matches everything.
type Clause []Lit

func (c Clause) String() string {
	if len(c) == 0 {
		return "true"
	}
	parts := make([]string, len(c))
	for i, l := range c {
		parts[i] = l.String()
	}
	return strings.Join(parts, " & ")
}

// DNF is a disjunction of clauses; an empty DNF matches nothing.
type DNF []Clause

func (d DNF) String() string {
	if len(d) == 0 {
		return "false"
	}
	parts := make([]string, len(d))
	for i, c := range d {
		parts[i] = "(" + c.String() + ")"
	}
	return strings.Join(parts, " | ")
}

// MaxClauses bounds the size of a DNF. A larger one is replaced by the match-
// all DNF and reported as approximate: the kernel then selects broadly and the
// user-space post-filter keeps the exact semantics.
const MaxClauses = 64

// ToDNF lowers an expression to disjunctive normal form. approximate is true
// when the result is broader than the expression (too many clauses).
func ToDNF(n Node) (d DNF, approximate bool) {
	if n == nil {
		return DNF{Clause{}}, false
	}
	d, ok := dnf(expand(n), false)
	if !ok {
		return DNF{Clause{}}, true
	}
	return d, false
}

// formula nodes after expansion: only And, Or, Not and lit leaves.
type litNode struct{ l Lit }

func (litNode) node()            {}
func (n litNode) String() string { return n.l.String() }

func lit(l Lit) Node { return litNode{l} }

func and(ns ...Node) Node {
	x := ns[0]
	for _, y := range ns[1:] {
		x = And{x, y}
	}
	return x
}

func or(ns ...Node) Node {
	x := ns[0]
	for _, y := range ns[1:] {
		x = Or{x, y}
	}
	return x
}

// expand rewrites primitives into literals with their dependencies.
func expand(n Node) Node {
	switch n := n.(type) {
	case And:
		return And{expand(n.X), expand(n.Y)}
	case Or:
		return Or{expand(n.X), expand(n.Y)}
	case Not:
		return Not{expand(n.X)}
	case Family:
		return lit(Lit{Kind: LitFamily, Family: n.Version})
	case Proto:
		p := lit(Lit{Kind: LitProto, Protos: []uint8{n.Num}})
		if n.Family != 0 {
			return and(lit(Lit{Kind: LitFamily, Family: n.Family}), p)
		}
		return p
	case Addr:
		fam := uint8(4)
		if n.Prefix.Addr().Is6() {
			fam = 6
		}
		f := lit(Lit{Kind: LitFamily, Family: fam})
		s := lit(Lit{Kind: LitAddr, Field: FieldSrc, Prefix: n.Prefix})
		d := lit(Lit{Kind: LitAddr, Field: FieldDst, Prefix: n.Prefix})
		return and(f, dirNode(n.Dir, s, d))
	case Port:
		protos := []uint8{n.Proto}
		if n.Proto == 0 {
			protos = slices.Clone(PortProtos)
		}
		slices.Sort(protos)
		pr := lit(Lit{Kind: LitProto, Protos: protos})
		nf := Not{lit(Lit{Kind: LitFrag})}
		s := lit(Lit{Kind: LitPort, Field: FieldSrc, Lo: n.Lo, Hi: n.Hi})
		d := lit(Lit{Kind: LitPort, Field: FieldDst, Lo: n.Lo, Hi: n.Hi})
		return and(pr, nf, dirNode(n.Dir, s, d))
	}
	return n
}

func dirNode(d Dir, s, dst Node) Node {
	switch d {
	case Src:
		return s
	case Dst:
		return dst
	case SrcAndDst:
		return and(s, dst)
	}
	return or(s, dst)
}

// dnf converts an expanded formula, with negation pushed down.
func dnf(n Node, neg bool) (DNF, bool) {
	switch n := n.(type) {
	case Not:
		return dnf(n.X, !neg)
	case litNode:
		l := n.l
		l.Neg = l.Neg != neg
		return DNF{Clause{l}}, true
	case And, Or:
		var x, y Node
		isAnd := false
		if a, ok := n.(And); ok {
			x, y, isAnd = a.X, a.Y, true
		} else {
			o := n.(Or)
			x, y = o.X, o.Y
		}
		if neg {
			isAnd = !isAnd
		}
		dx, ok := dnf(x, neg)
		if !ok {
			return nil, false
		}
		dy, ok := dnf(y, neg)
		if !ok {
			return nil, false
		}
		if !isAnd {
			return appendClauses(dx, dy)
		}
		var out DNF
		for _, cx := range dx {
			for _, cy := range dy {
				c, sat := conjoin(cx, cy)
				if !sat {
					continue
				}
				var ok bool
				if out, ok = appendClauses(out, DNF{c}); !ok {
					return nil, false
				}
			}
		}
		return out, true
	}
	return nil, false
}

func appendClauses(a, b DNF) (DNF, bool) {
	out := slices.Clone(a)
	for _, c := range b {
		if !slices.ContainsFunc(out, func(o Clause) bool { return clauseEqual(o, c) }) {
			out = append(out, c)
		}
	}
	return out, len(out) <= MaxClauses
}

func clauseEqual(a, b Clause) bool {
	if len(a) != len(b) {
		return false
	}
	for _, l := range a {
		if !slices.ContainsFunc(b, func(m Lit) bool { return litEqual(l, m) }) {
			return false
		}
	}
	return true
}

func litEqual(a, b Lit) bool {
	return a.Kind == b.Kind && a.Neg == b.Neg && a.Family == b.Family && slices.Equal(a.Protos, b.Protos) &&
		a.Field == b.Field && a.Prefix == b.Prefix && a.Lo == b.Lo && a.Hi == b.Hi
}

// conjoin joins two clauses, simplifying; sat is false for a contradiction.
func conjoin(a, b Clause) (Clause, bool) {
	out := slices.Clone(a)
	for _, l := range b {
		dup := false
		for _, m := range out {
			if litEqual(l, m) {
				dup = true
				break
			}
			if l.Kind == m.Kind && l.Neg != m.Neg {
				x := l
				x.Neg = m.Neg
				if litEqual(x, m) {
					return nil, false // l and not l
				}
			}
		}
		if !dup {
			out = append(out, l)
		}
	}
	return simplify(out)
}

// simplify merges family and protocol literals and drops contradictions.
func simplify(c Clause) (Clause, bool) {
	var fam uint8
	var notFam [7]bool
	var protos []uint8 // nil: unconstrained
	var notProtos []uint8
	var rest Clause
	for _, l := range c {
		switch {
		case l.Kind == LitFamily && !l.Neg:
			if fam != 0 && fam != l.Family {
				return nil, false
			}
			fam = l.Family
		case l.Kind == LitFamily && l.Neg:
			notFam[l.Family] = true
		case l.Kind == LitProto && !l.Neg:
			if protos == nil {
				protos = slices.Clone(l.Protos)
			} else {
				protos = slices.DeleteFunc(protos, func(p uint8) bool { return !slices.Contains(l.Protos, p) })
			}
		case l.Kind == LitProto && l.Neg:
			notProtos = append(notProtos, l.Protos...)
		default:
			rest = append(rest, l)
		}
	}
	if fam != 0 && notFam[fam] {
		return nil, false
	}
	for _, l := range rest {
		if l.Kind == LitAddr && !l.Neg {
			af := uint8(4)
			if l.Prefix.Addr().Is6() {
				af = 6
			}
			if fam != 0 && fam != af {
				return nil, false
			}
		}
	}
	var out Clause
	if fam != 0 {
		out = append(out, Lit{Kind: LitFamily, Family: fam})
	} else {
		for _, v := range []uint8{4, 6} {
			if notFam[v] {
				out = append(out, Lit{Kind: LitFamily, Neg: true, Family: v})
			}
		}
	}
	if protos != nil {
		protos = slices.DeleteFunc(protos, func(p uint8) bool { return slices.Contains(notProtos, p) })
		if len(protos) == 0 {
			return nil, false
		}
		slices.Sort(protos)
		out = append(out, Lit{Kind: LitProto, Protos: protos})
	} else if len(notProtos) > 0 {
		slices.Sort(notProtos)
		notProtos = slices.Compact(notProtos)
		out = append(out, Lit{Kind: LitProto, Neg: true, Protos: notProtos})
	}
	// A port literal needs a protocol with ports; frag literals are IPv4 only.
	for _, l := range rest {
		if l.Kind == LitPort && !l.Neg && protos != nil {
			if !slices.ContainsFunc(protos, func(p uint8) bool { return slices.Contains(PortProtos, p) }) {
				return nil, false
			}
		}
	}
	out = append(out, rest...)
	// Two positive port or address literals on the same field with disjoint
	// values cannot both hold.
	for i, l := range out {
		for _, m := range out[i+1:] {
			if l.Neg || m.Neg || l.Kind != m.Kind || l.Field != m.Field {
				continue
			}
			if l.Kind == LitPort && (l.Hi < m.Lo || m.Hi < l.Lo) {
				return nil, false
			}
			if l.Kind == LitAddr && !l.Prefix.Overlaps(m.Prefix) {
				return nil, false
			}
		}
	}
	return out, true
}

// MatchClause evaluates one clause on packet fields with the kernel's
// semantics for each literal (used to test the lowering against Match).
func MatchClause(c Clause, f *Fields) bool {
	for _, l := range c {
		var v bool
		switch l.Kind {
		case LitFamily:
			v = f.Family == l.Family
		case LitProto:
			v = f.Family != 0 && slices.Contains(l.Protos, f.Proto)
		case LitAddr:
			a := f.Src
			if l.Field == FieldDst {
				a = f.Dst
			}
			// The kernel compares the header bytes at the family's offset;
			// for another family the result is undefined: model it as false
			// for positive and negated literals alike (nft's implicit
			// family dependency), the worst case for completeness.
			if f.Family == 0 || a.Is4() != l.Prefix.Addr().Is4() {
				return false
			}
			v = l.Prefix.Contains(a)
		case LitPort:
			if !f.HasPorts || f.Fragment {
				return false // no transport header: the kernel rule breaks
			}
			p := f.Sport
			if l.Field == FieldDst {
				p = f.Dport
			}
			v = p >= l.Lo && p <= l.Hi
		case LitFrag:
			if l.Neg {
				// Not expressible for both families in one rule, and
				// implied: kernel port matches never match a non-first
				// fragment. Targets leave it out.
				continue
			}
			v = f.Family != 0 && f.Fragment
		}
		if v == l.Neg {
			return false
		}
	}
	return true
}

// MatchDNF evaluates a DNF with MatchClause.
func MatchDNF(d DNF, f *Fields) bool {
	for _, c := range d {
		if MatchClause(c, f) {
			return true
		}
	}
	return false
}
