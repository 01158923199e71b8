package ruleset

import (
	"bufio"
	"fmt"
	"strings"

	"github.com/nattrace/nattrace/event"
)

// ParseIptablesSave parses iptables-save output (without counters). family
// is "ip" or "ip6"; backend is BackendIptablesNFT or BackendLegacy.
func ParseIptablesSave(text, family, backend string) ([]*Chain, error) {
	var chains []*Chain
	byName := map[string]*Chain{}
	table := ""
	s := bufio.NewScanner(strings.NewReader(text))
	s.Buffer(nil, 64<<20)
	lineNo := 0
	for s.Scan() {
		lineNo++
		line := strings.TrimRight(s.Text(), " \r")
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "*"):
			table = line[1:]
			byName = map[string]*Chain{}
		case line == "COMMIT":
			table = ""
		case strings.HasPrefix(line, ":"):
			f := strings.Fields(line[1:])
			if len(f) < 2 || table == "" {
				return nil, fmt.Errorf("iptables-save line %d: bad chain line %q", lineNo, line)
			}
			if byName[f[0]] != nil {
				return nil, fmt.Errorf("iptables-save line %d: chain %s declared twice", lineNo, f[0])
			}
			c := &Chain{Family: family, Table: table, Name: f[0], Backend: backend, Syntax: SyntaxIptables}
			if f[1] != "-" {
				c.Policy = strings.ToLower(f[1])
				c.Base = true
				c.Hook = builtinHook(f[0])
				c.HookName = c.Hook.String()
				c.Priority = legacyPriority(table, f[0])
			}
			chains = append(chains, c)
			byName[f[0]] = c
		case strings.HasPrefix(line, "-A "):
			f := strings.Fields(line)
			if len(f) < 2 || table == "" {
				return nil, fmt.Errorf("iptables-save line %d: bad rule %q", lineNo, line)
			}
			c := byName[f[1]]
			if c == nil {
				return nil, fmt.Errorf("iptables-save line %d: rule for undeclared chain %q", lineNo, f[1])
			}
			r := Rule{Text: line}
			r.Target, r.Goto = ruleTarget(line)
			r.Own = strings.Contains(line, "--comment "+OwnCommentPrefix) || strings.Contains(line, `--comment "`+OwnCommentPrefix)
			c.Rules = append(c.Rules, r)
		default:
			return nil, fmt.Errorf("iptables-save line %d: unexpected %q", lineNo, line)
		}
	}
	for _, c := range chains {
		if isOwnChainName(c.Name) {
			c.Own = true
		}
	}
	return chains, s.Err()
}

// Tokens splits an iptables-save rule line into words, honouring the double
// quotes iptables-save puts around arguments with spaces.
func Tokens(line string) []string {
	var out []string
	var b strings.Builder
	inQuote, have := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\\' && inQuote && i+1 < len(line):
			i++
			b.WriteByte(line[i])
		case c == '"':
			inQuote = !inQuote
			have = true
		case c == ' ' && !inQuote:
			if have {
				out = append(out, b.String())
				b.Reset()
				have = false
			}
		default:
			b.WriteByte(c)
			have = true
		}
	}
	if have {
		out = append(out, b.String())
	}
	return out
}

// ruleTarget returns the -j or -g target of a rule.
func ruleTarget(line string) (target string, isGoto bool) {
	toks := Tokens(line)
	for i := 0; i+1 < len(toks); i++ {
		switch toks[i] {
		case "-j", "--jump":
			target, isGoto = toks[i+1], false
		case "-g", "--goto":
			target, isGoto = toks[i+1], true
		}
	}
	return
}

var legacyPriorities = map[string]int32{
	"raw": -300, "mangle": -150, "filter": 0, "security": 50,
}

func legacyPriority(table, chain string) int32 {
	if table == "nat" {
		switch chain {
		case "PREROUTING", "OUTPUT":
			return -100
		default:
			return 100
		}
	}
	return legacyPriorities[table]
}

func builtinHook(chain string) event.Hook { return event.ParseHook(chain) }
