package capture

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/bpf"

	"github.com/nattrace/nattrace/filter"
)

// diffExprs are checked against tcpdump: at least 60, every primitive,
// qualifier and combination the capture filter supports. Port names are
// left out: libpcap restricts a name to the protocols /etc/services lists
// for it ("port http" is "tcp port 80"), nattrace's names stand for the
// number with any port protocol.
var diffExprs = []string{
	"ip", "ip6", "tcp", "udp", "icmp", "icmp6", "sctp", "proto 47", "ip proto 6", "ip6 proto 17", "proto \\udp",
	"host 10.0.0.1", "src host 10.0.0.1", "dst host 10.0.0.1", "ip host 10.0.0.1", "src and dst host 10.0.0.1",
	"host 2001:db8::1", "src host 2001:db8::2", "dst host 2001:db8::1", "ip6 host 2001:db8::1",
	"net 10.0.0.0/8", "src net 192.0.2.0/24", "dst net 198.51.100.0/24", "net 10.0.0.0 mask 255.0.0.0",
	"net 2001:db8::/32", "src net 2001:db8::/64", "net 0.0.0.0/0", "ip net 10.0.0.0/8",
	"port 80", "port 53", "src port 22", "dst port 443", "tcp port 80", "udp port 53", "sctp port 80",
	"tcp dst port 8080", "udp src port 53", "portrange 1000-2000", "src portrange 1-1023", "tcp dst portrange 440-450",
	"port 80 or 443", "host 10.0.0.1 or 192.0.2.1", "dst port 80 and src portrange 30000-50000", "src net 10.0.0.0/24 or dst port 2000",
	"not tcp", "not port 22", "! icmp", "not host 10.0.0.1", "not (tcp or udp)",
	"tcp and port 80", "tcp && dst port 80", "udp || icmp", "(tcp or udp) and port 53",
	"host 10.0.0.1 and not port 22", "tcp and not (src port 22 or dst port 22)",
	"net 10.0.0.0/8 and not net 10.0.0.0/24", "ip6 and tcp", "ip and udp and port 53",
	"icmp or (tcp and dst port 80) or (udp and src port 53)", "not ip6 and port 80",
	"src host 10.0.0.1 and dst host 10.0.0.2", "host 2001:db8::1 and tcp port 443",
	"tcp[tcpflags]", // not supported: skipped below
}

// frame kinds of the corpus
type pkt struct {
	name  string
	l3    []byte // network layer (IPv4, IPv6 or ARP)
	etype uint16
	vlan  bool
}

func csum(b []byte) uint16 { return 0 }

func ipv4(src, dst string, proto uint8, frag uint16, l4 []byte) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
	binary.BigEndian.PutUint16(h[4:], 0x1234)
	binary.BigEndian.PutUint16(h[6:], frag)
	h[8], h[9] = 64, proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	return append(h, l4...)
}

func ipv6(src, dst string, next uint8, l4 []byte) []byte {
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(l4)))
	h[6], h[7] = next, 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return append(h, l4...)
}

func ports(sp, dp uint16) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sp)
	binary.BigEndian.PutUint16(b[2:], dp)
	return b
}

func arp(op uint16, spa, tpa string) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:], 1)
	binary.BigEndian.PutUint16(b[2:], 0x0800)
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], op)
	s, d := netip.MustParseAddr(spa).As4(), netip.MustParseAddr(tpa).As4()
	copy(b[14:], s[:])
	copy(b[24:], d[:])
	return b
}

