package trace

import (
	"net/netip"
	"strconv"
	"sync"
	"time"

	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nattrace/nattrace/event"
	"github.com/nattrace/nattrace/netns"
)

// rpChecker answers "would rp_filter let this packet in?" the way
// fib_validate_source does: the effective mode is the larger of
// conf.all.rp_filter and conf.<iif>.rp_filter (1 strict, 2 loose); the
// reverse lookup is the route to the packet's source. Strict passes when
// that route (any of its nexthops) leaves by the input device, loose when
// it exists.
type rpChecker struct {
	mu    sync.Mutex
	byNS  map[string]*netns.NS
	cache map[string]rpCached
}

type rpCached struct {
	step event.Step
	at   time.Time
}

func newRPChecker(nss []*netns.NS) *rpChecker {
	r := &rpChecker{byNS: map[string]*netns.NS{}, cache: map[string]rpCached{}}
	for _, ns := range nss {
		r.byNS[ns.Name] = ns
	}
	return r
}

// check returns the rpfilter step of a packet received on iif in a traced
// namespace, or nil for a namespace that is not traced.
func (r *rpChecker) check(name, iif string, src, dst netip.Addr, k RPKernel) *event.Step {
	ns := r.byNS[name]
	if ns == nil || !src.Is4() {
		return nil
	}
	key := name + "|" + iif + "|" + src.String()
	r.mu.Lock()
	c, ok := r.cache[key]
	r.mu.Unlock()
	var st event.Step
	if ok && time.Since(c.at) < time.Second {
		st = c.step
	} else {
		st = r.compute(ns, iif, src)
		r.mu.Lock()
		r.cache[key] = rpCached{st, time.Now()}
		r.mu.Unlock()
	}
	switch {
	case st.Mode == "off":
	case k.Checked:
		// The kernel's own verdict decides; the reverse lookup stays as
		// the explanation (which device the route back uses).
		st.Result, st.By = "pass", k.By
		if k.Failed {
			st.Result = "fail"
		}
	case k.Dropped:
		st.Result, st.By = "fail", "reverse route lookup, IP_RPFILTER drop"
	default:
		st.By = "reverse route lookup"
	}
	return &st
}

func modeName(m int) string {
	switch m {
	case 1:
		return "strict"
	case 2:
		return "loose"
	}
	return "off"
}

func (r *rpChecker) compute(ns *netns.NS, iif string, src netip.Addr) event.Step {
	st := event.Step{Kind: event.KindRPF, Netns: ns.Name, Dev: iif, Mode: "off", Result: "pass"}
	all, _ := ns.ReadSysctl("net.ipv4.conf.all.rp_filter")
	dev, _ := ns.ReadSysctl("net.ipv4.conf." + iif + ".rp_filter")
	a, _ := strconv.Atoi(all)
	d, _ := strconv.Atoi(dev)
	mode := max(a, d)
	st.Mode = modeName(mode)
	if mode == 0 {
		return st
	}
	h, err := ns.Netlink()
	if err != nil {
		return st
	}
	defer h.Close()
	routes, err := h.RouteGetWithOptions(src.AsSlice(), &vnl.RouteGetOptions{FIBMatch: true})
	if err != nil || len(routes) == 0 || routes[0].Type == unix.RTN_UNREACHABLE || routes[0].Type == unix.RTN_BLACKHOLE || routes[0].Type == unix.RTN_PROHIBIT {
		st.Result = "fail" // no route back at all
		return st
	}
	var devs []int
	if routes[0].LinkIndex != 0 {
		devs = append(devs, routes[0].LinkIndex)
	}
	for _, nh := range routes[0].MultiPath {
		devs = append(devs, nh.LinkIndex)
	}
	names := map[int]string{}
	for _, idx := range devs {
		if l, err := h.LinkByIndex(idx); err == nil {
			names[idx] = l.Attrs().Name
		}
	}
	st.Result = "fail"
	for _, idx := range devs {
		if st.ReverseDev == "" {
			st.ReverseDev = names[idx]
		} else if names[idx] != "" {
			st.ReverseDev += "," + names[idx]
		}
		if names[idx] == iif {
			st.Result = "pass"
		}
	}
	if mode == 2 {
		st.Result = "pass" // loose: a route back exists
	}
	return st
}
