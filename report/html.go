package report

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nattrace/nattrace/event"
)

//go:embed assets/report.html.tmpl assets/report.css assets/report.js
var assets embed.FS

// HTMLOptions configure an HTML report.
type HTMLOptions struct {
	// EmbedLimit: the capture is attached inside the page when it is at
	// most this many bytes; otherwise it is referenced by name.
	EmbedLimit int64
	// NoPayload leaves packet payloads out of the page and the attached
	// capture.
	NoPayload bool
	// Generator names the program, e.g. "nattrace v0.3.0".
	Generator string
	// Now is the time the report is made (tests fix it).
	Now time.Time
}

// DefaultEmbedLimit is the largest capture attached to a report.
const DefaultEmbedLimit = 16 << 20

// Lanes of the swimlane, in path order.
var lanes = []string{"in", "prerouting", "routing", "input", "forward", "output", "postrouting", "out"}

// page is what the template renders; every string in it is escaped by
// html/template. The packets go in as JSON (HTML-safe) and are laid out by
// the page's script with textContent only.
type page struct {
	Title      string
	CSP        string
	CSS        template.CSS
	JS         template.JS
	Data       template.JS
	Generator  string
	Made       string
	Session    event.Session
	Filter     string
	Window     string
	Stats      *event.Stats
	Lost       bool
	Fates      []fateCount
	Conns      []connView
	Articles   []connView // the connections drawn in full
	MoreConns  int        // connections not drawn (see the summary)
	Env        []envNamespace
	EnvChanged []string
	Capture    captureView
	Lanes      []string
	NoPayload  bool
	Warnings   []string
}

type fateCount struct {
	Fate string
	N    int
}

type connView struct {
	ID        int
	Proto     string
	Client    string
	Server    string
	NAT       string
	FateClass string
	Fate      string
	Orig      int
	Reply     int
	Existing  bool
	Diagram   diagram
	Flows     []flowView
}

type flowView struct {
	ID     uint64
	Netns  string
	CTID   uint32
	States []stateView
	Ended  bool
}

type stateView struct {
	T      string
	Event  string
	State  string
	TCP    string
	Status string
}

type captureView struct {
	Name    string
	Size    string
	Frames  int
	DataURL template.URL
	Reason  string // why it is not attached
	Warning string
}

// packetJSON is a packet as the page's script reads it.
type packetJSON struct {
	ID     uint64      `json:"id"`
	Conn   int         `json:"c"`
	Reply  bool        `json:"r,omitempty"`
	Netns  string      `json:"ns"`
	Time   string      `json:"t"`
	Header string      `json:"h"`
	Fate   string      `json:"f"`
	Text   string      `json:"ft"`
	Steps  []stepJSON  `json:"s"`
	Frames []*frame    `json:"fr,omitempty"`
	Note   string      `json:"n,omitempty"`
	Drop   *event.Drop `json:"d,omitempty"`
}

type stepJSON struct {
	Lane    string `json:"l"`
	Netns   string `json:"ns"`
	T       string `json:"t"`
	Kind    string `json:"k"`
	Title   string `json:"ti"`
	Detail  string `json:"de,omitempty"`
	Verdict string `json:"v,omitempty"`
	Bad     bool   `json:"b,omitempty"`
}

type pageData struct {
	Lanes   []string      `json:"lanes"`
	Conns   []connJSON    `json:"conns"`
	Packets []*packetJSON `json:"packets"`
}

type connJSON struct {
	ID    int    `json:"id"`
	Label string `json:"label"`
}

