package event

import (
	"encoding/hex"
	"testing"
)

// A TCP SYN 10.200.1.2:36054 > 10.200.1.1:80, ip id 28495, as carried by an
// nftrace NETWORK_HEADER + TRANSPORT_HEADER pair.
const synNet = "4500003c6f4f40004006b56e0ac801020ac80101"
const synTCP = "8cd60050b2c4e8a600000000a002faf0e5b30000020405b40402080a"

func TestDecodeIPv4TCP(t *testing.T) {
	n, _ := hex.DecodeString(synNet)
	tr, _ := hex.DecodeString(synTCP)
	h, err := DecodeIP(n, tr)
	if err != nil {
		t.Fatal(err)
	}
	if h.Family != 4 || h.Tuple.Proto != "tcp" || h.Tuple.Src.String() != "10.200.1.2" || h.Tuple.Dst.String() != "10.200.1.1" ||
		h.Tuple.Sport != 36054 || h.Tuple.Dport != 80 || h.IPID != 28495 || h.Length != 60 || TCPFlagString(h.TCPFlags) != "[S]" {
		t.Fatalf("decoded %+v flags %s", h, TCPFlagString(h.TCPFlags))
	}
	// The same packet with the transport header inline (nflog payload).
	h2, err := DecodeIP(append(n, tr...), nil)
	if err != nil || h2.Tuple != h.Tuple {
		t.Fatalf("inline: %+v %v", h2, err)
	}
}

func TestDecodeIPv6ICMP(t *testing.T) {
	b, _ := hex.DecodeString("6000000000083a4020010db800000000000000000000000120010db8000000000000000000000002" + "8000f7ff00010001")
	h, err := DecodeIP(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if h.Family != 6 || h.Tuple.Proto != "icmp6" || *h.Tuple.ICMPType != 128 || h.Tuple.Dst.String() != "2001:db8::2" {
		t.Fatalf("decoded %+v", h)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, s := range []string{"", "45", "4f00003c", "60000000", "1234"} {
		b, _ := hex.DecodeString(s)
		if _, err := DecodeIP(b, nil); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
}

func FuzzDecodeIP(f *testing.F) {
	n, _ := hex.DecodeString(synNet)
	tr, _ := hex.DecodeString(synTCP)
	f.Add(n, tr)
	f.Add(append(n, tr...), []byte(nil))
	f.Fuzz(func(t *testing.T, network, transport []byte) {
		h, err := DecodeIP(network, transport)
		if err == nil {
			_ = h.Fields()
			_ = TCPFlagString(h.TCPFlags)
		}
	})
}
