package nftrace

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/nattrace/nattrace/netns"
)

// Listener receives trace events in one network namespace.
type Listener struct {
	conn     *netlink.Conn
	overruns atomic.Uint64
	bad      atomic.Uint64
}

// ReadBuffer is the socket receive buffer asked for: trace events come in
// bursts of several per packet.
const ReadBuffer = 16 << 20

// Listen subscribes to NFNLGRP_NFTRACE inside ns.
func Listen(ns *netns.NS) (*Listener, error) {
	fd, err := ns.Open()
	if err != nil {
		return nil, fmt.Errorf("nftrace: open namespace %s: %w", ns, err)
	}
	defer unix.Close(fd)
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: fd})
	if err != nil {
		return nil, fmt.Errorf("nftrace: netlink socket in %s: %w", ns, err)
	}
	if err := conn.JoinGroup(groupNFTrace); err != nil {
		conn.Close()
		return nil, fmt.Errorf("nftrace: join NFNLGRP_NFTRACE in %s: %w", ns, err)
	}
	_ = conn.SetReadBuffer(ReadBuffer)
	return &Listener{conn: conn}, nil
}

// Run calls fn for every event until Close; it returns nil after Close.
// raw is the undecoded message payload (for recording fixtures).
func (l *Listener) Run(fn func(e *Event, at time.Time, raw []byte)) error {
	for {
		msgs, err := l.conn.Receive()
		if err != nil {
			if errors.Is(err, unix.ENOBUFS) {
				l.overruns.Add(1)
				continue
			}
			if errors.Is(err, unix.EBADF) || isClosed(err) {
				return nil
			}
			return fmt.Errorf("nftrace: receive: %w", err)
		}
		at := time.Now()
		for _, m := range msgs {
			if m.Header.Type != MsgType {
				continue
			}
			e, err := Decode(m.Data)
			if err != nil {
				l.bad.Add(1)
				continue
			}
			fn(e, at, m.Data)
		}
	}
}

func isClosed(err error) bool {
	var oe *netlink.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	return err != nil && (err.Error() == "use of closed file" || errors.Is(err, errors.ErrUnsupported) ||
		err.Error() == "use of closed network connection")
}

// Overruns is how many times the socket buffer overflowed (events lost).
func (l *Listener) Overruns() uint64 { return l.overruns.Load() }

// Malformed is how many messages could not be decoded.
func (l *Listener) Malformed() uint64 { return l.bad.Load() }

// Close stops Run.
func (l *Listener) Close() error { return l.conn.Close() }
