package trace

import (
	"errors"
	"fmt"

	"github.com/nattrace/nattrace/netns"
	"github.com/nattrace/nattrace/trace/selector"
	"github.com/nattrace/nattrace/trace/state"
)

// undo reverts one recorded change; a change that is no longer there (or
// whose namespace is gone) is not an error. ns may be nil: it is then
// found by inode.
func undo(id string, c state.Change, ns *netns.NS) (string, error) {
	if c.Kind == "" {
		return "", nil
	}
	if ns == nil {
		var ok bool
		ns, ok = netns.FindByInode(c.NetnsInode)
		if !ok {
			return fmt.Sprintf("%s in %s: namespace is gone", c.Kind, c.NetnsName), nil
		}
	}
	switch c.Kind {
	case state.KindNFTTable:
		found, err := selector.RemoveTable(ns, id)
		if found {
			return fmt.Sprintf("removed table inet %s in %s", selector.TableName(id), ns), err
		}
		return "", err
	case state.KindLegacyRules:
		found, err := selector.RemoveLegacy(ns, id)
		if found {
			return fmt.Sprintf("removed iptables-legacy TRACE rules %s in %s", selector.Comment(id), ns), err
		}
		return "", err
	case state.KindSysctl:
		cur, err := ns.ReadSysctl(c.Sysctl)
		if err != nil {
			return "", err
		}
		if cur != c.New {
			return "", nil // changed by someone else since: leave it
		}
		if err := ns.WriteSysctl(c.Sysctl, c.Old); err != nil {
			return "", err
		}
		return fmt.Sprintf("restored %s=%s in %s", c.Sysctl, c.Old, ns), nil
	}
	return "", fmt.Errorf("unknown change kind %q", c.Kind)
}

// CleanupReport says what a cleanup did.
type CleanupReport struct {
	Removed []string // one line per undone change
	Live    []state.Session
	Errors  []error
}

// CleanupStale undoes what dead sessions left behind and removes their state
// files. Live sessions are never touched.
func CleanupStale(dir string) CleanupReport {
	var rep CleanupReport
	sessions, err := state.List(dir)
	if err != nil {
		rep.Errors = append(rep.Errors, err)
		return rep
	}
	for _, s := range sessions {
		if s.Alive() {
			rep.Live = append(rep.Live, s)
			continue
		}
		var errs []error
		for i := len(s.Changes) - 1; i >= 0; i-- {
			msg, err := undo(s.ID, s.Changes[i], nil)
			if msg != "" {
				rep.Removed = append(rep.Removed, fmt.Sprintf("session %s (pid %d): %s", s.ID, s.PID, msg))
			}
			if err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) == 0 {
			if err := state.RemoveFile(dir, s.ID); err != nil {
				errs = append(errs, err)
			}
		}
		rep.Errors = append(rep.Errors, errs...)
	}
	return rep
}

// Err joins the report's errors.
func (r CleanupReport) Err() error { return errors.Join(r.Errors...) }
