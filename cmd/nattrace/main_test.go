package main_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nattrace/nattrace/event"
	"github.com/nattrace/nattrace/lab"
	"github.com/nattrace/nattrace/lab/labtest"
)

var binDir string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "nattrace-test-bin")
	if err != nil {
		panic(err)
	}
	os.Chmod(d, 0o755) // the unprivileged test runs the binary as nobody
	binDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

func binary(t *testing.T) string {
	t.Helper()
	labtest.RequirePrivileged(t)
	return labtest.Binary(t, binDir)
}

// backendCase is one way to write the same ruleset.
type backendCase struct {
	name    string
	legacy  bool   // iptables-legacy-restore instead of iptables-nft-restore
	nft     string // native nft ruleset instead of iptables
	backend string // expected Step.Backend
	flags   []string
}

func load(t *testing.T, l *lab.Lab, host string, b backendCase, iptables string) {
	t.Helper()
	var err error
	if b.nft != "" {
		err = l.NFT(host, b.nft)
	} else {
		err = l.Iptables(host, b.legacy, iptables)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// dnatLab is client — router — server with dnatRules on the router
// (iptables-nft) and a TCP server on :8080 for the test's lifetime.
func dnatLab(t *testing.T) *lab.Lab {
	t.Helper()
	l := labtest.ClientRouterServer(t)
	load(t, l, "router", iptNFT, dnatRules)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	l.ListenTCP(ctx, "server", ":8080")
	return l
}

func findStep(p *event.Packet, table, chain string) (int, *event.Step) {
	for i := range p.Steps {
		if p.Steps[i].Table == table && p.Steps[i].Chain == chain && p.Steps[i].Kind == event.KindRule {
			return i, &p.Steps[i]
		}
	}
	return -1, nil
}

var countersRE = regexp.MustCompile(`\[\d+:\d+\]`)

// hostState is what a session may change in a namespace: nft ruleset,
// iptables-legacy ruleset (without counters) and the nf_log binding.
func hostState(t *testing.T, l *lab.Lab, hosts ...string) string {
	t.Helper()
	var b strings.Builder
	for _, h := range hosts {
		nftOut, err := l.Exec(h, "nft", "list", "ruleset")
		if err != nil {
			t.Fatal(err)
		}
		leg, _ := l.Exec(h, "iptables-legacy-save")
		var keep []string
		for _, line := range strings.Split(leg, "\n") {
			if !strings.HasPrefix(line, "#") {
				keep = append(keep, countersRE.ReplaceAllString(line, ""))
			}
		}
		nflog, err := l.NS(h).ReadSysctl("net.netfilter.nf_log.2")
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "== %s\n%s\n-- legacy\n%s\n-- nf_log.2=%s\n", h, nftOut, strings.Join(keep, "\n"), nflog)
	}
	return b.String()
}

func stateFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	return m
}
