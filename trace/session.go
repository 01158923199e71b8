package trace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nattrace/nattrace/bpf"
	"github.com/nattrace/nattrace/event"
	"github.com/nattrace/nattrace/filter"
	"github.com/nattrace/nattrace/netns"
	"github.com/nattrace/nattrace/trace/ctflow"
	"github.com/nattrace/nattrace/trace/legacy"
	"github.com/nattrace/nattrace/trace/nftrace"
	"github.com/nattrace/nattrace/trace/ruleset"
	"github.com/nattrace/nattrace/trace/selector"
	"github.com/nattrace/nattrace/trace/state"
)

// Backends accepted by --backend.
const (
	BackendAuto   = "auto"
	BackendNFT    = "nft"
	BackendLegacy = "legacy"
)

// Options configure a session; the flow command binds its flags to them.
type Options struct {
	Filter    string
	Netns     []string
	Backend   []string // auto, nft, legacy; or NAMESPACE=BACKEND
	Count     int
	Duration  time.Duration
	Rate      uint32
	ReadyFile string
	StateDir  string
	// ObservationLog, when set, receives every observation as a JSON line
	// before correlation (to record test fixtures).
	ObservationLog io.Writer
	// NoBPF leaves the BPF probes out (interfaces, routes, drop reasons).
	NoBPF bool
	// Write captures the traced flows on every interface of the traced
	// namespaces into this pcapng file, each packet commented with its trace.
	Write string
	// NoPayload cuts the captured packets after their headers.
	NoPayload bool
}

// DefaultRate is the default trace rate limit (packets per second per
// namespace): enough to follow a handful of connections, little enough to
// be harmless on a busy host.
const DefaultRate = 50

const nfLogSysctl = "net.netfilter.nf_log.2"

// nsSession is the per-namespace part of a session.
type nsSession struct {
	ns         *netns.NS
	probe      Probe
	nftSel     bool // selector: nft table (else legacy rules)
	collectNFT bool
	collectLeg bool
	res        *resolver
	nft        *selector.NFT
	leg        *selector.Legacy
	nftL       *nftrace.Listener
	legL       *legacy.Listener
	ct         *ctflow.Source
	backend    string
	changes    []int // state file indexes, in order made
}

// Session is one run of "nattrace flow".
type Session struct {
	opts     Options
	ID       string
	expr     filter.Node
	dnf      filter.DNF
	notDNF   filter.DNF
	follow   bool
	warnings []string
	nss      []*nsSession
	file     *state.File
	started  time.Time

	obs      chan *event.Observation
	dropped  atomic.Uint64
	stopOnce sync.Once
	stopErr  error
	wg       sync.WaitGroup

	selected, limited uint64
	probes            *bpf.Probes
	probeSrc          *probeSource
	rec               *recorder
}

