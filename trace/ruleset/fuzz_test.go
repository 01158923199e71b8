package ruleset

import (
	"os"
	"testing"
)

func FuzzParseNFT(f *testing.F) {
	b, _ := os.ReadFile("testdata/router.nft")
	f.Add(string(b))
	f.Add("table ip t {\n chain c { # handle 1\n type filter hook input priority 0; policy accept;\n accept # handle 2\n }\n}\n")
	f.Fuzz(func(t *testing.T, s string) {
		chains, err := ParseNFT(s)
		if err != nil {
			return
		}
		snap := NewSnapshot(chains, nil)
		for _, c := range chains {
			for _, r := range c.Rules {
				if pos, got := snap.NFT(c.Family, c.Table, c.Name).ByHandle(r.Handle); pos < 1 || got == nil {
					t.Fatalf("handle %d of %s not found", r.Handle, c.Name)
				}
			}
		}
	})
}

func FuzzParseIptablesSave(f *testing.F) {
	b, _ := os.ReadFile("testdata/legacy.iptables")
	f.Add(string(b))
	b, _ = os.ReadFile("testdata/router.iptables-nft")
	f.Add(string(b))
	f.Fuzz(func(t *testing.T, s string) {
		chains, err := ParseIptablesSave(s, "ip", BackendLegacy)
		if err != nil {
			return
		}
		for _, c := range chains {
			for i := range c.Rules {
				if pos, r := c.ByPosition(i + 1); r == nil || pos < 1 {
					t.Fatalf("position %d of %s", i+1, c.Name)
				}
			}
			_, _ = c.ByPosition(len(c.Rules) + 1)
		}
	})
}
