package lab

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// Ping sends one ICMP echo request with the given id from a host to dst and
// waits for the reply (raw socket: root only).
func (l *Lab) Ping(host, dst string, id int, timeout time.Duration) error {
	return l.PingFrom(host, "0.0.0.0", dst, id, timeout)
}

// PingFrom is Ping with the source address src (one of the host's).
func (l *Lab) PingFrom(host, src, dst string, id int, timeout time.Duration) error {
	var c *icmp.PacketConn
	err := l.NS(host).Do(func() error {
		var err error
		c, err = icmp.ListenPacket("ip4:icmp", src)
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: 1, Data: []byte("nattrace")}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return err
	}
	to := netip.MustParseAddr(dst)
	if _, err := c.WriteTo(b, &net.IPAddr{IP: to.AsSlice()}); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	c.SetReadDeadline(deadline)
	buf := make([]byte, 1500)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("no echo reply from %s: %w", dst, err)
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && m.Type == ipv4.ICMPTypeEchoReply && e.ID == id {
			return nil
		}
	}
}