// Prepare validates the options and inspects every namespace. It changes
// nothing: errors are UsageErrors with one line saying what to fix.
func Prepare(o Options) (*Session, error) {
	s := &Session{opts: o, ID: state.NewID()}
	if s.opts.StateDir == "" {
		s.opts.StateDir = state.DefaultDir
	}
	if s.opts.Rate == 0 {
		s.opts.Rate = DefaultRate
	}
	global, perNS, err := parseBackends(o.Backend)
	if err != nil {
		return nil, err
	}
	if o.Count < 0 || o.Duration < 0 {
		return nil, usagef("--count and --duration must not be negative")
	}
	expr, err := filter.Parse(o.Filter)
	if err != nil {
		return nil, &UsageError{Msg: err.Error()}
	}
	s.expr = expr
	var approx bool
	s.dnf, approx = filter.ToDNF(expr)
	if approx {
		s.warnings = append(s.warnings, fmt.Sprintf("the filter needs more than %d kernel rules: the kernel selects every packet (rate-limited) and nattrace filters in user space", filter.MaxClauses))
	}
	if expr != nil && !approx {
		var notApprox bool
		s.notDNF, notApprox = filter.ToDNF(filter.Not{X: expr})
		s.follow = !notApprox
		if notApprox {
			s.warnings = append(s.warnings, "the filter's negation needs too many kernel rules: replies and translated packets are traced only when they match the filter")
		}
	}
	if err := CheckPrivileges(); err != nil {
		return nil, err
	}
	specs := o.Netns
	if len(specs) == 0 {
		specs = []string{""}
	}
	seen := map[uint64]bool{}
	live, _ := state.List(s.opts.StateDir)
	for _, spec := range specs {
		ns, err := netns.Resolve(spec)
		if err != nil {
			return nil, &UsageError{Msg: err.Error()}
		}
		if seen[ns.Inode] {
			continue
		}
		seen[ns.Inode] = true
		n := &nsSession{ns: ns, probe: ProbeNS(ns), backend: global}
		if b, ok := perNS[spec]; ok {
			n.backend = b
			delete(perNS, spec)
		}
		if err := s.chooseBackend(n); err != nil {
			return nil, err
		}
		if n.collectLeg {
			for _, other := range live {
				if !other.Alive() {
					continue
				}
				for _, c := range other.Changes {
					if c.Kind == state.KindSysctl && c.NetnsInode == ns.Inode {
						return nil, usagef("nflog group 0 in namespace %s is taken by nattrace session %s (pid %d): stop it, or trace with --backend nft", ns, other.ID, other.PID)
					}
				}
			}
		}
		s.nss = append(s.nss, n)
	}
	for name := range perNS {
		return nil, usagef("--backend %s=...: %s is not a traced namespace (add --netns %s)", name, name, name)
	}
	return s, nil
}

// parseBackends reads --backend values: one of auto, nft, legacy for every
// namespace, or NAMESPACE=BACKEND for one.
func parseBackends(vals []string) (global string, perNS map[string]string, err error) {
	global, perNS = BackendAuto, map[string]string{}
	valid := func(b string) bool { return b == BackendAuto || b == BackendNFT || b == BackendLegacy }
	for _, v := range vals {
		ns, b, isPer := strings.Cut(v, "=")
		if !isPer {
			b = v
		}
		if !valid(b) {
			return "", nil, usagef("unknown backend %q: use auto, nft or legacy (or NAMESPACE=BACKEND)", b)
		}
		if isPer {
			perNS[ns] = b
		} else {
			global = b
		}
	}
	return global, perNS, nil
}

func (s *Session) chooseBackend(n *nsSession) error {
	p := n.probe
	legacyPresent := len(p.LegacyTables) > 0
	switch n.backend {
	case BackendNFT:
		if !p.NFT {
			return usagef("backend nft is unavailable in namespace %s: %s", n.ns, p.NFTErr)
		}
		n.nftSel, n.collectNFT = true, true
		if legacyPresent {
			s.warnings = append(s.warnings, fmt.Sprintf("%s: iptables-legacy tables (%s) are not traced with --backend nft", n.ns, strings.Join(p.LegacyTables, ",")))
		}
	case BackendLegacy:
		if !p.LegacyTools {
			return usagef("backend legacy is unavailable: iptables-legacy-save/-restore are not installed (apt-get install iptables)")
		}
		n.collectLeg = true
		if !slices.Contains(p.LegacyTables, "raw") {
			s.warnings = append(s.warnings, fmt.Sprintf("%s: the iptables-legacy raw table does not exist: the TRACE rule creates it, and the kernel keeps it (empty) until the namespace is deleted; --backend auto avoids this", n.ns))
		}
		if p.NFTTables > 0 {
			s.warnings = append(s.warnings, fmt.Sprintf("%s: nf_tables rules are not traced with --backend legacy", n.ns))
		}
		if s.follow {
			s.warnings = append(s.warnings, fmt.Sprintf("%s: with --backend legacy, replies and translated packets are traced only when they match the filter (following a connection needs nf_tables)", n.ns))
		}
	default:
		switch {
		case legacyPresent && !p.LegacyTools:
			if !p.NFT {
				return usagef("namespace %s has iptables-legacy tables but iptables-legacy-save is not installed (apt-get install iptables)", n.ns)
			}
			n.nftSel, n.collectNFT = true, true
			s.warnings = append(s.warnings, fmt.Sprintf("%s: iptables-legacy tables are not traced: iptables-legacy-save is not installed", n.ns))
		case legacyPresent && p.NFT:
			// Select with nf_tables: the shared nf_trace bit makes the
			// legacy tables trace too, no iptables rule is inserted (a
			// TRACE rule would create a missing raw table for good), and
			// connections are followed after conntrack.
			n.nftSel, n.collectNFT, n.collectLeg = true, true, true
		case legacyPresent:
			n.collectLeg = true
		case p.NFT:
			n.nftSel, n.collectNFT = true, true
		default:
			return usagef("no tracing backend in namespace %s: %s, and no iptables-legacy tables", n.ns, p.NFTErr)
		}
	}
	if n.collectNFT && !p.NFTTool {
		return usagef("nft(8) is not installed: it is needed to show nf_tables rules (apt-get install nftables)")
	}
	return nil
}

