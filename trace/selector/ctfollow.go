package selector

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/nattrace/nattrace/filter"
)

// Flow following. A packet whose own headers match the filter is selected
// at priority -350 (before conntrack). The replies and translated packets of
// a connection do not match the filter text, so chains at priority -199 (just
// after conntrack at -200, before DNAT at -100) select the packets that do
// NOT match the filter but whose conntrack entry does: its original tuple,
// or its reply tuple seen as a packet. Every packet is selected at most once
// and the rate limit is the same "select" chain. Connections that existed
// before the session are followed the same way.
const (
	ChainPreCT  = "prerouting_ct"
	ChainOutCT  = "output_ct"
	ChainFollow = "follow"
	FollowPrio  = -199
)

// ctDir is a conntrack direction (NFTA_CT_DIRECTION).
type ctDir uint8

const (
	dirOriginal ctDir = 0
	dirReply    ctDir = 1
)

// rawRule is a rule as marshalled expressions (NFTA_LIST_ELEM payloads).
type rawRule [][]byte

func lib(fam byte, e expr.Any) []byte {
	b, err := expr.Marshal(fam, e)
	if err != nil {
		panic(err) // only fixed, valid expressions are marshalled here
	}
	return b
}

// ctLoad loads a conntrack key of one direction into register 1.
// google/nftables sends NFTA_CT_DIRECTION as a 32-bit value (the kernel reads
// one byte: "reply" would become "original") and not at all for the *_IP
// keys, so this expression is marshalled here.
func ctLoad(key uint32, dir ctDir) []byte {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.Uint32(unix.NFTA_CT_DREG, unix.NFT_REG_1)
	ae.Uint32(unix.NFTA_CT_KEY, key)
	ae.Uint8(unix.NFTA_CT_DIRECTION, uint8(dir))
	data, err := ae.Encode()
	if err != nil {
		panic(err)
	}
	out, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_EXPR_NAME, Data: []byte("ct\x00")},
		{Type: unix.NLA_F_NESTED | unix.NFTA_EXPR_DATA, Data: data},
	})
	if err != nil {
		panic(err)
	}
	return out
}

// ctClause returns the rules matching connections whose tuple of direction
// dir, seen as a packet, satisfies the clause. A clause that needs a
// non-first fragment never matches (conntrack reassembles first).
func ctClause(fam byte, c filter.Clause, dir ctDir, verdict expr.Any) []rawRule {
	for _, l := range c {
		if l.Kind == filter.LitFrag && !l.Neg {
			return nil
		}
	}
	var rules []rawRule
	for _, proto := range protoVariants(c) {
		var r rawRule
		for _, l := range c {
			switch l.Kind {
			case filter.LitFamily:
				for _, e := range nfproto(l.Family, l.Neg) {
					r = append(r, lib(fam, e))
				}
			case filter.LitProto:
				if !l.Neg {
					for _, e := range l4proto(proto, false) {
						r = append(r, lib(fam, e))
					}
					continue
				}
				for _, p := range l.Protos {
					for _, e := range l4proto(p, true) {
						r = append(r, lib(fam, e))
					}
				}
			case filter.LitAddr:
				a := l.Prefix.Addr()
				key, famV, n := uint32(unix.NFT_CT_SRC_IP), uint8(4), uint32(4)
				if l.Field == filter.FieldDst {
					key = unix.NFT_CT_DST_IP
				}
				if a.Is6() {
					key, famV, n = unix.NFT_CT_SRC_IP6, 6, 16
					if l.Field == filter.FieldDst {
						key = unix.NFT_CT_DST_IP6
					}
				}
				for _, e := range nfproto(famV, false) {
					r = append(r, lib(fam, e))
				}
				r = append(r, ctLoad(key, dir))
				if l.Prefix.Bits() < a.BitLen() {
					r = append(r, lib(fam, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n,
						Mask: prefixMask(l.Prefix.Bits(), int(n)), Xor: make([]byte, n)}))
				}
				r = append(r, lib(fam, &expr.Cmp{Op: cmpOp(l.Neg), Register: 1, Data: l.Prefix.Masked().Addr().AsSlice()}))
			case filter.LitPort:
				key := uint32(unix.NFT_CT_PROTO_SRC)
				if l.Field == filter.FieldDst {
					key = unix.NFT_CT_PROTO_DST
				}
				r = append(r, ctLoad(key, dir))
				if l.Lo == l.Hi {
					r = append(r, lib(fam, &expr.Cmp{Op: cmpOp(l.Neg), Register: 1, Data: be16(l.Lo)}))
				} else {
					r = append(r, lib(fam, &expr.Range{Op: cmpOp(l.Neg), Register: 1, FromData: be16(l.Lo), ToData: be16(l.Hi)}))
				}
			}
		}
		r = append(r, lib(fam, verdict))
		rules = append(rules, r)
	}
	return rules
}

