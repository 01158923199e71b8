package capture

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPcapngRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	a := &Interface{Name: "router/r0", LinkType: LinkEthernet, Snaplen: 262144}
	b := &Interface{Name: "tun0", LinkType: LinkRaw, Snaplen: 96}
	w.AddInterface(a)
	w.AddInterface(b)
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 123456789, time.UTC)
	frame := append(make([]byte, 12), 0x08, 0x00)
	frame = append(frame, ipv4("10.0.0.1", "10.0.0.2", 6, 0, ports(40000, 80))...)
	pkts := []*Packet{
		{Time: t0, Iface: a, Data: frame, OrigLen: len(frame), Dir: DirIn, Comment: "nat/PREROUTING rule 1 DNAT → 10.200.2.2:8080"},
		{Time: t0.Add(time.Microsecond), Iface: b, Data: frame[14:], OrigLen: 100, Dir: DirUnknown},
		{Time: t0.Add(2 * time.Microsecond), Iface: a, Data: frame[:15], OrigLen: len(frame), Dir: DirOut},
	}
	for _, p := range pkts {
		if err := w.WritePacket(p); err != nil {
			t.Fatal(err)
		}
	}
	w.Flush()
	r, err := NewReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range pkts {
		got, err := r.Next()
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if !got.Time.Equal(want.Time) || got.Iface.Name != want.Iface.Name || got.Iface.LinkType != want.Iface.LinkType ||
			!bytes.Equal(got.Data, want.Data) || got.OrigLen != want.OrigLen || got.Dir != want.Dir || got.Comment != want.Comment {
			t.Errorf("packet %d: got %+v", i, got)
		}
	}
	if _, err := r.Next(); err == nil {
		t.Error("no end of file")
	}
	if _, err := exec.LookPath("tcpdump"); err == nil {
		// libpcap reads files of one link type only: write one.
		var one bytes.Buffer
		w1, _ := NewWriter(&one)
		w1.AddInterface(a)
		w1.WritePacket(pkts[0])
		w1.Flush()
		f := filepath.Join(t.TempDir(), "x.pcapng")
		os.WriteFile(f, one.Bytes(), 0o600)
		out, err := exec.Command("tcpdump", "-nn", "-r", f).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "10.0.0.1.40000 > 10.0.0.2.80") {
			t.Errorf("tcpdump -r: %v\n%s", err, out)
		}
	}
	var line bytes.Buffer
	line.WriteString(Line(pkts[0]))
	if !strings.Contains(line.String(), "router/r0 In  IP 10.0.0.1.40000 > 10.0.0.2.80: tcp Flags [none]") {
		t.Errorf("line %q", line.String())
	}
}

func TestPcapngReaderErrors(t *testing.T) {
	for _, b := range [][]byte{nil, []byte("not a pcapng file at all"), {0x0a, 0x0d, 0x0d, 0x0a, 12, 0, 0, 0, 0, 0, 0, 0}} {
		if _, err := NewReader(bytes.NewReader(b)); err == nil {
			t.Errorf("%q: accepted", b)
		}
	}
}

func FuzzPcapngReader(f *testing.F) {
	var buf bytes.Buffer
	w, _ := NewWriter(&buf)
	ifc := &Interface{Name: "a/b", LinkType: LinkEthernet, Snaplen: 100}
	w.AddInterface(ifc)
	w.WritePacket(&Packet{Time: time.Unix(1, 2), Iface: ifc, Data: []byte{1, 2, 3}, OrigLen: 3, Dir: DirOut, Comment: "c"})
	w.Flush()
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := NewReader(bytes.NewReader(b))
		if err != nil {
			return
		}
		for i := 0; i < 100; i++ {
			p, err := r.Next()
			if err != nil {
				return
			}
			_ = Line(p)
		}
	})
}
