package kernels

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nattrace/nattrace/lab/labtest"
)

// pinned reads kernel.env.
func pinned(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("kernel.env")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), "="); ok && !strings.HasPrefix(k, "#") {
			m[k] = v
		}
	}
	return m
}

// Inside the VM (make test-kernels): the kernel is the pinned one.
func TestGuestKernel(t *testing.T) {
	if os.Getenv("NATTRACE_IN_VM") != "1" {
		t.Skip("runs inside the VM (make test-kernels)")
	}
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	if got, want := strings.TrimSpace(string(b)), pinned(t)["KERNEL_RELEASE"]; got != want {
		t.Errorf("guest kernel %s, want %s", got, want)
	}
}

// On the host: the harness boots the pinned kernel, returns a command's
// exit code, and a failing go test inside the guest fails the run.
func TestHarness(t *testing.T) {
	if os.Getenv("NATTRACE_IN_VM") == "1" {
		t.Skip("the harness test boots a VM: it runs on the host")
	}
	labtest.RequirePrivileged(t)
	vmexec := filepath.Join(t.TempDir(), "vmexec")
	if out, err := exec.Command("go", "build", "-o", vmexec, "./vmexec").CombinedOutput(); err != nil {
		t.Fatalf("build vmexec: %v\n%s", err, out)
	}
	out, err := exec.Command(vmexec, "sh", "-c", "cat /proc/sys/kernel/osrelease; exit 7").CombinedOutput()
	if code := exitCode(err); code != 7 || !strings.Contains(string(out), pinned(t)["KERNEL_RELEASE"]) {
		t.Fatalf("exit %d (want 7), output:\n%s", code, out)
	}
	cmd := exec.Command("go", "test", "-count=1", "-v", "-exec", vmexec, "./testdata/failing")
	out, err = cmd.CombinedOutput()
	if code := exitCode(err); code == 0 || !strings.Contains(string(out), "--- FAIL: TestDeliberateFailure") ||
		!strings.Contains(string(out), "guest kernel "+pinned(t)["KERNEL_RELEASE"]) {
		t.Fatalf("a failing test in the guest: exit %d, output:\n%s", code, out)
	}
	if m, _ := filepath.Glob("/tmp/nattrace-vm-*"); len(m) > 0 {
		t.Errorf("temporary directories left: %v", m)
	}
	if out, _ := exec.Command("pgrep", "-f", "qemu-system-x86_64.*nattrace.job").Output(); len(out) > 0 {
		t.Errorf("qemu processes left: %s", out)
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}
