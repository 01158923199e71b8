package main_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nattrace/nattrace/event"
	"github.com/nattrace/nattrace/lab"
	"github.com/nattrace/nattrace/lab/labtest"
	"github.com/nattrace/nattrace/report"
)

const dnatDropRules = `*nat
:PREROUTING ACCEPT [0:0]
-A PREROUTING -d 10.200.1.1/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.200.2.2:8080
COMMIT
*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -p tcp -m tcp --dport 22 -j DROP
COMMIT
`

// flow --record: the stream, the capture and the namespaces' state before
// and after the session, files 0600; the recording loads.
func TestFlowRecord(t *testing.T) {
	bin := binary(t)
	l := labtest.ClientRouterServer(t)
	if err := l.Iptables("router", false, dnatDropRules); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l.ListenTCP(ctx, "server", ":8080")
	dir := filepath.Join(t.TempDir(), "rec")
	r := labtest.Start(t, bin, t.TempDir(), "flow", "--netns", l.Name("router"), "--record", dir, "--duration", "2s", "tcp and (dst port 80 or dst port 22)")
	if _, err := l.Exchange("client", lab.RouterInAddr+":80", 3*time.Second); err != nil {
		t.Fatal(err)
	}
	l.DialTCP("client", lab.ServerAddr+":22", 300*time.Millisecond)
	if code := r.Wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, r.Stderr.String())
	}
	for _, f := range []string{"session.jsonl", "capture.pcapng", "env-start.json", "env-end.json"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o600 || st.Size() == 0 {
			t.Errorf("%s: %v %v", f, st, err)
		}
	}
	rec, err := report.LoadRecording(dir)
	if err != nil {
		t.Fatal(err)
	}
	var dropped *event.Packet
	for _, p := range rec.Packets {
		if p.Verdict == event.FateDropped {
			dropped = p
		}
	}
	if dropped == nil || dropped.Drop.Rule != "-A FORWARD -p tcp -m tcp --dport 22 -j DROP" || len(rec.Flows) == 0 || rec.Stats == nil || rec.Capture == "" {
		t.Fatalf("recording: %d packets, %d flows, stats %v, capture %q\n%s", len(rec.Packets), len(rec.Flows), rec.Stats, rec.Capture, labtest.Describe(rec.Packets))
	}
	if len(rec.EnvStart) != 1 || len(rec.EnvEnd) != 1 {
		t.Fatalf("snapshots %d/%d", len(rec.EnvStart), len(rec.EnvEnd))
	}
	for _, s := range []*event.NetnsSnapshot{rec.EnvStart[0], rec.EnvEnd[0]} {
		if !strings.Contains(s.IptNFT, "--to-destination 10.200.2.2:8080") || strings.Contains(s.NFTables, "nattrace_") ||
			s.Sysctls["net.ipv4.ip_forward"] != "1" || len(s.Routes) == 0 || len(s.Rules) == 0 || s.Sysctls["net.ipv4.conf.r0.rp_filter"] == "" {
			t.Errorf("snapshot of %s at %s: sysctls %v errors %v", s.Name, s.Taken, s.Sysctls, s.Errors)
		}
	}
}
