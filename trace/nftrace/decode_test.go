package nftrace

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
)

func readFixture(t testing.TB, name string) [][]byte {
	f, err := os.Open("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]byte
	s := bufio.NewScanner(f)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" {
			continue
		}
		b, err := hex.DecodeString(line)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func summary(e *Event) string {
	v := e.Verdict.Name()
	if e.Type == TypePolicy {
		v = fmt.Sprintf("policy=%d", e.Policy)
	}
	if e.Verdict.Chain != "" {
		v += ":" + e.Verdict.Chain
	}
	return fmt.Sprintf("%s %s %s/%s #%d %s", e.Type, FamilyName(e.Family), e.Table, e.Chain, e.Handle, v)
}

// Captured in a router namespace: a TCP SYN to 10.200.1.1:80, DNAT to
// 10.200.2.2:8080 by iptables-nft, accepted in filter FORWARD.
func TestDecodeDNATForward(t *testing.T) {
	msgs := readFixture(t, "dnat_forward.hex")
	want := []string{
		"rule inet nattrace_t1/sel #5 continue",
		"rule inet nattrace_t1/sel #0 continue",
		"policy inet nattrace_t1/pre #0 policy=1",
		"rule ip nat/PREROUTING #2 accept",
		"rule ip filter/FORWARD #2 accept",
	}
	var first []*Event
	for i, m := range msgs[:len(want)] {
		e, err := Decode(m)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if got := summary(e); got != want[i] {
			t.Errorf("message %d: %q, want %q", i, got, want[i])
		}
		first = append(first, e)
	}
	sel, nat, fwd := first[0], first[3], first[4]
	if !sel.HasHeaders() || sel.IIF == 0 || sel.CT.Present {
		t.Errorf("selector event: headers %v iif %d ct %+v", sel.HasHeaders(), sel.IIF, sel.CT)
	}
	if first[1].HasHeaders() || first[2].HasHeaders() {
		t.Error("only the first event of a chain carries headers")
	}
	if sel.ID != nat.ID || nat.ID != fwd.ID {
		t.Error("one packet, one trace id")
	}
	// conntrack: NEW (state bit 8), id shared by the base chains.
	if !nat.CT.Present || nat.CT.State != 8 || nat.CT.ID == 0 || fwd.CT.ID != nat.CT.ID {
		t.Errorf("ct: nat %+v forward %+v", nat.CT, fwd.CT)
	}
	// FORWARD has the output interface; the headers there are after DNAT.
	if fwd.OIF == 0 || fwd.IIF != sel.IIF {
		t.Errorf("forward iif %d oif %d", fwd.IIF, fwd.OIF)
	}
	if fwd.Network[16] != 10 || fwd.Network[19] != 2 || fwd.Transport[2] != 0x1f || fwd.Transport[3] != 0x90 {
		t.Errorf("forward headers are not post-DNAT 10.200.2.2:8080: % x / % x", fwd.Network[12:20], fwd.Transport[:4])
	}
}

// A jump to a chain ending in an explicit return, a counter rule, and the
// base chain's fall-through and policy.
func TestDecodeJumpReturn(t *testing.T) {
	msgs := readFixture(t, "forward_jump_goto_drop.hex")
	var got []string
	for _, m := range msgs {
		e, err := Decode(m)
		if err != nil {
			t.Fatal(err)
		}
		if e.Table == "fw" {
			got = append(got, summary(e))
		}
		if len(got) == 5 {
			break
		}
	}
	want := []string{
		"rule inet fw/fwdchk #7 jump:sub",
		"rule inet fw/sub #5 return",
		"rule inet fw/fwdchk #9 continue",
		"rule inet fw/fwdchk #0 continue",
		"policy inet fw/fwdchk #0 policy=1",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, b := range [][]byte{nil, {2, 0, 0}, {2, 0, 0, 0}, {2, 0, 0, 0, 8, 0, 1, 0}} {
		if _, err := Decode(b); err == nil {
			t.Errorf("% x: no error", b)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, name := range []string{"dnat_forward.hex", "forward_jump_goto_drop.hex"} {
		for _, m := range readFixture(f, name) {
			f.Add(m)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err == nil {
			_ = e.Verdict.Name()
			_ = e.HasHeaders()
		}
	})
}
