// Package failing holds the deliberately failing test that the harness test
// runs in the VM: make test-kernels must fail when a test in the guest fails.
package failing

import (
	"os"
	"testing"
)

func TestDeliberateFailure(t *testing.T) {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	t.Logf("guest kernel %s", b)
	t.Fatal("deliberate failure inside the guest")
}
