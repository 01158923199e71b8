package selector

import (
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/nattrace/nattrace/filter"
	"github.com/nattrace/nattrace/netns"
)

// NFT is the nf_tables selector of one namespace: table inet nattrace_<id>.
type NFT struct {
	ID    string
	NS    *netns.NS
	DNF   filter.DNF
	Rate  uint32 // packets per second
	Burst uint32
	// NotDNF is the DNF of "not FILTER". When Follow is set, packets that
	// match it but whose connection matches DNF are selected after
	// conntrack (see ctfollow.go).
	NotDNF filter.DNF
	Follow bool

	conn  *nftables.Conn
	table *nftables.Table
	sel   *nftables.Chain
}

// Install creates the table in one batch: either all of it exists
// afterwards or nothing does. The table is owned by this process's netlink
// socket, so the kernel deletes it if the process dies without cleaning up.
func (s *NFT) Install() error {
	fd, err := s.NS.Open()
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", s.NS, err)
	}
	defer unix.Close(fd)
	var sock *netlink.Conn
	c, err := nftables.New(nftables.WithNetNSFd(fd), nftables.AsLasting(),
		nftables.WithSockOptions(func(nc *netlink.Conn) error { sock = nc; return nil }))
	if err != nil {
		return fmt.Errorf("nf_tables in %s: %w", s.NS, err)
	}
	s.conn = c
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName(s.ID)}
	if err := createOwnedTable(sock, byte(t.Family), t.Name); err != nil {
		c.CloseLasting()
		s.conn = nil
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("table inet %s already exists in %s", t.Name, s.NS)
		}
		return fmt.Errorf("create table inet %s in %s: %w", t.Name, s.NS, err)
	}
	s.table = t
	sel := c.AddChain(&nftables.Chain{Name: ChainSelect, Table: t})
	s.sel = sel
	accept := nftables.ChainPolicyAccept
	base := func(name string, hook *nftables.ChainHook, prio int32) *nftables.Chain {
		return c.AddChain(&nftables.Chain{Name: name, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: hook, Priority: nftables.ChainPriorityRef(nftables.ChainPriority(prio)), Policy: &accept})
	}
	pre := base(ChainPre, nftables.ChainHookPrerouting, SelectorPrio)
	out := base(ChainOut, nftables.ChainHookOutput, SelectorPrio)
	if s.Follow {
		base(ChainPreCT, nftables.ChainHookPrerouting, FollowPrio)
		base(ChainOutCT, nftables.ChainHookOutput, FollowPrio)
		c.AddChain(&nftables.Chain{Name: ChainFollow, Table: t})
	}
	base(ChainInput, nftables.ChainHookInput, ObserverPrio)
	base(ChainForward, nftables.ChainHookForward, ObserverPrio)
	base(ChainPost, nftables.ChainHookPostrouting, ObserverPrio)

	// select: over the rate -> count and return; otherwise count and trace.
	burst := s.Burst
	if burst == 0 {
		burst = s.Rate
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: sel, Exprs: []expr.Any{
		&expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(s.Rate), Over: true, Unit: expr.LimitTimeSecond, Burst: burst},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictReturn},
	}})
	c.AddRule(&nftables.Rule{Table: t, Chain: sel, Exprs: []expr.Any{
		&expr.Counter{},
		&expr.Immediate{Register: 1, Data: []byte{1}},
		&expr.Meta{Key: expr.MetaKeyNFTRACE, SourceRegister: true, Register: 1},
	}})
	for _, cl := range s.DNF {
		for _, ex := range nftClause(cl) {
			for _, ch := range []*nftables.Chain{pre, out} {
				rule := append(append([]expr.Any{}, ex...), &expr.Verdict{Kind: expr.VerdictGoto, Chain: ChainSelect})
				c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: rule})
			}
		}
	}
	if err := c.Flush(); err != nil {
		c.CloseLasting()
		s.conn = nil
		return fmt.Errorf("install nft selector in %s: %w", s.NS, err)
	}
	if s.Follow {
		fam := byte(t.Family)
		guard, follow := followRules(fam, s.DNF, s.NotDNF)
		err := sendRules(sock, fam, t.Name, map[string][]rawRule{ChainPreCT: guard, ChainOutCT: guard, ChainFollow: follow})
		if err != nil {
			c.CloseLasting() // the kernel deletes the owned table
			s.conn = nil
			return fmt.Errorf("install flow-following rules in %s: %w", s.NS, err)
		}
	}
	return nil
}

// Counters returns how many packets matched the filter rules and how many of
// those the rate limit left untraced.
func (s *NFT) Counters() (selected, limited uint64, err error) {
	if s.conn == nil {
		return 0, 0, errors.New("selector not installed")
	}
	rules, err := s.conn.GetRules(s.table, s.sel)
	if err != nil {
		return 0, 0, err
	}
	var traced uint64
	for _, r := range rules {
		var cnt *expr.Counter
		over := false
		for _, e := range r.Exprs {
			switch e := e.(type) {
			case *expr.Counter:
				cnt = e
			case *expr.Limit:
				over = e.Over
			}
		}
		if cnt == nil {
			continue
		}
		if over {
			limited = cnt.Packets
		} else {
			traced = cnt.Packets
		}
	}
	return traced + limited, limited, nil
}

// Remove deletes the table and closes the owning socket.
func (s *NFT) Remove() error {
	if s.conn == nil {
		return nil
	}
	s.conn.DelTable(s.table)
	err := s.conn.Flush()
	if errors.Is(err, unix.ENOENT) {
		err = nil
	}
	s.conn.CloseLasting()
	s.conn = nil
	return err
}

// RemoveTable deletes a session's table from a namespace (cleanup after a
// session died; the kernel usually did it already for owned tables).
func RemoveTable(ns *netns.NS, id string) (bool, error) {
	fd, err := ns.Open()
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		return false, err
	}
	t, err := c.ListTableOfFamily(TableName(id), nftables.TableFamilyINet)
	if err != nil || t == nil {
		return false, nil
	}
	c.DelTable(t)
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return false, err
	}
	return true, nil
}
