package nftrace

import (
	"encoding/binary"
	"fmt"

	"github.com/mdlayher/netlink"
)

// CT is the conntrack information of an event (attributes 18-21), present
// on kernels that send it (6.x with the ct extension; not Debian's 6.1).
type CT struct {
	ID        uint32
	Direction uint8
	Status    uint32
	State     uint32
	Present   bool
}

// Event is one decoded trace event.
type Event struct {
	Family     uint8 // table family (nfgen_family)
	ID         uint32
	Type       TraceType
	Table      string
	Chain      string
	Handle     uint64 // 0 when the event names no rule
	Verdict    Verdict
	HasVerdict bool
	Policy     uint32
	HasPolicy  bool
	LLHeader   []byte
	Network    []byte
	Transport  []byte
	IIF, OIF   uint32
	IIFType    uint16
	OIFType    uint16
	Mark       uint32
	NFProto    uint32
	CT         CT
}

// HasHeaders reports whether the event carries the packet headers (the first
// event of a base chain invocation).
func (e *Event) HasHeaders() bool { return len(e.Network) > 0 }

// Decode decodes the payload of a netlink message of type MsgType: the
// 4-byte nfgenmsg followed by big-endian NFTA_TRACE_* attributes.
func Decode(b []byte) (*Event, error) {
	if len(b) < 4 {
		return nil, ErrTruncated
	}
	e := &Event{Family: b[0]}
	ad, err := netlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return nil, fmt.Errorf("nftrace: %w", err)
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		switch ad.Type() {
		case attrTable:
			e.Table = ad.String()
		case attrChain:
			e.Chain = ad.String()
		case attrRuleHandle:
			e.Handle = ad.Uint64()
		case attrType:
			e.Type = TraceType(ad.Uint32())
		case attrVerdict:
			e.HasVerdict = true
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					switch nad.Type() {
					case attrVerdictCode:
						e.Verdict.Code = int32(nad.Uint32())
					case attrVerdictChain:
						e.Verdict.Chain = nad.String()
					}
				}
				return nil
			})
		case attrID:
			e.ID = ad.Uint32()
		case attrLLHeader:
			e.LLHeader = ad.Bytes()
		case attrNetworkHeader:
			e.Network = ad.Bytes()
		case attrTransportHeader:
			e.Transport = ad.Bytes()
		case attrIIF:
			e.IIF = ad.Uint32()
		case attrIIFType:
			e.IIFType = ad.Uint16()
		case attrOIF:
			e.OIF = ad.Uint32()
		case attrOIFType:
			e.OIFType = ad.Uint16()
		case attrMark:
			e.Mark = ad.Uint32()
		case attrNFProto:
			e.NFProto = ad.Uint32()
		case attrPolicy:
			e.Policy = ad.Uint32()
			e.HasPolicy = true
		case attrCTID:
			e.CT.ID = ad.Uint32()
			e.CT.Present = true
		case attrCTDirection:
			e.CT.Direction = ad.Uint8()
		case attrCTStatus:
			e.CT.Status = ad.Uint32()
		case attrCTState:
			e.CT.State = ad.Uint32()
		}
	}
	if err := ad.Err(); err != nil {
		return nil, fmt.Errorf("nftrace: %w", err)
	}
	if e.Type == TypeUnspec || e.Table == "" {
		return nil, fmt.Errorf("nftrace: event without type or table")
	}
	return e, nil
}
