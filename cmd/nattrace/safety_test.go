package main_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nattrace/nattrace/lab"
	"github.com/nattrace/nattrace/lab/labtest"
)

// legacyWithRaw is a legacy ruleset with a raw table, where the TRACE rule
// selector (--backend NS=legacy) inserts its rule.
const legacyWithRaw = `*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -p tcp -m tcp --dport 9 -j ACCEPT
COMMIT
` + dropRules

// cleanupLab has three namespaces, one per way of selecting: the router is
// legacy with a raw table traced with --backend ROUTER=legacy (TRACE rules,
// nf_log binding), the client legacy (nft selector, nf_log binding) and the
// server has no rules (nft selector).
func cleanupLab(t *testing.T) *lab.Lab {
	l := labtest.ClientRouterServer(t)
	if err := l.Iptables("router", true, legacyWithRaw); err != nil {
		t.Fatal(err)
	}
	if err := l.Iptables("client", true, dropRules); err != nil {
		t.Fatal(err)
	}
	return l
}

var cleanupHosts = []string{"client", "router", "server"}

func allNetns(l *lab.Lab) []string {
	a := []string{"--backend", l.Name("router") + "=legacy"}
	for _, h := range cleanupHosts {
		a = append(a, "--netns", l.Name(h))
	}
	return a
}

func TestCleanupOnEveryExit(t *testing.T) {
	cases := []struct {
		name string
		args []string
		stop func(t *testing.T, r *labtest.Run, l *lab.Lab)
		code int
	}{
		{"duration", []string{"--duration", "1s"}, func(t *testing.T, r *labtest.Run, l *lab.Lab) {}, 0},
		{"count", []string{"-c", "1"}, func(t *testing.T, r *labtest.Run, l *lab.Lab) {
			if _, err := l.DialTCP("client", lab.ServerAddr+":22", 300*time.Millisecond); err == nil {
				t.Fatal("port 22 should be dropped")
			}
		}, 0},
		{"SIGINT", nil, func(t *testing.T, r *labtest.Run, l *lab.Lab) { r.Signal(t, syscall.SIGINT) }, 0},
		{"SIGTERM", nil, func(t *testing.T, r *labtest.Run, l *lab.Lab) { r.Signal(t, syscall.SIGTERM) }, 0},
		{"SIGHUP", nil, func(t *testing.T, r *labtest.Run, l *lab.Lab) { r.Signal(t, syscall.SIGHUP) }, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bin := binary(t)
			l := cleanupLab(t)
			stateDir := t.TempDir()
			before := hostState(t, l, cleanupHosts...)
			args := append(append([]string{"flow", "--json"}, allNetns(l)...), c.args...)
			r := labtest.Start(t, bin, stateDir, append(args, "tcp")...)
			during := hostState(t, l, cleanupHosts...)
			for _, want := range []string{"NATTRACE-", "nattrace_", "nf_log.2=nfnetlink_log"} {
				if !strings.Contains(during, want) {
					t.Fatalf("while tracing, %q is missing: the test would not notice a missing cleanup\n%s", want, during)
				}
			}
			if len(stateFiles(t, stateDir)) != 1 {
				t.Fatal("no state file while tracing")
			}
			c.stop(t, r, l)
			if code := r.Wait(t, 15*time.Second); code != c.code {
				t.Fatalf("exit %d, want %d: %s", code, c.code, r.Stderr.String())
			}
			if after := hostState(t, l, cleanupHosts...); after != before {
				t.Fatalf("state changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			if f := stateFiles(t, stateDir); len(f) != 0 {
				t.Fatalf("state files left: %v", f)
			}
			out := labtest.ParseJSON(t, r.Stdout.Bytes())
			if out.Stats == nil {
				t.Errorf("no stats line after %s", c.name)
			}
		})
	}
}

