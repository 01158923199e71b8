package report

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nattrace/nattrace/event"
)

// Text renders packets as blocks of lines.
type Text struct {
	mu    sync.Mutex
	w     io.Writer
	color bool
}

// NewText returns a text renderer; color is used only when asked for.
func NewText(w io.Writer, color bool) *Text { return &Text{w: w, color: color} }

// ColorWanted reports whether f is a terminal and NO_COLOR is not set.
func ColorWanted(f *os.File) bool {
	if os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

const (
	red    = "\x1b[31m"
	green  = "\x1b[32m"
	yellow = "\x1b[33m"
	dim    = "\x1b[2m"
	bold   = "\x1b[1m"
	reset  = "\x1b[0m"
)

func (t *Text) c(code, s string) string {
	if !t.color {
		return s
	}
	return code + s + reset
}

// Session prints the session header.
func (t *Text) Session(s event.Session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := s.Filter
	if f == "" {
		f = "(all packets)"
	}
	fmt.Fprintf(t.w, "nattrace session %s: tracing %s in %s (%s), up to %d packets/s per namespace\n",
		s.ID, f, strings.Join(s.Netns, ", "), strings.Join(s.Backends, ", "), s.Rate)
	for _, w := range s.Warnings {
		fmt.Fprintf(t.w, "%s %s\n", t.c(yellow, "warning:"), w)
	}
}

// Header formats the tcpdump-like first line of a packet.
func Header(p *event.Packet) string {
	var b strings.Builder
	b.WriteString(p.FirstSeen.Format("15:04:05.000000"))
	fmt.Fprintf(&b, " [%s]", p.Netns)
	t := p.Tuple
	ipv := "IP"
	if t.Src.Is6() {
		ipv = "IP6"
	}
	if t.ICMPType == nil && (t.Sport != 0 || t.Dport != 0) {
		fmt.Fprintf(&b, " %s %s.%d > %s.%d: %s", ipv, t.Src, t.Sport, t.Dst, t.Dport, t.Proto)
	} else {
		fmt.Fprintf(&b, " %s %s > %s: %s", ipv, t.Src, t.Dst, t.Proto)
	}
	if p.TCPFlags != "" {
		fmt.Fprintf(&b, " Flags %s", p.TCPFlags)
	}
	if t.ICMPType != nil {
		code := uint8(0)
		if t.ICMPCode != nil {
			code = *t.ICMPCode
		}
		fmt.Fprintf(&b, " %s", icmpName(t.Src.Is6(), *t.ICMPType, code))
		if t.Sport != 0 {
			fmt.Fprintf(&b, ", id %d", t.Sport)
		}
	}
	if p.Length > 0 {
		fmt.Fprintf(&b, ", length %d", p.Length)
	}
	if p.IIF != "" {
		fmt.Fprintf(&b, ", in %s", p.IIF)
	} else {
		b.WriteString(", locally generated")
	}
	if p.OIF != "" {
		fmt.Fprintf(&b, ", out %s", p.OIF)
	}
	if p.CTState != "" {
		fmt.Fprintf(&b, ", ct %s", p.CTState)
	}
	return b.String()
}

func icmpName(v6 bool, typ, code uint8) string {
	if v6 {
		switch typ {
		case 128:
			return "echo request"
		case 129:
			return "echo reply"
		case 1:
			return fmt.Sprintf("destination unreachable (code %d)", code)
		}
		return fmt.Sprintf("type %d code %d", typ, code)
	}
	switch typ {
	case 8:
		return "echo request"
	case 0:
		return "echo reply"
	case 3:
		return fmt.Sprintf("destination unreachable (code %d)", code)
	case 11:
		return "time exceeded"
	}
	return fmt.Sprintf("type %d code %d", typ, code)
}

// EndpointString renders "A:P → B:Q" (addresses only for ICMP without id).
func EndpointString(e *event.Endpoints) string {
	if e == nil {
		return "?"
	}
	return hostPort(e.Src, e.Sport) + " → " + hostPort(e.Dst, e.Dport)
}

func hostPort(a netip.Addr, p uint16) string {
	if p == 0 {
		return a.String()
	}
	return netip.AddrPortFrom(a, p).String()
}

// natLine formats a nat step.
func natLine(s event.Step) string {
	kind := strings.ToUpper(s.NAT)
	if s.Reverse {
		kind = "reverse " + kind
	}
	line := fmt.Sprintf("%-11s %-28s %s %s", s.Hook, "nat", kind, EndpointString(s.Before))
	line += " => " + EndpointString(s.After)
	if s.NAT == event.NATMasquerade && s.OIF != "" && !s.Reverse {
		line += fmt.Sprintf(" (address of %s)", s.OIF)
	}
	switch {
	case s.By == "rule":
		line += fmt.Sprintf("  [%s/%s rule %d]", s.Table, s.Chain, s.Position)
	case s.SetupBy != "":
		line += fmt.Sprintf("  [by conntrack entry %d, set up by %s]", s.CTID, s.SetupBy)
	case s.CTID != 0:
		line += fmt.Sprintf("  [by conntrack entry %d, set up before the session started]", s.CTID)
	default:
		line += "  [by conntrack]"
	}
	return line
}

// probeLine formats the steps the BPF probes and the rp_filter check add.
func probeLine(s event.Step) string {
	where := s.Netns
	switch s.Kind {
	case event.KindRx:
		return fmt.Sprintf("%-11s %-28s received on %s", "rx", where, s.Dev)
	case event.KindTx:
		return fmt.Sprintf("%-11s %-28s sent on %s", "tx", where, s.Dev)
	case event.KindRoute:
		what := "lookup"
		if s.Result == "reverse" {
			what = "reverse lookup (to the source)"
		}
		line := fmt.Sprintf("%-11s %-28s %s %s in table %s", "route", where, what, s.Dst, s.Table)
		if s.Error != "" {
			return line + ": " + s.Error
		}
		line += ": via " + s.Dev
		if s.GW != "" {
			line += " gateway " + s.GW
		}
		return line
	case event.KindRPF:
		line := fmt.Sprintf("%-11s %-28s %s on %s", "rp_filter", where, s.Mode, s.Dev)
		if s.Mode == "off" {
			return line + ": not checked"
		}
		back := s.ReverseDev
		if back == "" {
			back = "no route"
		}
		return line + fmt.Sprintf(": route back to the source leaves by %s: %s", back, strings.ToUpper(s.Result))
	case event.KindDrop:
		line := fmt.Sprintf("%-11s %-28s freed by the kernel: %s", "drop", where, s.Reason)
		if s.Location != "" {
			line += " at " + s.Location
		}
		return line
	}
	return ""
}

// StepLine formats one step: hook, table/chain, position, rule and verdict.
func StepLine(s event.Step) string {
	switch s.Kind {
	case event.KindNAT:
		return natLine(s)
	case event.KindRx, event.KindTx, event.KindRoute, event.KindRPF, event.KindDrop:
		return probeLine(s)
	}
	where := s.Table + "/" + s.Chain
	if s.Family != "" && s.Syntax == "nft" {
		where = s.Family + " " + where
	}
	var what string
	switch s.Kind {
	case event.KindPolicy:
		what = fmt.Sprintf("policy %s", s.Verdict)
	case event.KindReturn:
		what = "end of chain, return"
		if s.Target != "" {
			what += " to " + s.Target
		}
	default:
		what = fmt.Sprintf("rule %d: %s", s.Position, s.Rule)
		if s.Rule == "" {
			what = fmt.Sprintf("rule %d (handle %d)", s.Position, s.Handle)
		}
	}
	v := s.Verdict
	switch s.Verdict {
	case event.VerdictJump, event.VerdictGoto:
		v += " " + s.Target
	case event.VerdictReturn:
		if s.Kind == event.KindRule {
			v = "return"
			if s.Target != "" {
				v += " to " + s.Target
			}
		} else {
			v = ""
		}
	}
	hook := s.Hook
	if hook == "" {
		hook = "-"
	}
	line := fmt.Sprintf("%-11s %-28s %s", hook, where, what)
	if v != "" && s.Kind != event.KindPolicy {
		line += "  => " + v
	}
	return line
}

// Fate formats the packet's last line.
func Fate(p *event.Packet) string {
	switch p.Verdict {
	case event.FateDropped:
		d := p.Drop
		if d == nil {
			return "DROPPED"
		}
		switch d.By {
		case "rp_filter":
			return fmt.Sprintf("DROPPED by rp_filter (%s mode on %s, %s). Fix: %s", d.Mode, d.Dev, d.Reason, d.Fix)
		case "kernel":
			s := "DROPPED by the kernel: " + d.Reason
			if d.Location != "" {
				s += " at " + d.Location
			}
			if d.Fix != "" {
				s += ". " + d.Fix
			}
			return s
		}
		if d.By == event.KindPolicy {
			return fmt.Sprintf("DROPPED by %s/%s policy (%s)", d.Table, d.Chain, d.Rule)
		}
		verb := "DROPPED"
		if d.Reason == "rejected" {
			verb = "REJECTED"
		}
		return fmt.Sprintf("%s by %s/%s rule %d: %s", verb, d.Table, d.Chain, d.Position, d.Rule)
	case event.FateForwarded:
		s := "forwarded"
		if p.OIF != "" {
			s = fmt.Sprintf("forwarded out of %s [%s]", p.OIF, p.Netns)
		}
		if p.Note != "" {
			s += ", " + p.Note
		}
		return s
	case event.FateDelivered:
		if p.EndNetns != "" {
			return fmt.Sprintf("delivered locally [%s]", p.EndNetns)
		}
		return fmt.Sprintf("delivered locally [%s]", p.Netns)
	case event.FateSent:
		if p.OIF != "" {
			return fmt.Sprintf("sent out of %s [%s]", p.OIF, p.Netns)
		}
		return "sent"
	}
	if p.Note != "" {
		return "fate unknown: " + p.Note
	}
	return "fate unknown"
}

// Packet prints one packet block.
func (t *Text) Packet(p *event.Packet) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(t.w, "%s\n", t.c(bold, Header(p)))
	for _, s := range p.Steps {
		if s.Kind == event.KindRPF && s.Mode == "off" {
			continue // in the JSON; noise in text
		}
		line := StepLine(s)
		if s.Verdict == event.VerdictDrop || s.Verdict == event.VerdictReject {
			line = t.c(red, line)
		}
		fmt.Fprintf(t.w, "  %s\n", line)
	}
	if len(p.Steps) == 0 {
		fmt.Fprintf(t.w, "  %s\n", t.c(dim, "(no rule matched in any table)"))
	}
	fate := Fate(p)
	code := green
	switch p.Verdict {
	case event.FateDropped:
		code = red
	case event.FateUnknown:
		code = yellow
	}
	fmt.Fprintf(t.w, "  %s %s\n\n", t.c(code, "=>"), t.c(code, fate))
}

