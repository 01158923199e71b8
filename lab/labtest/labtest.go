// Package labtest is test support: the privilege gate every privileged
// test goes through, labs that are deleted when the test ends, and a runner
// for the nattrace binary.
package labtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nattrace/nattrace/event"
	"github.com/nattrace/nattrace/lab"
)

// RequireEnv makes privileged tests fail instead of skip.
const RequireEnv = "NATTRACE_REQUIRE_PRIVILEGED"

// RequirePrivileged skips the test unless it runs as root, or fails it when
// NATTRACE_REQUIRE_PRIVILEGED=1.
func RequirePrivileged(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("privileged test needs root (%s=1)", RequireEnv)
	}
	t.Skip("needs root")
}

// RequireCommand skips (or fails) when a command is missing.
func RequireCommand(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv(RequireEnv) == "1" {
				t.Fatalf("%s is not installed", n)
			}
			t.Skipf("%s is not installed", n)
		}
	}
}

// ClientRouterServer builds the standard lab and deletes it after the test.
func ClientRouterServer(t testing.TB) *lab.Lab {
	t.Helper()
	RequirePrivileged(t)
	RequireCommand(t, "ip", "nft", "iptables-nft-restore", "iptables-legacy-restore", "nsenter")
	l, err := lab.ClientRouterServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab cleanup: %v", err)
		}
	})
	return l
}

// BinaryEnv names a prebuilt nattrace binary for the tests to use instead
// of building one (make test-kernels builds it on the host: a build inside
// the emulated VM would take minutes).
const BinaryEnv = "NATTRACE_TEST_BINARY"

// Binary builds nattrace once per test binary into dir.
func Binary(t testing.TB, dir string) string {
	t.Helper()
	if b := os.Getenv(BinaryEnv); b != "" {
		return b
	}
	bin := filepath.Join(dir, "nattrace")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/nattrace")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build nattrace: %v\n%s", err, out)
	}
	return bin
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("go.mod not found")
		}
		dir = parent
	}
}

// Run is a running nattrace process.
type Run struct {
	Cmd    *exec.Cmd
	Stdout bytes.Buffer
	Stderr bytes.Buffer
	Ready  string
	done   chan struct{}
	err    error
}

// Start runs nattrace with args (a --ready-file is added for "flow") and,
// for flow, waits until the trace rules are in place.
func Start(t testing.TB, bin, stateDir string, args ...string) *Run {
	t.Helper()
	r := &Run{done: make(chan struct{})}
	if len(args) > 0 && args[0] == "flow" {
		r.Ready = filepath.Join(t.TempDir(), "ready")
		args = append([]string{"flow", "--ready-file", r.Ready, "--state-dir", stateDir}, args[1:]...)
	}
	r.Cmd = exec.Command(bin, args...)
	r.Cmd.Stdout = &r.Stdout
	r.Cmd.Stderr = &r.Stderr
	r.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		r.err = r.Cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			r.Cmd.Process.Kill()
			<-r.done
		}
	})
	if r.Ready != "" {
		deadline := time.Now().Add(20 * time.Second)
		for {
			if _, err := os.Stat(r.Ready); err == nil {
				break
			}
			select {
			case <-r.done:
				t.Fatalf("nattrace exited before it was ready: %v\nstderr: %s\nstdout: %s", r.err, r.Stderr.String(), r.Stdout.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("nattrace not ready after 20s; stderr: %s", r.Stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return r
}

// Wait waits for the process and returns its exit code.
func (r *Run) Wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(timeout):
		r.Cmd.Process.Kill()
		<-r.done
		t.Fatalf("nattrace did not exit within %s; stderr: %s", timeout, r.Stderr.String())
	}
	if r.Cmd.ProcessState == nil {
		return -1
	}
	return r.Cmd.ProcessState.ExitCode()
}

// Signal sends a signal to the process.
func (r *Run) Signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := r.Cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// Output is a parsed JSON Lines stream.
type Output struct {
	Session event.Session
	Packets []*event.Packet
	Flows   []*event.Flow
	Stats   *event.Stats
}

// ParseJSON parses the stream; every line must be a valid object.
func ParseJSON(t testing.TB, b []byte) Output {
	t.Helper()
	var out Output
	s := bufio.NewScanner(bytes.NewReader(b))
	s.Buffer(nil, 16<<20)
	n := 0
	for s.Scan() {
		line := s.Bytes()
		n++
		var head struct{ Type string }
		if err := json.Unmarshal(line, &head); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", n, err, line)
		}
		switch head.Type {
		case "session":
			if n != 1 {
				t.Fatalf("session object on line %d", n)
			}
			json.Unmarshal(line, &out.Session)
		case "packet":
			p := &event.Packet{}
			if err := json.Unmarshal(line, p); err != nil {
				t.Fatal(err)
			}
			out.Packets = append(out.Packets, p)
		case "flow":
			f := &event.Flow{}
			if err := json.Unmarshal(line, f); err != nil {
				t.Fatal(err)
			}
			out.Flows = append(out.Flows, f)
		case "stats":
			out.Stats = &event.Stats{}
			json.Unmarshal(line, out.Stats)
		default:
			t.Fatalf("line %d: unknown type %q", n, head.Type)
		}
	}
	if n == 0 || out.Session.Type != "session" {
		t.Fatalf("no session object in output: %q", b)
	}
	return out
}

// Describe renders packets for failure messages.
func Describe(ps []*event.Packet) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "packet %d %s %s:%d > %s:%d %s verdict=%s\n", p.ID, p.Tuple.Proto, p.Tuple.Src, p.Tuple.Sport, p.Tuple.Dst, p.Tuple.Dport, p.TCPFlags, p.Verdict)
		for _, s := range p.Steps {
			if s.Kind == event.KindNAT {
				fmt.Fprintf(&b, "   %s nat %s reverse=%v %+v -> %+v by %s %s %s\n", s.Hook, s.NAT, s.Reverse, *s.Before, *s.After, s.By, s.SetupBy, s.OIF)
				continue
			}
			fmt.Fprintf(&b, "   %s %s %s/%s %s #%d %q => %s %s\n", s.Hook, s.Backend, s.Table, s.Chain, s.Kind, s.Position, s.Rule, s.Verdict, s.Target)
		}
	}
	return b.String()
}
