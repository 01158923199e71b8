package trace

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/nattrace/nattrace/netns"
	"github.com/nattrace/nattrace/trace/ruleset"
)

var sprintf = fmt.Sprintf

// Probe is what one namespace offers for tracing.
type Probe struct {
	NFT          bool   // nf_tables usable
	NFTErr       string // why not
	NFTTables    int    // tables that are not nattrace's
	LegacyTables []string
	LegacyTools  bool // iptables-legacy-save/-restore installed
	NFTTool      bool // nft(8) installed (rule text)
	NFLogBinding string
	IptablesNFT  bool // iptables-nft-save installed
}

// ProbeNS inspects a namespace without changing it.
func ProbeNS(ns *netns.NS) Probe {
	var p Probe
	fd, err := ns.Open()
	if err == nil {
		c, cerr := nftables.New(nftables.WithNetNSFd(fd))
		if cerr == nil {
			tables, lerr := c.ListTables()
			switch {
			case lerr == nil:
				p.NFT = true
				for _, t := range tables {
					if !ruleset.IsOwnTable(t.Name) {
						p.NFTTables++
					}
				}
			case errors.Is(lerr, unix.EPERM):
				p.NFTErr = "permission denied (needs CAP_NET_ADMIN)"
			default:
				p.NFTErr = "nf_tables unavailable: " + lerr.Error()
			}
		} else {
			p.NFTErr = cerr.Error()
		}
		unix.Close(fd)
	} else {
		p.NFTErr = err.Error()
	}
	if b, err := ns.ReadNetFile("ip_tables_names"); err == nil {
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			if t := strings.TrimSpace(sc.Text()); t != "" {
				p.LegacyTables = append(p.LegacyTables, t)
			}
		}
	}
	_, e1 := exec.LookPath("iptables-legacy-save")
	_, e2 := exec.LookPath("iptables-legacy-restore")
	p.LegacyTools = e1 == nil && e2 == nil
	_, e3 := exec.LookPath("nft")
	p.NFTTool = e3 == nil
	_, e4 := exec.LookPath("iptables-nft-save")
	p.IptablesNFT = e4 == nil
	p.NFLogBinding, _ = ns.ReadSysctl("net.netfilter.nf_log.2")
	return p
}

// CheckPrivileges returns an error unless the process can change netfilter
// and enter namespaces.
func CheckPrivileges() error {
	if os.Geteuid() == 0 {
		return nil
	}
	b, err := os.ReadFile("/proc/self/status")
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "CapEff:") {
				caps, _ := strconv.ParseUint(strings.TrimSpace(line[7:]), 16, 64)
				const netAdmin, sysAdmin = 1 << 12, 1 << 21
				if caps&netAdmin != 0 && caps&sysAdmin != 0 {
					return nil
				}
			}
		}
	}
	return usagef("nattrace needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) to install trace rules: run it with sudo")
}
