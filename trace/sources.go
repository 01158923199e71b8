package trace

import (
	"strings"
	"sync"
	"time"

	"github.com/nattrace/nattrace/event"
	"github.com/nattrace/nattrace/netns"
	"github.com/nattrace/nattrace/trace/legacy"
	"github.com/nattrace/nattrace/trace/nftrace"
	"github.com/nattrace/nattrace/trace/ruleset"
	"github.com/nattrace/nattrace/trace/selector"
)

// Source names.
const (
	SourceNFTrace = "nftrace"
	SourceLegacy  = "legacy"
)

// resolver turns raw events of one namespace into observations.
type resolver struct {
	ns      *netns.NS
	name    string
	id      string // session id
	links   *linkNames
	opts    ruleset.Options
	mu      sync.Mutex
	snap    *ruleset.Snapshot
	loaded  time.Time
	loadErr error
	// lastPos is the position of the last rule traced per packet and
	// chain: a kernel before 6.3 reports a rule's return verdict without
	// the rule's handle, and the rule is the first return rule after it.
	lastPos map[lastKey]int
}

type lastKey struct {
	id           uint32
	table, chain string
}

func newResolver(ns *netns.NS, id string, opts ruleset.Options) (*resolver, error) {
	r := &resolver{ns: ns, name: ns.Name, id: id, opts: opts, links: newLinkNames(ns)}
	snap, err := ruleset.Load(ns, opts)
	if err != nil {
		return nil, err
	}
	r.snap, r.loaded = snap, time.Now()
	return r, nil
}

// snapshot returns the rule snapshot; stale asks for a reload (a rule or
// chain was not found), done at most every 200 ms.
func (r *resolver) snapshot(stale bool) *ruleset.Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	if stale && time.Since(r.loaded) > 200*time.Millisecond {
		if s, err := ruleset.Load(r.ns, r.opts); err == nil {
			r.snap = s
		} else {
			r.loadErr = err
		}
		r.loaded = time.Now()
	}
	return r.snap
}

// installThenReload runs install (the selector) and reloads the snapshot
// before any event is resolved again: positions in chains nattrace inserts
// into must be computed against a snapshot that has nattrace's rule.
func (r *resolver) installThenReload(install func() error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := install(); err != nil {
		return err
	}
	s, err := ruleset.Load(r.ns, r.opts)
	if err != nil {
		return err
	}
	r.snap, r.loaded = s, time.Now()
	return nil
}

func hookOfSelection(iif uint32) event.Hook {
	if iif != 0 {
		return event.HookPrerouting
	}
	return event.HookOutput
}

