package cmd

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/nattrace/nattrace/event"
	"github.com/nattrace/nattrace/report"
	"github.com/nattrace/nattrace/trace"
)

type flowOptions struct {
	trace.Options
	json         bool
	observations string
	record       string
	html         string
}

func newFlowCmd(e *env) *cobra.Command {
	o := &flowOptions{}
	c := &cobra.Command{
		Use:   "flow [flags] [FILTER]",
		Short: "Trace the tables, chains and rules packets matching FILTER hit",
		Long: `Trace packets matching FILTER (pcap-filter syntax, as for tcpdump: host, net,
port, portrange, src/dst, tcp, udp, icmp, sctp, proto N, and/or/not, parentheses)
through netfilter in one or more network namespaces, and print one block per
packet: its headers, every rule it hit with the rule's text, and its fate.

Trace rules are rate-limited (--rate) and removed on exit, Ctrl-C, SIGTERM,
SIGHUP and panic; after a SIGKILL, 'nattrace cleanup' or the next run removes them.`,
		Example: `  nattrace flow 'tcp and port 8080'
  nattrace flow --netns router -c 5 icmp and host 10.0.1.2
  nattrace flow --json --duration 30s 'udp port 53' > dns.jsonl`,
		RunE: func(c *cobra.Command, args []string) error {
			o.Filter = strings.Join(args, " ")
			return runFlow(c.Context(), e, o)
		},
	}
	f := c.Flags()
	f.StringArrayVar(&o.Netns, "netns", nil, "network namespace to trace: NAME (ip netns), PATH or pid:N; repeatable (default: the current one)")
	f.IntVarP(&o.Count, "count", "c", 0, "exit after this many traced packets")
	f.DurationVar(&o.Duration, "duration", 0, "exit after this long (e.g. 30s)")
	f.Uint32Var(&o.Rate, "rate", trace.DefaultRate, "trace at most this many packets per second per namespace (enforced in the kernel rule)")
	f.BoolVar(&o.json, "json", false, "print JSON Lines (see README: JSON contract)")
	f.StringVar(&o.ReadyFile, "ready-file", "", "create this file once the trace rules are in place")
	f.StringArrayVar(&o.Backend, "backend", nil, "tracing backend: auto, nft or legacy; NAMESPACE=BACKEND for one namespace (repeatable; default auto)")
	f.StringVar(&o.record, "record", "", "record the session into this directory: the JSON Lines stream, the pcapng capture and the namespaces' state at start and end (for 'nattrace report')")
	f.StringVar(&o.html, "html", "", "write an HTML report of the session to this file on exit (records to a temporary directory unless --record is given)")
	f.BoolVar(&o.NoPayload, "no-payload", false, "leave packet payloads out of the capture, the recording and the report (headers only)")
	f.StringVarP(&o.Write, "write", "w", "", "also capture the traced flows on every interface of the traced namespaces into this pcapng file, commented with their traces")
	f.BoolVar(&o.NoBPF, "no-bpf", false, "do not load the BPF probes (interfaces crossed, routes, kernel drop reasons)")
	f.StringVar(&o.StateDir, "state-dir", "", "where session state files live (default /run/nattrace)")
	f.MarkHidden("state-dir")
	f.StringVar(&o.observations, "debug-observations", "", "write every observation as a JSON line to this file (test fixtures)")
	f.MarkHidden("debug-observations")
	return c
}

func runFlow(ctx context.Context, e *env, o *flowOptions) (err error) {
	if ctx == nil {
		ctx = context.Background()
	}
	if o.Rate == 0 {
		return &trace.UsageError{Msg: "--rate must be at least 1"}
	}
	if o.observations != "" {
		f, err := os.OpenFile(o.observations, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return &trace.UsageError{Msg: err.Error()}
		}
		defer f.Close()
		o.ObservationLog = f
	}
	var rec *recording
	if o.html != "" {
		if st, err := os.Stat(filepath.Dir(o.html)); err != nil || !st.IsDir() {
			return &trace.UsageError{Msg: fmt.Sprintf("--html %s: no such directory %s", o.html, filepath.Dir(o.html))}
		}
		if o.record == "" {
			tmp, err := os.MkdirTemp("", "nattrace-rec-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			o.record = tmp
		}
	}
	if o.record != "" {
		if o.Write != "" {
			return &trace.UsageError{Msg: "--record captures into its directory: leave -w out"}
		}
		o.Write = filepath.Join(o.record, "capture.pcapng")
	}
	sess, err := trace.Prepare(o.Options)
	if err != nil {
		return err
	}
	if o.record != "" {
		if rec, err = startRecording(o.record, sess); err != nil {
			return err
		}
		defer rec.close()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	defer func() {
		if r := recover(); r != nil {
			cerr := sess.Stop()
			msg := fmt.Sprintf("internal error: %v", r)
			if cerr == nil {
				msg += " (trace rules were removed)"
			} else {
				msg += fmt.Sprintf(" (cleanup failed: %v; run 'nattrace cleanup')", cerr)
			}
			err = &internalError{msg: msg}
		}
	}()
	if err := sess.Start(); err != nil {
		return err
	}
	if os.Getenv("NATTRACE_FAILPOINT") == "panic-after-start" {
		panic("failpoint panic-after-start")
	}
	var sink trace.Sink
	var stats func(event.Stats)
	if o.json {
		j := report.NewJSON(e.stdout)
		if err := j.Session(sess.Info()); err != nil {
			sess.Close()
			return err
		}
		sink, stats = j, j.Stats
	} else {
		color := false
		if f, ok := e.stdout.(*os.File); ok {
			color = report.ColorWanted(f)
		}
		t := report.NewText(e.stdout, color)
		t.Session(sess.Info())
		sink, stats = t, t.Stats
	}
	if rec != nil {
		sink, stats = rec.tee(sink, stats)
	}
	st, err := sess.Run(ctx, sink)
	stats(st)
	if rec != nil {
		if rerr := rec.finish(); rerr != nil && err == nil {
			err = rerr
		}
	}
	if err != nil {
		return fmt.Errorf("cleanup: %w (run 'nattrace cleanup')", err)
	}
	if o.html != "" {
		sum, err := writeReport(o.record, o.html, e.version, report.HTMLOptions{EmbedLimit: report.DefaultEmbedLimit, NoPayload: o.NoPayload})
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "report written to %s (%s)\n", o.html, sum)
	}
	return nil
}
