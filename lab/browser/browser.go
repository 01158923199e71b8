// Package browser is test support: it opens a local HTML file in a real
// headless Chromium (Debian's chromium package) and records what the page
// did that a self-contained report must never do: network requests,
// console errors, uncaught exceptions, dialogs.
package browser

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/nattrace/nattrace/lab/labtest"
)

// Path finds the browser: $NATTRACE_CHROMIUM, chromium, chromium-browser.
func Path() (string, error) {
	if p := os.Getenv("NATTRACE_CHROMIUM"); p != "" {
		return p, nil
	}
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no chromium in PATH (apt-get install chromium)")
}

// Require skips the test without a browser, or fails it when
// NATTRACE_REQUIRE_PRIVILEGED=1 (CI installs chromium).
func Require(t testing.TB) string {
	t.Helper()
	p, err := Path()
	if err != nil {
		if os.Getenv(labtest.RequireEnv) == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	return p
}

// Page is one file opened in a fresh browser.
type Page struct {
	t      testing.TB
	ctx    context.Context
	cancel func()
	URL    string

	mu       sync.Mutex
	problems []string
}

// Open starts a headless Chromium with its own profile and opens file
// (with an optional #fragment). The browser is closed when the test ends.
func Open(t testing.TB, file, fragment string, width, height int) *Page {
	t.Helper()
	exe := Require(t)
	abs, err := filepath.Abs(file)
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox, // tests run as root
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
		chromedp.Flag("hide-scrollbars", true),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, tcancel := context.WithTimeout(ctx, 2*time.Minute)
	p := &Page{t: t, ctx: ctx, URL: "file://" + abs}
	p.cancel = func() { tcancel(); cancel(); acancel() }
	t.Cleanup(p.cancel)
	if err := chromedp.Listen(ctx, p.event); err != nil {
		t.Fatalf("starting %s: %v", exe, err)
	}
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, cdplog.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	url := p.URL
	if fragment != "" {
		url += "#" + fragment
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("opening %s: %v", url, err)
	}
	return p
}

func (p *Page) note(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.problems = append(p.problems, fmt.Sprintf(format, args...))
}

// event runs in the browser's reader loop: it only records.
func (p *Page) event(ev any) {
	switch ev := ev.(type) {
	case *network.EventRequestWillBeSent:
		u := ev.Request.URL
		if u != p.URL && !strings.HasPrefix(u, p.URL+"#") {
			p.note("network request: %s", u)
		}
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
			var parts []string
			for _, a := range ev.Args {
				parts = append(parts, strings.Trim(string(a.Value), `"`))
			}
			p.note("console.%s: %s", ev.Type, strings.Join(parts, " "))
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg := d.Text
		if d.Exception != nil {
			msg += " " + d.Exception.Description
		}
		p.note("uncaught exception at %d:%d: %s", d.LineNumber, d.ColumnNumber, msg)
	case *cdplog.EventEntryAdded:
		if ev.Entry.Level == cdplog.EntryLevelError || ev.Entry.Level == cdplog.EntryLevelWarning {
			p.note("console %s (%s): %s", ev.Entry.Level, ev.Entry.Source, ev.Entry.Text)
		}
	case *page.EventJavascriptDialogOpening:
		p.note("dialog %s: %s", ev.Type, ev.Message)
		go chromedp.Call(p.ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
	}
}

// Close closes the browser now (it is also closed when the test ends).
func (p *Page) Close() { p.cancel() }

// Problems are what the page did that it must not: requests, console
// errors and warnings, exceptions, dialogs.
func (p *Page) Problems() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.problems...)
}

// Eval runs a JavaScript expression and decodes its value into T.
func Eval[T any](p *Page, expr string) T {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// WaitReady waits until the page's script has rendered (body data-ready).
func (p *Page) WaitReady() {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`body[data-ready="1"]`))); err != nil {
		p.t.Fatalf("the page never became ready: %v; problems: %v", err, p.Problems())
	}
}

// Select sets a <select>'s value and fires its change event, as a user does.
func (p *Page) Select(selector, value string) {
	p.t.Helper()
	js := fmt.Sprintf(`(function(){var e=document.querySelector(%q); e.value=%q; e.dispatchEvent(new Event('change')); return e.value})()`, selector, value)
	if got := Eval[string](p, js); got != value {
		p.t.Fatalf("%s has no option %q", selector, value)
	}
}

// Click clicks an element with the mouse.
func (p *Page) Click(selector string) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, chromedp.Click(chromedp.CSS(selector))); err != nil {
		p.t.Fatalf("click %s: %v", selector, err)
	}
}

// Screenshot saves a PNG of the whole page, or of one element.
func (p *Page) Screenshot(file, selector string) {
	p.t.Helper()
	var shot []byte
	var err error
	if selector == "" {
		shot, err = chromedp.Run(p.ctx, chromedp.FullScreenshot(100))
	} else {
		shot, err = chromedp.Run(p.ctx, chromedp.Screenshot(chromedp.CSS(selector)))
	}
	if err != nil {
		p.t.Fatalf("screenshot: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(file, shot, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// ArtifactDir is where tests leave files for people to look at:
// $NATTRACE_ARTIFACTS, or a directory under the test's temporary one.
func ArtifactDir(t testing.TB) string {
	if d := os.Getenv("NATTRACE_ARTIFACTS"); d != "" {
		return d
	}
	return t.TempDir()
}

// CheckReport checks an nattrace report that Open loaded: nothing ran or
// was fetched that should not, the summary and the packets are there, and
// the fate filter shows exactly the dropped packets, with their rules.
func CheckReport(t testing.TB, p *Page, packets, dropped int) {
	t.Helper()
	if n := Eval[int](p, `document.querySelectorAll('#summary table.conns tbody tr').length`); n == 0 {
		t.Error("no connection in the summary")
	}
	if n := Eval[int](p, `document.querySelectorAll('#list .pkt').length`); n != min(packets, 100) {
		t.Errorf("%d packets in the timeline, want %d", n, min(packets, 100))
	}
	p.Select("#f-fate", "dropped")
	fates := Eval[[]string](p, `Array.from(document.querySelectorAll('#list .pkt')).map(e => e.dataset.fate)`)
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
	lanes := Eval[string](p, `Array.from(document.querySelectorAll('#list .pkt .detail')).map(e => e.textContent).join('\n')`)
	if Eval[int](p, `document.querySelectorAll('#list table.lanes').length`) != dropped || !strings.Contains(lanes, "filter/FORWARD rule") {
		t.Errorf("the dropped packets' timelines do not show the dropping rule: %.300q", lanes)
	}
	p.Select("#f-fate", "")
	if n := Eval[int](p, `document.querySelectorAll('#list .pkt').length`); n != min(packets, 100) {
		t.Errorf("clearing the filter shows %d packets", n)
	}
	if pw := Eval[bool](p, `typeof window.pwned !== 'undefined'`); pw {
		t.Error("hostile content ran: window.pwned is set")
	}
	if pr := p.Problems(); len(pr) > 0 {
		t.Errorf("the page did what a self-contained report must not:\n%s", strings.Join(pr, "\n"))
	}
}
