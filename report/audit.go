package report

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/html"
)

// Audit parses a rendered page as a browser would and lists what would
// make it unsafe to open from a ticket: script elements other than the
// page's own two (the data block and the script), a content security policy
// that does not pin that script, event handler attributes, elements that
// fetch or embed, links out of the page, a data block that is not plain
// JSON, bytes that are not UTF-8. RenderHTML refuses to write a page with
// any of these; tests use it on hostile recordings.
func Audit(page []byte) []string {
	var bad []string
	if !utf8.Valid(page) {
		bad = append(bad, "not valid UTF-8")
	}
	z := html.NewTokenizer(bytes.NewReader(page))
	var scripts []string
	var csp string
	inScript := false
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			break
		}
		tok := z.Token()
		switch tt {
		case html.StartTagToken, html.SelfClosingTagToken:
			switch tok.Data {
			case "iframe", "object", "embed", "img", "link", "base", "form", "frame", "frameset", "image", "foreignobject",
				"use", "animate", "set", "audio", "video", "source", "track", "portal", "applet", "meta":
				if tok.Data != "meta" {
					bad = append(bad, fmt.Sprintf("element <%s>", tok.Data))
				}
				for _, a := range tok.Attr {
					if a.Key == "http-equiv" && strings.EqualFold(a.Val, "refresh") {
						bad = append(bad, "meta refresh")
					}
					if a.Key == "content" && strings.Contains(a.Val, "default-src") {
						csp = a.Val
					}
				}
			case "script":
				inScript = true
				scripts = append(scripts, "")
				for _, a := range tok.Attr {
					if a.Key != "type" && a.Key != "id" {
						bad = append(bad, fmt.Sprintf("script attribute %s=%q", a.Key, a.Val))
					}
				}
			}
			for _, a := range tok.Attr {
				k := strings.ToLower(a.Key)
				if strings.HasPrefix(k, "on") {
					bad = append(bad, fmt.Sprintf("<%s> event handler %s=%q", tok.Data, a.Key, a.Val))
				}
				if k == "href" || k == "src" || k == "xlink:href" || k == "action" || k == "formaction" || k == "srcdoc" {
					if !strings.HasPrefix(a.Val, "#") && !strings.HasPrefix(a.Val, "data:application/vnd.tcpdump.pcap;base64,") {
						bad = append(bad, fmt.Sprintf("<%s %s=%q>: a link out of the page", tok.Data, a.Key, a.Val))
					}
				}
				if k == "style" {
					bad = append(bad, fmt.Sprintf("<%s> style attribute", tok.Data))
				}
			}
		case html.TextToken:
			if inScript {
				scripts[len(scripts)-1] += tok.Data
			}
		case html.EndTagToken:
			if tok.Data == "script" {
				inScript = false
			}
		}
	}
	if len(scripts) != 2 {
		return append(bad, fmt.Sprintf("%d script elements, want the data block and the page's script", len(scripts)))
	}
	js, _ := assets.ReadFile("assets/report.js")
	if scripts[1] != string(js) {
		bad = append(bad, "the second script is not the page's own")
	}
	h := sha256.Sum256([]byte(scripts[1]))
	if want := "script-src 'sha256-" + base64.StdEncoding.EncodeToString(h[:]) + "';"; !strings.Contains(csp, want) || !strings.HasPrefix(csp, "default-src 'none';") {
		bad = append(bad, fmt.Sprintf("the content security policy %q does not pin the script", csp))
	}
	if strings.ContainsAny(scripts[0], "<>&\u2028\u2029") || !json.Valid([]byte(scripts[0])) {
		bad = append(bad, "the data block is not JSON, or holds <, >, &, U+2028 or U+2029 unescaped")
	}
	return bad
}
