package capture

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// pcapng block types and options (draft-ietf-opsawg-pcapng).
const (
	blockSHB       = 0x0A0D0D0A
	blockIDB       = 0x00000001
	blockEPB       = 0x00000006
	byteOrderMagic = 0x1A2B3C4D
	optEnd         = 0
	optComment     = 1
	optIfName      = 2
	optIfTsres     = 9
	optEPBFlags    = 2
)

// Direction of a packet on its interface.
type Direction uint8

const (
	DirUnknown Direction = iota
	DirIn
	DirOut
)

func (d Direction) String() string {
	switch d {
	case DirIn:
		return "In"
	case DirOut:
		return "Out"
	}
	return "?"
}

// Interface is one captured interface.
type Interface struct {
	Name     string // NETNS/IFACE
	LinkType LinkType
	Snaplen  uint32
	index    int
}

// Packet is one captured packet.
type Packet struct {
	Time    time.Time
	Iface   *Interface
	Data    []byte
	OrigLen int
	Dir     Direction
	Comment string
}

// Writer writes pcapng: one interface description block per interface, an
// enhanced packet block per packet with its direction and comment.
type Writer struct {
	w      *bufio.Writer
	ifaces []*Interface
}

// NewWriter writes the section header.
func NewWriter(w io.Writer) (*Writer, error) {
	pw := &Writer{w: bufio.NewWriter(w)}
	body := make([]byte, 16)
	binary.LittleEndian.PutUint32(body[0:], byteOrderMagic)
	binary.LittleEndian.PutUint16(body[4:], 1) // major
	binary.LittleEndian.PutUint16(body[6:], 0) // minor
	binary.LittleEndian.PutUint64(body[8:], ^uint64(0))
	body = appendOpt(body, optEnd, nil)
	return pw, pw.block(blockSHB, body)
}

func pad4(n int) int { return (4 - n%4) % 4 }

func appendOpt(b []byte, code uint16, val []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, code)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(val)))
	b = append(b, val...)
	return append(b, make([]byte, pad4(len(val)))...)
}

func (pw *Writer) block(typ uint32, body []byte) error {
	total := uint32(12 + len(body))
	var hdr [8]byte
	binary.LittleEndian.PutUint32(hdr[0:], typ)
	binary.LittleEndian.PutUint32(hdr[4:], total)
	pw.w.Write(hdr[:])
	pw.w.Write(body)
	var tail [4]byte
	binary.LittleEndian.PutUint32(tail[:], total)
	_, err := pw.w.Write(tail[:])
	return err
}

// AddInterface writes an interface description block.
func (pw *Writer) AddInterface(ifc *Interface) error {
	ifc.index = len(pw.ifaces)
	pw.ifaces = append(pw.ifaces, ifc)
	body := make([]byte, 8)
	binary.LittleEndian.PutUint16(body[0:], uint16(ifc.LinkType))
	binary.LittleEndian.PutUint32(body[4:], ifc.Snaplen)
	body = appendOpt(body, optIfName, []byte(ifc.Name))
	body = appendOpt(body, optIfTsres, []byte{9}) // nanoseconds
	body = appendOpt(body, optEnd, nil)
	return pw.block(blockIDB, body)
}

// WritePacket writes an enhanced packet block.
func (pw *Writer) WritePacket(p *Packet) error {
	if p.Iface == nil || p.Iface.index >= len(pw.ifaces) || pw.ifaces[p.Iface.index] != p.Iface {
		return errors.New("pcapng: packet on an interface that was not added")
	}
	ts := uint64(p.Time.UnixNano())
	body := make([]byte, 20, 20+len(p.Data)+64)
	binary.LittleEndian.PutUint32(body[0:], uint32(p.Iface.index))
	binary.LittleEndian.PutUint32(body[4:], uint32(ts>>32))
	binary.LittleEndian.PutUint32(body[8:], uint32(ts))
	binary.LittleEndian.PutUint32(body[12:], uint32(len(p.Data)))
	binary.LittleEndian.PutUint32(body[16:], uint32(p.OrigLen))
	body = append(body, p.Data...)
	body = append(body, make([]byte, pad4(len(p.Data)))...)
	if p.Dir != DirUnknown {
		body = appendOpt(body, optEPBFlags, binary.LittleEndian.AppendUint32(nil, uint32(p.Dir)))
	}
	if p.Comment != "" {
		body = appendOpt(body, optComment, []byte(p.Comment))
	}
	if p.Dir != DirUnknown || p.Comment != "" {
		body = appendOpt(body, optEnd, nil)
	}
	return pw.block(blockEPB, body)
}

