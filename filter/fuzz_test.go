package filter

import (
	"math/rand/v2"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, e := range exprs {
		f.Add(e)
	}
	f.Add("port 80 or 443 and not host 10.0.0.1")
	f.Add("(((tcp)))")
	f.Add("net 10.0.0.0 mask 255.255.0.0")
	f.Fuzz(func(t *testing.T, expr string) {
		n, err := Parse(expr)
		if err != nil {
			if se, ok := err.(*SyntaxError); !ok || se.Pos < 0 || se.Pos > len(expr) {
				t.Fatalf("bad error for %q: %v", expr, err)
			}
			return
		}
		if n == nil {
			return
		}
		n2, err := Parse(n.String())
		if err != nil || n2.String() != n.String() {
			t.Fatalf("%q printed as %q does not parse back: %v", expr, n.String(), err)
		}
		d, _ := ToDNF(n)
		r := rand.New(rand.NewPCG(uint64(len(expr)), 7))
		for range 200 {
			fl := randFields(r)
			if Match(n, fl) && !MatchDNF(d, fl) {
				t.Fatalf("%q: DNF %v misses %+v", expr, d, fl)
			}
		}
	})
}
