package selector

import (
	"fmt"
	"slices"

	"github.com/nattrace/nattrace/filter"
)

// iptClause returns the iptables (IPv4) match arguments of the rules that
// together select at least the IPv4 packets of one clause. iptables has one
// slot per field (-p, -s, -d, --sport, --dport): literals that do not fit are
// left out, which makes the rule broader, never narrower; the exact filter
// is applied in user space. exact is false when something was left out.
// A clause that can only match IPv6 yields no rules.
func iptClause(c filter.Clause) (rules [][]string, exact bool) {
	exact = true
	for _, l := range c {
		switch {
		case l.Kind == filter.LitFamily && !l.Neg && l.Family == 6,
			l.Kind == filter.LitFamily && l.Neg && l.Family == 4,
			l.Kind == filter.LitAddr && !l.Neg && l.Prefix.Addr().Is6():
			return nil, true // never an IPv4 packet
		}
	}
	for _, proto := range protoVariants(c) {
		var args []string
		used := map[string]bool{}
		if proto != 0 {
			args = append(args, "-p", protoArg(proto))
			used["p"] = true
		}
		for _, l := range c {
			switch l.Kind {
			case filter.LitFamily:
				// ip4, !ip6: every IPv4 packet
			case filter.LitProto:
				if !l.Neg {
					continue
				}
				if used["p"] || len(l.Protos) != 1 {
					exact = false
					continue
				}
				args = append(args, "!", "-p", protoArg(l.Protos[0]))
				used["p"] = true
			case filter.LitAddr:
				if l.Prefix.Addr().Is6() { // negated IPv6 address: true for IPv4
					continue
				}
				flag := "-s"
				if l.Field == filter.FieldDst {
					flag = "-d"
				}
				if used[flag] {
					exact = false
					continue
				}
				used[flag] = true
				if l.Neg {
					args = append(args, "!")
				}
				args = append(args, flag, l.Prefix.Masked().String())
			case filter.LitPort:
				if proto != filter.ProtoTCP && proto != filter.ProtoUDP && proto != filter.ProtoSCTP {
					exact = false
					continue
				}
				flag := "--sport"
				if l.Field == filter.FieldDst {
					flag = "--dport"
				}
				if used[flag] {
					exact = false
					continue
				}
				if !used["m"] {
					args = append(args, "-m", protoArg(proto))
					used["m"] = true
				}
				used[flag] = true
				if l.Neg {
					args = append(args, "!")
				}
				val := fmt.Sprint(l.Lo)
				if l.Hi != l.Lo {
					val = fmt.Sprintf("%d:%d", l.Lo, l.Hi)
				}
				args = append(args, flag, val)
			case filter.LitFrag:
				if !l.Neg && !used["f"] {
					args = append(args, "-f")
					used["f"] = true
				}
			}
		}
		if !slices.ContainsFunc(rules, func(r []string) bool { return slices.Equal(r, args) }) {
			rules = append(rules, args)
		}
	}
	return rules, exact
}

func protoArg(p uint8) string {
	switch p {
	case filter.ProtoTCP:
		return "tcp"
	case filter.ProtoUDP:
		return "udp"
	case filter.ProtoICMP:
		return "icmp"
	case filter.ProtoSCTP:
		return "sctp"
	}
	return fmt.Sprint(p)
}