func corpus() []pkt {
	var out []pkt
	v4 := []string{"10.0.0.1", "10.0.0.2", "192.0.2.1", "198.51.100.7", "10.0.0.200"}
	v6 := []string{"2001:db8::1", "2001:db8::2", "2001:db8:0:1::5", "fe80::1"}
	pp := []uint16{22, 53, 80, 443, 445, 1000, 1500, 2000, 8080, 40000}
	for i, s := range v4 {
		d := v4[(i+1)%len(v4)]
		for j, p := range []uint8{6, 17, 132} {
			sp, dp := pp[(i+j)%len(pp)], pp[(i*3+j+2)%len(pp)]
			out = append(out, pkt{name: fmt.Sprintf("v4 %s>%s p%d %d>%d", s, d, p, sp, dp), l3: ipv4(s, d, p, 0, ports(sp, dp)), etype: 0x0800})
			out = append(out, pkt{name: "v4 rev", l3: ipv4(d, s, p, 0, ports(dp, sp)), etype: 0x0800})
		}
		out = append(out, pkt{name: "v4 icmp", l3: ipv4(s, d, 1, 0, []byte{8, 0, 0, 0, 0, 1, 0, 1}), etype: 0x0800})
		out = append(out, pkt{name: "v4 gre", l3: ipv4(s, d, 47, 0, make([]byte, 8)), etype: 0x0800})
		out = append(out, pkt{name: "v4 first frag", l3: ipv4(s, d, 6, 0x2000, ports(80, 22)), etype: 0x0800})
		out = append(out, pkt{name: "v4 later frag", l3: ipv4(s, d, 6, 0x0010, ports(80, 22)), etype: 0x0800})
		out = append(out, pkt{name: "vlan v4", l3: ipv4(s, d, 6, 0, ports(80, 80)), etype: 0x0800, vlan: true})
		out = append(out, pkt{name: "arp req", l3: arp(1, s, d), etype: 0x0806})
		out = append(out, pkt{name: "rarp", l3: arp(3, d, s), etype: 0x8035})
	}
	for i, s := range v6 {
		d := v6[(i+1)%len(v6)]
		for j, p := range []uint8{6, 17, 132} {
			sp, dp := pp[(i+j+4)%len(pp)], pp[(i*2+j)%len(pp)]
			out = append(out, pkt{name: "v6", l3: ipv6(s, d, p, ports(sp, dp)), etype: 0x86dd})
			out = append(out, pkt{name: "v6 rev", l3: ipv6(d, s, p, ports(dp, sp)), etype: 0x86dd})
		}
		out = append(out, pkt{name: "v6 icmp6", l3: ipv6(s, d, 58, []byte{128, 0, 0, 0, 0, 1, 0, 1}), etype: 0x86dd})
		frag := append([]byte{6, 0, 0, 0, 0, 0, 0, 1}, ports(80, 53)...)
		out = append(out, pkt{name: "v6 frag tcp", l3: ipv6(s, d, 44, frag), etype: 0x86dd})
	}
	return out
}

func frame(p pkt, lt LinkType) []byte {
	switch lt {
	case LinkEthernet:
		b := make([]byte, 12, 64)
		b[0], b[6] = 0x02, 0x02
		if p.vlan {
			b = append(b, 0x81, 0x00, 0x00, 0x0a)
		}
		b = binary.BigEndian.AppendUint16(b, p.etype)
		return append(b, p.l3...)
	case LinkLinuxSLL:
		b := make([]byte, 14, 64)
		b = binary.BigEndian.AppendUint16(b, p.etype)
		return append(b, p.l3...)
	case LinkLinuxSLL2:
		b := binary.BigEndian.AppendUint16(nil, p.etype)
		b = append(b, make([]byte, 18)...)
		return append(b, p.l3...)
	case LinkRaw:
		return p.l3
	}
	return nil
}

// tcpdumpProgram compiles with "tcpdump -ddd" for a link type.
func tcpdumpProgram(t *testing.T, dir string, lt LinkType, expr string) ([]bpf.Instruction, error) {
	file := filepath.Join(dir, fmt.Sprintf("empty-%d.pcap", lt))
	if _, err := os.Stat(file); err != nil {
		hdr := make([]byte, 24)
		binary.LittleEndian.PutUint32(hdr[0:], 0xa1b2c3d4)
		binary.LittleEndian.PutUint16(hdr[4:], 2)
		binary.LittleEndian.PutUint16(hdr[6:], 4)
		binary.LittleEndian.PutUint32(hdr[16:], 65535)
		binary.LittleEndian.PutUint32(hdr[20:], uint32(lt))
		os.WriteFile(file, hdr, 0o644)
	}
	out, err := exec.Command("tcpdump", "-ddd", "-r", file, expr).Output()
	if err != nil {
		return nil, err
	}
	s := bufio.NewScanner(strings.NewReader(string(out)))
	s.Scan()
	n, _ := strconv.Atoi(strings.TrimSpace(s.Text()))
	var prog []bpf.Instruction
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) != 4 {
			continue
		}
		op, _ := strconv.ParseUint(f[0], 10, 16)
		jt, _ := strconv.ParseUint(f[1], 10, 8)
		jf, _ := strconv.ParseUint(f[2], 10, 8)
		k, _ := strconv.ParseUint(f[3], 10, 32)
		prog = append(prog, bpf.RawInstruction{Op: uint16(op), Jt: uint8(jt), Jf: uint8(jf), K: uint32(k)}.Disassemble())
	}
	if len(prog) != n {
		return nil, fmt.Errorf("tcpdump printed %d instructions, said %d", len(prog), n)
	}
	return prog, nil
}

