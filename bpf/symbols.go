package bpf

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf/btf"
)

// DropReasons names kfree_skb drop reasons from the running kernel's BTF:
// the numbers of enum skb_drop_reason differ between kernels.
type DropReasons struct {
	names map[uint32]string
}

// LoadDropReasons reads enum skb_drop_reason from /sys/kernel/btf/vmlinux.
func LoadDropReasons() (*DropReasons, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("kernel BTF: %w", err)
	}
	var enum *btf.Enum
	if err := spec.TypeByName("skb_drop_reason", &enum); err != nil {
		return nil, fmt.Errorf("enum skb_drop_reason: %w", err)
	}
	return dropReasonsFrom(enum), nil
}

func dropReasonsFrom(e *btf.Enum) *DropReasons {
	d := &DropReasons{names: map[uint32]string{}}
	for _, v := range e.Values {
		d.names[uint32(v.Value)] = strings.TrimPrefix(v.Name, "SKB_DROP_REASON_")
	}
	return d
}

// Name returns a reason's name ("NETFILTER_DROP", "IP_RPFILTER"), or its
// number when the kernel does not name it.
func (d *DropReasons) Name(r uint32) string {
	if d != nil {
		if n, ok := d.names[r]; ok {
			return n
		}
	}
	return "reason_" + strconv.Itoa(int(r))
}

// Kallsyms resolves kernel text addresses to "function+0xoffset".
type Kallsyms struct {
	once  sync.Once
	addrs []uint64
	names []string
}

func (k *Kallsyms) load() {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return
	}
	defer f.Close()
	type sym struct {
		a uint64
		n string
	}
	var syms []sym
	s := bufio.NewScanner(f)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 3 || (fields[1] != "t" && fields[1] != "T") {
			continue
		}
		a, err := strconv.ParseUint(fields[0], 16, 64)
		if err != nil || a == 0 {
			continue // addresses hidden (kptr_restrict)
		}
		syms = append(syms, sym{a, fields[2]})
	}
	sort.Slice(syms, func(i, j int) bool { return syms[i].a < syms[j].a })
	for _, x := range syms {
		k.addrs = append(k.addrs, x.a)
		k.names = append(k.names, x.n)
	}
}

// Load reads /proc/kallsyms now (it is read on first use otherwise, which
// can take a few hundred milliseconds in the middle of a trace).
func (k *Kallsyms) Load() { k.once.Do(k.load) }

// Symbol returns the function an address is in, or "" if unknown.
func (k *Kallsyms) Symbol(addr uint64) string {
	k.once.Do(k.load)
	i := sort.Search(len(k.addrs), func(i int) bool { return k.addrs[i] > addr }) - 1
	if i < 0 || addr == 0 {
		return ""
	}
	return fmt.Sprintf("%s+0x%x", k.names[i], addr-k.addrs[i])
}