// followRules builds the rules of the follow chains: in prerouting_ct and
// output_ct, packets that do not match the filter go to "follow"; there,
// connections that match it go to "select".
func followRules(fam byte, dnf, notDNF filter.DNF) (guard, follow []rawRule) {
	toFollow := &expr.Verdict{Kind: expr.VerdictGoto, Chain: ChainFollow}
	for _, cl := range notDNF {
		for _, ex := range nftClause(cl) {
			var r rawRule
			for _, e := range ex {
				r = append(r, lib(fam, e))
			}
			r = append(r, lib(fam, toFollow))
			guard = append(guard, r)
		}
	}
	toSelect := &expr.Verdict{Kind: expr.VerdictGoto, Chain: ChainSelect}
	for _, cl := range dnf {
		follow = append(follow, ctClause(fam, cl, dirOriginal, toSelect)...)
		follow = append(follow, ctClause(fam, cl, dirReply, toSelect)...)
	}
	return guard, follow
}

// sendRules adds rules to chains of table in one batch on the socket that
// owns the table.
func sendRules(conn *netlink.Conn, fam byte, table string, chains map[string][]rawRule) error {
	batch := func(t uint16) netlink.Message {
		return netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(t), Flags: netlink.Request},
			Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES},
		}
	}
	msgs := []netlink.Message{batch(unix.NFNL_MSG_BATCH_BEGIN)}
	for chain, rules := range chains {
		for _, r := range rules {
			var elems []netlink.Attribute
			for _, e := range r {
				elems = append(elems, netlink.Attribute{Type: unix.NLA_F_NESTED | unix.NFTA_LIST_ELEM, Data: e})
			}
			list, err := netlink.MarshalAttributes(elems)
			if err != nil {
				return err
			}
			data, err := netlink.MarshalAttributes([]netlink.Attribute{
				{Type: unix.NFTA_RULE_TABLE, Data: []byte(table + "\x00")},
				{Type: unix.NFTA_RULE_CHAIN, Data: []byte(chain + "\x00")},
				{Type: unix.NLA_F_NESTED | unix.NFTA_RULE_EXPRESSIONS, Data: list},
			})
			if err != nil {
				return err
			}
			msgs = append(msgs, netlink.Message{
				Header: netlink.Header{
					Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWRULE),
					Flags: netlink.Request | netlink.Acknowledge | netlink.Create | netlink.Append,
				},
				Data: append([]byte{fam, unix.NFNETLINK_V0, 0, 0}, data...),
			})
		}
	}
	if len(msgs) == 1 {
		return nil
	}
	msgs = append(msgs, batch(unix.NFNL_MSG_BATCH_END))
	sent, err := conn.SendMessages(msgs)
	if err != nil {
		return fmt.Errorf("send rules: %w", err)
	}
	pending := map[uint32]bool{}
	for _, m := range sent[1 : len(sent)-1] {
		pending[m.Header.Sequence] = true
	}
	for len(pending) > 0 {
		replies, err := conn.Receive()
		if err != nil {
			return err
		}
		for _, r := range replies {
			if r.Header.Type == netlink.Error {
				delete(pending, r.Header.Sequence)
			}
		}
	}
	return nil
}