func TestCompileMatchesTcpdump(t *testing.T) {
	if _, err := exec.LookPath("tcpdump"); err != nil {
		if os.Getenv("NATTRACE_REQUIRE_PRIVILEGED") == "1" {
			t.Fatal("tcpdump is needed for the differential test (apt-get install tcpdump)")
		}
		t.Skip("tcpdump not installed")
	}
	dir := t.TempDir()
	pkts := corpus()
	checked := 0
	for _, expr := range diffExprs {
		n, err := filter.Parse(expr)
		if err != nil {
			continue // not in nattrace's language (tcp[tcpflags])
		}
		checked++
		for _, lt := range []LinkType{LinkEthernet, LinkLinuxSLL, LinkLinuxSLL2, LinkRaw} {
			ours, err := Compile(n, lt, 65535)
			if err != nil {
				t.Fatalf("%q: %v", expr, err)
			}
			theirs, err := tcpdumpProgram(t, dir, lt, expr)
			if err != nil {
				t.Fatalf("tcpdump %q: %v", expr, err)
			}
			vmOurs, err := bpf.NewVM(ours)
			if err != nil {
				t.Fatalf("%q: our program is invalid: %v", expr, err)
			}
			vmTheirs, err := bpf.NewVM(theirs)
			if err != nil {
				t.Fatalf("%q: %v", expr, err)
			}
			for _, p := range pkts {
				if lt == LinkRaw && (p.etype != 0x0800 && p.etype != 0x86dd || p.vlan) {
					continue
				}
				b := frame(p, lt)
				a, _ := vmOurs.Run(b)
				w, _ := vmTheirs.Run(b)
				if (a != 0) != (w != 0) {
					t.Fatalf("%q on link type %d, packet %s: nattrace %v, tcpdump %v\nours:\n%s", expr, lt, p.name, a != 0, w != 0, dump(ours))
				}
			}
		}
	}
	if checked < 60 {
		t.Fatalf("only %d expressions checked", checked)
	}
	t.Logf("%d expressions x 4 link types x %d packets agree with tcpdump", checked, len(pkts))
}

func dump(p []bpf.Instruction) string {
	var b strings.Builder
	for i, in := range p {
		fmt.Fprintf(&b, "%3d %v\n", i, in)
	}
	return b.String()
}

func TestCompileErrors(t *testing.T) {
	if _, err := Compile(filter.MustParse("tcp"), 9999, 100); err == nil {
		t.Error("unknown link type accepted")
	}
	if p, err := Compile(nil, LinkEthernet, 100); err != nil || len(p) != 1 {
		t.Errorf("nil filter: %v %v", p, err)
	}
}

func FuzzCompile(f *testing.F) {
	for _, e := range diffExprs {
		f.Add(e, []byte{0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6})
	}
	f.Fuzz(func(t *testing.T, expr string, pkt []byte) {
		n, err := filter.Parse(expr)
		if err != nil {
			return
		}
		for _, lt := range []LinkType{LinkEthernet, LinkLinuxSLL, LinkLinuxSLL2, LinkRaw} {
			prog, err := Compile(n, lt, 262144)
			if err == ErrTooLarge {
				continue
			}
			if err != nil {
				t.Fatalf("%q: %v", expr, err)
			}
			vm, err := bpf.NewVM(prog)
			if err != nil {
				t.Fatalf("%q: invalid program: %v", expr, err)
			}
			vm.Run(pkt)
		}
	})
}
