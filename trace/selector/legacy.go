package selector

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"

	"github.com/nattrace/nattrace/filter"
	"github.com/nattrace/nattrace/netns"
	"github.com/nattrace/nattrace/trace/ruleset"
)

// Legacy is the iptables-legacy selector of one namespace:
//
//	-I PREROUTING 1 -m comment --comment nattrace:<id> -j NATTRACE-<id>   (raw table; and OUTPUT)
//	-A NATTRACE-<id> <clause> -g NATTRACE-<id>-S                         (one per DNF clause)
//	-A NATTRACE-<id>-S -m comment --comment nattrace:<id>                 (counts selected packets)
//	-A NATTRACE-<id>-S -m limit --limit R/sec --limit-burst B -j TRACE    (counts traced packets)
//
// It changes nothing else: one inserted rule per hook, two own chains.
type Legacy struct {
	ID    string
	NS    *netns.NS
	DNF   filter.DNF
	Rate  uint32
	Burst uint32

	// Exact is false when iptables could not express the filter exactly
	// and the selection is broader (the post-filter keeps the output exact).
	Exact bool
	// IPv6Untraced is true when the filter can match IPv6 packets, which
	// the IPv4 legacy selector does not trace.
	IPv6Untraced bool

	installed bool
}

// MaxLegacyRate is the highest rate the xt limit match accepts.
const MaxLegacyRate = 10000

func (s *Legacy) chain() string    { return LegacyChain(s.ID) }
func (s *Legacy) selChain() string { return LegacyChain(s.ID) + "-S" }

// Script returns the iptables-restore --noflush input that installs the
// selector.
func (s *Legacy) Script() string {
	s.Exact = true
	s.IPv6Untraced = false
	var b strings.Builder
	b.WriteString("*raw\n")
	fmt.Fprintf(&b, ":%s - [0:0]\n:%s - [0:0]\n", s.chain(), s.selChain())
	for _, cl := range s.DNF {
		rules, exact := iptClause(cl)
		if !exact {
			s.Exact = false
		}
		if clauseCanBeIPv6(cl) {
			s.IPv6Untraced = true
		}
		for _, args := range rules {
			fmt.Fprintf(&b, "-A %s %s -g %s\n", s.chain(), quoteArgs(args), s.selChain())
		}
	}
	burst := s.Burst
	if burst == 0 {
		burst = s.Rate
	}
	fmt.Fprintf(&b, "-A %s -m comment --comment %s\n", s.selChain(), Comment(s.ID))
	fmt.Fprintf(&b, "-A %s -m limit --limit %d/sec --limit-burst %d -j TRACE\n", s.selChain(), s.Rate, burst)
	for _, hook := range []string{"PREROUTING", "OUTPUT"} {
		fmt.Fprintf(&b, "-I %s 1 -m comment --comment %s -j %s\n", hook, Comment(s.ID), s.chain())
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

func clauseCanBeIPv6(c filter.Clause) bool {
	for _, l := range c {
		if (l.Kind == filter.LitFamily && !l.Neg && l.Family == 4) || (l.Kind == filter.LitFamily && l.Neg && l.Family == 6) ||
			(l.Kind == filter.LitAddr && !l.Neg && l.Prefix.Addr().Is4()) || (l.Kind == filter.LitProto && !l.Neg && len(l.Protos) == 1 && l.Protos[0] == filter.ProtoICMP) {
			return false
		}
	}
	return true
}

func quoteArgs(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " \"") {
			a = strconv.Quote(a)
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

// Install applies the script atomically (one raw table replacement).
func (s *Legacy) Install() error {
	if s.Rate > MaxLegacyRate {
		return fmt.Errorf("--rate %d is above %d/s, the most iptables' limit match accepts", s.Rate, MaxLegacyRate)
	}
	cmd := s.NS.Command("iptables-legacy-restore", "-w", "5", "--noflush")
	cmd.Stdin = strings.NewReader(s.Script())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("install iptables-legacy TRACE rules in %s: %s", s.NS, firstLine(strings.TrimSpace(string(out)), err))
	}
	s.installed = true
	return nil
}

func firstLine(s string, err error) string {
	if s == "" {
		return err.Error()
	}
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// Counters reads the packet counters of the selection chain.
func (s *Legacy) Counters() (selected, limited uint64, err error) {
	out, err := s.NS.Output("iptables-legacy-save", "-c", "-t", "raw")
	if err != nil {
		return 0, 0, err
	}
	var traced uint64
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "[") {
			continue
		}
		end := strings.IndexByte(line, ']')
		if end < 0 || !strings.Contains(line, "-A "+s.selChain()+" ") {
			continue
		}
		pk, _, _ := strings.Cut(line[1:end], ":")
		n, _ := strconv.ParseUint(pk, 10, 64)
		if strings.Contains(line, "-j TRACE") {
			traced = n
		} else {
			selected = n
		}
	}
	if selected < traced {
		selected = traced
	}
	return selected, selected - traced, nil
}

// Remove deletes the selector.
func (s *Legacy) Remove() error {
	if !s.installed {
		return nil
	}
	_, err := RemoveLegacy(s.NS, s.ID)
	if err == nil {
		s.installed = false
	}
	return err
}

// RemoveLegacy deletes whatever part of a session's legacy selector exists
// in a namespace, in one atomic restore. It reports whether anything was
// found.
func RemoveLegacy(ns *netns.NS, id string) (bool, error) {
	out, err := ns.Output("iptables-legacy-save", "-t", "raw")
	if err != nil {
		// No raw table (module not loaded, table never created): nothing to do.
		if strings.Contains(err.Error(), "Table does not exist") || strings.Contains(err.Error(), "can't initialize") {
			return false, nil
		}
		return false, err
	}
	chains, err := ruleset.ParseIptablesSave(string(out), "ip", ruleset.BackendLegacy)
	if err != nil {
		return false, err
	}
	chain, sel, comment := LegacyChain(id), LegacyChain(id)+"-S", Comment(id)
	var b strings.Builder
	b.WriteString("*raw\n")
	found := false
	var flushes []string
	for _, c := range chains {
		if c.Name == chain || c.Name == sel {
			flushes = append(flushes, c.Name)
			found = true
			continue
		}
		for _, r := range c.Rules {
			toks := ruleset.Tokens(r.Text)
			if ownedBy(toks, comment, chain) {
				// "-A CHAIN args" -> "-D CHAIN args"
				fmt.Fprintf(&b, "-D %s\n", strings.TrimPrefix(r.Text, "-A "))
				found = true
			}
		}
	}
	for _, c := range flushes {
		fmt.Fprintf(&b, "-F %s\n", c)
	}
	for _, c := range flushes {
		fmt.Fprintf(&b, "-X %s\n", c)
	}
	b.WriteString("COMMIT\n")
	if !found {
		return false, nil
	}
	cmd := ns.Command("iptables-legacy-restore", "-w", "5", "--noflush")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return true, fmt.Errorf("remove iptables-legacy TRACE rules in %s: %s", ns, firstLine(strings.TrimSpace(string(out)), err))
	}
	return true, nil
}

func ownedBy(toks []string, comment, chain string) bool {
	hasComment, jumps := false, false
	for i, t := range toks {
		if t == "--comment" && i+1 < len(toks) && toks[i+1] == comment {
			hasComment = true
		}
		if (t == "-j" || t == "-g") && i+1 < len(toks) && toks[i+1] == chain {
			jumps = true
		}
	}
	return hasComment || jumps
}
