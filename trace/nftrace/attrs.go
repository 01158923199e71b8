package nftrace

// Netlink constants of include/uapi/linux/netfilter/nf_tables.h that
// x/sys/unix does not (all) have.
const (
	subsysNFTables = 10 // NFNL_SUBSYS_NFTABLES
	msgTrace       = 17 // NFT_MSG_TRACE
	groupNFTrace   = 9  // NFNLGRP_NFTRACE

	// MsgType is the netlink message type of a trace event.
	MsgType = subsysNFTables<<8 | msgTrace
)

// NFTA_TRACE_* attributes.
const (
	attrTable           = 1
	attrChain           = 2
	attrRuleHandle      = 3
	attrType            = 4
	attrVerdict         = 5
	attrID              = 6
	attrLLHeader        = 7
	attrNetworkHeader   = 8
	attrTransportHeader = 9
	attrIIF             = 10
	attrIIFType         = 11
	attrOIF             = 12
	attrOIFType         = 13
	attrMark            = 14
	attrNFProto         = 15
	attrPolicy          = 16
	attrPad             = 17
	attrCTID            = 18
	attrCTDirection     = 19
	attrCTStatus        = 20
	attrCTState         = 21
)

// NFTA_VERDICT_* attributes.
const (
	attrVerdictCode  = 1
	attrVerdictChain = 2
)

// TraceType is NFT_TRACETYPE_*.
type TraceType uint32

const (
	TypeUnspec TraceType = iota
	TypePolicy
	TypeReturn
	TypeRule
)

func (t TraceType) String() string {
	switch t {
	case TypePolicy:
		return "policy"
	case TypeReturn:
		return "return"
	case TypeRule:
		return "rule"
	}
	return "unspec"
}

// Verdict codes: netfilter's NF_* and nf_tables' NFT_* (negative).
const (
	NFDrop      int32 = 0
	NFAccept    int32 = 1
	NFStolen    int32 = 2
	NFQueue     int32 = 3
	NFRepeat    int32 = 4
	NFStop      int32 = 5
	NFTContinue int32 = -1
	NFTBreak    int32 = -2
	NFTJump     int32 = -3
	NFTGoto     int32 = -4
	NFTReturn   int32 = -5
)

// Verdict is a decoded NFTA_TRACE_VERDICT.
type Verdict struct {
	Code  int32
	Chain string // target of jump/goto
}

// Name returns the verdict as nft prints it: accept, drop, continue, jump,
// goto, return, queue, stolen, repeat, stop.
func (v Verdict) Name() string {
	code := v.Code
	if code >= 0 {
		code &= 0xff // NF_VERDICT_MASK: queue numbers live in the high bits
	}
	switch code {
	case NFDrop:
		return "drop"
	case NFAccept:
		return "accept"
	case NFStolen:
		return "stolen"
	case NFQueue:
		return "queue"
	case NFRepeat:
		return "repeat"
	case NFStop:
		return "stop"
	case NFTContinue:
		return "continue"
	case NFTBreak:
		return "break"
	case NFTJump:
		return "jump"
	case NFTGoto:
		return "goto"
	case NFTReturn:
		return "return"
	}
	return "unknown"
}

// Netfilter protocol families (nfgenmsg.nfgen_family).
const (
	FamilyINet   = 1
	FamilyIPv4   = 2
	FamilyARP    = 3
	FamilyNetdev = 5
	FamilyBridge = 7
	FamilyIPv6   = 10
)

// FamilyName returns the nft name of a netfilter family.
func FamilyName(f uint8) string {
	switch f {
	case FamilyINet:
		return "inet"
	case FamilyIPv4:
		return "ip"
	case FamilyARP:
		return "arp"
	case FamilyNetdev:
		return "netdev"
	case FamilyBridge:
		return "bridge"
	case FamilyIPv6:
		return "ip6"
	}
	return "unknown"
}
