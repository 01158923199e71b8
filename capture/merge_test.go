package capture

import (
	"testing"
	"time"
)

func testCapture(marks ...time.Time) *Capture {
	c := &Capture{sources: map[string]*source{}, pkts: make(chan *Packet, 16), done: make(chan struct{})}
	for i, m := range marks {
		s := &source{ifc: &Interface{Name: string(rune('a' + i))}}
		s.mark.Store(m.UnixNano())
		c.sources[s.ifc.Name] = s
	}
	return c
}

// A packet still in the channel when the tick is taken is older than one
// already buffered: it must be written first.
func TestMergerTickDrainsBeforeWriting(t *testing.T) {
	base := time.Unix(1000, 0)
	c := testCapture(base.Add(10*time.Millisecond), base.Add(10*time.Millisecond))
	a, b := c.sources["a"].ifc, c.sources["b"].ifc
	var got []*Packet
	m := &merger{c: c, emit: func(p *Packet) bool { got = append(got, p); return false }}
	later := &Packet{Time: base.Add(5 * time.Millisecond), Iface: a}
	earlier := &Packet{Time: base.Add(3 * time.Millisecond), Iface: b}
	m.buf = append(m.buf, later)
	c.pkts <- earlier
	m.tick(base.Add(time.Second), 0)
	if len(got) != 2 || got[0] != earlier || got[1] != later {
		t.Fatalf("written %v, want the packet at +3ms then the one at +5ms", times(got, base))
	}
}

// Nothing at or after the lowest mark is written: that socket may still
// hand over an older packet.
func TestMergerWaitsForLowestMark(t *testing.T) {
	base := time.Unix(1000, 0)
	c := testCapture(base.Add(4*time.Millisecond), base.Add(time.Second))
	b := c.sources["b"].ifc
	var got []*Packet
	m := &merger{c: c, emit: func(p *Packet) bool { got = append(got, p); return false }}
	c.pkts <- &Packet{Time: base.Add(3 * time.Millisecond), Iface: b}
	c.pkts <- &Packet{Time: base.Add(5 * time.Millisecond), Iface: b}
	m.tick(base.Add(2*time.Second), 0)
	if len(got) != 1 || !got[0].Time.Equal(base.Add(3*time.Millisecond)) {
		t.Fatalf("written %v, want only +3ms (socket a's mark is +4ms)", times(got, base))
	}
	// A socket that lags more than maxLag is not waited for.
	m.tick(base.Add(maxLag+time.Second), 0)
	if len(got) != 2 {
		t.Fatalf("written %v after maxLag, want both", times(got, base))
	}
	// final writes everything, closed sources included.
	c.pkts <- &Packet{Time: base.Add(time.Hour), Iface: b}
	m.final()
	if len(got) != 3 {
		t.Fatalf("final wrote %v", times(got, base))
	}
}

// The count stops the merge at the packet that reaches it.
func TestMergerCount(t *testing.T) {
	base := time.Unix(1000, 0)
	c := testCapture(base.Add(time.Second))
	a := c.sources["a"].ifc
	n := 0
	m := &merger{c: c, emit: func(p *Packet) bool { n++; return n == 2 }}
	for i := 3; i > 0; i-- {
		c.pkts <- &Packet{Time: base.Add(time.Duration(i) * time.Millisecond), Iface: a}
	}
	if !m.tick(base.Add(2*time.Second), 0) || n != 2 || len(m.buf) != 1 || !m.buf[0].Time.Equal(base.Add(3*time.Millisecond)) {
		t.Fatalf("count: emitted %d, left %v", n, times(m.buf, base))
	}
}

func times(ps []*Packet, base time.Time) []time.Duration {
	var out []time.Duration
	for _, p := range ps {
		out = append(out, p.Time.Sub(base))
	}
	return out
}
