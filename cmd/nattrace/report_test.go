package main_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nattrace/nattrace/lab"
	"github.com/nattrace/nattrace/lab/browser"
	"github.com/nattrace/nattrace/lab/labtest"
	"github.com/nattrace/nattrace/report"
)

// hostileIf names the router's server-side interface: the kernel allows
// quotes and angle brackets in interface names.
const hostileIf = `r"<b>1`

// The router's rules: DNAT to the server's 8080, which FORWARD drops, and a
// drop of UDP 9999 whose comment is hostile, with bytes that are not UTF-8.
const reportRules = "*nat\n:PREROUTING ACCEPT [0:0]\n" +
	"-A PREROUTING -d 10.200.1.1/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.200.2.2:8080\nCOMMIT\n" +
	"*filter\n:FORWARD ACCEPT [0:0]\n" +
	"-A FORWARD -p tcp -m tcp --dport 8080 -m comment --comment \"block app\" -j DROP\n" +
	"-A FORWARD -p udp -m udp --dport 9999 -m comment --comment \"</script><script>window.pwned=1</script>\\\"onerror=alert(1) \xff\xfe <img src=x onerror=alert(2)>\" -j DROP\n" +
	"COMMIT\n"

const hostilePayload = "</script><script>window.pwned=2</script>\"onerror=alert(3) \xff\xfe<svg onload=alert(4)>"

// hostileLab is client -- router -- server with the hostile interface name.
func hostileLab(t *testing.T) *lab.Lab {
	t.Helper()
	labtest.RequirePrivileged(t)
	l := lab.New()
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab cleanup: %v", err)
		}
	})
	for _, h := range []string{"client", "router", "server"} {
		if err := l.AddHost(h); err != nil {
			t.Fatal(err)
		}
	}
	steps := []error{
		l.Link("client", "c0", lab.ClientAddr+"/24", "router", "r0", lab.RouterInAddr+"/24"),
		l.Link("server", "s0", lab.ServerAddr+"/24", "router", hostileIf, lab.RouterOutAddr+"/24"),
		l.IP("client", "route", "add", "default", "via", lab.RouterInAddr),
		l.IP("server", "route", "add", "default", "via", lab.RouterOutAddr),
		l.Sysctl("router", "net.ipv4.ip_forward", "1"),
		l.Iptables("router", false, reportRules),
	}
	for _, err := range steps {
		if err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// flow --html on a DNAT + FORWARD-drop lab with hostile content: the report
// names the dropping rule, draws both NAT views, is 0600, and in a real
// Chromium it loads with no request, no console error and nothing hostile
// running; filtering by fate works. Screenshots go to the artifacts.
func TestReportHTML(t *testing.T) {
	bin := binary(t)
	browser.Require(t)
	l := hostileLab(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := l.ListenUDP(ctx, "server", ":9999"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "report.html")
	rec := filepath.Join(dir, "rec")
	r := labtest.Start(t, bin, t.TempDir(), "flow", "--netns", l.Name("router"), "--netns", l.Name("client"), "--netns", l.Name("server"),
		"--record", rec, "--html", out, "--duration", "3s", "tcp port 80 or tcp port 8080 or udp port 9999 or icmp")
	l.DialTCP("client", lab.RouterInAddr+":80", 500*time.Millisecond) // dropped
	if err := l.Ping("client", lab.ServerAddr, 4242, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	c, err := l.UDPConn("client", lab.ServerAddr+":9999")
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte(hostilePayload)) // dropped
	c.Close()
	if code := r.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, r.Stderr.String())
	}
	if !strings.Contains(r.Stderr.String(), "report written to "+out) {
		t.Errorf("stderr: %s", r.Stderr.String())
	}
	st, err := os.Stat(out)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("report: %v %v", st, err)
	}
	page, _ := os.ReadFile(out)
	s := string(page)
	ns := l.Name("router")
	for _, want := range []string{
		// The summary names the dropping rule with its text.
		`request dropped by filter/FORWARD rule 1: -A FORWARD -p tcp -m tcp --dport 8080 -m comment --comment &#34;block app&#34; -j DROP [` + ns + `]`,
		// Both NAT views: as the client sent it and as the server got it.
		`reaches the server as</span> <code>10.200.1.2:`,
		`DNAT→10.200.2.2:8080 [` + ns + `]`,
		">DNAT at prerouting<", ">10.200.1.1:80<", ">10.200.2.2:8080<",
		"answered: 1 request packet, 1 reply packet",
		// The hostile interface name, escaped.
		`sent on r\"\u003cb\u003e1`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	if bad := report.Audit(page); len(bad) > 0 {
		t.Errorf("audit: %v", bad)
	}
	if !strings.Contains(s, `r&#34;&lt;b&gt;1`) {
		t.Error("the hostile interface name is not in the environment section, escaped")
	}
	rc, err := report.LoadRecording(rec)
	if err != nil {
		t.Fatal(err)
	}
	dropped := 0
	for _, p := range rc.Packets {
		if p.Verdict == "dropped" {
			dropped++
		}
	}
	if dropped != 2 {
		t.Errorf("%d dropped packets, want the TCP SYN and the UDP datagram\n%s", dropped, labtest.Describe(rc.Packets))
	}
	p := browser.Open(t, out, "", 1400, 1000)
	p.WaitReady()
	browser.CheckReport(t, p, len(rc.Packets), dropped)
	// The hostile payload is shown as text in its frame's dump.
	p.Select("#f-fate", "dropped")
	p.Click("#p-expand")
	dump := browser.Eval[string](p, `Array.from(document.querySelectorAll('pre.dump')).map(e => e.textContent).join('')`)
	if !strings.Contains(dump, "w.pwned=2</scrip") { // 16 bytes a line
		t.Errorf("the payload's dump is missing: %.200q", dump)
	}
	art := browser.ArtifactDir(t)
	p.Screenshot(filepath.Join(art, "report-lab-dropped.png"), "")
	p.Select("#f-fate", "")
	p.Screenshot(filepath.Join(art, "report-lab.png"), "")
	if pw := browser.Eval[bool](p, `typeof window.pwned !== 'undefined'`); pw {
		t.Error("hostile content ran")
	}
}

