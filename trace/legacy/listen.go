package legacy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	nflog "github.com/florianl/go-nflog/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/nattrace/nattrace/netns"
)

// Group is the nflog group TRACE lines are sent to (nfnetlink_log's
// default for loggers that are not NFLOG targets).
const Group = 0

// Line is one TRACE line as received.
type Line struct {
	Trace   Trace
	Prefix  string
	Time    time.Time
	InDev   uint32
	OutDev  uint32
	Payload []byte // from the network header on
}

// Listener receives TRACE lines on nflog group 0 in one namespace.
type Listener struct {
	nf       *nflog.Nflog
	cancel   context.CancelFunc
	overruns atomic.Uint64
	other    atomic.Uint64
}

// ErrGroupTaken is returned when nflog group 0 is already bound in the
// namespace (by another nattrace session or by a logging daemon).
var ErrGroupTaken = errors.New("nflog group 0 is already bound in this namespace")

// Listen binds nflog group 0 in ns and calls fn for every TRACE line until
// Close. Lines that are not TRACE lines are counted and skipped.
func Listen(ns *netns.NS, fn func(Line)) (*Listener, error) {
	fd, err := ns.Open()
	if err != nil {
		return nil, fmt.Errorf("legacy: open namespace %s: %w", ns, err)
	}
	defer unix.Close(fd)
	nf, err := nflog.Open(&nflog.Config{
		NetNS:    fd,
		Group:    Group,
		Copymode: nflog.CopyPacket,
		Bufsize:  256, // copy range: headers are enough
		// nfnetlink_log batches up to 100 lines or 1 s by default: TRACE
		// lines would arrive after the packet's other events. Flush each.
		QThresh: 1,
		Timeout: 1, // 1/100 s
	})
	if err != nil {
		return nil, fmt.Errorf("legacy: nflog socket in %s: %w", ns, err)
	}
	_ = nf.Con.SetReadBuffer(16 << 20)
	l := &Listener{nf: nf}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	hook := func(a nflog.Attribute) int {
		if a.Prefix == nil {
			l.other.Add(1)
			return 0
		}
		t, err := ParsePrefix(*a.Prefix)
		if err != nil {
			l.other.Add(1)
			return 0
		}
		line := Line{Trace: t, Prefix: *a.Prefix, Time: time.Now()}
		if a.Timestamp != nil {
			line.Time = *a.Timestamp
		}
		if a.InDev != nil {
			line.InDev = *a.InDev
		}
		if a.OutDev != nil {
			line.OutDev = *a.OutDev
		}
		if a.Payload != nil {
			line.Payload = *a.Payload
		}
		fn(line)
		return 0
	}
	errfn := func(err error) int {
		if errors.Is(err, unix.ENOBUFS) {
			l.overruns.Add(1)
			return 0
		}
		var oe *netlink.OpError
		if errors.As(err, &oe) && (oe.Timeout() || oe.Temporary()) && ctx.Err() == nil {
			return 0
		}
		return 1
	}
	if err := nf.RegisterWithErrorFunc(ctx, hook, errfn); err != nil {
		cancel()
		nf.Close()
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EBUSY) || strings.Contains(err.Error(), "operation not permitted") {
			return nil, fmt.Errorf("%w (%s)", ErrGroupTaken, ns)
		}
		return nil, fmt.Errorf("legacy: bind nflog group 0 in %s: %w", ns, err)
	}
	return l, nil
}

// Overruns is how many times the socket buffer overflowed.
func (l *Listener) Overruns() uint64 { return l.overruns.Load() }

// Close unbinds the group and stops the listener.
func (l *Listener) Close() error {
	l.cancel()
	return l.nf.Close()
}
