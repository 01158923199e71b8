package report

import (
	"encoding/json"
	"io"
	"sync"

	"github.com/nattrace/nattrace/event"
)

// JSON writes the JSON Lines stream: a session object, packets, stats.
type JSON struct {
	mu  sync.Mutex
	enc *json.Encoder
}

// NewJSON returns a JSON Lines renderer on w.
func NewJSON(w io.Writer) *JSON {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return &JSON{enc: enc}
}

func (j *JSON) write(v any) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.enc.Encode(v)
}

// Session writes the first line.
func (j *JSON) Session(s event.Session) error {
	if s.Netns == nil {
		s.Netns = []string{}
	}
	if s.Backends == nil {
		s.Backends = []string{}
	}
	return j.write(s)
}

// Packet writes one packet.
func (j *JSON) Packet(p *event.Packet) { j.write(p) }

// Flow writes one connection.
func (j *JSON) Flow(f *event.Flow) { j.write(f) }

// Stats writes the last line.
func (j *JSON) Stats(s event.Stats) { j.write(s) }