// nattrace report on a missing, truncated or corrupt recording: one line
// naming the file and the problem, no panic, no report written.
func TestReportBadRecording(t *testing.T) {
	bin := binary(t)
	good, err := filepath.Abs("../../report/testdata/dnat-drop")
	if err != nil {
		t.Fatal(err)
	}
	copyDir := func(t *testing.T) string {
		d := t.TempDir()
		for _, f := range []string{"session.jsonl", "capture.pcapng", "env-start.json", "env-end.json"} {
			b, err := os.ReadFile(filepath.Join(good, f))
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(d, f), b, 0o600)
		}
		return d
	}
	cases := []struct {
		name  string
		setup func(d string) string
		want  string
	}{
		{"missing directory", func(d string) string { return filepath.Join(d, "nope") }, "nope: no such recording directory"},
		{"not a recording", func(d string) string { os.Remove(filepath.Join(d, "session.jsonl")); return d }, "session.jsonl: missing: not a nattrace recording"},
		{"truncated stream", func(d string) string {
			p := filepath.Join(d, "session.jsonl")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-40], 0o600)
			return d
		}, ": truncated (the session was cut off?)"},
		{"corrupt stream", func(d string) string {
			p := filepath.Join(d, "session.jsonl")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, append([]byte("{\"type\":\"session\",\"version\":1}\n\x00\x01garbage\n"), b...), 0o600)
			return d
		}, "session.jsonl: line 2: not JSON"},
		{"corrupt snapshot", func(d string) string {
			os.WriteFile(filepath.Join(d, "env-end.json"), []byte("[{\"name\":"), 0o600)
			return d
		}, "env-end.json: corrupt:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := copyDir(t)
			target := c.setup(d)
			out := filepath.Join(t.TempDir(), "r.html")
			r := labtest.Start(t, bin, t.TempDir(), "report", target, "-o", out)
			code := r.Wait(t, 30*time.Second)
			lines := strings.Split(strings.TrimSpace(r.Stderr.String()), "\n")
			if code != 1 || len(lines) != 1 || !strings.HasPrefix(lines[0], "nattrace: cannot read the recording: ") || !strings.Contains(lines[0], c.want) {
				t.Errorf("exit %d, stderr %q; want one line with %q", code, r.Stderr.String(), c.want)
			}
			if _, err := os.Stat(out); err == nil {
				t.Error("a report was written")
			}
			if m, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".*")); len(m) > 0 {
				t.Errorf("temporary files left: %v", m)
			}
		})
	}
	// The good one renders.
	out := filepath.Join(t.TempDir(), "r.html")
	r := labtest.Start(t, bin, t.TempDir(), "report", copyDir(t), "-o", out)
	if code := r.Wait(t, 30*time.Second); code != 0 || !strings.Contains(r.Stdout.String(), "report written to "+out+" (4 packets,") {
		t.Errorf("exit %d: %s %s", code, r.Stdout.String(), r.Stderr.String())
	}
}

// flow --no-payload: the recorded capture holds headers only, and the
// report shows no payload byte.
func TestFlowNoPayload(t *testing.T) {
	bin := binary(t)
	l := labtest.ClientRouterServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := l.ListenUDP(ctx, "server", ":9999"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rec, out := filepath.Join(dir, "rec"), filepath.Join(dir, "r.html")
	r := labtest.Start(t, bin, t.TempDir(), "flow", "--netns", l.Name("router"), "--record", rec, "--html", out, "--no-payload", "--duration", "2s", "udp port 9999")
	const secret = "secret-payload-0123456789"
	if _, err := l.UDPExchange("client", lab.ServerAddr+":9999", secret, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if code := r.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, r.Stderr.String())
	}
	pcap, _ := os.ReadFile(filepath.Join(rec, "capture.pcapng"))
	page, _ := os.ReadFile(out)
	stream, _ := os.ReadFile(filepath.Join(rec, "session.jsonl"))
	if len(pcap) == 0 || strings.Contains(string(pcap), "secret-payload") || strings.Contains(string(page), "secret-pay") {
		t.Errorf("a payload was kept (capture %d bytes)", len(pcap))
	}
	if !strings.Contains(string(stream), `"no_payload":true`) || !strings.Contains(string(page), "payload left out") {
		t.Error("the recording or the report does not say payloads were left out")
	}
}