// Backends lists the backend of each namespace as "NS:backends".
func (s *Session) Backends() []string {
	var out []string
	for _, n := range s.nss {
		var b []string
		if n.collectNFT {
			b = append(b, "nft")
		}
		if n.collectLeg {
			b = append(b, "iptables-legacy")
		}
		out = append(out, n.ns.Name+":"+strings.Join(b, "+"))
	}
	return out
}

// Info is the session header of the JSON stream.
func (s *Session) Info() event.Session {
	var names []string
	for _, n := range s.nss {
		names = append(names, n.ns.Name)
	}
	host, _ := os.Hostname()
	return event.Session{Type: "session", Version: 1, ID: s.ID, Started: s.started, Filter: s.opts.Filter,
		Netns: names, Backends: s.Backends(), Rate: int(s.opts.Rate), Warnings: s.warnings,
		Host: host, Kernel: kernelRelease(), NoPayload: s.opts.NoPayload}
}

// Namespaces are the traced namespaces.
func (s *Session) Namespaces() []*netns.NS {
	var out []*netns.NS
	for _, n := range s.nss {
		out = append(out, n.ns)
	}
	return out
}

// Warnings lists what the session will not see, and why.
func (s *Session) Warnings() []string { return s.warnings }

// Start makes the changes, in this order per namespace: listeners, the
// nf_log binding, the selector. On error everything made so far is undone.
func (s *Session) Start() (err error) {
	rep := CleanupStale(s.opts.StateDir)
	for _, r := range rep.Removed {
		s.warnings = append(s.warnings, "cleaned up after a dead session: "+r)
	}
	f, err := state.Create(s.opts.StateDir, s.ID, strings.Join(os.Args, " "))
	if err != nil {
		return err
	}
	s.file = f
	s.started = time.Now()
	s.obs = make(chan *event.Observation, 1<<16)
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	for _, n := range s.nss {
		if err := s.startNS(n); err != nil {
			return err
		}
	}
	if !s.opts.NoBPF {
		s.startProbes()
	}
	if s.opts.Write != "" {
		if s.rec, err = s.startRecorder(s.opts.Write); err != nil {
			return fmt.Errorf("capture for -w: %w", err)
		}
	}
	if s.opts.ReadyFile != "" {
		if err := os.WriteFile(s.opts.ReadyFile, []byte(s.ID+"\n"), 0o600); err != nil {
			return fmt.Errorf("ready file: %w", err)
		}
	}
	return nil
}

