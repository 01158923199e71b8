package main_test

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nattrace/nattrace/lab"
	"github.com/nattrace/nattrace/lab/labtest"
)

// 2. A TCP connection through the DNAT lab captured on the client, both
// router interfaces and the server, in one pcapng that tshark reads with
// interface names, directions and the addresses before and after NAT.
func TestCaptureAcrossNamespaces(t *testing.T) {
	bin := binary(t)
	labtest.RequireCommand(t, "tshark")
	l := dnatLab(t)
	file := filepath.Join(t.TempDir(), "nat.pcapng")
	ready := filepath.Join(t.TempDir(), "ready")
	cmd := exec.Command(bin, "capture", "--ready-file", ready, "--duration", "2s", "-w", file,
		"-i", l.Name("client")+"/c0", "-i", l.Name("router")+"/r0", "-i", l.Name("router")+"/r1", "-i", l.Name("server")+"/s0", "tcp")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFile(t, ready)
	if _, err := l.Exchange("client", lab.RouterInAddr+":80", 3*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	out, err := exec.Command("tshark", "-r", file, "-T", "fields", "-e", "frame.interface_name", "-e", "frame.p2p_dir",
		"-e", "ip.src", "-e", "ip.dst", "-e", "tcp.dstport", "-e", "tcp.flags").Output()
	if err != nil {
		t.Fatal(err)
	}
	var syn []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) == 6 && f[5] == "0x0002" { // a SYN
			syn = append(syn, strings.TrimPrefix(f[0], l.Prefix+"-")+" "+f[1]+" "+f[3]+":"+f[4])
		}
	}
	// The SYN: out of the client, into the router before DNAT, out of the
	// router and into the server after it (p2p_dir 0 sent, 1 received).
	want := "client/c0 0 10.200.1.1:80|router/r0 1 10.200.1.1:80|router/r1 0 10.200.2.2:8080|server/s0 1 10.200.2.2:8080"
	if strings.Join(syn, "|") != want {
		t.Fatalf("SYN in the pcapng:\n%s\nwant %s\ntshark:\n%s", strings.Join(syn, "|"), want, out)
	}
	for _, ifc := range []string{"client/c0", "router/r0", "router/r1", "server/s0"} {
		if !regexp.MustCompile(regexp.QuoteMeta(l.Prefix+"-"+ifc) + `: \d+ packets captured, \d+ received by filter, 0 dropped by kernel`).MatchString(stderr.String()) {
			t.Errorf("no statistics for %s: %s", ifc, stderr.String())
		}
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	for i := 1; i < len(lines); i++ {
		if lines[i][:15] < lines[i-1][:15] {
			t.Errorf("lines out of time order at %d:\n%s\n%s", i, lines[i-1], lines[i])
		}
	}
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := exec.Command("test", "-e", path).Output(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s not created", path)
}

// 3. -i any picks up an interface created after the capture started.
func TestCaptureAnyNewInterface(t *testing.T) {
	bin := binary(t)
	l := labtest.ClientRouterServer(t)
	if err := l.AddHost("extra"); err != nil {
		t.Fatal(err)
	}
	ready := filepath.Join(t.TempDir(), "ready")
	cmd := exec.Command(bin, "capture", "--ready-file", ready, "--netns", l.Name("router"), "-i", "any", "--duration", "3s", "icmp")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFile(t, ready)
	if err := l.Link("router", "rnew", "192.0.2.1/24", "extra", "x0", "192.0.2.2/24"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	for i := 0; i < 3; i++ {
		l.Ping("extra", "192.0.2.1", 9+i, time.Second)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), l.Name("router")+"/rnew In  IP 192.0.2.2 > 192.0.2.1: icmp") {
		t.Fatalf("the new interface was not captured:\n%s\n%s", stdout.String(), stderr.String())
	}
}

// 5. A tiny ring and a flood: the kernel's drops are reported.
func TestCaptureKernelDrops(t *testing.T) {
	bin := binary(t)
	l := labtest.ClientRouterServer(t)
	ready := filepath.Join(t.TempDir(), "ready")
	cmd := exec.Command(bin, "capture", "--ready-file", ready, "-q", "-B", "8", "--duration", "2s", "-i", l.Name("router")+"/r0", "udp")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFile(t, ready)
	c, err := l.UDPConn("client", lab.ServerAddr+":9")
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 1200)
	for i := 0; i < 20000; i++ {
		c.Write(payload)
	}
	c.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	m := regexp.MustCompile(`(\d+) packets captured, (\d+) received by filter, (\d+) dropped by kernel`).FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("no statistics: %s", stderr.String())
	}
	captured, _ := strconv.Atoi(m[1])
	dropped, _ := strconv.Atoi(m[3])
	if dropped == 0 || captured == 0 {
		t.Fatalf("captured %d, dropped %d: %s", captured, dropped, stderr.String())
	}
	t.Logf("tiny ring: %s", strings.TrimSpace(stderr.String()))
}

