package event

import (
	"encoding/json"
	"net/netip"
	"time"

	"github.com/nattrace/nattrace/filter"
)

// Hook is a netfilter hook.
type Hook uint8

const (
	HookUnknown Hook = iota
	HookPrerouting
	HookInput
	HookForward
	HookOutput
	HookPostrouting
)

var hookNames = [...]string{"", "prerouting", "input", "forward", "output", "postrouting"}

func (h Hook) String() string {
	if int(h) < len(hookNames) {
		return hookNames[h]
	}
	return ""
}

// ParseHook returns the hook of an nft hook name or an iptables built-in
// chain name (case-insensitive).
func ParseHook(s string) Hook {
	switch s {
	case "prerouting", "PREROUTING":
		return HookPrerouting
	case "input", "INPUT":
		return HookInput
	case "forward", "FORWARD":
		return HookForward
	case "output", "OUTPUT":
		return HookOutput
	case "postrouting", "POSTROUTING":
		return HookPostrouting
	}
	return HookUnknown
}

// Order is the position of the hook in a packet's path through one
// namespace, used to sort steps from several sources.
func (h Hook) Order() int {
	switch h {
	case HookPrerouting, HookOutput:
		return 1
	case HookInput, HookForward:
		return 2
	case HookPostrouting:
		return 3
	}
	return 0
}

// Tuple identifies a packet's flow as it was first seen.
type Tuple struct {
	Proto    string     `json:"proto"`
	Src      netip.Addr `json:"src"`
	Dst      netip.Addr `json:"dst"`
	Sport    uint16     `json:"sport,omitempty"`
	Dport    uint16     `json:"dport,omitempty"`
	ICMPType *uint8     `json:"icmp_type,omitempty"`
	ICMPCode *uint8     `json:"icmp_code,omitempty"`
}

// Header is what a source decoded of a packet's network and transport
// headers at one point of its path.
type Header struct {
	Family   uint8 // 4 or 6
	Tuple    Tuple
	ProtoNum uint8
	IPID     uint32 // IPv4 id, IPv6 flow label
	Length   uint16 // IP total length (IPv6: payload length + 40)
	TTL      uint8
	Fragment bool   // non-first fragment
	TCPFlags uint8  // TCP flags byte (FIN 0x01 ... CWR 0x80)
	Seq, Ack uint32 // TCP sequence numbers
	HasPorts bool
}

// Fingerprint identifies one packet across sources in one namespace: fields
// that NAT and forwarding do not change.
func (h *Header) Fingerprint() uint64 {
	return uint64(h.Family)<<56 | uint64(h.ProtoNum)<<48 | uint64(h.Length)<<32 | uint64(h.IPID)
}

// Step kinds.
const (
	KindRule   = "rule"   // a rule matched
	KindPolicy = "policy" // a base chain's policy applied
	KindReturn = "return" // a chain ended and returned to its caller
	KindNAT    = "nat"    // an address or port translation
	KindRx     = "rx"     // received on a device (BPF)
	KindTx     = "tx"     // handed to a device (BPF)
	KindRoute  = "route"  // a routing decision (BPF)
	KindRPF    = "rpfilter"
	KindDrop   = "drop" // freed by the kernel with a drop reason (BPF)
)

// NAT kinds.
const (
	NATDNAT       = "dnat"
	NATSNAT       = "snat"
	NATMasquerade = "masquerade"
	NATRedirect   = "redirect"
)

// Endpoints are the addresses and ports of a packet before or after a
// translation (for ICMP echo, the id stands in for both ports).
type Endpoints struct {
	Src   netip.Addr `json:"src"`
	Dst   netip.Addr `json:"dst"`
	Sport uint16     `json:"sport"`
	Dport uint16     `json:"dport"`
}

// Verdicts of a step.
const (
	VerdictContinue = "continue"
	VerdictAccept   = "accept"
	VerdictDrop     = "drop"
	VerdictReject   = "reject"
	VerdictJump     = "jump"
	VerdictGoto     = "goto"
	VerdictReturn   = "return"
	VerdictQueue    = "queue"
	VerdictStolen   = "stolen"
	VerdictRepeat   = "repeat"
	VerdictStop     = "stop"
)

