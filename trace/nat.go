package trace

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/nattrace/nattrace/event"
	"github.com/nattrace/nattrace/trace/ruleset"
)

// natKind tells whether a rule step is a NAT rule and of which kind, from
// its iptables target or its nft statement.
func natKind(s event.Step) (string, bool) {
	if s.Kind != event.KindRule || s.Rule == "" {
		return "", false
	}
	toks := ruleset.Tokens(s.Rule)
	if s.Syntax == ruleset.SyntaxIptables {
		for i := 0; i+1 < len(toks); i++ {
			if toks[i] == "-j" || toks[i] == "--jump" {
				switch toks[i+1] {
				case "DNAT":
					return event.NATDNAT, true
				case "SNAT":
					return event.NATSNAT, true
				case "MASQUERADE":
					return event.NATMasquerade, true
				case "REDIRECT":
					return event.NATRedirect, true
				case "NETMAP":
					if s.Hook == "prerouting" || s.Hook == "output" {
						return event.NATDNAT, true
					}
					return event.NATSNAT, true
				}
			}
		}
		return "", false
	}
	for _, t := range toks {
		switch t {
		case "dnat":
			return event.NATDNAT, true
		case "snat":
			return event.NATSNAT, true
		case "masquerade":
			return event.NATMasquerade, true
		case "redirect":
			return event.NATRedirect, true
		}
	}
	return "", false
}

func classOf(kind string) string {
	if kind == event.NATDNAT || kind == event.NATRedirect {
		return classDst
	}
	return classSrc
}

func otherClass(c string) string {
	if c == classDst {
		return classSrc
	}
	return classDst
}

func describe(table, chain string, pos int) string {
	return fmt.Sprintf("%s/%s rule %d", table, chain, pos)
}

func endpoints(t event.Tuple) *event.Endpoints {
	return &event.Endpoints{Src: t.Src, Dst: t.Dst, Sport: t.Sport, Dport: t.Dport}
}

type natChange struct {
	class         string
	before, after event.Tuple
	at            snapshot
}

// changes lists the translations between consecutive header snapshots.
func changes(snaps []snapshot) []natChange {
	var out []natChange
	for i := 1; i < len(snaps); i++ {
		a, b := snaps[i-1].t, snaps[i].t
		if !a.Src.IsValid() || !b.Src.IsValid() || a.Proto != b.Proto {
			continue
		}
		mid := a
		if a.Dst != b.Dst || a.Dport != b.Dport {
			mid.Dst, mid.Dport = b.Dst, b.Dport
			if a.ICMPType != nil { // the echo id is one field: both "ports"
				mid.Sport = b.Sport
			}
			out = append(out, natChange{class: classDst, before: a, after: mid, at: snaps[i]})
		}
		if mid.Src != b.Src || mid.Sport != b.Sport {
			out = append(out, natChange{class: classSrc, before: mid, after: b, at: snaps[i]})
		}
	}
	return out
}

