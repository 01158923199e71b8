package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	vnl "github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nattrace/nattrace/filter"
	"github.com/nattrace/nattrace/netns"
)

// Options configure a capture; the capture command binds its flags here.
type Options struct {
	Interfaces []string // IFACE, NETNS/IFACE or any (default any)
	Netns      []string // namespaces for IFACE and any (default the current one)
	// Namespaces, when set, are used instead of Netns (already resolved).
	Namespaces []*netns.NS
	Filter     string
	Snaplen    uint32
	Count      int
	Duration   time.Duration
	Write      string // pcapng file
	Quiet      bool   // no packet lines
	ReadyFile  string
	Ring       RingConfig
	Window     time.Duration // how long packets wait to be put in time order
	// Keep, when set, decides late (after Window) which packets the
	// kernel filter let through are kept; Annotate gives a kept packet its
	// comment. "nattrace flow -w" selects a flow's packets this way.
	Keep     func(*Packet) bool
	Annotate func(*Packet) string
	// Ready, when set, is called once every socket is open.
	Ready func()
	// NoPayload cuts every packet after its headers before it is written
	// or printed (see HeadersLen).
	NoPayload bool
}

// IfStats are one interface's counters, as tcpdump reports them.
type IfStats struct {
	Name     string
	Captured uint64 // written / printed
	Received uint64 // passed the kernel filter
	Dropped  uint64 // dropped by the kernel: the ring was full
}

// UsageError is bad input (exit code 2); nothing was opened.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

type target struct {
	ns    *netns.NS
	iface string // "" = every interface, and new ones
}

func resolve(o Options) ([]target, error) {
	nss := o.Namespaces
	specs := o.Netns
	if len(specs) == 0 && len(nss) == 0 {
		specs = []string{""}
	}
	for _, s := range specs {
		ns, err := netns.Resolve(s)
		if err != nil {
			return nil, &UsageError{Msg: err.Error()}
		}
		nss = append(nss, ns)
	}
	ifaces := o.Interfaces
	if len(ifaces) == 0 {
		ifaces = []string{"any"}
	}
	var out []target
	for _, i := range ifaces {
		if nsName, ifc, ok := strings.Cut(i, "/"); ok {
			ns, err := netns.Resolve(nsName)
			if err != nil {
				return nil, &UsageError{Msg: err.Error()}
			}
			if ifc == "any" {
				ifc = ""
			}
			out = append(out, target{ns, ifc})
			continue
		}
		for _, ns := range nss {
			if i == "any" {
				out = append(out, target{ns, ""})
			} else {
				out = append(out, target{ns, i})
			}
		}
	}
	return out, nil
}

// Capture is a running capture.
type Capture struct {
	o       Options
	expr    filter.Node
	mu      sync.Mutex
	sources map[string]*source
	pkts    chan *Packet
	wg      sync.WaitGroup
	done    chan struct{}
}

// Prepare validates the options: the filter, the namespaces.
func Prepare(o Options) (*Capture, []target, error) {
	expr, err := filter.Parse(o.Filter)
	if err != nil {
		return nil, nil, &UsageError{Msg: err.Error()}
	}
	if o.Snaplen == 0 {
		o.Snaplen = 262144
	}
	if o.Ring.BlockSize == 0 {
		o.Ring = DefaultRing
	}
	if o.Window == 0 {
		o.Window = 200 * time.Millisecond
	}
	ts, err := resolve(o)
	if err != nil {
		return nil, nil, err
	}
	return &Capture{o: o, expr: expr, sources: map[string]*source{}, pkts: make(chan *Packet, 65536), done: make(chan struct{})}, ts, nil
}

func (c *Capture) add(ns *netns.NS, iface string) error {
	select {
	case <-c.done:
		return nil // stopped: no new sources
	default:
	}
	key := fmt.Sprintf("%d/%s", ns.Inode, iface)
	c.mu.Lock()
	if _, ok := c.sources[key]; ok {
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	s, err := openSource(ns, iface, c.expr, c.o.Snaplen, c.o.Ring)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.sources[key] = s
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		s.run(func(p *Packet) {
			select {
			case c.pkts <- p:
			default: // the merger fell behind: counted as captured but lost
			}
		})
	}()
	return nil
}