// Flow prints a connection summary: what each side sees, where it was
// translated, and its conntrack history.
func (t *Text) Flow(f *event.Flow) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var b strings.Builder
	nat := "no NAT"
	if len(f.NAT) > 0 {
		nat = strings.ToUpper(strings.Join(f.NAT, "+"))
	}
	fmt.Fprintf(&b, "flow %d [%s] %s", f.ID, f.Netns, f.Orig.Proto)
	if f.CTID != 0 {
		fmt.Fprintf(&b, ", conntrack entry %d", f.CTID)
	}
	fmt.Fprintf(&b, ", %s, %s original, %d reply", nat, plural(f.Packets.Orig, "packet"), f.Packets.Reply)
	if f.Existing {
		b.WriteString(", connection older than the session")
	}
	b.WriteString("\n")
	if f.Orig.Src.IsValid() {
		fmt.Fprintf(&b, "  client side   %s\n", EndpointString(&event.Endpoints{Src: f.Orig.Src, Dst: f.Orig.Dst, Sport: f.Orig.Sport, Dport: f.Orig.Dport}))
	}
	for _, tr := range f.Translations {
		line := fmt.Sprintf("     %s at %s", strings.ToUpper(tr.NAT), tr.Hook)
		if tr.By != "" {
			line += " by " + tr.By
		}
		if tr.NAT == event.NATMasquerade && tr.OIF != "" {
			line += fmt.Sprintf(", source %s of %s", tr.After.Src, tr.OIF)
		}
		fmt.Fprintf(&b, "%s\n       %s\n", line, EndpointString(&tr.After))
	}
	if f.Reply.Src.IsValid() {
		fmt.Fprintf(&b, "  server side   %s\n", EndpointString(&event.Endpoints{Src: f.Reply.Dst, Dst: f.Reply.Src, Sport: f.Reply.Dport, Dport: f.Reply.Sport}))
		fmt.Fprintf(&b, "  replies       %s", EndpointString(&event.Endpoints{Src: f.Reply.Src, Dst: f.Reply.Dst, Sport: f.Reply.Sport, Dport: f.Reply.Dport}))
		if f.Orig.Src.IsValid() && (f.Reply.Src != f.Orig.Dst || f.Reply.Sport != f.Orig.Dport || f.Reply.Dst != f.Orig.Src || f.Reply.Dport != f.Orig.Sport) {
			fmt.Fprintf(&b, "  reach the client as  %s", EndpointString(&event.Endpoints{Src: f.Orig.Dst, Dst: f.Orig.Src, Sport: f.Orig.Dport, Dport: f.Orig.Sport}))
		}
		b.WriteString("\n")
	}
	if len(f.States) > 0 {
		var parts []string
		for _, s := range f.States {
			part := s.State
			if s.TCPState != "" {
				part += " " + s.TCPState
			}
			if flags := interesting(s.Status); flags != "" {
				part += " [" + flags + "]"
			}
			parts = append(parts, part)
		}
		fmt.Fprintf(&b, "  conntrack     %s\n", strings.Join(parts, " -> "))
	}
	b.WriteString("\n")
	io.WriteString(t.w, b.String())
}

func plural(n uint64, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// interesting keeps the status bits an operator reads.
func interesting(status []string) string {
	var out []string
	for _, s := range status {
		switch s {
		case "SEEN_REPLY", "ASSURED", "SRC_NAT", "DST_NAT", "DYING", "UNTRACKED":
			out = append(out, s)
		}
	}
	return strings.Join(out, ",")
}

// Stats prints the closing statistics.
func (t *Text) Stats(s event.Stats) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(t.w, "%d packets traced in %s, %d events", s.Packets, time.Duration(s.DurationNs).Round(time.Millisecond), s.Events)
	fmt.Fprintf(t.w, ", %d not traced by the rate limit", s.RateLimited)
	if s.Lost > 0 {
		fmt.Fprintf(t.w, ", %s", t.c(red, fmt.Sprintf("%d LOST", s.Lost)))
	} else {
		fmt.Fprintf(t.w, ", 0 lost")
	}
	if s.Filtered > 0 {
		fmt.Fprintf(t.w, ", %d filtered in user space", s.Filtered)
	}
	fmt.Fprintln(t.w)
}
