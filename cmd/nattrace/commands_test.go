package main_test

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/nattrace/nattrace/lab/labtest"
)

// make demo runs this: the lab, the trace, the cleanup.
func TestDemo(t *testing.T) {
	bin := binary(t)
	labtest.RequireCommand(t, "ip", "nft", "iptables-nft-restore", "nsenter")
	out, err := exec.Command(bin, "demo").CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{
		"rule 1: -A PREROUTING -d 10.200.1.1/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.200.2.2:8080  => accept",
		"=> forwarded out of r1",
		"=> DROPPED by filter/FORWARD rule 2: -A FORWARD -p tcp -m tcp --dport 22 -j DROP",
		`client got "hello from server" through the port forward`,
		"lab removed",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q:\n%s", want, s)
		}
	}
	prefix := regexp.MustCompile(`namespaces (nt[0-9a-f]+)-\*`).FindStringSubmatch(s)
	if prefix == nil {
		t.Fatal("no lab prefix in the output")
	}
	if ns, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(ns), prefix[1]) {
		t.Errorf("demo left namespaces: %s", ns)
	}
}

func TestDoctor(t *testing.T) {
	bin := binary(t)
	l := labtest.ClientRouterServer(t)
	if err := l.Iptables("router", true, legacyWithRaw); err != nil {
		t.Fatal(err)
	}
	if err := l.NFT("server", dropNFT); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "doctor", "--netns", l.Name("router"), "--netns", l.Name("server"), "--netns", "no-such-ns-nattrace").CombinedOutput()
	if err != nil {
		t.Fatalf("doctor: %v\n%s", err, out)
	}
	s := string(out)
	want := []string{
		`(?m)^namespace ` + l.Name("router") + `\n(.*\n)*?  ok   iptables-legacy tables\s+(filter, raw|raw, filter)`,
		`(?m)--backend auto\s+nft selector \(follows connections\); nf_tables \+ iptables-legacy traces`,
		`(?m)^namespace ` + l.Name("server") + `\n  ok   nf_tables\s+usable; 1 table\(s\)`,
		`(?m)--backend auto\s+nft \(table inet nattrace_<id>, follows connections\)`,
		`(?m)no   namespace\s+network namespace "no-such-ns-nattrace": network namespace not found`,
		`(?m)^  (ok|no)   BTF`,
		`(?m)^  ok   tracepoint probes\s+active \(tp_btf\): .*netif_receive_skb`,
		`(?m)^  ok   drop reason names`,
	}
	// The capability ladder differs by kernel: this machine's 6.18 has
	// neither kprobes nor usable fentry but has BPF netfilter hooks;
	// Debian's 6.1 (make test-kernels) is the other way round.
	if kernelBefore(t, 6, 4) {
		want = append(want,
			`(?m)^  ok   fentry/fexit\s+available`,
			`(?m)^  ok   kprobe probes\s+available`,
			`(?m)^  no   BPF prog type netfilter\s+.*requires >= v6.4`,
			`(?m)^  ok   NAT snapshots\s+fentry/fexit:nf_nat_manip_pkt`)
	} else {
		want = append(want,
			`(?m)^  no   fentry/fexit\s+unavailable: .*operation not permitted`,
			`(?m)^  no   kprobe probes\s+unavailable: the kernel has no kprobe PMU`,
			`(?m)^  ok   BPF prog type netfilter\s+loads`,
			`(?m)^  ok   NAT snapshots\s+BPF netfilter programs`)
	}
	for _, re := range want {
		if !regexp.MustCompile(re).MatchString(s) {
			t.Errorf("doctor output does not match %s:\n%s", re, s)
		}
	}
}

// kernelBefore reports whether the running kernel is older than major.minor.
func kernelBefore(t *testing.T, major, minor int) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		t.Fatal(err)
	}
	var ma, mi int
	if _, err := fmt.Sscanf(string(b), "%d.%d", &ma, &mi); err != nil {
		t.Fatalf("kernel release %q: %v", b, err)
	}
	return ma < major || ma == major && mi < minor
}
