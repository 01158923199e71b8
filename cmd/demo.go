package cmd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nattrace/nattrace/lab"
	"github.com/nattrace/nattrace/report"
	"github.com/nattrace/nattrace/trace"
)

// DemoRules is the router's ruleset in the demo: seed 001's port forward
// (router :80 -> server :8080) behind a FORWARD filter that blocks ssh.
const DemoRules = `*nat
:PREROUTING ACCEPT [0:0]
-A PREROUTING -d 10.200.1.1/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.200.2.2:8080
COMMIT
*filter
:FORWARD DROP [0:0]
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -p tcp -m tcp --dport 22 -j DROP
-A FORWARD -d 10.200.2.2/32 -p tcp -m tcp --dport 8080 -j ACCEPT
COMMIT
`

func newDemoCmd(e *env) *cobra.Command {
	html := ""
	c := &cobra.Command{
		Use:   "demo",
		Short: "Build a client-router-server lab in network namespaces, trace a port forward, remove the lab",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return runDemo(e, html)
		},
	}
	c.Flags().StringVar(&html, "html", "", "also write the HTML report of the demo's session to this file")
	return c
}

// demoTools maps the commands the demo needs to their Debian packages.
var demoTools = [][2]string{{"ip", "iproute2"}, {"nft", "nftables"}, {"iptables-nft-restore", "iptables"},
	{"iptables-nft-save", "iptables"}, {"nsenter", "util-linux"}}

func runDemo(e *env, html string) (err error) {
	w := e.stdout
	if err := trace.CheckPrivileges(); err != nil {
		return err
	}
	var missing []string
	for _, t := range demoTools {
		if _, err := exec.LookPath(t[0]); err != nil {
			missing = append(missing, t[1])
		}
	}
	if len(missing) > 0 {
		return &trace.UsageError{Msg: "the demo needs these packages: apt-get install " + strings.Join(missing, " ")}
	}
	fmt.Fprintln(w, "== building the lab: client 10.200.1.2 -- 10.200.1.1 router 10.200.2.1 -- 10.200.2.2 server")
	l, err := lab.ClientRouterServer()
	if err != nil {
		return err
	}
	defer func() {
		if cerr := l.Close(); cerr != nil && err == nil {
			err = cerr
		}
		fmt.Fprintf(w, "== lab removed (namespaces %s-*)\n", l.Prefix)
	}()
	if err := l.Iptables("router", false, DemoRules); err != nil {
		return err
	}
	fmt.Fprintf(w, "== router ruleset (iptables-nft):\n%s", indent(DemoRules))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := l.ListenTCP(ctx, "server", ":8080"); err != nil {
		return err
	}
	if _, err := l.ListenTCP(ctx, "server", ":22"); err != nil {
		return err
	}
	filterExpr := "tcp and host " + lab.ClientAddr
	fmt.Fprintf(w, "== nattrace flow --netns %s '%s'\n\n", l.Name("router"), filterExpr)
	opts := trace.Options{Filter: filterExpr, Netns: []string{l.Name("router")}}
	var recDir string
	if html != "" {
		if recDir, err = os.MkdirTemp("", "nattrace-demo-"); err != nil {
			return err
		}
		defer os.RemoveAll(recDir)
		opts.Write = filepath.Join(recDir, recCapture)
	}
	sess, err := trace.Prepare(opts)
	if err != nil {
		return err
	}
	var rec *recording
	if html != "" {
		if rec, err = startRecording(recDir, sess); err != nil {
			return err
		}
		defer rec.close()
	}
	if err := sess.Start(); err != nil {
		return err
	}
	t := report.NewText(w, false)
	t.Session(sess.Info())
	fmt.Fprintln(w)
	var sink trace.Sink = t
	stats := t.Stats
	if rec != nil {
		sink, stats = rec.tee(t, t.Stats)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		st, err := sess.Run(runCtx, sink)
		stats(st)
		done <- err
	}()
	// 1. The port forward: client -> router:80, DNAT to server:8080.
	greeting, xerr := l.Exchange("client", lab.RouterInAddr+":80", 3*time.Second)
	// 2. ssh to the server through the router: dropped in FORWARD.
	_, sshErr := l.DialTCP("client", lab.ServerAddr+":22", 1200*time.Millisecond)
	time.Sleep(400 * time.Millisecond)
	stop()
	if err := <-done; err != nil {
		return err
	}
	if rec != nil {
		if err := rec.finish(); err != nil {
			return err
		}
		sum, err := writeReport(recDir, html, e.version, report.HTMLOptions{EmbedLimit: report.DefaultEmbedLimit})
		if err != nil {
			return err
		}
		defer fmt.Fprintf(w, "== report written to %s (%s)\n", html, sum)
	}
	if xerr != nil {
		return fmt.Errorf("the demo connection to %s:80 failed: %w", lab.RouterInAddr, xerr)
	}
	fmt.Fprintf(w, "== client got %q through the port forward", strings.TrimSpace(greeting))
	if sshErr != nil {
		fmt.Fprintf(w, "; ssh to %s failed (%v): dropped by the router as traced above\n", lab.ServerAddr, shortErr(sshErr))
	} else {
		fmt.Fprintf(w, "; ssh to %s went through: the FORWARD drop did not apply\n", lab.ServerAddr)
	}
	return nil
}

func shortErr(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return err.Error()
}

func indent(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("   " + line + "\n")
	}
	return b.String()
}
