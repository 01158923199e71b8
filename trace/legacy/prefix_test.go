package legacy

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestParsePrefix(t *testing.T) {
	cases := []struct {
		in   string
		want Trace
	}{
		{"TRACE: raw:PREROUTING:policy:2 ", Trace{"raw", "PREROUTING", KindPolicy, 2}},
		{"TRACE: filter:INPUT:rule:1 ", Trace{"filter", "INPUT", KindRule, 1}},
		{"TRACE: filter:CHAIN-SUB:return:2 ", Trace{"filter", "CHAIN-SUB", KindReturn, 2}},
		{"TRACE: nat:KUBE-SVC-ABC:DEF:rule:7", Trace{"nat", "KUBE-SVC-ABC:DEF", KindRule, 7}},
	}
	for _, c := range cases {
		got, err := ParsePrefix(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParsePrefix(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "TRACE:", "TRACE: filter", "TRACE: filter:INPUT:rule:x", "TRACE: filter:INPUT:jump:1",
		"IN=eth0 OUT=", "TRACE: :INPUT:rule:1", "TRACE: filter::1", "TRACE: filter:rule:-1"} {
		if _, err := ParsePrefix(bad); err == nil {
			t.Errorf("ParsePrefix(%q): no error", bad)
		}
	}
}

// Lines captured in a namespace with seed 002's -j/-g example: INPUT -j
// CHAIN-PART, CHAIN-PART -j CHAIN-A, CHAIN-A -g CHAIN-SUB.
func TestParseCapturedGotoReturn(t *testing.T) {
	f, err := os.Open("testdata/goto_return.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		tr, err := ParsePrefix(strings.TrimSuffix(s.Text(), "|"))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s:%s:%s:%d", tr.Table, tr.Chain, tr.Kind, tr.Position))
	}
	want := "raw:PREROUTING:policy:2 filter:INPUT:rule:1 filter:CHAIN-PART:rule:1 filter:CHAIN-A:rule:1 " +
		"filter:CHAIN-SUB:rule:1 filter:CHAIN-SUB:return:2 filter:CHAIN-PART:rule:2 filter:CHAIN-PART:return:3 " +
		"filter:INPUT:rule:2 filter:INPUT:policy:3"
	if strings.Join(got, " ") != want {
		t.Errorf("got %s", strings.Join(got, " "))
	}
}

func FuzzParsePrefix(f *testing.F) {
	f.Add("TRACE: raw:PREROUTING:policy:2 ")
	f.Add("TRACE: nat:KUBE-SVC-ABC:DEF:rule:7")
	f.Fuzz(func(t *testing.T, s string) {
		tr, err := ParsePrefix(s)
		if err == nil && (tr.Table == "" || tr.Chain == "" || tr.Kind == 0 || tr.Position < 0) {
			t.Fatalf("%q parsed to %+v", s, tr)
		}
	})
}