// valid makes a string valid UTF-8: bytes that are not become U+FFFD.
func valid(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// RenderHTML writes the recording as one self-contained HTML page.
func RenderHTML(w io.Writer, rec *Recording, o HTMLOptions) error {
	tmpl, err := template.New("report.html.tmpl").Funcs(template.FuncMap{
		"v": valid,
	}).ParseFS(assets, "assets/report.html.tmpl")
	if err != nil {
		return err
	}
	css, _ := assets.ReadFile("assets/report.css")
	js, _ := assets.ReadFile("assets/report.js")
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	noPayload := o.NoPayload || rec.Session.NoPayload
	p := &page{
		Generator: valid(o.Generator),
		Made:      o.Now.UTC().Format("2006-01-02 15:04:05 MST"),
		Session:   sanitizeSession(rec.Session),
		Stats:     rec.Stats,
		Lanes:     lanes,
		NoPayload: noPayload,
		CSS:       template.CSS(css),
		JS:        template.JS(js),
	}
	p.Filter = p.Session.Filter
	if p.Filter == "" {
		p.Filter = "(all packets)"
	}
	p.Title = fmt.Sprintf("nattrace %s: %s", p.Session.ID, p.Filter)
	p.Window = window(rec)
	if rec.Stats != nil {
		p.Lost = rec.Stats.Lost > 0
	} else {
		p.Warnings = append(p.Warnings, "The session was cut off before its end: the recording has no closing statistics, and packets still being traced at that moment are missing.")
	}
	conns := groupConnections(rec)
	capIx := loadCapture(rec.Capture, noPayload, o.EmbedLimit)
	p.Capture = captureViewOf(rec, capIx, o.EmbedLimit)
	data := pageData{Lanes: lanes}
	fates := map[string]int{}
	at := map[*packetJSON]time.Time{}
	for _, c := range conns {
		cv := connViewOf(c)
		p.Conns = append(p.Conns, cv)
		data.Conns = append(data.Conns, connJSON{c.ID, fmt.Sprintf("#%d %s %s → %s", c.ID, c.Proto, cv.Client, cv.Server)})
		for _, pk := range c.Packets {
			fates[pk.Verdict]++
			pv := packetView(pk, c, capIx)
			at[pv] = pk.FirstSeen
			data.Packets = append(data.Packets, pv)
		}
	}
	sortPackets(data.Packets, at)
	p.Articles, p.MoreConns = articles(p.Conns)
	for _, f := range []string{event.FateDropped, event.FateDelivered, event.FateForwarded, event.FateSent, event.FateUnknown} {
		p.Fates = append(p.Fates, fateCount{f, fates[f]})
	}
	p.Env = envNamespaces(rec.EnvStart, rec.EnvEnd)
	for _, n := range p.Env {
		for _, c := range n.Changed {
			p.EnvChanged = append(p.EnvChanged, n.Name+": "+c)
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf) // escapes <, >, & and U+2028/9: safe inside <script>
	if err := enc.Encode(data); err != nil {
		return err
	}
	p.Data = template.JS(bytes.TrimSpace(buf.Bytes()))
	p.CSP = fmt.Sprintf("default-src 'none'; script-src '%s'; style-src '%s'; img-src data:; base-uri 'none'; form-action 'none'",
		hashOf(js), hashOf(css))
	var out bytes.Buffer
	if err := tmpl.Execute(&out, p); err != nil {
		return err
	}
	// Every field is made valid UTF-8 on its way in; this catches one that
	// was missed, so that the page always is.
	b := bytes.ToValidUTF8(out.Bytes(), []byte("\uFFFD"))
	if bad := Audit(b); len(bad) > 0 {
		return fmt.Errorf("the page failed its safety audit, not written: %s", strings.Join(bad, "; "))
	}
	_, err = w.Write(b)
	return err
}

// maxArticles bounds the connections drawn with their diagram and
// history: the dropped ones first, then in time order.
const maxArticles = 200

func articles(all []connView) ([]connView, int) {
	if len(all) <= maxArticles {
		return all, 0
	}
	var out []connView
	for _, c := range all {
		if c.FateClass == "dropped" && len(out) < maxArticles {
			out = append(out, c)
		}
	}
	for _, c := range all {
		if c.FateClass != "dropped" && len(out) < maxArticles {
			out = append(out, c)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, len(all) - len(out)
}

func hashOf(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256-" + base64.StdEncoding.EncodeToString(h[:])
}

func sanitizeSession(s event.Session) event.Session {
	s.Filter = valid(s.Filter)
	s.ID = valid(s.ID)
	s.Host = valid(s.Host)
	s.Kernel = valid(s.Kernel)
	for i := range s.Netns {
		s.Netns[i] = valid(s.Netns[i])
	}
	for i := range s.Backends {
		s.Backends[i] = valid(s.Backends[i])
	}
	for i := range s.Warnings {
		s.Warnings[i] = valid(s.Warnings[i])
	}
	return s
}

// window is the session's time span.
func window(rec *Recording) string {
	start := rec.Session.Started.UTC()
	if rec.Stats == nil {
		end := start
		for _, p := range rec.Packets {
			if p.FirstSeen.After(end) {
				end = p.FirstSeen
			}
		}
		return fmt.Sprintf("%s – %s (cut off; last packet)", start.Format("2006-01-02 15:04:05 MST"), end.UTC().Format("15:04:05"))
	}
	d := time.Duration(rec.Stats.DurationNs)
	return fmt.Sprintf("%s – %s (%s)", start.Format("2006-01-02 15:04:05 MST"), start.Add(d).Format("15:04:05"), d.Round(time.Millisecond))
}

// sortPackets puts packets in time order across connections, as they
// happened; ties keep the stream's order.
func sortPackets(ps []*packetJSON, at map[*packetJSON]time.Time) {
	sort.SliceStable(ps, func(i, j int) bool { return at[ps[i]].Before(at[ps[j]]) })
}

func connViewOf(c *connection) connView {
	class, fate := c.Fate()
	orig, reply := c.Counts()
	cv := connView{
		ID: c.ID, Proto: c.Proto, Client: EndpointString(&c.Client), Server: EndpointString(&c.Server),
		NAT: valid(c.NATSummary()), FateClass: class, Fate: valid(fate), Orig: orig, Reply: reply,
	}
	for _, f := range c.Flows {
		cv.Existing = cv.Existing || f.Existing
		fv := flowView{ID: f.ID, Netns: valid(f.Netns), CTID: f.CTID, Ended: f.Ended}
		for _, s := range f.States {
			fv.States = append(fv.States, stateView{T: s.T.UTC().Format("15:04:05.000000"), Event: valid(s.Event), State: valid(s.State),
				TCP: valid(s.TCPState), Status: valid(strings.Join(s.Status, ","))})
		}
		cv.Flows = append(cv.Flows, fv)
	}
	cv.Diagram = diagramOf(c)
	return cv
}

func captureViewOf(rec *Recording, ix *captureIndex, limit int64) captureView {
	if rec.Capture == "" {
		return captureView{Reason: "no capture in the recording"}
	}
	v := captureView{Name: valid(filepath.Base(rec.Capture)), Size: ByteSize(ix.size), Frames: ix.frames, Warning: valid(ix.warning)}
	switch {
	case ix.raw != nil:
		v.DataURL = template.URL("data:application/vnd.tcpdump.pcap;base64," + base64.StdEncoding.EncodeToString(ix.raw))
	case limit <= 0:
		v.Reason = "not attached (--embed-limit 0)"
	default:
		v.Reason = fmt.Sprintf("not attached: larger than --embed-limit %s; it is %s in the recording directory", ByteSize(limit), v.Name)
	}
	return v
}

// ByteSize formats a size as 12 bytes, 3.4 KiB or 5.6 MiB.
func ByteSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

func packetView(p *event.Packet, c *connection, ix *captureIndex) *packetJSON {
	v := &packetJSON{
		ID: p.ID, Conn: c.ID, Reply: c.Reply(p), Netns: valid(p.Netns),
		Time: p.FirstSeen.UTC().Format("15:04:05.000000"), Header: valid(Header(p)),
		Fate: p.Verdict, Text: valid(Fate(p)), Note: valid(p.Note),
	}
	if p.Drop != nil {
		d := *p.Drop
		d.Rule, d.Reason, d.Fix, d.Dev, d.Location = valid(d.Rule), valid(d.Reason), valid(d.Fix), valid(d.Dev), valid(d.Location)
		d.Table, d.Chain = valid(d.Table), valid(d.Chain)
		v.Drop = &d
	}
	// Probe steps carry kernel timestamps; netfilter trace events carry
	// none (their time is when nattrace read them). With probes, times are
	// shown from the first probe event, and only for probe steps.
	probed, base := false, int64(0)
	for _, s := range p.Steps {
		if kernelTimed(s.Kind) && (!probed || s.TNs < base) {
			probed, base = true, s.TNs
		}
	}
	lane := "routing"
	for _, s := range p.Steps {
		if s.Kind == event.KindRPF && s.Mode == "off" {
			continue
		}
		sv := stepView(s)
		switch {
		case probed && kernelTimed(s.Kind):
			sv.T = stepTime(s.TNs - base)
		case probed:
			sv.T = ""
		}
		if sv.Netns == "" {
			sv.Netns = v.Netns
		}
		if sv.Lane == "" {
			sv.Lane = lane
		}
		lane = sv.Lane
		v.Steps = append(v.Steps, sv)
	}
	v.Frames = ix.framesOf(p)
	return v
}

func kernelTimed(kind string) bool {
	switch kind {
	case event.KindRx, event.KindTx, event.KindRoute, event.KindDrop:
		return true
	}
	return false
}

func stepTime(ns int64) string {
	if ns == 0 {
		return "+0"
	}
	d := time.Duration(ns)
	sign := "+"
	if d < 0 {
		sign, d = "-", -d
	}
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%s%dns", sign, d.Nanoseconds())
	case d < time.Millisecond:
		return fmt.Sprintf("%s%.1fµs", sign, float64(d)/1e3)
	}
	return fmt.Sprintf("%s%.3fms", sign, float64(d)/1e6)
}

// stepView puts a step in its lane with a title and a detail line.
func stepView(s event.Step) stepJSON {
	v := stepJSON{Netns: valid(s.Netns), T: stepTime(s.TNs), Kind: s.Kind, Verdict: s.Verdict}
	switch s.Kind {
	case event.KindRx:
		v.Lane, v.Title = "in", "received on "+valid(s.Dev)
	case event.KindTx:
		v.Lane, v.Title = "out", "sent on "+valid(s.Dev)
	case event.KindRoute, event.KindRPF:
		v.Lane = "routing"
		line := strings.Join(strings.Fields(probeLine(s)), " ")
		_, rest, _ := strings.Cut(line, " ") // the kind
		_, rest, _ = strings.Cut(rest, " ")  // the namespace
		v.Title = valid(map[bool]string{true: "rp_filter", false: "route"}[s.Kind == event.KindRPF])
		v.Detail = valid(rest)
		v.Bad = s.Error != "" || s.Result == "fail"
	case event.KindDrop:
		v.Title = "freed by the kernel: " + valid(s.Reason)
		if s.Location != "" {
			v.Detail = "at " + valid(s.Location)
		}
		v.Bad = true
	case event.KindNAT:
		v.Lane = s.Hook
		kind := strings.ToUpper(s.NAT)
		if s.Reverse {
			kind = "reverse " + kind
		}
		v.Title = kind + " " + EndpointString(s.Before) + " ⇒ " + EndpointString(s.After)
		line := natLine(s)
		if i := strings.LastIndex(line, "  ["); i >= 0 {
			v.Detail = strings.Trim(line[i+2:], "[]")
		}
		if s.NAT == event.NATMasquerade && s.OIF != "" && !s.Reverse {
			v.Detail = strings.TrimPrefix(v.Detail+"; address of "+valid(s.OIF), "; ")
		}
		v.Detail = valid(v.Detail)
	default:
		v.Lane = s.Hook
		where := s.Table + "/" + s.Chain
		if s.Family != "" && s.Syntax == "nft" {
			where = s.Family + " " + where
		}
		switch s.Kind {
		case event.KindPolicy:
			v.Title = where + " policy " + s.Verdict
		case event.KindReturn:
			v.Title = where + ": end of chain, return"
		default:
			v.Title = fmt.Sprintf("%s rule %d", where, s.Position)
			v.Detail = s.Rule
			if s.Rule == "" {
				v.Detail = fmt.Sprintf("(handle %d)", s.Handle)
			}
			if s.Target != "" && (s.Verdict == event.VerdictJump || s.Verdict == event.VerdictGoto) {
				v.Verdict += " " + s.Target
			}
		}
		v.Title, v.Detail, v.Verdict = valid(v.Title), valid(v.Detail), valid(v.Verdict)
		v.Bad = s.Verdict == event.VerdictDrop || s.Verdict == event.VerdictReject
	}
	return v
}
