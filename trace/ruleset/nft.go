package ruleset

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"

	"github.com/nattrace/nattrace/event"
)

// ParseNFT parses the output of "nft -a -s list ruleset".
func ParseNFT(text string) ([]*Chain, error) {
	var chains []*Chain
	var family, table string
	var cur *Chain
	seen := map[key]bool{}
	depth := 0   // brace depth
	skipTo := -1 // skipping a set/map/flowtable/object block until depth drops to this
	s := bufio.NewScanner(strings.NewReader(text))
	s.Buffer(nil, 16<<20)
	lineNo := 0
	for s.Scan() {
		lineNo++
		line := strings.TrimSpace(s.Text())
		opens, closes := braces(line)
		if skipTo >= 0 {
			depth += opens - closes
			if depth <= skipTo {
				skipTo = -1
			}
			continue
		}
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case depth == 0 && strings.HasPrefix(line, "table "):
			f := strings.Fields(strings.TrimSuffix(stripHandle(line), "{"))
			if len(f) < 3 {
				return nil, fmt.Errorf("nft ruleset line %d: bad table line %q", lineNo, line)
			}
			family, table = f[1], unquote(f[2])
		case depth == 1 && strings.HasPrefix(line, "chain "):
			f := strings.Fields(strings.TrimSuffix(stripHandle(line), "{"))
			if len(f) < 2 {
				return nil, fmt.Errorf("nft ruleset line %d: bad chain line %q", lineNo, line)
			}
			cur = &Chain{Family: family, Table: table, Name: unquote(f[1]), Backend: BackendNFT, Syntax: SyntaxNFT}
			k := key{family, table, cur.Name}
			if seen[k] {
				return nil, fmt.Errorf("nft ruleset line %d: chain %s %s %s listed twice", lineNo, family, table, cur.Name)
			}
			seen[k] = true
			chains = append(chains, cur)
		case depth == 1 && opens > closes:
			// set, map, flowtable, counter, quota, ct helper ... blocks
			skipTo = depth
		case depth == 2 && cur != nil && strings.HasPrefix(line, "type ") && strings.Contains(line, " hook "):
			parseChainType(cur, line)
		case depth == 2 && cur != nil && strings.HasPrefix(line, "policy "):
			cur.Policy = strings.TrimSuffix(strings.TrimPrefix(line, "policy "), ";")
		case depth == 2 && cur != nil && line == "}":
		case depth == 2 && cur != nil && (strings.HasPrefix(line, "comment ") || strings.HasPrefix(line, "devices ")):
		case depth == 2 && cur != nil:
			text, handle := splitHandle(line)
			if handle == 0 {
				return nil, fmt.Errorf("nft ruleset line %d: rule without handle (run nft with -a)", lineNo)
			}
			cur.Rules = append(cur.Rules, Rule{Handle: handle, Text: text})
		}
		depth += opens - closes
		if depth < 0 {
			return nil, fmt.Errorf("nft ruleset line %d: unbalanced '}'", lineNo)
		}
		if depth <= 1 {
			if depth == 0 {
				family, table = "", ""
			}
			if depth <= 1 && closes > 0 {
				cur = nil
			}
		}
	}
	return chains, s.Err()
}

// braces counts braces outside double-quoted strings.
func braces(line string) (opens, closes int) {
	inQuote := false
	for i := 0; i < len(line); i++ {
		switch line[i] {
		case '\\':
			i++
		case '"':
			inQuote = !inQuote
		case '{':
			if !inQuote {
				opens++
			}
		case '}':
			if !inQuote {
				closes++
			}
		}
	}
	return
}

func stripHandle(line string) string {
	t, _ := splitHandle(line)
	return strings.TrimSpace(t)
}

// splitHandle splits "... # handle 12" into the text and the handle.
func splitHandle(line string) (string, uint64) {
	i := strings.LastIndex(line, " # handle ")
	if i < 0 {
		return line, 0
	}
	h, err := strconv.ParseUint(strings.TrimSpace(line[i+len(" # handle "):]), 10, 64)
	if err != nil {
		return line, 0
	}
	return strings.TrimSpace(line[:i]), h
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

// parseChainType parses "type filter hook forward priority filter + 10; policy accept;".
func parseChainType(c *Chain, line string) {
	for _, part := range strings.Split(line, ";") {
		part = strings.TrimSpace(part)
		switch {
		case strings.HasPrefix(part, "type "):
			f := strings.Fields(part)
			if len(f) >= 2 {
				c.Type = f[1]
			}
			for i := 0; i+1 < len(f); i++ {
				switch f[i] {
				case "hook":
					c.HookName = f[i+1]
					c.Hook = event.ParseHook(f[i+1])
				case "priority":
					c.Priority = parsePriority(c.Family, strings.Join(f[i+1:], " "))
				}
			}
		case strings.HasPrefix(part, "policy "):
			c.Policy = strings.TrimPrefix(part, "policy ")
		}
	}
	c.Base = true
}

var namedPriorities = map[string]int32{
	"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100,
}

var bridgePriorities = map[string]int32{
	"dstnat": -300, "filter": -200, "out": 100, "srcnat": 300,
}

// parsePriority parses "-350", "filter", "dstnat - 5", "filter + 10".
func parsePriority(family, s string) int32 {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0
	}
	var base int32
	if v, err := strconv.ParseInt(f[0], 10, 32); err == nil {
		base = int32(v)
	} else {
		names := namedPriorities
		if family == "bridge" {
			names = bridgePriorities
		}
		base = names[f[0]]
	}
	if len(f) == 3 {
		off, err := strconv.ParseInt(f[2], 10, 32)
		if err == nil {
			if f[1] == "-" {
				off = -off
			}
			base += int32(off)
		}
	}
	return base
}
