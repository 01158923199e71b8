package report

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nattrace/nattrace/lab/browser"
)

// The fixture's report in a real headless Chromium: it loads from file://
// with no network request, no console error and no dialog, the hostile
// rule comment and payload do not run, the summary and the timeline are
// there, and filtering by fate works.
func TestHTMLInBrowser(t *testing.T) {
	rec, err := LoadRecording(fixture)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "report.html")
	if err := os.WriteFile(file, render(t, rec, HTMLOptions{EmbedLimit: DefaultEmbedLimit, Generator: "nattrace test"}), 0o600); err != nil {
		t.Fatal(err)
	}
	p := browser.Open(t, file, "", 1400, 1000)
	p.WaitReady()
	CheckReportPage(t, p, len(rec.Packets), 2)
	p.Screenshot(filepath.Join(browser.ArtifactDir(t), "report-fixture.png"), "")
}

// CheckReportPage checks a report that browser.Open loaded: nothing ran or
// was fetched that should not, the summary and the packets are there, and
// the fate filter shows exactly the dropped packets, with their rules.
func CheckReportPage(t *testing.T, p *browser.Page, packets, dropped int) {
	t.Helper()
	if n := browser.Eval[int](p, `document.querySelectorAll('#summary table.conns tbody tr').length`); n == 0 {
		t.Error("no connection in the summary")
	}
	if n := browser.Eval[int](p, `document.querySelectorAll('#list .pkt').length`); n != min(packets, 100) {
		t.Errorf("%d packets in the timeline, want %d", n, min(packets, 100))
	}
	p.Select("#f-fate", "dropped")
	fates := browser.Eval[[]string](p, `Array.from(document.querySelectorAll('#list .pkt')).map(e => e.dataset.fate)`)
	if len(fates) != dropped {
		t.Errorf("filter dropped: %d packets shown, want %d", len(fates), dropped)
	}
	for _, f := range fates {
		if f != "dropped" {
			t.Errorf("filter dropped shows a %s packet", f)
		}
	}
	// Open every dropped packet: its swimlane names the dropping rule.
	p.Click("#p-expand")
	lanes := browser.Eval[string](p, `Array.from(document.querySelectorAll('#list .pkt .detail')).map(e => e.textContent).join('\n')`)
	if browser.Eval[int](p, `document.querySelectorAll('#list table.lanes').length`) != dropped || !strings.Contains(lanes, "filter/FORWARD rule") {
		t.Errorf("the dropped packets' timelines do not show the dropping rule: %.300q", lanes)
	}
	p.Select("#f-fate", "")
	if n := browser.Eval[int](p, `document.querySelectorAll('#list .pkt').length`); n != min(packets, 100) {
		t.Errorf("clearing the filter shows %d packets", n)
	}
	if pw := browser.Eval[bool](p, `typeof window.pwned !== 'undefined'`); pw {
		t.Error("hostile content ran: window.pwned is set")
	}
	if pr := p.Problems(); len(pr) > 0 {
		t.Errorf("the page did what a self-contained report must not:\n%s", strings.Join(pr, "\n"))
	}
}