// startProbes loads the BPF probes; without them the session still runs
// and says what it does not observe.
func (s *Session) startProbes() {
	var inodes []uint32
	var traced []*netns.NS
	for _, n := range s.nss {
		inodes = append(inodes, uint32(n.ns.Inode))
		traced = append(traced, n.ns)
	}
	p, err := bpf.Load(bpf.Options{DNF: s.dnf, Netns: inodes})
	if err != nil {
		s.warnings = append(s.warnings, fmt.Sprintf("BPF probes unavailable (%v): interfaces crossed, routes and kernel drop reasons are not observed", err))
		return
	}
	for name, why := range p.Missing {
		s.warnings = append(s.warnings, fmt.Sprintf("BPF probe %s not attached (%s): not observed", name, why))
	}
	s.probes = p
	s.probeSrc = newProbeSource(p, traced)
	for _, n := range s.nss {
		if err := p.AttachNetfilter(n.ns.Name, n.ns.Do); err != nil {
			// Kernels before 6.4: the same snapshots from fentry/fexit on
			// nf_nat_manip_pkt, where fentry works.
			if terr := p.AttachNATTracing(); terr != nil {
				s.warnings = append(s.warnings, fmt.Sprintf("NAT snapshots unavailable (BPF netfilter programs: %v; %s: %v): translations come from trace events and conntrack only", err, bpf.NATTracingProbe, terr))
			}
			break
		}
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.undoOnPanic()
		_ = p.Read(func(e *bpf.Event) { s.push(s.probeSrc.observe(e)) })
	}()
}

func (s *Session) record(n *nsSession, c state.Change) (int, error) {
	c.NetnsInode, c.NetnsName, c.NetnsPath = n.ns.Inode, n.ns.Name, n.ns.Path
	i, err := s.file.Begin(c)
	if err == nil {
		n.changes = append(n.changes, i)
	}
	return i, err
}

func (s *Session) push(o *event.Observation) {
	select {
	case s.obs <- o:
	default:
		s.dropped.Add(1)
	}
}

func (s *Session) startNS(n *nsSession) error {
	var err error
	n.res, err = newResolver(n.ns, s.ID, ruleset.Options{NFT: n.collectNFT, Legacy: n.collectLeg})
	if err != nil {
		return err
	}
	if n.collectNFT {
		if n.nftL, err = nftrace.Listen(n.ns); err != nil {
			return err
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.undoOnPanic()
			_ = n.nftL.Run(func(e *nftrace.Event, at time.Time, _ []byte) { s.push(n.res.fromNFT(e, at)) })
		}()
	}
	if n.ct, err = ctflow.Open(n.ns); err != nil {
		s.warnings = append(s.warnings, fmt.Sprintf("%s: conntrack unavailable (%v): packets are not grouped into connections", n.ns, err))
		n.ct = nil
	} else {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.undoOnPanic()
			_ = n.ct.Run(func(f *event.CTFlow) {
				// Only connections of the filter reach the correlator: a
				// busy host's conntrack events must not crowd out traces.
				if s.expr != nil && !ctflow.Matches(s.expr, f) {
					return
				}
				s.push(&event.Observation{Source: SourceConntrack, Netns: n.ns.Name, Time: time.Now(), Flow: f})
			})
		}()
	}
	if n.collectLeg {
		n.legL, err = legacy.Listen(n.ns, func(l legacy.Line) {
			defer s.undoOnPanic()
			s.push(n.res.fromLegacy(l, time.Now()))
		})
		if errors.Is(err, legacy.ErrGroupTaken) {
			return usagef("nflog group 0 in namespace %s is bound by another process (a logging daemon?): stop it, or trace with --backend nft", n.ns)
		}
		if err != nil {
			return err
		}
		old, err := n.ns.ReadSysctl(nfLogSysctl)
		if err != nil {
			return fmt.Errorf("read %s in %s: %w", nfLogSysctl, n.ns, err)
		}
		if old != "nfnetlink_log" {
			i, err := s.record(n, state.Change{Kind: state.KindSysctl, Sysctl: nfLogSysctl, Old: old, New: "nfnetlink_log"})
			if err != nil {
				return err
			}
			if err := n.ns.WriteSysctl(nfLogSysctl, "nfnetlink_log"); err != nil {
				return fmt.Errorf("bind %s to nfnetlink_log in %s: %w", nfLogSysctl, n.ns, err)
			}
			s.file.Commit(i)
		}
	}
	if n.nftSel {
		i, err := s.record(n, state.Change{Kind: state.KindNFTTable})
		if err != nil {
			return err
		}
		n.nft = &selector.NFT{ID: s.ID, NS: n.ns, DNF: s.dnf, Rate: s.opts.Rate, Follow: s.follow, NotDNF: s.notDNF}
		if err := n.res.installThenReload(n.nft.Install); err != nil {
			return err
		}
		s.file.Commit(i)
	} else {
		i, err := s.record(n, state.Change{Kind: state.KindLegacyRules})
		if err != nil {
			return err
		}
		n.leg = &selector.Legacy{ID: s.ID, NS: n.ns, DNF: s.dnf, Rate: s.opts.Rate}
		if err := n.res.installThenReload(n.leg.Install); err != nil {
			return err
		}
		s.file.Commit(i)
		if !n.leg.Exact {
			s.warnings = append(s.warnings, fmt.Sprintf("%s: iptables cannot express the filter exactly; the kernel selects more and nattrace filters in user space", n.ns))
		}
		if n.leg.IPv6Untraced {
			s.warnings = append(s.warnings, fmt.Sprintf("%s: IPv6 packets are not traced by the iptables-legacy backend", n.ns))
		}
	}
	return nil
}