// 1 (CLI part). Unsupported syntax: one line, exit 2, nothing captured.
func TestCaptureBadFilter(t *testing.T) {
	bin := binary(t)
	cmd := exec.Command(bin, "capture", "-c", "1", "vlan and tcp")
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 2 || strings.Count(string(out), "\n") != 1 || !strings.Contains(string(out), `"vlan" is pcap-filter syntax that nattrace does not support`) {
		t.Fatalf("exit %d: %q", cmd.ProcessState.ExitCode(), out)
	}
	_ = syscall.SIGINT
}

// 2 and 4, with a trace: "flow -w" over client, router and server captures
// the flow on every interface, follows it through the DNAT (the packets on
// the inside do not match the filter), and comments each packet with its
// trace; tshark shows the comments, and "capture -r" prints them back.
func TestFlowWriteCapture(t *testing.T) {
	bin := binary(t)
	labtest.RequireCommand(t, "tshark")
	l := dnatLab(t)
	file := filepath.Join(t.TempDir(), "flow.pcapng")
	r := labtest.Start(t, bin, t.TempDir(), "flow", "--netns", l.Name("client"), "--netns", l.Name("router"), "--netns", l.Name("server"),
		"-w", file, "--duration", "2s", "--json", "tcp and dst port 80")
	if _, err := l.Exchange("client", lab.RouterInAddr+":80", 3*time.Second); err != nil {
		t.Fatal(err)
	}
	if code := r.Wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, r.Stderr.String())
	}
	out, err := exec.Command("tshark", "-r", file, "-T", "fields", "-E", "separator=|", "-e", "frame.interface_name", "-e", "frame.p2p_dir",
		"-e", "ip.dst", "-e", "tcp.dstport", "-e", "tcp.flags", "-e", "frame.comment").Output()
	if err != nil {
		t.Fatal(err)
	}
	var syn []string
	comments := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "|")
		if len(f) != 6 || f[4] != "0x0002" {
			continue
		}
		ifc := strings.TrimPrefix(f[0], l.Prefix+"-")
		syn = append(syn, ifc+" "+f[1]+" "+f[2]+":"+f[3])
		comments[ifc] = f[5]
	}
	want := "client/c0 0 10.200.1.1:80|router/r0 1 10.200.1.1:80|router/r1 0 10.200.2.2:8080|server/s0 1 10.200.2.2:8080"
	if strings.Join(syn, "|") != want {
		t.Fatalf("SYN in the pcapng:\n%s\nwant %s\n%s", strings.Join(syn, "|"), want, out)
	}
	for _, ifc := range []string{"router/r0", "router/r1"} {
		if c := comments[ifc]; !strings.Contains(c, "nat/PREROUTING rule 1 accept") || !strings.Contains(c, "DNAT 10.200.1.2:") || !strings.Contains(c, "=> 10.200.1.2:") {
			t.Errorf("%s SYN comment %q", ifc, c)
		}
	}
	// The server's SYN-ACK on the inside does not match the filter: it is
	// in the file because the connection is followed.
	if !strings.Contains(string(out), l.Prefix+"-router/r1|1|10.200.1.2|") {
		t.Errorf("the reply on the inside was not captured:\n%s", out)
	}
	back, err := exec.Command(bin, "capture", "-r", file).Output()
	if err != nil || !strings.Contains(string(back), "    comment: nat/PREROUTING rule 1 accept; DNAT ") {
		t.Fatalf("capture -r: %v\n%s", err, back)
	}
}
