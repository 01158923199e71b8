package netns

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

func TestResolveErrors(t *testing.T) {
	for _, spec := range []string{"pid:x", "pid:-1", "no-such-namespace-nattrace", "/etc/hostname"} {
		if _, err := Resolve(spec); err == nil {
			t.Errorf("%q: no error", spec)
		}
	}
	if _, err := Resolve("no-such-namespace-nattrace"); !errors.Is(err, ErrNotFound) {
		t.Errorf("not found: %v", err)
	}
	cur, err := Resolve("")
	if err != nil || !cur.IsCurrent() {
		t.Fatal(err)
	}
	self, err := Resolve("pid:" + strconv.Itoa(os.Getpid()))
	if err != nil || self.Inode != cur.Inode || !self.IsCurrent() {
		t.Errorf("pid:self %+v %v", self, err)
	}
}

// Privileged: enter a namespace, read its sysctl, run a command in it.
func TestDoAndCommand(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("NATTRACE_REQUIRE_PRIVILEGED") == "1" {
			t.Fatal("needs root")
		}
		t.Skip("needs root")
	}
	name := "nattrace-netns-test-" + strconv.Itoa(os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	ns, err := Resolve(name)
	if err != nil || ns.IsCurrent() {
		t.Fatal(ns, err)
	}
	if err := ns.WriteSysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	if v, _ := ns.ReadSysctl("net.ipv4.ip_forward"); v != "1" {
		t.Errorf("ip_forward in the namespace = %q", v)
	}
	out, err := ns.Output("ip", "-o", "link")
	if err != nil || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 || !strings.Contains(string(out), "lo:") {
		t.Errorf("links in a new namespace: %q %v", out, err)
	}
	found, ok := FindByInode(ns.Inode)
	if !ok || found.Name != name {
		t.Errorf("FindByInode: %+v %v", found, ok)
	}
	if _, err := ns.Output("false"); err == nil {
		t.Error("failing command: no error")
	}
}
