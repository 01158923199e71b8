package cmd

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/spf13/cobra"

	"github.com/nattrace/nattrace/bpf"
	"github.com/nattrace/nattrace/netns"
	"github.com/nattrace/nattrace/trace"
)

func newDoctorCmd(e *env) *cobra.Command {
	var specs []string
	c := &cobra.Command{
		Use:   "doctor",
		Short: "Show what nattrace can observe on this host, per namespace, and why not",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return runDoctor(e.stdout, specs)
		},
	}
	c.Flags().StringArrayVar(&specs, "netns", nil, "namespace to inspect: NAME, PATH or pid:N; repeatable (default: the current one)")
	return c
}

type check struct {
	w io.Writer
}

func (d check) line(ok bool, what, detail string) {
	mark := "ok  "
	if !ok {
		mark = "no  "
	}
	fmt.Fprintf(d.w, "  %s %-28s %s\n", mark, what, detail)
}

func runDoctor(w io.Writer, specs []string) error {
	d := check{w}
	fmt.Fprintln(w, "host")
	privErr := trace.CheckPrivileges()
	if privErr == nil {
		d.line(true, "privileges", "root or CAP_NET_ADMIN+CAP_SYS_ADMIN")
	} else {
		d.line(false, "privileges", privErr.Error())
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		d.line(true, "kernel", strings.TrimSpace(string(b)))
	}
	for _, t := range []struct{ bin, pkg, why string }{
		{"nft", "nftables", "nf_tables rule text"},
		{"iptables-nft-save", "iptables", "iptables-nft rule text"},
		{"iptables-legacy-save", "iptables", "iptables-legacy backend"},
		{"iptables-legacy-restore", "iptables", "iptables-legacy backend"},
		{"nsenter", "util-linux", "running rule tools inside namespaces"},
	} {
		if p, err := exec.LookPath(t.bin); err == nil {
			d.line(true, t.bin, p+" ("+t.why+")")
		} else {
			d.line(false, t.bin, fmt.Sprintf("not installed: no %s (apt-get install %s)", t.why, t.pkg))
		}
	}
	_, err := os.Stat("/sys/kernel/btf/vmlinux")
	d.line(err == nil, "BTF", map[bool]string{true: "/sys/kernel/btf/vmlinux", false: "no /sys/kernel/btf/vmlinux: CO-RE BPF probes unavailable"}[err == nil])
	tracefs := mounted("tracefs")
	d.line(tracefs, "tracefs", map[bool]string{true: "mounted", false: "not mounted (only classic tracepoints need it: mount -t tracefs nodev /sys/kernel/tracing)"}[tracefs])
	if privErr == nil {
		doctorBPF(d)
	}
	if len(specs) == 0 {
		specs = []string{""}
	}
	for _, spec := range specs {
		ns, err := netns.Resolve(spec)
		if err != nil {
			fmt.Fprintf(w, "namespace %s\n", spec)
			d.line(false, "namespace", err.Error())
			continue
		}
		fmt.Fprintf(w, "namespace %s\n", ns)
		if privErr != nil {
			d.line(false, "inspection", "needs privileges")
			continue
		}
		p := trace.ProbeNS(ns)
		if p.NFT {
			d.line(true, "nf_tables", fmt.Sprintf("usable; %d table(s) besides nattrace's; trace events via NFNLGRP_NFTRACE", p.NFTTables))
		} else {
			d.line(false, "nf_tables", p.NFTErr)
		}
		if len(p.LegacyTables) > 0 {
			d.line(true, "iptables-legacy tables", strings.Join(p.LegacyTables, ", ")+" (traced with TRACE over nflog group 0)")
		} else {
			d.line(true, "iptables-legacy tables", "none")
		}
		bindOK := p.NFLogBinding == "nfnetlink_log"
		detail := p.NFLogBinding
		if !bindOK {
			detail += " (legacy TRACE lines would be discarded; nattrace binds nfnetlink_log while it traces and restores this)"
		}
		d.line(true, "net.netfilter.nf_log.2", detail)
		backend := "none"
		switch {
		case p.NFT && len(p.LegacyTables) > 0 && p.LegacyTools:
			backend = "nft selector (follows connections); nf_tables + iptables-legacy traces"
		case len(p.LegacyTables) > 0 && p.LegacyTools:
			backend = "iptables-legacy (TRACE rule in raw)"
		case p.NFT:
			backend = "nft (table inet nattrace_<id>, follows connections)"
		}
		d.line(backend != "none", "--backend auto", backend)
	}
	return nil
}

func mounted(fstype string) bool {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[2] == fstype {
			return true
		}
	}
	return false
}

// doctorBPF shows the probe capability ladder: the tracepoint probes
// nattrace attaches (loaded and detached here), and the kprobe/fentry
// probes it would add where the kernel allows them.
func doctorBPF(d check) {
	for _, pt := range []struct {
		t    ebpf.ProgramType
		name string
	}{
		{ebpf.RawTracepoint, "BPF prog type raw_tp"}, {ebpf.Netfilter, "BPF prog type netfilter"},
		{ebpf.SchedCLS, "BPF prog type sched_cls"},
	} {
		err := features.HaveProgramType(pt.t)
		detail := "loads"
		if err != nil {
			detail = err.Error()
		}
		d.line(err == nil, pt.name, detail)
	}
	nfErr, trErr := features.HaveProgramType(ebpf.Netfilter), features.HaveProgramType(ebpf.Tracing)
	switch {
	case nfErr == nil:
		d.line(true, "NAT snapshots", "BPF netfilter programs around NAT in each traced namespace")
	case trErr == nil:
		d.line(true, "NAT snapshots", bpf.NATTracingProbe+" (BPF netfilter programs need 6.4; the nf_nat module must be loaded)")
	default:
		d.line(false, "NAT snapshots", "neither BPF netfilter programs nor fentry: translations come from trace events and conntrack only")
	}
	if err := features.HaveProgramType(ebpf.Tracing); err != nil {
		d.line(false, "fentry/fexit", "unavailable: "+err.Error()+": the kernel's own rp_filter verdict is not observed (inferred from the reverse route and the IP_RPFILTER drop reason)")
	} else {
		d.line(true, "fentry/fexit", "available")
	}
	_, err := os.Stat("/sys/bus/event_source/devices/kprobe")
	if err != nil {
		d.line(false, "kprobe probes", "unavailable: the kernel has no kprobe PMU (CONFIG_KPROBES off)")
	} else {
		d.line(true, "kprobe probes", "available")
	}
	p, err := bpf.Load(bpf.Options{})
	if err != nil {
		d.line(false, "tracepoint probes", err.Error())
		return
	}
	defer p.Close()
	var tps []string
	rpf := false
	for _, a := range p.Attached {
		if a == bpf.RouteInputProbe {
			rpf = true
		} else {
			tps = append(tps, a)
		}
	}
	d.line(true, "tracepoint probes", "active (tp_btf): "+strings.Join(tps, ", "))
	if rpf {
		d.line(true, "rp_filter verdict", "exact: "+bpf.RouteInputProbe+" (the kernel's input route result)")
	}
	for name, why := range p.Missing {
		d.line(false, "probe "+name, why)
	}
	if _, err := bpf.LoadDropReasons(); err != nil {
		d.line(false, "drop reason names", err.Error())
	} else {
		d.line(true, "drop reason names", "enum skb_drop_reason from kernel BTF")
	}
}
