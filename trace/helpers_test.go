package trace

import "github.com/nattrace/nattrace/trace/ruleset"

type rulesetRule struct {
	Target string
	Goto   bool
}

func (r rulesetRule) rule() *ruleset.Rule { return &ruleset.Rule{Target: r.Target, Goto: r.Goto} }