// Sink receives what a session traced.
type Sink interface {
	Packet(*event.Packet)
	Flow(*event.Flow)
}

// Run correlates events until the context ends, the packet count or the
// duration is reached. It gives every traced packet, and every connection
// after its packets, to sink and returns the session's statistics after
// undoing every change.
func (s *Session) Run(ctx context.Context, sink Sink) (event.Stats, error) {
	if s.opts.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.opts.Duration)
		defer cancel()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var emitted int
	var corr *Correlator
	corr = NewCorrelator(s.expr, func(p *event.Packet) {
		if s.opts.Count > 0 && emitted >= s.opts.Count {
			return
		}
		emitted++
		sink.Packet(p)
		if s.opts.Count > 0 && emitted >= s.opts.Count {
			corr.Stopped = true
			cancel()
		}
	})
	corr.EmitFlow = sink.Flow
	if s.rec != nil {
		base := corr.Emit
		corr.Emit = func(p *event.Packet) {
			s.rec.note(p)
			base(p)
		}
	}
	corr.Rate = int(s.opts.Rate)
	if s.probes != nil {
		var nss []*netns.NS
		for _, n := range s.nss {
			nss = append(nss, n.ns)
		}
		corr.RPFilter = newRPChecker(nss).check
		corr.Traced = map[string]bool{}
		for _, ns := range nss {
			corr.Traced[ns.Name] = true
		}
	}
	add := corr.Add
	if s.probes != nil {
		// Followed connections' tuples let the probes pick their packets
		// up from the first device they cross.
		base := add
		add = func(o *event.Observation) {
			if f := o.Flow; f != nil {
				if f.Event == event.CTDestroy {
					s.probes.Unfollow(f.Orig, f.Reply)
				} else {
					s.probes.Follow(f.Orig, f.Reply)
				}
			}
			base(o)
		}
	}
	if s.rec != nil {
		base := add
		add = func(o *event.Observation) {
			if f := o.Flow; f != nil && f.Event != event.CTDestroy {
				s.rec.follow(f)
			}
			base(o)
		}
	}
	if w := s.opts.ObservationLog; w != nil {
		enc := json.NewEncoder(w)
		base := add
		add = func(o *event.Observation) {
			enc.Encode(o)
			base(o)
		}
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
loop:
	for {
		select {
		case o := <-s.obs:
			add(o)
		case now := <-tick.C:
			corr.Tick(now)
		case <-ctx.Done():
			break loop
		}
	}
	// Read counters, remove selectors, let in-flight events arrive.
	err := s.Stop()
	drain := time.After(250 * time.Millisecond)
drainLoop:
	for {
		select {
		case o := <-s.obs:
			add(o)
		case <-drain:
			break drainLoop
		}
	}
	s.closeListeners()
rest:
	for {
		select {
		case o := <-s.obs:
			add(o)
		default:
			break rest
		}
	}
	if s.opts.Count == 0 || emitted < s.opts.Count {
		corr.FlushPackets()
	}
	corr.Flush() // connections of the packets traced
	if s.rec != nil {
		// The capture writes what it held, now that every trace is known.
		if rerr := s.rec.finish(); rerr != nil && err == nil {
			err = fmt.Errorf("capture: %w", rerr)
		}
		s.rec = nil
	}
	st := event.Stats{Type: "stats", Packets: uint64(emitted), Events: corr.Stats.Events,
		RateLimited: s.limited, Filtered: corr.Stats.Filtered, DurationNs: time.Since(s.started).Nanoseconds()}
	var seen uint64
	for _, v := range corr.Stats.Markers {
		seen += v
	}
	st.RateLimited += corr.Stats.BPFLimited
	if traced := s.selected - s.limited; traced > seen {
		st.Lost = traced - seen
	}
	st.Lost += s.dropped.Load()
	if s.probes != nil {
		_, lost, _ := s.probes.Counters()
		st.Lost += lost // probe events the ring buffer had no room for
	}
	var overruns uint64
	for _, n := range s.nss {
		if n.nftL != nil {
			overruns += n.nftL.Overruns()
		}
		if n.legL != nil {
			overruns += n.legL.Overruns()
		}
	}
	if overruns > 0 && st.Lost == 0 {
		st.Lost = overruns // at least one event lost per overrun
	}
	return st, err
}

