package capture

import (
	"bytes"
	"testing"
)

func TestHeadersLen(t *testing.T) {
	tcp := ports(40000, 80)
	tcp[12] = 8 << 4 // 32-byte header: 12 bytes of options
	tcp = append(tcp, make([]byte, 12)...)
	pay := []byte("GET / HTTP/1.1\r\n")
	echo := []byte{8, 0, 0, 0, 0, 1, 0, 1}
	inner := ipv4("10.0.0.2", "10.0.0.1", 17, 0, append(ports(5353, 53)[:8], pay...))
	unreach := append([]byte{3, 3, 0, 0, 0, 0, 0, 0}, inner...)
	v6udp := append(ports(1000, 53)[:8], pay...)
	frag6 := append([]byte{17, 0, 0, 0x08, 0, 0, 0, 1}, pay...) // offset 1: a later fragment
	for _, c := range []struct {
		name string
		l3   []byte
		et   uint16
		want int // network-layer bytes that are headers
	}{
		{"tcp with options", ipv4("10.0.0.1", "10.0.0.2", 6, 0, append(tcp, pay...)), 0x0800, 20 + 32},
		{"udp", ipv4("10.0.0.1", "10.0.0.2", 17, 0, append(ports(1, 2)[:8], pay...)), 0x0800, 28},
		{"icmp echo", ipv4("10.0.0.1", "10.0.0.2", 1, 0, append(echo, pay...)), 0x0800, 28},
		{"icmp error quotes the header and ports", ipv4("10.0.0.1", "10.0.0.2", 1, 0, unreach), 0x0800, 20 + 8 + 20 + 8},
		{"later fragment", ipv4("10.0.0.1", "10.0.0.2", 6, 0x0010, pay), 0x0800, 20},
		{"gre", ipv4("10.0.0.1", "10.0.0.2", 47, 0, pay), 0x0800, 20},
		{"ipv6 udp", ipv6("2001:db8::1", "2001:db8::2", 17, v6udp), 0x86dd, 48},
		{"ipv6 later fragment", ipv6("2001:db8::1", "2001:db8::2", 44, frag6), 0x86dd, 48},
		{"truncated tcp", ipv4("10.0.0.1", "10.0.0.2", 6, 0, tcp[:10]), 0x0800, 30},
	} {
		for _, lt := range []LinkType{LinkEthernet, LinkLinuxSLL, LinkLinuxSLL2, LinkRaw} {
			f := frame(pkt{l3: c.l3, etype: c.et}, lt)
			link := len(f) - len(c.l3)
			if got := HeadersLen(f, lt); got != link+c.want {
				t.Errorf("%s on %v: %d, want %d", c.name, lt, got, link+c.want)
			}
		}
	}
	p := &Packet{Iface: &Interface{LinkType: LinkRaw}, Data: ipv4("10.0.0.1", "10.0.0.2", 17, 0, append(ports(1, 2)[:8], pay...))}
	n := len(p.Data)
	StripPayload(p)
	if len(p.Data) != 28 || p.OrigLen != n || bytes.Contains(p.Data, pay[:4]) {
		t.Errorf("stripped to %d bytes, orig %d", len(p.Data), p.OrigLen)
	}
}

func FuzzHeadersLen(f *testing.F) {
	for _, p := range corpus() {
		f.Add(frame(p, LinkEthernet), uint8(0))
		f.Add(p.l3, uint8(3))
	}
	lts := []LinkType{LinkEthernet, LinkLinuxSLL, LinkLinuxSLL2, LinkRaw}
	f.Fuzz(func(t *testing.T, data []byte, lt uint8) {
		n := HeadersLen(data, lts[int(lt)%len(lts)])
		if n < 0 || n > len(data) {
			t.Fatalf("%d of %d bytes", n, len(data))
		}
	})
}