// fromNFT converts an nf_tables trace event.
func (r *resolver) fromNFT(e *nftrace.Event, at time.Time) *event.Observation {
	o := &event.Observation{Source: SourceNFTrace, Netns: r.name, Time: at, TraceID: e.ID}
	if e.HasHeaders() {
		if h, err := event.DecodeIP(e.Network, e.Transport); err == nil {
			o.Header = h
		}
		o.IIF, o.OIF = r.links.name(e.IIF), r.links.name(e.OIF)
	}
	if e.CT.Present {
		o.CT = event.CT{ID: e.CT.ID, Direction: e.CT.Direction, Status: e.CT.Status, State: e.CT.State, Valid: true}
	}
	family := nftrace.FamilyName(e.Family)
	if ruleset.IsOwnTable(e.Table) {
		isSelect := e.Chain == selector.ChainSelect && e.Type == nftrace.TypeRule && e.Handle != 0 && e.Verdict.Code == nftrace.NFTContinue
		switch {
		case isSelect && e.Table == selector.TableName(r.id):
			o.Marker = true
			o.Hook = hookOfSelection(e.IIF)
			o.Priority = selector.SelectorPrio
			if e.CT.Present {
				o.Priority = selector.FollowPrio
			}
		case isSelect:
			o.Boundary = true
		default:
			o.Internal = true
			if selector.IsObserverChain(e.Chain) {
				o.Hook = event.ParseHook(strings.TrimSuffix(e.Chain, "_end"))
				o.Priority = selector.ObserverPrio
			}
		}
		return o
	}
	snap := r.snapshot(false)
	c := snap.NFT(family, e.Table, e.Chain)
	if c == nil || (e.Handle != 0 && !hasHandle(c, e.Handle)) {
		snap = r.snapshot(true)
		c = snap.NFT(family, e.Table, e.Chain)
	}
	s := event.Step{Family: family, Table: e.Table, Chain: e.Chain, Backend: ruleset.BackendNFT, Syntax: ruleset.SyntaxNFT,
		IIF: o.IIF, OIF: o.OIF}
	if c != nil {
		s.Backend, s.Syntax = c.Backend, c.Syntax
		if c.Base {
			o.BaseChain, o.Hook, o.Priority = true, c.Hook, c.Priority
			s.Hook = c.HookName
		}
	}
	switch e.Type {
	case nftrace.TypeRule:
		if e.Handle == 0 {
			// The chain ran out of rules.
			if c == nil || c.Base {
				o.Internal = true // a base chain: the policy event follows
				return o
			}
			s.Kind, s.Verdict = event.KindReturn, event.VerdictReturn
			s.Position = c.End()
			break
		}
		s.Kind, s.Handle = event.KindRule, e.Handle
		s.Verdict = e.Verdict.Name()
		if e.Verdict.Code == nftrace.NFTJump || e.Verdict.Code == nftrace.NFTGoto {
			s.Target = e.Verdict.Chain
		}
		if c != nil {
			if pos, rule := c.ByHandle(e.Handle); rule != nil {
				s.Position, s.Rule = pos, rule.Text
				r.notePos(e, pos)
			}
		}
	case nftrace.TypePolicy:
		s.Kind = event.KindPolicy
		s.Verdict = event.VerdictAccept
		if e.HasPolicy && e.Policy == uint32(nftrace.NFDrop) {
			s.Verdict = event.VerdictDrop
		}
		if c != nil {
			s.Rule, s.Position = c.PolicyText(), c.End()
		}
	case nftrace.TypeReturn:
		// Kernels before 6.3 (Debian's 6.1) send this, with no rule
		// handle, where later ones send a rule event: for a rule whose
		// verdict is return, and (verdict continue) at the end of a chain.
		if e.Verdict.Code == nftrace.NFTReturn && c != nil {
			if pos, rule := firstReturn(c, r.lastPosOf(e)); rule != nil {
				s.Kind, s.Verdict, s.Position, s.Rule, s.Handle = event.KindRule, event.VerdictReturn, pos, rule.Text, rule.Handle
				break
			}
		}
		if c != nil && c.Base {
			o.Internal = true // the policy event follows
			return o
		}
		s.Kind, s.Verdict = event.KindReturn, event.VerdictReturn
		if c != nil {
			s.Position = c.End()
		}
	default:
		o.Internal = true
	}
	o.Step = s
	return o
}

func (r *resolver) notePos(e *nftrace.Event, pos int) {
	if r.lastPos == nil || len(r.lastPos) > 4096 {
		r.lastPos = map[lastKey]int{}
	}
	r.lastPos[lastKey{e.ID, e.Table, e.Chain}] = pos
}

func (r *resolver) lastPosOf(e *nftrace.Event) int {
	return r.lastPos[lastKey{e.ID, e.Table, e.Chain}]
}

// firstReturn finds the first rule after position after whose verdict is
// return (iptables -j RETURN, nft return).
func firstReturn(c *ruleset.Chain, after int) (int, *ruleset.Rule) {
	pos := 0
	for i := range c.Rules {
		rule := &c.Rules[i]
		if rule.Own {
			continue
		}
		pos++
		if pos <= after {
			continue
		}
		f := strings.Fields(rule.Text)
		if rule.Target == "RETURN" || len(f) > 0 && f[len(f)-1] == "return" {
			return pos, rule
		}
	}
	return 0, nil
}

