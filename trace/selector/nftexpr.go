package selector

import (
	"encoding/binary"
	"slices"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/nattrace/nattrace/filter"
)

// nftClause returns the expression lists of the rules that together match
// exactly the packets of one clause (a clause with a set of protocols or a
// fragment test of unknown family becomes several rules).
func nftClause(c filter.Clause) [][]expr.Any {
	fam := uint8(0)
	for _, l := range c {
		if l.Kind == filter.LitFamily && !l.Neg {
			fam = l.Family
		}
	}
	hasFrag := slices.ContainsFunc(c, func(l filter.Lit) bool { return l.Kind == filter.LitFrag && !l.Neg })
	fams := []uint8{fam}
	if hasFrag && fam == 0 {
		fams = []uint8{4, 6}
	}
	var rules [][]expr.Any
	for _, f := range fams {
		for _, proto := range protoVariants(c) {
			var ex []expr.Any
			if f != 0 && fam == 0 {
				ex = append(ex, nfproto(f, false)...)
			}
			for _, l := range c {
				switch {
				case l.Kind == filter.LitProto && !l.Neg:
					ex = append(ex, l4proto(proto, false)...)
				case l.Kind == filter.LitFrag && !l.Neg:
					ex = append(ex, frag(f)...)
				default:
					ex = append(ex, nftLit(l)...)
				}
			}
			rules = append(rules, ex)
		}
	}
	return rules
}

// protoVariants expands a clause's positive protocol set: one rule per
// protocol (iptables' -p and a plain nft compare take one). A clause without
// one gives the single variant 0.
func protoVariants(c filter.Clause) []uint8 {
	for _, l := range c {
		if l.Kind == filter.LitProto && !l.Neg && len(l.Protos) > 0 {
			return l.Protos
		}
	}
	return []uint8{0}
}

func nftLit(l filter.Lit) []expr.Any {
	switch l.Kind {
	case filter.LitFamily:
		return nfproto(l.Family, l.Neg)
	case filter.LitProto: // negated set
		var ex []expr.Any
		for _, p := range l.Protos {
			ex = append(ex, l4proto(p, true)...)
		}
		return ex
	case filter.LitAddr:
		return addr(l)
	case filter.LitPort:
		return port(l)
	case filter.LitFrag:
		return nil // negated: implied by port matches (see filter.LitFrag)
	}
	return nil
}

func cmpOp(neg bool) expr.CmpOp {
	if neg {
		return expr.CmpOpNeq
	}
	return expr.CmpOpEq
}

func nfproto(f uint8, neg bool) []expr.Any {
	v := byte(unix.NFPROTO_IPV4)
	if f == 6 {
		v = unix.NFPROTO_IPV6
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: cmpOp(neg), Register: 1, Data: []byte{v}},
	}
}

func l4proto(p uint8, neg bool) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: cmpOp(neg), Register: 1, Data: []byte{p}},
	}
}

func addr(l filter.Lit) []expr.Any {
	a := l.Prefix.Addr()
	var off, n uint32
	var fam uint8
	if a.Is4() {
		fam, n = 4, 4
		off = 12
		if l.Field == filter.FieldDst {
			off = 16
		}
	} else {
		fam, n = 6, 16
		off = 8
		if l.Field == filter.FieldDst {
			off = 24
		}
	}
	// The family test is never negated: for another family the literal is
	// false either way (see filter.MatchClause).
	ex := nfproto(fam, false)
	ex = append(ex, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n})
	bits := l.Prefix.Bits()
	if bits < a.BitLen() {
		ex = append(ex, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: prefixMask(bits, int(n)), Xor: make([]byte, n)})
	}
	return append(ex, &expr.Cmp{Op: cmpOp(l.Neg), Register: 1, Data: l.Prefix.Masked().Addr().AsSlice()})
}

func prefixMask(bits, n int) []byte {
	m := make([]byte, n)
	for i := 0; i < bits; i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

func port(l filter.Lit) []expr.Any {
	off := uint32(0)
	if l.Field == filter.FieldDst {
		off = 2
	}
	ex := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2}}
	if l.Lo == l.Hi {
		return append(ex, &expr.Cmp{Op: cmpOp(l.Neg), Register: 1, Data: be16(l.Lo)})
	}
	return append(ex, &expr.Range{Op: cmpOp(l.Neg), Register: 1, FromData: be16(l.Lo), ToData: be16(l.Hi)})
}

func frag(f uint8) []expr.Any {
	if f == 6 {
		return []expr.Any{
			&expr.Exthdr{DestRegister: 1, Type: 44, Offset: 2, Len: 2, Op: expr.ExthdrOpIpv6},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 2, Mask: []byte{0xff, 0xf8}, Xor: []byte{0, 0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0}},
		}
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 6, Len: 2},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 2, Mask: []byte{0x1f, 0xff}, Xor: []byte{0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0}},
	}
}

func be16(v uint16) []byte {
	b := make([]byte, 2)
	binary.BigEndian.PutUint16(b, v)
	return b
}
