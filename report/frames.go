package report

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nattrace/nattrace/capture"
	"github.com/nattrace/nattrace/event"
)

// frame is one captured packet, as the report shows it under the traced
// packet it belongs to.
type frame struct {
	Iface   string `json:"if"`
	Dir     string `json:"dir,omitempty"`
	Time    string `json:"t"`
	Line    string `json:"line"`
	Comment string `json:"cmt,omitempty"`
	Dump    string `json:"dump"`
	Cut     string `json:"cut,omitempty"` // what the dump leaves out
}

type frameKey struct {
	netns string
	fp    uint64
}

type capturedFrame struct {
	at time.Time
	f  *frame
}

// captureIndex holds a recording's captured frames by namespace and
// packet fingerprint.
type captureIndex struct {
	byKey   map[frameKey][]capturedFrame
	frames  int
	raw     []byte // the pcapng as it goes into the page
	size    int64  // the file's size
	warning string // what went wrong reading it
}

// maxDump bounds the bytes of one frame shown in the page.
const maxDump = 512

// loadCapture reads the recording's pcapng. Interfaces of the namespace
// nattrace ran in have no NETNS/ prefix: their frames are indexed under ""
// and match a packet of any namespace.
func loadCapture(path string, noPayload bool, embedLimit int64) *captureIndex {
	ix := &captureIndex{byKey: map[frameKey][]capturedFrame{}}
	if path == "" {
		return ix
	}
	b, err := os.ReadFile(path)
	if err != nil {
		ix.warning = fmt.Sprintf("%s: %v", path, err)
		return ix
	}
	ix.size = int64(len(b))
	r, err := capture.NewReader(bytes.NewReader(b))
	if err != nil {
		ix.warning = fmt.Sprintf("%s: %v", path, err)
		return ix
	}
	var out bytes.Buffer
	var w *capture.Writer
	if noPayload && embedLimit > 0 {
		w, _ = capture.NewWriter(&out)
	}
	added := map[*capture.Interface]bool{}
	for {
		p, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			ix.warning = fmt.Sprintf("%s: after %d packets: %v", path, ix.frames, err)
			break
		}
		ix.frames++
		if noPayload {
			capture.StripPayload(p)
		}
		if w != nil {
			if !added[p.Iface] {
				w.AddInterface(p.Iface)
				added[p.Iface] = true
			}
			w.WritePacket(p)
		}
		h, err := event.DecodeIP(capture.Network(p.Data, p.Iface.LinkType), nil)
		if err != nil {
			continue
		}
		ns := ""
		if n, _, ok := strings.Cut(p.Iface.Name, "/"); ok {
			ns = n
		}
		f := &frame{Iface: p.Iface.Name, Time: p.Time.UTC().Format("15:04:05.000000"), Comment: p.Comment, Line: capture.Line(p)}
		if p.Dir != 0 {
			f.Dir = p.Dir.String()
		}
		data := p.Data
		if len(data) > maxDump {
			f.Cut = fmt.Sprintf("%d more bytes captured", len(data)-maxDump)
			data = data[:maxDump]
		}
		if p.OrigLen > len(p.Data) {
			cut := fmt.Sprintf("%d bytes not captured", p.OrigLen-len(p.Data))
			if noPayload {
				cut = fmt.Sprintf("payload left out (%d bytes)", p.OrigLen-len(p.Data))
			}
			f.Cut = strings.TrimPrefix(f.Cut+"; "+cut, "; ")
		}
		f.Dump = hexDump(data)
		k := frameKey{ns, h.Fingerprint()}
		ix.byKey[k] = append(ix.byKey[k], capturedFrame{p.Time, f})
	}
	if w != nil {
		w.Flush()
		ix.raw = out.Bytes()
	} else if embedLimit > 0 {
		ix.raw = b
	}
	if int64(len(ix.raw)) > embedLimit {
		ix.raw = nil
	}
	return ix
}

// maxFrames bounds the frames shown under one packet.
const maxFrames = 8

// framesOf finds a traced packet's frames: same fingerprint, in a
// namespace it crossed, captured within a second of it.
func (ix *captureIndex) framesOf(p *event.Packet) []*frame {
	if len(ix.byKey) == 0 {
		return nil
	}
	fp := p.Fingerprint()
	nss := []string{p.Netns, ""}
	for _, s := range p.Steps {
		if s.Netns != "" && !contains(nss, s.Netns) {
			nss = append(nss, s.Netns)
		}
	}
	var out []*frame
	for _, ns := range nss {
		for _, c := range ix.byKey[frameKey{ns, fp}] {
			d := c.at.Sub(p.FirstSeen)
			if d < -time.Second || d > time.Second {
				continue
			}
			out = append(out, c.f)
			if len(out) == maxFrames {
				return out
			}
		}
	}
	return out
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// hexDump formats bytes as tcpdump -X does: offset, 16 bytes in hex, the
// printable ones as text.
func hexDump(b []byte) string {
	var s strings.Builder
	for off := 0; off < len(b); off += 16 {
		line := b[off:min(off+16, len(b))]
		fmt.Fprintf(&s, "0x%04x:  ", off)
		for i := 0; i < 16; i++ {
			if i < len(line) {
				fmt.Fprintf(&s, "%02x", line[i])
			} else {
				s.WriteString("  ")
			}
			if i%2 == 1 {
				s.WriteByte(' ')
			}
		}
		s.WriteByte(' ')
		for _, c := range line {
			if c < 0x20 || c > 0x7e {
				c = '.'
			}
			s.WriteByte(c)
		}
		s.WriteByte('\n')
	}
	return s.String()
}