func hasHandle(c *ruleset.Chain, h uint64) bool {
	_, r := c.ByHandle(h)
	return r != nil
}

// fromLegacy converts an iptables-legacy TRACE line.
func (r *resolver) fromLegacy(l legacy.Line, at time.Time) *event.Observation {
	o := &event.Observation{Source: SourceLegacy, Netns: r.name, Time: at,
		IIF: r.links.name(l.InDev), OIF: r.links.name(l.OutDev)}
	if h, err := event.DecodeIP(l.Payload, nil); err == nil {
		o.Header = h
	}
	tr := l.Trace
	if strings.HasPrefix(tr.Chain, ruleset.OwnChainPrefix) {
		isSelect := strings.HasSuffix(tr.Chain, "-S") && tr.Kind == legacy.KindReturn
		switch {
		case isSelect && tr.Chain == selector.LegacyChain(r.id)+"-S":
			o.Marker = true
			o.Hook = hookOfSelection(l.InDev)
			o.Priority = -300
		case isSelect:
			o.Boundary = true
		default:
			o.Internal = true
		}
		return o
	}
	snap := r.snapshot(false)
	c := snap.Legacy("ip", tr.Table, tr.Chain)
	if c == nil || (tr.Kind == legacy.KindRule && tr.Position > len(c.Rules)) {
		snap = r.snapshot(true)
		c = snap.Legacy("ip", tr.Table, tr.Chain)
	}
	s := event.Step{Family: "ip", Table: tr.Table, Chain: tr.Chain, Backend: ruleset.BackendLegacy, Syntax: ruleset.SyntaxIptables,
		IIF: o.IIF, OIF: o.OIF}
	if c == nil {
		c = &ruleset.Chain{Name: tr.Chain, Table: tr.Table}
	}
	if c.Base {
		o.BaseChain, o.Hook, o.Priority = true, c.Hook, c.Priority
		s.Hook = c.HookName
	}
	pos, rule := c.ByPosition(tr.Position)
	s.Position = pos
	switch tr.Kind {
	case legacy.KindRule:
		if rule != nil && rule.Own {
			o.Internal = true // nattrace's own jump rule, seen by an already traced packet
			return o
		}
		s.Kind = event.KindRule
		if rule != nil {
			s.Rule = rule.Text
			s.Verdict, s.Target = legacyVerdict(rule, snap.Legacy("ip", tr.Table, rule.Target) != nil)
		} else {
			s.Verdict = event.VerdictContinue
		}
	case legacy.KindReturn:
		s.Kind, s.Verdict = event.KindReturn, event.VerdictReturn
	case legacy.KindPolicy:
		s.Kind = event.KindPolicy
		s.Verdict = c.Policy
		if s.Verdict == "" {
			s.Verdict = event.VerdictAccept
		}
		s.Rule = c.PolicyText()
	}
	o.Step = s
	return o
}

// legacyVerdict derives what an iptables rule did from its target: the
// TRACE line only says that it matched.
func legacyVerdict(r *ruleset.Rule, targetIsChain bool) (verdict, target string) {
	switch r.Target {
	case "":
		return event.VerdictContinue, ""
	case "ACCEPT":
		return event.VerdictAccept, ""
	case "DROP":
		return event.VerdictDrop, ""
	case "REJECT":
		return event.VerdictReject, ""
	case "RETURN":
		return event.VerdictReturn, ""
	case "QUEUE", "NFQUEUE":
		return event.VerdictQueue, ""
	case "DNAT", "SNAT", "MASQUERADE", "REDIRECT", "NETMAP", "TPROXY":
		return event.VerdictAccept, ""
	}
	if !targetIsChain {
		return event.VerdictContinue, "" // LOG, MARK, CT, ...: non-terminating extensions
	}
	if r.Goto {
		return event.VerdictGoto, r.Target
	}
	return event.VerdictJump, r.Target
}
