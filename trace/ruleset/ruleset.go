package ruleset

import (
	"fmt"
	"os/exec"
	"strings"

	"github.com/nattrace/nattrace/event"
	"github.com/nattrace/nattrace/netns"
)

// Backends and syntaxes.
const (
	BackendNFT         = "nft"
	BackendIptablesNFT = "iptables-nft"
	BackendLegacy      = "iptables-legacy"

	SyntaxNFT      = "nft"
	SyntaxIptables = "iptables"
)

// Names nattrace gives its own objects.
const (
	OwnTablePrefix   = "nattrace_" // nft tables
	OwnChainPrefix   = "NATTRACE-" // iptables-legacy chains
	OwnCommentPrefix = "nattrace:" // iptables-legacy rule comments
)

func isOwnChainName(name string) bool { return strings.HasPrefix(name, OwnChainPrefix) }

// IsOwnTable reports whether an nft table belongs to a nattrace session.
func IsOwnTable(name string) bool { return strings.HasPrefix(name, OwnTablePrefix) }

// Rule is one rule of a chain.
type Rule struct {
	Handle uint64 // nft handle (0 for iptables-legacy)
	Text   string // nft syntax, or iptables-save syntax ("-A CHAIN ...")
	Target string // iptables: the -j/-g target
	Goto   bool   // iptables: -g
	Own    bool   // inserted by nattrace
}

// Chain is one chain with its rules in kernel order.
type Chain struct {
	Family   string // ip, ip6, inet, arp, bridge, netdev
	Table    string
	Name     string
	Type     string // nft chain type: filter, nat, route
	Base     bool
	Hook     event.Hook
	HookName string
	Priority int32
	Policy   string // accept, drop (base chains)
	Rules    []Rule
	Backend  string
	Syntax   string
	Own      bool // a nattrace chain: never shown
}

// ByHandle finds an nft rule; pos is its 1-based position among the rules
// that are not nattrace's.
func (c *Chain) ByHandle(h uint64) (pos int, r *Rule) {
	n := 0
	for i := range c.Rules {
		if !c.Rules[i].Own {
			n++
		}
		if c.Rules[i].Handle == h {
			return n, &c.Rules[i]
		}
	}
	return 0, nil
}

// ByPosition maps a kernel position (1-based, counting every rule, as TRACE
// reports it) to the rule and its position among rules that are not
// nattrace's. A position one past the end is the chain's end.
func (c *Chain) ByPosition(kpos int) (pos int, r *Rule) {
	if kpos < 1 {
		return 0, nil
	}
	own := 0
	for i := 0; i < kpos-1 && i < len(c.Rules); i++ {
		if c.Rules[i].Own {
			own++
		}
	}
	if kpos > len(c.Rules) {
		return kpos - own, nil
	}
	return kpos - own, &c.Rules[kpos-1]
}

// End is the position one past the chain's last rule (not counting
// nattrace's): where the policy or the implicit return stands.
func (c *Chain) End() int {
	n := 1
	for _, r := range c.Rules {
		if !r.Own {
			n++
		}
	}
	return n
}

// PolicyText is the chain's policy as its syntax writes it.
func (c *Chain) PolicyText() string {
	if !c.Base {
		return ""
	}
	if c.Syntax == SyntaxIptables {
		return fmt.Sprintf(":%s %s", c.Name, strings.ToUpper(c.Policy))
	}
	return "policy " + c.Policy
}

type key struct{ family, table, chain string }

// Snapshot is the ruleset of one namespace at one time.
type Snapshot struct {
	nft    map[key]*Chain
	legacy map[key]*Chain
}

// NewSnapshot builds a snapshot from parsed chains.
func NewSnapshot(nft, legacy []*Chain) *Snapshot {
	s := &Snapshot{nft: map[key]*Chain{}, legacy: map[key]*Chain{}}
	for _, c := range nft {
		if IsOwnTable(c.Table) {
			c.Own = true
		}
		s.nft[key{c.Family, c.Table, c.Name}] = c
	}
	for _, c := range legacy {
		s.legacy[key{c.Family, c.Table, c.Name}] = c
	}
	return s
}

// NFT returns an nf_tables chain.
func (s *Snapshot) NFT(family, table, chain string) *Chain {
	return s.nft[key{family, table, chain}]
}

// Legacy returns an iptables-legacy chain (family "ip" or "ip6").
func (s *Snapshot) Legacy(family, table, chain string) *Chain {
	return s.legacy[key{family, table, chain}]
}

// LegacyTables lists the legacy tables in the snapshot.
func (s *Snapshot) LegacyTables() []string {
	seen := map[string]bool{}
	var out []string
	for k := range s.legacy {
		if !seen[k.table] {
			seen[k.table] = true
			out = append(out, k.table)
		}
	}
	return out
}

// attachIptables gives iptables-nft chains their iptables-save text where
// the chain's rules line up one to one.
func attachIptables(nft []*Chain, ipt []*Chain) {
	byKey := map[key]*Chain{}
	for _, c := range ipt {
		byKey[key{c.Family, c.Table, c.Name}] = c
	}
	for _, c := range nft {
		ic := byKey[key{c.Family, c.Table, c.Name}]
		if ic == nil || len(ic.Rules) != len(c.Rules) {
			continue
		}
		for i := range c.Rules {
			c.Rules[i].Text = ic.Rules[i].Text
			c.Rules[i].Target = ic.Rules[i].Target
			c.Rules[i].Goto = ic.Rules[i].Goto
		}
		c.Backend = BackendIptablesNFT
		c.Syntax = SyntaxIptables
	}
}

// Options says which rule sets to load.
type Options struct {
	NFT    bool
	Legacy bool
}

// Load snapshots the rule sets of a namespace with nft(8) and the
// iptables-save tools.
func Load(ns *netns.NS, o Options) (*Snapshot, error) {
	var nftChains, legacyChains []*Chain
	if o.NFT {
		out, err := ns.Output("nft", "-a", "-s", "list", "ruleset")
		if err != nil {
			return nil, err
		}
		nftChains, err = ParseNFT(string(out))
		if err != nil {
			return nil, err
		}
		for _, fam := range []struct{ family, tool string }{{"ip", "iptables-nft-save"}, {"ip6", "ip6tables-nft-save"}} {
			if !hasXtTables(nftChains, fam.family) {
				continue
			}
			if _, err := exec.LookPath(fam.tool); err != nil {
				continue // rules are shown in nft syntax
			}
			out, err := ns.Output(fam.tool)
			if err != nil {
				continue
			}
			ipt, err := ParseIptablesSave(string(out), fam.family, BackendIptablesNFT)
			if err == nil {
				attachIptables(nftChains, ipt)
			}
		}
	}
	if o.Legacy {
		out, err := ns.Output("iptables-legacy-save")
		if err != nil {
			return nil, err
		}
		legacyChains, err = ParseIptablesSave(string(out), "ip", BackendLegacy)
		if err != nil {
			return nil, err
		}
	}
	return NewSnapshot(nftChains, legacyChains), nil
}

var xtTables = map[string]bool{"filter": true, "nat": true, "mangle": true, "raw": true, "security": true}

func hasXtTables(chains []*Chain, family string) bool {
	for _, c := range chains {
		if c.Family == family && xtTables[c.Table] {
			return true
		}
	}
	return false
}