// Stop undoes every change (selectors, sysctls) and removes the state
// file. It is safe to call more than once and from a signal or panic path.
func (s *Session) Stop() error {
	s.stopOnce.Do(func() {
		var errs []error
		for _, n := range s.nss {
			if n.nft != nil {
				if sel, lim, err := n.nft.Counters(); err == nil {
					s.selected += sel
					s.limited += lim
				}
			}
			if n.leg != nil {
				if sel, lim, err := n.leg.Counters(); err == nil {
					s.selected += sel
					s.limited += lim
				}
			}
		}
		for i := len(s.nss) - 1; i >= 0; i-- {
			n := s.nss[i]
			if n.nft != nil {
				if err := n.nft.Remove(); err != nil {
					errs = append(errs, err)
				}
			}
			if n.leg != nil {
				if err := n.leg.Remove(); err != nil {
					errs = append(errs, err)
				}
			}
			// Undo recorded changes in reverse (also those whose
			// selector object failed half-way).
			for j := len(n.changes) - 1; j >= 0; j-- {
				c := s.file.S.Changes[n.changes[j]]
				if _, err := undo(s.ID, c, n.ns); err != nil {
					errs = append(errs, err)
					continue
				}
				s.file.Forget(n.changes[j])
			}
		}
		if s.file != nil && len(errs) == 0 {
			if err := s.file.Remove(); err != nil {
				errs = append(errs, err)
			}
		}
		if s.opts.ReadyFile != "" {
			os.Remove(s.opts.ReadyFile)
		}
		s.stopErr = errors.Join(errs...)
	})
	return s.stopErr
}

// undoOnPanic undoes every change before a panic in a session goroutine
// ends the process.
func (s *Session) undoOnPanic() {
	if r := recover(); r != nil {
		err := s.Stop()
		fmt.Fprintf(os.Stderr, "nattrace: internal error: %v (trace rules removed: %v)\n", r, err == nil)
		panic(r)
	}
}

func (s *Session) closeListeners() {
	for _, n := range s.nss {
		if n.nftL != nil {
			n.nftL.Close()
		}
		if n.legL != nil {
			n.legL.Close()
		}
		if n.ct != nil {
			n.ct.Close()
		}
	}
	if s.probes != nil {
		s.probes.Close()
	}
	s.wg.Wait()
}

// Close releases listeners after Stop (for callers that never ran Run).
func (s *Session) Close() {
	s.Stop()
	if s.rec != nil {
		s.rec.finish()
	}
	s.closeListeners()
}

// kernelRelease is uname -r.
func kernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}
