package report

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/nattrace/nattrace/capture"
	"github.com/nattrace/nattrace/event"
)

const fixture = "testdata/dnat-drop"

// The fixture: a DNAT to 10.200.2.2:8080 dropped in FORWARD by rule 1, an
// answered ping, and a UDP datagram with a hostile payload dropped by a rule
// with a hostile comment (with invalid UTF-8), recorded in three namespaces.
const (
	dropRule    = `-A FORWARD -p tcp -m tcp --dport 8080 -m comment --comment "block app" -j DROP`
	hostileRule = `-A FORWARD -p udp -m udp --dport 9999 -m comment --comment "</script><script>window.pwned=1</script>\"onerror=alert(1) `
)

func render(t *testing.T, rec *Recording, o HTMLOptions) []byte {
	t.Helper()
	var b bytes.Buffer
	if o.Now.IsZero() {
		o.Now = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	}
	if err := RenderHTML(&b, rec, o); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// checkSafe checks a page with Audit, and that no hostile text is there as
// it was outside the JSON data block (whose own escaping Audit checks):
// escaped, or replaced when it was not UTF-8.
func checkSafe(t *testing.T, page []byte, hostile ...string) {
	t.Helper()
	for _, p := range Audit(page) {
		t.Error(p)
	}
	outside := page
	if i := bytes.Index(page, []byte(`<script type="application/json" id="nattrace-data">`)); i >= 0 {
		j := bytes.Index(page[i:], []byte("</script>"))
		outside = append(append([]byte(nil), page[:i]...), page[i+j:]...)
	}
	for _, h := range hostile {
		if bytes.Contains(outside, []byte(h)) {
			t.Errorf("hostile text %q appears unescaped", h)
		}
	}
}

func TestHTMLReport(t *testing.T) {
	rec, err := LoadRecording(fixture)
	if err != nil {
		t.Fatal(err)
	}
	page := render(t, rec, HTMLOptions{EmbedLimit: DefaultEmbedLimit, Generator: "nattrace test"})
	s := string(page)
	// The summary names the dropping rule with its text, escaped.
	esc := html.EscapeString(dropRule)
	if !strings.Contains(s, `request dropped by filter/FORWARD rule 1: `+esc+` [xr]`) {
		t.Error("the summary does not name the dropping rule")
	}
	// The DNAT connection: both views and the translation.
	for _, want := range []string{
		"DNAT→10.200.2.2:8080 [xr]",
		`<code>10.200.1.2:46662 → 10.200.1.1:80</code> <span class="dim">reaches the server as</span> <code>10.200.1.2:46662 → 10.200.2.2:8080</code>`,
		">DNAT at prerouting<", ">by nat/PREROUTING rule 1<", "✗ request dropped here",
		">10.200.1.1:80<", ">10.200.2.2:8080<",
		"answered: 1 request packet, 1 reply packet",
		`download="capture.pcapng" href="data:application/vnd.tcpdump.pcap;base64,`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	checkSafe(t, page, "<script>window.pwned", `"onerror=alert`, "<img src=x")
	// The attached capture is the recording's.
	raw, _ := os.ReadFile(filepath.Join(fixture, "capture.pcapng"))
	if !strings.Contains(html.UnescapeString(s), base64.StdEncoding.EncodeToString(raw)) {
		t.Error("the attached capture differs from the recording's")
	}
	// Above the limit it is referenced by name.
	small := string(render(t, rec, HTMLOptions{EmbedLimit: 100}))
	if strings.Contains(small, "data:application/vnd.tcpdump.pcap") || !strings.Contains(small, "not attached: larger than --embed-limit 100 bytes") {
		t.Error("a capture above the limit was attached")
	}
}

func TestHTMLNoPayload(t *testing.T) {
	rec, err := LoadRecording(fixture)
	if err != nil {
		t.Fatal(err)
	}
	with := string(render(t, rec, HTMLOptions{EmbedLimit: DefaultEmbedLimit}))
	// The payload's text shows in the hex dump of its frame.
	if !strings.Contains(with, `w.pwned=2\u003c/scrip`) {
		t.Fatal("the fixture's payload is not in the page")
	}
	page := render(t, rec, HTMLOptions{EmbedLimit: DefaultEmbedLimit, NoPayload: true})
	s := string(page)
	if strings.Contains(s, `pwned=2`) || !strings.Contains(s, "payload left out") {
		t.Error("--no-payload left a payload in the page")
	}
	// The attached capture is cut after the headers too.
	i := strings.Index(s, "base64,")
	j := strings.IndexByte(s[i:], '"')
	b, err := base64.StdEncoding.DecodeString(html.UnescapeString(s[i+7 : i+j]))
	if err != nil {
		t.Fatal(err)
	}
	r, err := capture.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		p, err := r.Next()
		if err != nil {
			break
		}
		n++
		if len(p.Data) != capture.HeadersLen(p.Data, p.Iface.LinkType) {
			t.Errorf("packet %d keeps %d payload bytes", n, len(p.Data)-capture.HeadersLen(p.Data, p.Iface.LinkType))
		}
	}
	if n == 0 {
		t.Error("the attached capture is empty")
	}
}

// Hostile strings in every field a kernel, a ruleset or a packet can fill.
func TestHTMLHostile(t *testing.T) {
	bad := []string{
		"</script><script>window.pwned=1</script>",
		`"onerror=alert(1) x="`,
		"<img src=x onerror=alert(2)>",
		"\xff\xfe\xc3(invalid utf-8",
		"]]></svg><svg onload=alert(3)>",
		"javascript:alert(4)",
		"\u2028\u2029<!--",
	}
	h := strings.Join(bad, " ")
	ty := uint8(8)
	ip := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	tuple := event.Tuple{Proto: "icmp", Src: ip("10.200.1.2"), Dst: ip("10.200.2.2"), Sport: 7, Dport: 7, ICMPType: &ty, ICMPCode: new(uint8)}
	rec := &Recording{
		Session: event.Session{Type: "session", Version: 1, ID: h, Started: time.Now(), Filter: h, Netns: []string{h}, Backends: []string{h}, Warnings: []string{h}, Host: h, Kernel: h},
		Packets: []*event.Packet{{
			Type: "packet", ID: 1, Flow: 1, Netns: h, FirstSeen: time.Now(), Tuple: tuple, IIF: h, OIF: h, Verdict: event.FateDropped, Note: h,
			Steps: []event.Step{
				{Kind: event.KindRx, Netns: h, Dev: h},
				{Kind: event.KindRule, Table: h, Chain: h, Hook: "forward", Position: 1, Rule: h, Verdict: "drop", Netns: h, Family: h, Syntax: "nft"},
				{Kind: event.KindRoute, Netns: h, Dev: h, Dst: h, Table: h, GW: h, Error: h},
				{Kind: event.KindRPF, Netns: h, Dev: h, Mode: "strict", Result: "fail", ReverseDev: h},
				{Kind: event.KindDrop, Netns: h, Reason: h, Location: h},
				{Kind: event.KindNAT, NAT: h, Hook: "prerouting", Before: &event.Endpoints{}, After: &event.Endpoints{}, By: "rule", Table: h, Chain: h, OIF: h, SetupBy: h},
			},
			Drop: &event.Drop{By: "rule", Table: h, Chain: h, Rule: h, Reason: h, Location: h, Dev: h, Fix: h},
		}},
		Flows: []*event.Flow{{Type: "flow", ID: 1, Netns: h, Orig: tuple, NAT: []string{h},
			Translations: []event.Translation{{NAT: h, Hook: h, Rule: h, By: h, OIF: h, After: event.Endpoints{Src: ip("10.200.9.9")}}},
			States:       []event.FlowState{{Event: h, State: h, TCPState: h, Status: []string{h}}}}},
		EnvStart: []*event.NetnsSnapshot{{Name: h, Sysctls: map[string]string{h: h}, NFTables: h, IptNFT: h, IptLegacy: h, Errors: []string{h},
			Addresses: []byte(`[{"ifname":` + jsonString(h) + `,"addr_info":[{"local":` + jsonString(h) + `}]}]`),
			Routes:    []byte(`[{"dst":` + jsonString(h) + `}]`), Rules: []byte(`[{"table":` + jsonString(h) + `}]`)}},
		EnvEnd: []*event.NetnsSnapshot{{Name: h, Sysctls: map[string]string{h: "changed " + h}, NFTables: h + "\n" + h}},
	}
	// A capture whose interface name and comment and payload are hostile.
	dir := t.TempDir()
	f, _ := os.Create(filepath.Join(dir, "capture.pcapng"))
	w, _ := capture.NewWriter(f)
	ifc := &capture.Interface{Name: h + "/" + h, LinkType: capture.LinkRaw, Snaplen: 65535}
	w.AddInterface(ifc)
	pkt := append([]byte{0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 200, 1, 2, 10, 200, 2, 2, 8, 0, 0, 0, 0, 7, 0, 1}, []byte(h)...)
	pkt[3] = byte(len(pkt))
	w.WritePacket(&capture.Packet{Time: time.Now(), Iface: ifc, Data: pkt, OrigLen: len(pkt), Comment: h})
	w.Flush()
	f.Close()
	rec.Capture = f.Name()
	page := render(t, rec, HTMLOptions{EmbedLimit: DefaultEmbedLimit, Generator: h})
	checkSafe(t, page, "<script>window.pwned", `"onerror=`, "<img src=x", "<svg onload", "\xff", "<!--")
	if !bytes.Contains(page, []byte("&lt;/script&gt;&lt;script&gt;window.pwned=1&lt;/script&gt;")) {
		t.Error("the hostile text is not shown, escaped")
	}
	if bytes.Contains(page, []byte(`"javascript:`)) {
		t.Error("a javascript: URL in an attribute")
	}
}

func jsonString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20:
			b.WriteString(" ")
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func TestLineDiff(t *testing.T) {
	a := "1\n2\n3\n4\n5\n6\n7\n8\n9\n"
	b := "1\n2\n3\n4\nfive\n6\n7\n8\n9\n10\n"
	var got []string
	for _, l := range lineDiff(a, b, 1) {
		got = append(got, l.Op+l.Text)
	}
	want := " 4,-5,+five, 6,@…, 9,+10"
	if strings.Join(got, ",") != want {
		t.Errorf("diff %q, want %q", strings.Join(got, ","), want)
	}
	if d := lineDiff("x\n", "x\n", 2); len(d) != 0 {
		t.Errorf("no change gave %v", d)
	}
}

// Counters that move by themselves do not make a section "changed".
func TestEnvCounters(t *testing.T) {
	start := &event.NetnsSnapshot{Name: "r", Sysctls: map[string]string{"net.netfilter.nf_conntrack_count": "1", "net.ipv4.ip_forward": "1"},
		IptNFT: "# Generated by iptables-nft-save v1.8.9 (nf_tables) on Sun Nov 22 04:39:56 2026\n*filter\n:FORWARD ACCEPT [2:168]\nCOMMIT\n"}
	end := &event.NetnsSnapshot{Name: "r", Sysctls: map[string]string{"net.netfilter.nf_conntrack_count": "3", "net.ipv4.ip_forward": "1"},
		IptNFT: "# Generated by iptables-nft-save v1.8.9 (nf_tables) on Sun Nov 22 04:40:01 2026\n*filter\n:FORWARD ACCEPT [4:336]\nCOMMIT\n"}
	ns := envNamespaces([]*event.NetnsSnapshot{start}, []*event.NetnsSnapshot{end})
	if len(ns[0].Changed) != 0 {
		t.Errorf("changed: %v", ns[0].Changed)
	}
	end.Sysctls["net.ipv4.ip_forward"] = "0"
	end.IptNFT = strings.Replace(end.IptNFT, "COMMIT", "-A FORWARD -j DROP\nCOMMIT", 1)
	ns = envNamespaces([]*event.NetnsSnapshot{start}, []*event.NetnsSnapshot{end})
	if strings.Join(ns[0].Changed, ",") != "Sysctls,iptables-nft-save" {
		t.Errorf("changed: %v", ns[0].Changed)
	}
}

// Audit finds what a broken escaper would let through.
func TestAuditCatches(t *testing.T) {
	rec, err := LoadRecording(fixture)
	if err != nil {
		t.Fatal(err)
	}
	page := string(render(t, rec, HTMLOptions{}))
	if bad := Audit([]byte(page)); len(bad) > 0 {
		t.Fatalf("a clean page: %v", bad)
	}
	for name, doctored := range map[string]string{
		"event handler":   strings.Replace(page, "<h3>", `<h3 onclick="x()">`, 1),
		"image":           strings.Replace(page, "<h3>", `<h3><img src=x>`, 1),
		"third script":    strings.Replace(page, "<h3>", `<h3><script>alert(1)</script>`, 1),
		"script in data":  strings.Replace(page, `{"lanes"`, `{"x":"</script><script>alert(1)</script>","lanes"`, 1),
		"link out":        strings.Replace(page, `href="#summary"`, `href="http://192.0.2.1/"`, 1),
		"csp":             strings.Replace(page, "default-src &#39;none&#39;", "default-src *", 1),
		"invalid utf-8":   strings.Replace(page, "<h3>", "<h3>\xff", 1),
		"style attribute": strings.Replace(page, "<h3>", `<h3 style="background:url(http://192.0.2.1/)">`, 1),
		"changed script":  strings.Replace(page, "'use strict';", "'use strict'; alert(1);", 1),
		"meta refresh":    strings.Replace(page, "<title>", `<meta http-equiv="refresh" content="0;url=http://192.0.2.1/"><title>`, 1),
	} {
		if doctored == page {
			t.Errorf("%s: the page was not changed", name)
			continue
		}
		if len(Audit([]byte(doctored))) == 0 {
			t.Errorf("%s: not caught", name)
		}
	}
}

// Any stream and snapshot the reader accepts renders into a page that
// passes the audit (RenderHTML fails otherwise), without a panic.
func FuzzRenderHTML(f *testing.F) {
	stream, _ := os.ReadFile(filepath.Join(fixture, "session.jsonl"))
	env, _ := os.ReadFile(filepath.Join(fixture, "env-start.json"))
	f.Add(stream, env)
	f.Add([]byte("{\"type\":\"session\",\"version\":1,\"filter\":\"</script>\\u2028\"}\n{\"type\":\"packet\",\"flow\":3,\"steps\":[{\"kind\":\"nat\"},{\"kind\":\"drop\"}],\"verdict\":\"dropped\"}\n{\"type\":\"flow\",\"id\":3,\"translations\":[{}]}\n"),
		[]byte(`[{"name":"<x>","addresses":[{"ifname":1,"addr_info":[null,{}]}],"routes":{"x":1},"rules":[{"not":true}]}]`))
	f.Fuzz(func(t *testing.T, stream, env []byte) {
		rec, _ := ReadStream(bytes.NewReader(stream))
		var snaps []*event.NetnsSnapshot
		if json.Unmarshal(env, &snaps) == nil {
			rec.EnvStart, rec.EnvEnd = snaps, snaps[:len(snaps)/2]
		}
		for _, s := range rec.EnvStart {
			if s == nil {
				return // LoadRecording's JSON never holds null snapshots in practice; skip
			}
		}
		var b bytes.Buffer
		if err := RenderHTML(&b, rec, HTMLOptions{Now: time.Unix(0, 0)}); err != nil {
			t.Fatal(err)
		}
	})
}
