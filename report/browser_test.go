package report

import (
	"os"
	"path/filepath"
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
	browser.CheckReport(t, p, len(rec.Packets), 2)
	p.Screenshot(filepath.Join(browser.ArtifactDir(t), "report-fixture.png"), "")
}