// watch adds every interface of ns, now and when it appears.
func (c *Capture) watch(ns *netns.NS) error {
	h, err := ns.Netlink()
	if err != nil {
		return err
	}
	links, err := h.LinkList()
	h.Close()
	if err != nil {
		return err
	}
	for _, l := range links {
		if err := c.add(ns, l.Attrs().Name); err != nil {
			return err
		}
	}
	updates := make(chan vnl.LinkUpdate, 64)
	nsh, err := vns.GetFromPath(ns.Path)
	if err != nil {
		return err
	}
	if err := vnl.LinkSubscribeWithOptions(updates, c.done, vnl.LinkSubscribeOptions{Namespace: &nsh}); err != nil {
		nsh.Close()
		return err
	}
	go func() {
		defer nsh.Close()
		for u := range updates {
			if u.Link == nil || u.Attrs().Flags&unix.IFF_UP == 0 {
				continue
			}
			// The link may need a moment to be usable.
			for i := 0; i < 10; i++ {
				if c.add(ns, u.Attrs().Name) == nil {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}()
	return nil
}

// Run captures until the context ends, the count or the duration is
// reached; packets are printed to out (unless Quiet) in time order and
// written to the pcapng file.
func Run(ctx context.Context, o Options, out io.Writer) ([]IfStats, error) {
	c, targets, err := Prepare(o)
	if err != nil {
		return nil, err
	}
	var w *Writer
	if o.Write != "" {
		f, err := os.OpenFile(o.Write, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return nil, &UsageError{Msg: err.Error()}
		}
		defer f.Close()
		if w, err = NewWriter(f); err != nil {
			return nil, err
		}
		defer w.Flush()
	}
	defer c.stop()
	for _, t := range targets {
		if t.iface == "" {
			err = c.watch(t.ns)
		} else {
			err = c.add(t.ns, t.iface)
		}
		if err != nil {
			return nil, &UsageError{Msg: err.Error()}
		}
	}
	if o.ReadyFile != "" {
		os.WriteFile(o.ReadyFile, []byte("ready\n"), 0o600)
		defer os.Remove(o.ReadyFile)
	}
	if o.Ready != nil {
		o.Ready()
	}
	if o.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Duration)
		defer cancel()
	}
	counts := map[*Interface]uint64{}
	added := map[*Interface]bool{}
	printed := 0
	emit := func(p *Packet) bool {
		if o.Keep != nil && !o.Keep(p) {
			return false
		}
		if o.Annotate != nil {
			p.Comment = o.Annotate(p)
		}
		if o.NoPayload {
			StripPayload(p)
		}
		if w != nil {
			if !added[p.Iface] {
				w.AddInterface(p.Iface)
				added[p.Iface] = true
			}
			w.WritePacket(p)
		}
		if !o.Quiet {
			fmt.Fprintln(out, Line(p))
		}
		counts[p.Iface]++
		printed++
		return o.Count > 0 && printed >= o.Count
	}
	m := &merger{c: c, emit: emit, stop: c.stop}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
loop:
	for {
		select {
		case p := <-c.pkts:
			m.buf = append(m.buf, p)
		case now := <-tick.C:
			if m.tick(now, o.Window) {
				break loop
			}
		case <-ctx.Done():
			m.final()
			break loop
		}
	}
	c.stop()
	var stats []IfStats
	c.mu.Lock()
	for _, s := range c.sources {
		passed, dropped := s.stats()
		stats = append(stats, IfStats{Name: s.ifc.Name, Captured: counts[s.ifc], Received: passed, Dropped: dropped})
	}
	c.mu.Unlock()
	sort.Slice(stats, func(i, j int) bool { return stats[i].Name < stats[j].Name })
	return stats, nil
}

func (c *Capture) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	close(c.done)
	c.mu.Lock()
	for _, s := range c.sources {
		s.closed.Store(true)
	}
	c.mu.Unlock()
	c.wg.Wait() // readers leave within their poll timeout
	c.mu.Lock()
	for _, s := range c.sources {
		s.stats()
		s.tp.Close()
	}
	c.mu.Unlock()
}

// ErrNoInterfaces is returned when nothing could be opened.
var ErrNoInterfaces = errors.New("no interface to capture on")

// ReadFile prints a pcapng file back, with each packet's comment.
func ReadFile(path string, out io.Writer) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, &UsageError{Msg: err.Error()}
	}
	defer f.Close()
	r, err := NewReader(f)
	if err != nil {
		return 0, &UsageError{Msg: fmt.Sprintf("%s: %v", path, err)}
	}
	n := 0
	for {
		p, err := r.Next()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
		fmt.Fprintln(out, Line(p))
		if p.Comment != "" {
			fmt.Fprintf(out, "    comment: %s\n", p.Comment)
		}
	}
}

// merger puts the packets of every socket in time order.
type merger struct {
	c    *Capture
	buf  []*Packet
	emit func(*Packet) bool // true: the count is reached
	stop func()             // stops the readers (Capture.stop)
}

// drain moves what the readers have handed over into buf.
func (m *merger) drain() {
	for {
		select {
		case p := <-m.c.pkts:
			m.buf = append(m.buf, p)
		default:
			return
		}
	}
}

// tick writes what is before the horizon. The marks are read first and the
// channel drained after: a reader moves its mark only once the packets
// before it are in the channel, so every packet older than the horizon is
// in buf when it is sorted (a select that took the tick before a waiting
// packet wrote a later packet first, seen under emulation).
func (m *merger) tick(now time.Time, window time.Duration) bool {
	h := m.c.horizon(now, window)
	m.drain()
	return m.flush(h)
}

// final stops the readers, then writes everything they handed over.
func (m *merger) final() {
	if m.stop != nil {
		m.stop()
	}
	m.drain()
	m.flush(time.Time{})
}

// flush writes, in time order, the packets older than before (all when it
// is zero) and reports whether the count was reached.
func (m *merger) flush(before time.Time) bool {
	sort.SliceStable(m.buf, func(i, j int) bool { return m.buf[i].Time.Before(m.buf[j].Time) })
	n := 0
	for _, p := range m.buf {
		if !before.IsZero() && !p.Time.Before(before) {
			break
		}
		n++
		if m.emit(p) {
			m.buf = m.buf[n:]
			return true
		}
	}
	m.buf = m.buf[n:]
	return false
}

// maxLag bounds how long the merge waits for a socket that lags behind.
const maxLag = 5 * time.Second

// horizon is the time before which packets can be written in order: every
// socket has delivered what it captured before it (its mark), and packets
// have waited window (for Keep and Annotate). A socket that lags more than
// maxLag is not waited for.
func (c *Capture) horizon(now time.Time, window time.Duration) time.Time {
	h := now.Add(-window)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.sources {
		if s.closed.Load() {
			continue
		}
		if m := time.Unix(0, s.mark.Load()); m.Before(h) {
			h = m
		}
	}
	if floor := now.Add(-maxLag); h.Before(floor) {
		h = floor
	}
	return h
}
