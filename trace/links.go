package trace

import (
	"strconv"
	"sync"

	"github.com/nattrace/nattrace/netns"
)

// linkNames resolves interface indexes inside one namespace (indexes are
// per namespace and collide across them).
type linkNames struct {
	ns    *netns.NS
	mu    sync.Mutex
	names map[uint32]string
}

func newLinkNames(ns *netns.NS) *linkNames {
	l := &linkNames{ns: ns, names: map[uint32]string{}}
	l.reload()
	return l
}

func (l *linkNames) reload() {
	h, err := l.ns.Netlink()
	if err != nil {
		return
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return
	}
	for _, lk := range links {
		a := lk.Attrs()
		l.names[uint32(a.Index)] = a.Name
	}
}

// name returns the interface name of an index, "" for 0.
func (l *linkNames) name(idx uint32) string {
	if idx == 0 {
		return ""
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if n, ok := l.names[idx]; ok {
		return n
	}
	l.reload()
	if n, ok := l.names[idx]; ok {
		return n
	}
	n := "if" + strconv.Itoa(int(idx))
	l.names[idx] = n
	return n
}