// Step is one entry of a packet's timeline.
type Step struct {
	TNs      int64  `json:"t_ns"`
	Kind     string `json:"kind"`
	Family   string `json:"family,omitempty"` // ip, ip6, inet, arp, bridge, netdev
	Table    string `json:"table,omitempty"`
	Chain    string `json:"chain,omitempty"`
	Hook     string `json:"hook,omitempty"`
	Position int    `json:"position,omitempty"` // 1-based position of the rule in its chain
	Handle   uint64 `json:"handle,omitempty"`   // nft rule handle
	Rule     string `json:"rule,omitempty"`     // iptables-save syntax or nft syntax
	Syntax   string `json:"syntax,omitempty"`   // "iptables" or "nft"
	Verdict  string `json:"verdict,omitempty"`
	Target   string `json:"target,omitempty"`  // chain jumped or gone to
	Backend  string `json:"backend,omitempty"` // nft, iptables-nft, iptables-legacy
	IIF      string `json:"iif,omitempty"`
	OIF      string `json:"oif,omitempty"`
	// kind "nat"
	NAT     string     `json:"nat,omitempty"`
	Before  *Endpoints `json:"before,omitempty"`
	After   *Endpoints `json:"after,omitempty"`
	CTID    uint32     `json:"ct_id,omitempty"`
	Reverse bool       `json:"reverse,omitempty"`  // the reverse translation of a reply
	By      string     `json:"by,omitempty"`       // "rule": a nat rule fired; "conntrack": the entry translated
	SetupBy string     `json:"setup_by,omitempty"` // the rule that set the entry up, e.g. "nat/PREROUTING rule 3"
	// kinds rx, tx, route, rpfilter, drop (BPF probes and the rp_filter check)
	Netns      string `json:"netns,omitempty"`
	Dev        string `json:"dev,omitempty"`
	Dst        string `json:"dst,omitempty"`         // route: the destination looked up
	GW         string `json:"gw,omitempty"`          // route: the gateway
	Error      string `json:"error,omitempty"`       // route: the lookup's error
	Mode       string `json:"mode,omitempty"`        // rpfilter: off, strict, loose
	Result     string `json:"result,omitempty"`      // rpfilter: pass, fail
	ReverseDev string `json:"reverse_dev,omitempty"` // rpfilter: where the route back to the source leaves
	Reason     string `json:"reason,omitempty"`      // drop: the kernel's drop reason
	Location   string `json:"location,omitempty"`    // drop: the kernel function that freed the packet
}

