// Package lab builds network topologies in network namespaces for tests
// and the demo: hosts joined by veth pairs, with addresses, routes,
// forwarding and nft or iptables rulesets. It never touches the namespace
// it runs in: every command runs inside a lab namespace, and Close deletes
// the namespaces it created, by name.
package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/nattrace/nattrace/netns"
)

// Lab is a set of namespaces named <prefix>-<host>.
type Lab struct {
	Prefix string
	mu     sync.Mutex
	hosts  map[string]*netns.NS
	order  []string
	closed bool
}

// New returns an empty lab with a random prefix ("nt" + 6 hex digits).
func New() *Lab {
	var b [3]byte
	rand.Read(b[:])
	return &Lab{Prefix: "nt" + hex.EncodeToString(b[:]), hosts: map[string]*netns.NS{}}
}

// Name is the namespace name of a host.
func (l *Lab) Name(host string) string { return l.Prefix + "-" + host }

// NS returns a host's namespace.
func (l *Lab) NS(host string) *netns.NS {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hosts[host]
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// AddHost creates a namespace with loopback up.
func (l *Lab) AddHost(host string) error {
	name := l.Name(host)
	if err := run("ip", "netns", "add", name); err != nil {
		return err
	}
	l.mu.Lock()
	l.order = append(l.order, host)
	l.mu.Unlock()
	ns, err := netns.Resolve(name)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.hosts[host] = ns
	l.mu.Unlock()
	return l.IP(host, "link", "set", "lo", "up")
}

// IP runs "ip ARGS" inside a host.
func (l *Lab) IP(host string, args ...string) error {
	return run("ip", append([]string{"-n", l.Name(host)}, args...)...)
}

// Exec runs a command inside a host and returns its combined output.
func (l *Lab) Exec(host string, name string, args ...string) (string, error) {
	ns := l.NS(host)
	if ns == nil {
		return "", fmt.Errorf("no host %q", host)
	}
	out, err := ns.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %v: %s", name, strings.Join(args, " "), host, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Stdin runs a command inside a host with input.
func (l *Lab) Stdin(host, input, name string, args ...string) error {
	cmd := l.NS(host).Command(name, args...)
	cmd.Stdin = strings.NewReader(input)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s in %s: %v: %s", name, host, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Link joins two hosts with a veth pair; addresses are CIDRs ("" for none).
func (l *Lab) Link(a, aIf, aAddr, b, bIf, bAddr string) error {
	if err := l.IP(a, "link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", l.Name(b)); err != nil {
		return err
	}
	for _, x := range []struct{ host, ifname, addr string }{{a, aIf, aAddr}, {b, bIf, bAddr}} {
		if x.addr != "" {
			if err := l.IP(x.host, "addr", "add", x.addr, "dev", x.ifname); err != nil {
				return err
			}
		}
		if err := l.IP(x.host, "link", "set", x.ifname, "up"); err != nil {
			return err
		}
	}
	return nil
}

// Sysctl sets a sysctl inside a host.
func (l *Lab) Sysctl(host, key, value string) error {
	return l.NS(host).WriteSysctl(key, value)
}

// NFT loads an nft ruleset into a host.
func (l *Lab) NFT(host, ruleset string) error { return l.Stdin(host, ruleset, "nft", "-f", "-") }

// Iptables loads an iptables-restore ruleset into a host, with the nft or
// the legacy variant of iptables.
func (l *Lab) Iptables(host string, legacy bool, rules string) error {
	tool := "iptables-nft-restore"
	if legacy {
		tool = "iptables-legacy-restore"
	}
	return l.Stdin(host, rules, tool, "--noflush")
}

// Close deletes every namespace of the lab (by name) and waits until no
// veth of it is left.
func (l *Lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	var errs []error
	for i := len(l.order) - 1; i >= 0; i-- {
		if err := run("ip", "netns", "del", l.Name(l.order[i])); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ListenTCP listens inside a host and serves every connection with a line
// "hello from HOST\n". It stops with ctx.
func (l *Lab) ListenTCP(ctx context.Context, host, addr string) (net.Listener, error) {
	var ln net.Listener
	err := l.NS(host).Do(func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				fmt.Fprintf(c, "hello from %s\n", host)
				buf := make([]byte, 512)
				c.Read(buf)
			}()
		}
	}()
	return ln, nil
}

// DialTCP connects from inside a host. The socket keeps its namespace.
func (l *Lab) DialTCP(host, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := l.NS(host).Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	return c, err
}

// Exchange connects, reads the greeting, sends a line and closes.
func (l *Lab) Exchange(host, addr string, timeout time.Duration) (string, error) {
	c, err := l.DialTCP(host, addr, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	buf := make([]byte, 128)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(c, "bye\n")
	return string(buf[:n]), nil
}

// UDPConn opens a UDP socket inside a host connected to addr.
func (l *Lab) UDPConn(host, addr string) (net.Conn, error) {
	var c net.Conn
	err := l.NS(host).Do(func() error {
		var err error
		c, err = net.Dial("udp", addr)
		return err
	})
	return c, err
}

// ListenUDP serves UDP inside a host: every datagram is answered with
// "echo: " and its content. It stops with ctx.
func (l *Lab) ListenUDP(ctx context.Context, host, addr string) error {
	var pc net.PacketConn
	err := l.NS(host).Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp", addr)
		return err
	})
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		pc.Close()
	}()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("echo: "), buf[:n]...), from)
		}
	}()
	return nil
}

// UDPExchange sends one datagram from a host and waits for the answer.
func (l *Lab) UDPExchange(host, addr, msg string, timeout time.Duration) (string, error) {
	c, err := l.UDPConn(host, addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}
