package state

import (
	"os"
	"testing"
)

func TestStateFileLifecycle(t *testing.T) {
	dir := t.TempDir()
	f, err := Create(dir, "abcd0123", "nattrace flow tcp")
	if err != nil {
		t.Fatal(err)
	}
	i, err := f.Begin(Change{Kind: KindSysctl, Sysctl: "net.netfilter.nf_log.2", Old: "nf_log_ipv4", New: "nfnetlink_log"})
	if err != nil {
		t.Fatal(err)
	}
	list, _ := List(dir)
	if len(list) != 1 || list[0].Changes[0].Done || !list[0].Alive() || list[0].PID != os.Getpid() {
		t.Fatalf("before commit: %+v", list)
	}
	f.Commit(i)
	list, _ = List(dir)
	if !list[0].Changes[0].Done {
		t.Error("commit not recorded")
	}
	st, _ := os.Stat(f.Path())
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}
	if err := f.Remove(); err != nil {
		t.Fatal(err)
	}
	if list, _ := List(dir); len(list) != 0 {
		t.Errorf("left: %+v", list)
	}
}

func TestDeadSession(t *testing.T) {
	s := Session{PID: os.Getpid(), StartTime: 1}
	if s.Alive() {
		t.Error("a different start time means a reused pid: not alive")
	}
	s = Session{PID: 1 << 30}
	if s.Alive() {
		t.Error("no such pid")
	}
	st, err := ProcStartTime(os.Getpid())
	if err != nil || st == 0 {
		t.Fatal(st, err)
	}
	if id := NewID(); len(id) != 8 || id == NewID() {
		t.Errorf("ids %q", id)
	}
}