// Flush writes buffered blocks.
func (pw *Writer) Flush() error { return pw.w.Flush() }

// Reader reads pcapng written by Writer (and by most tools: little-endian
// sections, interface and enhanced packet blocks; other blocks are
// skipped).
type Reader struct {
	r      *bufio.Reader
	ifaces []*Interface
	tsres  []uint64 // ticks per second per interface
}

// NewReader checks the section header.
func NewReader(r io.Reader) (*Reader, error) {
	pr := &Reader{r: bufio.NewReader(r)}
	typ, body, err := pr.next()
	if err != nil {
		return nil, err
	}
	if typ != blockSHB || len(body) < 4 || binary.LittleEndian.Uint32(body) != byteOrderMagic {
		return nil, errors.New("not a little-endian pcapng file")
	}
	return pr, nil
}

// maxBlock bounds a block's size.
const maxBlock = 64 << 20

func (pr *Reader) next() (uint32, []byte, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(pr.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	typ, total := binary.LittleEndian.Uint32(hdr[0:]), binary.LittleEndian.Uint32(hdr[4:])
	if total < 12 || total > maxBlock || total%4 != 0 {
		return 0, nil, fmt.Errorf("pcapng: bad block length %d", total)
	}
	buf := make([]byte, total-8)
	if _, err := io.ReadFull(pr.r, buf); err != nil {
		return 0, nil, fmt.Errorf("pcapng: truncated block: %w", err)
	}
	return typ, buf[:len(buf)-4], nil
}

func options(b []byte, fn func(code uint16, val []byte)) {
	for len(b) >= 4 {
		code, l := binary.LittleEndian.Uint16(b[0:]), int(binary.LittleEndian.Uint16(b[2:]))
		if code == optEnd || 4+l > len(b) {
			return
		}
		fn(code, b[4:4+l])
		b = b[4+l+pad4(l):]
	}
}

// Next returns the next packet, io.EOF at the end.
func (pr *Reader) Next() (*Packet, error) {
	for {
		typ, body, err := pr.next()
		if err != nil {
			return nil, err
		}
		switch typ {
		case blockIDB:
			if len(body) < 8 {
				return nil, errors.New("pcapng: short interface block")
			}
			ifc := &Interface{LinkType: LinkType(binary.LittleEndian.Uint16(body)), Snaplen: binary.LittleEndian.Uint32(body[4:]), index: len(pr.ifaces)}
			res := uint64(1000000)
			options(body[8:], func(code uint16, val []byte) {
				switch code {
				case optIfName:
					ifc.Name = string(val)
				case optIfTsres:
					if len(val) == 1 && val[0] <= 9 {
						res = 1
						for i := 0; i < int(val[0]); i++ {
							res *= 10
						}
					}
				}
			})
			pr.ifaces = append(pr.ifaces, ifc)
			pr.tsres = append(pr.tsres, res)
		case blockEPB:
			if len(body) < 20 {
				return nil, errors.New("pcapng: short packet block")
			}
			idx := int(binary.LittleEndian.Uint32(body))
			if idx >= len(pr.ifaces) {
				return nil, fmt.Errorf("pcapng: packet on unknown interface %d", idx)
			}
			ts := uint64(binary.LittleEndian.Uint32(body[4:]))<<32 | uint64(binary.LittleEndian.Uint32(body[8:]))
			capLen := int(binary.LittleEndian.Uint32(body[12:]))
			if capLen > len(body)-20 {
				return nil, errors.New("pcapng: packet longer than its block")
			}
			res := pr.tsres[idx]
			p := &Packet{Iface: pr.ifaces[idx], OrigLen: int(binary.LittleEndian.Uint32(body[16:])),
				Data: append([]byte(nil), body[20:20+capLen]...),
				Time: time.Unix(int64(ts/res), int64(ts%res*(1e9/res)))}
			options(body[20+capLen+pad4(capLen):], func(code uint16, val []byte) {
				switch code {
				case optComment:
					p.Comment = string(val)
				case optEPBFlags:
					if len(val) == 4 {
						p.Dir = Direction(binary.LittleEndian.Uint32(val) & 3)
					}
				}
			})
			return p, nil
		}
	}
}
