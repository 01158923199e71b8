package legacy

import (
	"errors"
	"strconv"
	"strings"
)

// Kind is what a TRACE line reports.
type Kind uint8

const (
	KindRule   Kind = iota + 1 // a rule at Position matched
	KindReturn                 // the end of a user chain was reached (implicit return)
	KindPolicy                 // the end of a built-in chain: its policy applies
)

func (k Kind) String() string {
	switch k {
	case KindRule:
		return "rule"
	case KindReturn:
		return "return"
	case KindPolicy:
		return "policy"
	}
	return "unknown"
}

// Trace is a parsed TRACE prefix.
type Trace struct {
	Table    string
	Chain    string
	Kind     Kind
	Position int // 1-based rule number in the chain as the kernel counts it
}

// ErrNotTrace is returned for an nflog prefix that is not a TRACE line.
var ErrNotTrace = errors.New("not a TRACE prefix")

const tracePrefix = "TRACE: "

// ParsePrefix parses "TRACE: raw:PREROUTING:rule:1 ". Chain names may
// contain ':'; table names, kinds and positions do not.
func ParsePrefix(s string) (Trace, error) {
	if !strings.HasPrefix(s, tracePrefix) {
		return Trace{}, ErrNotTrace
	}
	s = strings.TrimRight(s[len(tracePrefix):], " \x00")
	table, rest, ok := strings.Cut(s, ":")
	if !ok || table == "" {
		return Trace{}, errors.New("TRACE prefix without table")
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return Trace{}, errors.New("TRACE prefix without position")
	}
	pos, err := strconv.Atoi(rest[i+1:])
	if err != nil || pos < 0 {
		return Trace{}, errors.New("TRACE prefix with a bad position")
	}
	rest = rest[:i]
	j := strings.LastIndexByte(rest, ':')
	if j <= 0 {
		return Trace{}, errors.New("TRACE prefix without chain")
	}
	t := Trace{Table: table, Chain: rest[:j], Position: pos}
	switch rest[j+1:] {
	case "rule":
		t.Kind = KindRule
	case "return":
		t.Kind = KindReturn
	case "policy":
		t.Kind = KindPolicy
	default:
		return Trace{}, errors.New("TRACE prefix with an unknown kind " + strconv.Quote(rest[j+1:]))
	}
	return t, nil
}