// addNATSteps adds a "nat" step for every translation the packet went
// through: where a nat rule fired (the first packet of a connection), by
// that rule; otherwise by the conntrack entry, naming the rule that set it
// up when the session saw it.
func (c *Correlator) addNATSteps(p *pkt, rec *connRec, dir int) {
	reverse := dir == 1
	used := map[int]bool{}
	findRule := func(class string) int {
		if reverse {
			return -1
		}
		for i, s := range p.steps {
			if used[i] || s.sub != 0 {
				continue
			}
			if kind, ok := natKind(s.step); ok && classOf(kind) == class {
				return i
			}
		}
		return -1
	}
	var added []sortStep
	for _, ch := range changes(p.snaps) {
		hook := event.HookPrerouting
		if ch.class == classDst && p.local {
			hook = event.HookOutput
		}
		if ch.class == classSrc {
			hook = event.HookPostrouting
			if ch.at.hook == event.HookInput {
				hook = event.HookInput
			}
		}
		st := event.Step{Kind: event.KindNAT, Hook: hook.String(), Before: endpoints(ch.before), After: endpoints(ch.after),
			CTID: p.p.CTID, Reverse: reverse}
		if i := findRule(ch.class); i >= 0 {
			used[i] = true
			rs := p.steps[i]
			kind, _ := natKind(rs.step)
			st.NAT, st.By, st.Rule = kind, "rule", rs.step.Rule
			st.Family, st.Table, st.Chain, st.Position = rs.step.Family, rs.step.Table, rs.step.Chain, rs.step.Position
			st.Hook = rs.step.Hook
			st.TNs = rs.step.TNs
			if kind == event.NATMasquerade {
				st.OIF = ch.at.oif
			}
			if rec != nil {
				rec.setup[ch.class] = setupInfo{kind: kind, desc: describe(rs.step.Table, rs.step.Chain, rs.step.Position), rule: rs.step.Rule}
			}
			added = append(added, sortStep{order: rs.order, prio: rs.prio, seq: rs.seq, sub: 1, step: st})
			continue
		}
		setupClass := ch.class
		if reverse {
			setupClass = otherClass(ch.class)
		}
		var info setupInfo
		if rec != nil {
			info = rec.setup[setupClass]
		}
		st.NAT, st.By, st.SetupBy, st.Rule = info.kind, "conntrack", info.desc, info.rule
		if st.NAT == "" {
			st.NAT = event.NATDNAT
			if setupClass == classSrc {
				st.NAT = event.NATSNAT
			}
		}
		if st.NAT == event.NATMasquerade && !reverse {
			st.OIF = ch.at.oif
		}
		prio := int32(-100) // NF_IP_PRI_NAT_DST
		if ch.class == classSrc {
			prio = 100 // NF_IP_PRI_NAT_SRC
		}
		added = append(added, sortStep{order: hook.Order(), prio: prio, sub: 1, step: st})
	}
	// A nat rule fired but no later header shows the result: the packet
	// did not get further (e.g. DNAT to 127.0.0.1 without route_localnet).
	for i, rs := range p.steps {
		kind, ok := natKind(rs.step)
		if !ok || used[i] || reverse || rs.sub != 0 {
			continue
		}
		before := p.p.Tuple
		for _, sn := range p.snaps {
			if byPosition(sn.order, rs.order, sn.prio, rs.prio, sn.seq, rs.seq) {
				before = sn.t
			}
		}
		after, ok := resultOf(kind, before, rs.step.Rule, rec)
		if !ok {
			continue
		}
		st := event.Step{Kind: event.KindNAT, NAT: kind, By: "rule", Rule: rs.step.Rule, Hook: rs.step.Hook, TNs: rs.step.TNs,
			Family: rs.step.Family, Table: rs.step.Table, Chain: rs.step.Chain, Position: rs.step.Position,
			Before: endpoints(before), After: endpoints(after), CTID: p.p.CTID}
		if rec != nil {
			rec.setup[classOf(kind)] = setupInfo{kind: kind, desc: describe(rs.step.Table, rs.step.Chain, rs.step.Position), rule: rs.step.Rule}
		}
		added = append(added, sortStep{order: rs.order, prio: rs.prio, seq: rs.seq, sub: 1, step: st})
	}
	p.steps = append(p.steps, added...)
}

// resultOf computes a translation's result without a later header: from
// the conntrack entry's reply tuple, else from the rule's target.
func resultOf(kind string, before event.Tuple, rule string, rec *connRec) (event.Tuple, bool) {
	after := before
	if rec != nil && rec.reply.Src.IsValid() {
		if classOf(kind) == classDst {
			after.Dst, after.Dport = rec.reply.Src, rec.reply.Sport
		} else {
			after.Src, after.Sport = rec.reply.Dst, rec.reply.Dport
		}
		return after, true
	}
	addr, port, ok := natTarget(rule)
	if !ok {
		return after, false
	}
	if classOf(kind) == classDst {
		if addr.IsValid() {
			after.Dst = addr
		}
		if port != 0 {
			after.Dport = port
		}
	} else {
		if addr.IsValid() {
			after.Src = addr
		}
		if port != 0 {
			after.Sport = port
		}
	}
	return after, true
}

// natTarget parses the address and first port a NAT rule translates to:
// iptables --to-destination/--to-source A[:P[-Q]], --to-ports P[-Q];
// nft "dnat to A:P", "snat ip to A", "redirect to :P".
func natTarget(rule string) (netip.Addr, uint16, bool) {
	toks := ruleset.Tokens(rule)
	for i := 0; i+1 < len(toks); i++ {
		switch toks[i] {
		case "--to-destination", "--to-source", "--to":
			return addrPort(toks[i+1])
		case "--to-ports":
			p, err := strconv.ParseUint(strings.SplitN(toks[i+1], "-", 2)[0], 10, 16)
			return netip.Addr{}, uint16(p), err == nil
		case "to":
			return addrPort(toks[i+1])
		}
	}
	return netip.Addr{}, 0, false
}

func addrPort(s string) (netip.Addr, uint16, bool) {
	s = strings.SplitN(s, "-", 2)[0] // ranges: the first
	if strings.HasPrefix(s, ":") {
		p, err := strconv.ParseUint(s[1:], 10, 16)
		return netip.Addr{}, uint16(p), err == nil
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr(), ap.Port(), true
	}
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return a, 0, true
	}
	return netip.Addr{}, 0, false
}
