package report

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nattrace/nattrace/event"
	"github.com/nattrace/nattrace/lab/browser"
)

// synthetic makes a recording of n packets in 3×groups connections from the
// fixture's packets and flows: each connection gets its own client port.
func synthetic(tb testing.TB, n, groups int) *Recording {
	rec, err := LoadRecording(fixture)
	if err != nil {
		tb.Fatal(err)
	}
	out := &Recording{Session: rec.Session, Stats: rec.Stats, EnvStart: rec.EnvStart, EnvEnd: rec.EnvEnd}
	base := rec.Packets[0].FirstSeen
	per := n / groups
	id := uint64(0)
	for c := 0; c < groups; c++ {
		port := uint16(10000 + c)
		for _, f := range rec.Flows {
			g := *f
			g.ID = uint64(c)*100 + f.ID
			if g.Orig.Proto != "icmp" {
				g.Orig.Sport, g.Reply.Dport = port, port
			} else { // the echo id
				g.Orig.Sport, g.Orig.Dport, g.Reply.Sport, g.Reply.Dport = port, port, port, port
			}
			g.Translations = append([]event.Translation(nil), f.Translations...)
			for i := range g.Translations {
				g.Translations[i].Before.Sport, g.Translations[i].After.Sport = port, port
			}
			out.Flows = append(out.Flows, &g)
		}
		for i := 0; i < per; i++ {
			src := rec.Packets[i%len(rec.Packets)]
			p := *src
			id++
			p.ID = id
			p.Flow = uint64(c)*100 + src.Flow
			p.FirstSeen = base.Add(time.Duration(id) * time.Millisecond)
			p.IPID = uint32(id)
			if p.Tuple.Proto == "icmp" {
				p.Tuple.Sport, p.Tuple.Dport = port, port
			} else {
				if p.Tuple.Src == netip.MustParseAddr("10.200.1.2") {
					p.Tuple.Sport = port
				} else {
					p.Tuple.Dport = port
				}
			}
			out.Packets = append(out.Packets, &p)
		}
	}
	st := *rec.Stats
	st.Packets = uint64(len(out.Packets))
	out.Stats = &st
	return out
}

var scenarios = []struct {
	name            string
	packets, groups int
}{
	{"baseline-4-packets-3-conns", 4, 1},
	{"10k-packets-300-conns", 10000, 100},
	{"10k-packets-7500-conns", 10000, 2500},
}

// BenchmarkRenderHTML renders 10,000 packets; size in MiB per page.
func BenchmarkRenderHTML(b *testing.B) {
	for _, sc := range scenarios {
		b.Run(sc.name, func(b *testing.B) {
			rec := synthetic(b, sc.packets, sc.groups)
			var size int
			for b.Loop() {
				var buf bytes.Buffer
				if err := RenderHTML(&buf, rec, HTMLOptions{EmbedLimit: DefaultEmbedLimit}); err != nil {
					b.Fatal(err)
				}
				size = buf.Len()
			}
			b.ReportMetric(float64(size)/(1<<20), "MiB")
		})
	}
}

// BenchmarkOpenHTML opens a 10,000-packet report in headless Chromium and
// times it until the page's script has drawn the first page of packets
// (load-ms), then until filtering by fate has redrawn it (filter-ms).
func BenchmarkOpenHTML(b *testing.B) {
	for _, sc := range scenarios {
		b.Run(sc.name, func(b *testing.B) {
			rec := synthetic(b, sc.packets, sc.groups)
			file := filepath.Join(b.TempDir(), "report.html")
			var buf bytes.Buffer
			if err := RenderHTML(&buf, rec, HTMLOptions{EmbedLimit: DefaultEmbedLimit}); err != nil {
				b.Fatal(err)
			}
			os.WriteFile(file, buf.Bytes(), 0o600)
			var load, filter time.Duration
			for b.Loop() {
				start := time.Now()
				p := browser.Open(b, file, "", 1400, 1000)
				p.WaitReady()
				load += time.Since(start)
				start = time.Now()
				p.Select("#f-fate", "dropped")
				filter += time.Since(start)
				if pr := p.Problems(); len(pr) > 0 {
					b.Fatal(pr)
				}
				p.Close()
			}
			b.ReportMetric(float64(load.Milliseconds())/float64(b.N), "load-ms")
			b.ReportMetric(float64(filter.Milliseconds())/float64(b.N), "filter-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func TestSynthetic(t *testing.T) {
	rec := synthetic(t, 1000, 10)
	conns := groupConnections(rec)
	if len(rec.Packets) != 1000 || len(conns) != 10*3 {
		t.Fatalf("%d packets in %d connections", len(rec.Packets), len(conns))
	}
}
