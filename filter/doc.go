// Package filter parses pcap-filter style expressions ("tcp and dst port 80",
// "host 10.200.1.2 or net 192.0.2.0/24", "not port 22") into one AST.
//
// The AST is the single source for every target nattrace compiles a filter to:
// nft rule expressions and iptables matches (through the disjunctive normal
// form produced by [Node.DNF]), and, in later stages, classic BPF for capture
// sockets and BPF probe filters. [Match] evaluates the AST on decoded packet
// fields: it is the exact user-space post-filter used wherever a kernel rule
// has to be broader than the expression.
//
// The grammar is the subset of pcap-filter(7) that matters for L3/L4 tracing:
//
//	expr      := term { ("or" | "||") term }
//	term      := factor { ("and" | "&&") factor }
//	factor    := ("not" | "!") factor | "(" expr ")" | primitive
//	primitive := [family] [proto] [dir] ("host" ADDR | "net" CIDR ["mask" MASK]
//	             | "port" PORT | "portrange" LO-HI)
//	           | family | proto | ["ip" | "ip6"] "proto" (NUM | NAME)
//	dir       := "src" | "dst" | "src or dst" | "src and dst"
//	family    := "ip" | "ip6"
//	proto     := "tcp" | "udp" | "sctp" | "icmp" | "icmp6"
//
// As in tcpdump, a bare value after "and"/"or" inherits the qualifiers of the
// previous primitive: "port 80 or 443", "host 192.0.2.1 or 192.0.2.2".
package filter