// Drop says what dropped a packet.
type Drop struct {
	By       string `json:"by"` // rule, policy
	Family   string `json:"family,omitempty"`
	Table    string `json:"table,omitempty"`
	Chain    string `json:"chain,omitempty"`
	Position int    `json:"position,omitempty"`
	Rule     string `json:"rule,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Location string `json:"location,omitempty"` // the kernel function that freed it (BPF)
	Dev      string `json:"dev,omitempty"`      // rp_filter: the input device
	Mode     string `json:"mode,omitempty"`     // rp_filter: strict or loose
	Fix      string `json:"fix,omitempty"`      // what would make the packet pass
}

// Fates of a packet.
const (
	FateDelivered = "delivered"
	FateForwarded = "forwarded"
	FateSent      = "sent"
	FateDropped   = "dropped"
	FateUnknown   = "unknown"
)

// Packet is the timeline of one packet through one network namespace.
type Packet struct {
	Type      string    `json:"type"` // "packet"
	ID        uint64    `json:"id"`
	Flow      uint64    `json:"flow"`
	Netns     string    `json:"netns"`
	FirstSeen time.Time `json:"first_seen"`
	Tuple     Tuple     `json:"tuple"`
	TCPFlags  string    `json:"tcp_flags,omitempty"`
	Length    uint16    `json:"length,omitempty"`
	IPID      uint32    `json:"ip_id,omitempty"` // IPv4 id (IPv6 flow label): with length and protocol, finds the packet in a capture
	IIF       string    `json:"iif,omitempty"`
	OIF       string    `json:"oif,omitempty"`
	CTID      uint32    `json:"ct_id,omitempty"`
	CTState   string    `json:"ct_state,omitempty"`
	Steps     []Step    `json:"steps"`
	Verdict   string    `json:"verdict"`
	Drop      *Drop     `json:"drop,omitempty"`
	Note      string    `json:"note,omitempty"`
	EndNetns  string    `json:"end_netns,omitempty"` // the namespace the packet ended in, when not Netns
}

// FlowState is one step of a connection's conntrack history.
type FlowState struct {
	T        time.Time `json:"t"`
	Event    string    `json:"event"`               // dump, new, update, destroy
	State    string    `json:"state"`               // NEW, ESTABLISHED, DESTROYED
	TCPState string    `json:"tcp_state,omitempty"` // SYN_SENT, ESTABLISHED, TIME_WAIT, ...
	Status   []string  `json:"status"`              // SEEN_REPLY, ASSURED, SRC_NAT, ...
}

// Translation is one NAT point of a connection.
type Translation struct {
	NAT    string    `json:"nat"`
	Hook   string    `json:"hook"`
	Before Endpoints `json:"before"`
	After  Endpoints `json:"after"`
	Rule   string    `json:"rule,omitempty"`
	By     string    `json:"by,omitempty"` // e.g. "nat/PREROUTING rule 1"
	OIF    string    `json:"oif,omitempty"`
}

// FlowPackets counts a flow's traced packets per direction.
type FlowPackets struct {
	Orig  uint64 `json:"orig"`
	Reply uint64 `json:"reply"`
}

// Flow is one connection: its conntrack tuples, translations, packets and
// state history. Packets point to it with their flow id.
type Flow struct {
	Type         string        `json:"type"` // "flow"
	ID           uint64        `json:"id"`
	Netns        string        `json:"netns"`
	CTID         uint32        `json:"ct_id,omitempty"`
	Orig         Tuple         `json:"orig"`
	Reply        Tuple         `json:"reply"`
	NAT          []string      `json:"nat"`
	Translations []Translation `json:"translations,omitempty"`
	Packets      FlowPackets   `json:"packets"`
	States       []FlowState   `json:"states"`
	Existing     bool          `json:"existing,omitempty"` // the connection existed when the session started
	Ended        bool          `json:"ended"`              // conntrack destroyed it during the session
}

// Fingerprint is the packet's Header.Fingerprint.
func (p *Packet) Fingerprint() uint64 {
	h := Header{Family: 4, IPID: p.IPID, Length: p.Length}
	if p.Tuple.Src.Is6() {
		h.Family = 6
	}
	h.ProtoNum, _ = filter.ProtoNumber(p.Tuple.Proto)
	return h.Fingerprint()
}

// Session opens a JSON Lines stream.
type Session struct {
	Type     string    `json:"type"` // "session"
	Version  int       `json:"version"`
	ID       string    `json:"id"`
	Started  time.Time `json:"started"`
	Filter   string    `json:"filter"`
	Netns    []string  `json:"netns"`
	Backends []string  `json:"backends"`
	Rate     int       `json:"rate"`
	Warnings []string  `json:"warnings,omitempty"`
	Host     string    `json:"host,omitempty"`   // the machine's host name
	Kernel   string    `json:"kernel,omitempty"` // its kernel release
	// NoPayload: captured packets were cut after their headers.
	NoPayload bool `json:"no_payload,omitempty"`
}

// Stats closes a JSON Lines stream.
type Stats struct {
	Type        string `json:"type"` // "stats"
	Packets     uint64 `json:"packets"`
	Events      uint64 `json:"events"`
	Lost        uint64 `json:"lost"`
	RateLimited uint64 `json:"rate_limited"`
	Filtered    uint64 `json:"filtered"` // selected by a broader kernel rule, left out by the exact filter
	DurationNs  int64  `json:"duration_ns"`
}

// CT is conntrack information carried by a trace event.
type CT struct {
	ID        uint32
	Direction uint8 // 0 original, 1 reply
	Status    uint32
	State     uint32
	Valid     bool
}

// Conntrack event types.
const (
	CTDump    = "dump" // present when the session started
	CTNew     = "new"
	CTUpdate  = "update"
	CTDestroy = "destroy"
)

// CTFlow is a conntrack entry as a conntrack event or dump reports it.
type CTFlow struct {
	Event    string // CTDump, CTNew, CTUpdate, CTDestroy
	ID       uint32
	Orig     Tuple // the original direction as the first packet had it
	Reply    Tuple // the reply direction as replies arrive
	Status   uint32
	TCPState uint8 // 0 when not TCP or not reported
	HasTCP   bool
}

// Observation is what a source reports: one trace event.
type Observation struct {
	Source    string // "nftrace", "legacy", "conntrack"
	Netns     string // display name of the namespace
	Time      time.Time
	TraceID   uint32 // per-source packet key (nftrace id; 0 for legacy)
	Marker    bool   // first event of a packet this session selected
	Boundary  bool   // an event of another nattrace session's selector: a new packet
	Internal  bool   // an event of this session's own table: not a step
	Hook      Hook   // hook of the chain, when it is a base chain or an observer
	BaseChain bool   // the event is in a base chain (a new walk through a hook)
	Priority  int32  // base chain priority, for ordering across sources
	Header    *Header
	IIF, OIF  string
	CT        CT
	Step      Step
	Flow      *CTFlow // conntrack source: the entry
	SKB       uint64  // BPF source: the skb address (one packet across namespaces)
	Probe     string  // BPF source: rx, tx, route, drop, free
	Selected  bool    // BPF source: netfilter tracing had selected the packet (skb->nf_trace)
}

// NetnsSnapshot is the state of a namespace that explains a trace, as a
// recording keeps it at the start and the end of a session.
type NetnsSnapshot struct {
	Name      string            `json:"name"`
	Taken     time.Time         `json:"taken"`
	Addresses json.RawMessage   `json:"addresses,omitempty"` // ip -j addr
	Routes    json.RawMessage   `json:"routes,omitempty"`    // ip -j route show table all
	Routes6   json.RawMessage   `json:"routes6,omitempty"`   // ip -j -6 route show table all
	Rules     json.RawMessage   `json:"rules,omitempty"`     // ip -j rule
	Sysctls   map[string]string `json:"sysctls"`
	NFTables  string            `json:"nftables,omitempty"`        // nft -s list ruleset
	IptNFT    string            `json:"iptables_nft,omitempty"`    // iptables-nft-save
	IptLegacy string            `json:"iptables_legacy,omitempty"` // iptables-legacy-save
	Errors    []string          `json:"errors,omitempty"`          // what could not be read, and why
}
