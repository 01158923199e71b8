package filter

import "fmt"

// SyntaxError is a parse error at a position of the expression.
type SyntaxError struct {
	Expr   string // the whole expression
	Pos    int    // byte offset of the offending token (len(Expr) at the end)
	Token  string // the offending token, "" at the end of the expression
	Reason string // what was expected or what is wrong
}

func (e *SyntaxError) Error() string {
	if e.Token == "" {
		return fmt.Sprintf("bad filter at column %d (end of expression): %s", e.Pos+1, e.Reason)
	}
	return fmt.Sprintf("bad filter at column %d (%q): %s", e.Pos+1, e.Token, e.Reason)
}
