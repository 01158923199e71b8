// Package snapshot records the state of a network namespace that explains
// a trace: interfaces and addresses, routes of every table and policy
// rules, the sysctls that decide forwarding, rp_filter, route_localnet and
// legacy TRACE, the nf_tables ruleset and iptables-save of both backends,
// and conntrack counters. A recording keeps one at the start of a session
// and one at its end.
package snapshot

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/nattrace/nattrace/event"
	"github.com/nattrace/nattrace/netns"
)

// Take snapshots a namespace. Nothing it runs changes state; what cannot
// be read is listed in Errors.
func Take(ns *netns.NS) *event.NetnsSnapshot {
	s := &event.NetnsSnapshot{Name: ns.Name, Taken: time.Now(), Sysctls: map[string]string{}}
	raw := func(args ...string) json.RawMessage {
		out, err := ns.Output("ip", args...)
		if err != nil {
			s.Errors = append(s.Errors, err.Error())
			return nil
		}
		if !json.Valid(out) {
			s.Errors = append(s.Errors, "ip "+strings.Join(args, " ")+": not JSON")
			return nil
		}
		return json.RawMessage(out)
	}
	s.Addresses = raw("-j", "addr")
	s.Routes = raw("-j", "route", "show", "table", "all")
	s.Routes6 = raw("-j", "-6", "route", "show", "table", "all")
	s.Rules = raw("-j", "rule")
	text := func(name string, args ...string) string {
		if _, err := exec.LookPath(name); err != nil {
			return ""
		}
		out, err := ns.Output(name, args...)
		if err != nil {
			s.Errors = append(s.Errors, err.Error())
		}
		return string(out)
	}
	s.NFTables = text("nft", "-s", "list", "ruleset")
	s.IptNFT = text("iptables-nft-save")
	s.IptLegacy = text("iptables-legacy-save")
	for _, k := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding", "net.ipv4.conf.all.rp_filter",
		"net.ipv4.conf.default.rp_filter", "net.ipv4.conf.all.route_localnet", "net.netfilter.nf_log.2",
		"net.netfilter.nf_conntrack_count", "net.netfilter.nf_conntrack_max"} {
		if v, err := ns.ReadSysctl(k); err == nil {
			s.Sysctls[k] = v
		}
	}
	// Per interface: rp_filter and route_localnet.
	var links []struct {
		Ifname string `json:"ifname"`
	}
	if json.Unmarshal(s.Addresses, &links) == nil {
		for _, l := range links {
			for _, k := range []string{"rp_filter", "route_localnet"} {
				name := "net.ipv4.conf." + l.Ifname + "." + k
				if v, err := ns.ReadSysctl(name); err == nil {
					s.Sysctls[name] = v
				}
			}
		}
	}
	return s
}

// Write saves snapshots to a file (mode 0600).
func Write(path string, nss []*event.NetnsSnapshot) error {
	b, err := json.MarshalIndent(nss, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}