func TestCleanupAfterPanic(t *testing.T) {
	bin := binary(t)
	l := cleanupLab(t)
	stateDir := t.TempDir()
	before := hostState(t, l, cleanupHosts...)
	cmd := exec.Command(bin, append(append([]string{"flow", "--state-dir", stateDir}, allNetns(l)...), "tcp")...)
	cmd.Env = append(os.Environ(), "NATTRACE_FAILPOINT=panic-after-start")
	out, err := cmd.CombinedOutput()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 3 {
		t.Fatalf("exit %v, want 3: %s", err, out)
	}
	if !strings.Contains(string(out), "internal error") || strings.Contains(string(out), "goroutine ") {
		t.Errorf("panic output: %s", out)
	}
	if after := hostState(t, l, cleanupHosts...); after != before {
		t.Fatalf("state changed after panic:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestSIGKILLThenCleanup(t *testing.T) {
	bin := binary(t)
	l := cleanupLab(t)
	stateDir := t.TempDir()
	before := hostState(t, l, cleanupHosts...)
	r := labtest.Start(t, bin, stateDir, append(append([]string{"flow"}, allNetns(l)...), "tcp")...)
	r.Signal(t, syscall.SIGKILL)
	r.Wait(t, 5*time.Second)
	left := hostState(t, l, cleanupHosts...)
	if !strings.Contains(left, "NATTRACE-") || !strings.Contains(left, "nf_log.2=nfnetlink_log") {
		t.Fatalf("after SIGKILL the legacy rules should still be there (the test needs them):\n%s", left)
	}
	if strings.Count(left, "nf_log.2=nfnetlink_log") != 2 {
		t.Fatalf("after SIGKILL both legacy namespaces should still have the nf_log binding:\n%s", left)
	}
	if strings.Contains(left, "nattrace_") {
		t.Errorf("the kernel should have removed the owned nft table with its socket:\n%s", left)
	}
	if len(stateFiles(t, stateDir)) != 1 {
		t.Fatal("state file of the killed session is missing")
	}
	out, err := exec.Command(bin, "cleanup", "--state-dir", stateDir).CombinedOutput()
	if err != nil {
		t.Fatalf("cleanup: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "removed iptables-legacy TRACE rules") || !strings.Contains(string(out), "restored net.netfilter.nf_log.2") {
		t.Errorf("cleanup said: %s", out)
	}
	if after := hostState(t, l, cleanupHosts...); after != before {
		t.Fatalf("state after cleanup:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if f := stateFiles(t, stateDir); len(f) != 0 {
		t.Fatalf("state files left: %v", f)
	}
	// The next flow cleans up too: kill again, then start a new session.
	r = labtest.Start(t, bin, stateDir, "flow", "--netns", l.Name("router"), "tcp")
	r.Signal(t, syscall.SIGKILL)
	r.Wait(t, 5*time.Second)
	r = labtest.Start(t, bin, stateDir, "flow", "--netns", l.Name("server"), "--duration", "300ms", "--json", "tcp")
	r.Wait(t, 10*time.Second)
	out2 := labtest.ParseJSON(t, r.Stdout.Bytes())
	if !strings.Contains(strings.Join(out2.Session.Warnings, "\n"), "cleaned up after a dead session") {
		t.Errorf("the next session did not report the cleanup: %v", out2.Session.Warnings)
	}
	if after := hostState(t, l, cleanupHosts...); after != before {
		t.Fatalf("state after the next session:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestCleanupLeavesLiveSessions(t *testing.T) {
	bin := binary(t)
	l := cleanupLab(t)
	stateDir := t.TempDir()
	r := labtest.Start(t, bin, stateDir, append(append([]string{"flow"}, allNetns(l)...), "tcp")...)
	during := hostState(t, l, cleanupHosts...)
	out, err := exec.Command(bin, "cleanup", "--state-dir", stateDir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "is running: left alone") {
		t.Fatalf("cleanup: %v %s", err, out)
	}
	if now := hostState(t, l, cleanupHosts...); now != during {
		t.Fatalf("cleanup touched a live session:\n%s\nvs\n%s", during, now)
	}
	// A second session in the legacy namespace is refused, naming the first.
	r2 := exec.Command(bin, "flow", "--state-dir", stateDir, "--netns", l.Name("router"), "tcp")
	msg, _ := r2.CombinedOutput()
	if r2.ProcessState.ExitCode() != 2 || !strings.Contains(string(msg), "taken by nattrace session") || strings.Count(strings.TrimSpace(string(msg)), "\n") != 0 {
		t.Errorf("second legacy session: exit %d: %s", r2.ProcessState.ExitCode(), msg)
	}
	// A second nft session in the same namespace works alongside.
	r3 := labtest.Start(t, bin, stateDir, "flow", "--netns", l.Name("server"), "--duration", "500ms", "tcp")
	if code := r3.Wait(t, 10*time.Second); code != 0 {
		t.Errorf("second nft session: exit %d: %s", code, r3.Stderr.String())
	}
	r.Signal(t, syscall.SIGINT)
	if code := r.Wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestRateLimit(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		name := map[bool]string{false: "nft", true: "iptables-legacy"}[legacy]
		t.Run(name, func(t *testing.T) {
			bin := binary(t)
			l := labtest.ClientRouterServer(t)
			args := []string{"flow", "--netns", l.Name("router"), "--json", "--rate", "10", "--duration", "60s"}
			if legacy {
				if err := l.Iptables("router", true, "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n"); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--backend", "legacy")
			}
			r := labtest.Start(t, bin, t.TempDir(), append(args, "udp and dst port 9999")...)
			c, err := l.UDPConn("client", lab.ServerAddr+":9999")
			if err != nil {
				t.Fatal(err)
			}
			const flood = 10000
			payload := make([]byte, 32)
			rx0 := rxPackets(t, l, "router", "r0")
			start := time.Now()
			for i := 0; i < flood; i++ {
				c.Write(payload)
				if i%200 == 199 {
					time.Sleep(time.Millisecond) // let the veth backlog drain
				}
			}
			c.Close()
			floodTime := time.Since(start)
			time.Sleep(200 * time.Millisecond)
			received := rxPackets(t, l, "router", "r0") - rx0
			r.Signal(t, syscall.SIGINT) // the session covers the whole flood, however slow the machine
			if code := r.Wait(t, 15*time.Second); code != 0 {
				t.Fatalf("exit %d: %s", code, r.Stderr.String())
			}
			out := labtest.ParseJSON(t, r.Stdout.Bytes())
			st := out.Stats
			if st == nil {
				t.Fatal("no stats")
			}
			// The kernel token bucket: burst (= rate) plus rate per second.
			max := uint64(10 + 10*(floodTime.Seconds()+1))
			if st.Packets == 0 || st.Packets > max {
				t.Errorf("traced %d packets during a %s flood at --rate 10 (max %d)", st.Packets, floodTime, max)
			}
			// Every datagram the router received was traced or counted as
			// rate-limited (received also counts a few ARP packets).
			if seen := st.RateLimited + st.Packets + st.Lost; seen < received*95/100 || seen > received || received < flood/2 {
				t.Errorf("rate_limited %d, traced %d, lost %d; the router received %d of %d", st.RateLimited, st.Packets, st.Lost, received, flood)
			}
			if st.Lost != 0 {
				t.Errorf("lost %d", st.Lost)
			}
			t.Logf("%s: flood of %d in %s: traced %d, rate-limited %d", name, flood, floodTime, st.Packets, st.RateLimited)
		})
	}
}

func TestBadInput(t *testing.T) {
	bin := binary(t)
	l := labtest.ClientRouterServer(t)
	if err := l.Iptables("router", true, dropRules); err != nil {
		t.Fatal(err)
	}
	// A PATH without iptables-legacy: the legacy backend is unavailable.
	noLegacy := t.TempDir()
	for _, tool := range []string{"nft", "nsenter", "ip"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatal(err)
		}
		os.Symlink(p, filepath.Join(noLegacy, tool))
	}
	ns := l.Name("router")
	cases := []struct {
		name   string
		args   []string
		env    []string
		nobody bool
		want   string
	}{
		{"bad filter", []string{"--netns", ns, "tcp and port 99999"}, nil, false, `column 14 ("99999"): expected a port number`},
		{"unbalanced filter", []string{"--netns", ns, "(tcp"}, nil, false, "expected ')'"},
		{"unknown namespace", []string{"--netns", "no-such-ns-nattrace", "tcp"}, nil, false, `"no-such-ns-nattrace": network namespace not found`},
		{"unknown backend", []string{"--netns", ns, "--backend", "ebpf", "tcp"}, nil, false, `unknown backend "ebpf"`},
		{"backend unavailable", []string{"--netns", ns, "--backend", "legacy", "tcp"}, []string{"PATH=" + noLegacy}, false, "backend legacy is unavailable"},
		{"zero rate", []string{"--netns", ns, "--rate", "0", "tcp"}, nil, false, "--rate must be at least 1"},
		{"unknown flag", []string{"--netns", ns, "--colour", "tcp"}, nil, false, "unknown flag: --colour"},
		{"not privileged", []string{"--netns", ns, "tcp"}, nil, true, "needs root"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			stateDir := t.TempDir()
			before := hostState(t, l, "router")
			cmd := exec.Command(bin, append([]string{"flow", "--state-dir", stateDir}, c.args...)...)
			cmd.Env = append(os.Environ(), c.env...)
			if c.nobody {
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
				cmd.Dir = "/"
			}
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			go func() { <-ctx.Done(); cmd.Process.Kill() }()
			cmd.Run()
			msg := stderr.String()
			if code := cmd.ProcessState.ExitCode(); code != 2 {
				t.Errorf("exit %d, want 2 (stderr %q)", code, msg)
			}
			if strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "nattrace: ") || !strings.Contains(msg, c.want) {
				t.Errorf("stderr %q: want one line with %q", msg, c.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout: %q", stdout.String())
			}
			if after := hostState(t, l, "router"); after != before {
				t.Errorf("bad input changed the namespace:\n%s\n%s", before, after)
			}
			if f := stateFiles(t, stateDir); len(f) != 0 {
				t.Errorf("state files: %v", f)
			}
		})
	}
}

// rxPackets reads an interface's received packet counter in a lab host.
func rxPackets(t *testing.T, l *lab.Lab, host, dev string) uint64 {
	t.Helper()
	out, err := l.Exec(host, "ip", "-j", "-s", "link", "show", dev)
	if err != nil {
		t.Fatal(err)
	}
	var links []struct {
		Stats struct {
			RX struct {
				Packets uint64 `json:"packets"`
			} `json:"rx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -s link show %s: %v: %s", dev, err, out)
	}
	return links[0].Stats.RX.Packets
}
