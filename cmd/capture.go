package cmd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/nattrace/nattrace/capture"
	"github.com/nattrace/nattrace/trace"
)

type captureOptions struct {
	capture.Options
	read     string
	bufferKB int
}

func newCaptureCmd(e *env) *cobra.Command {
	o := &captureOptions{}
	c := &cobra.Command{
		Use:   "capture [flags] [FILTER]",
		Short: "Capture packets like tcpdump, on many interfaces and namespaces at once",
		Long: `Capture packets matching FILTER (the same pcap-filter syntax as flow) on every
interface given with -i (IFACE, NETNS/IFACE, or any: every interface of the
namespaces, including those created while the capture runs), merge them into
one time-ordered stream, print them tcpdump -n style with the interface and
direction, and write them to a pcapng file with -w (interface names kept).`,
		Example: `  nattrace capture -i router/r0 -i router/r1 -w nat.pcapng 'tcp port 80'
  nattrace capture --netns router -i any -c 20 icmp
  nattrace capture -r nat.pcapng`,
		RunE: func(c *cobra.Command, args []string) error {
			o.Filter = strings.Join(args, " ")
			return runCapture(c.Context(), e, o)
		},
	}
	f := c.Flags()
	f.StringArrayVarP(&o.Interfaces, "interface", "i", nil, "interface: IFACE, NETNS/IFACE or any; repeatable (default any)")
	f.StringArrayVar(&o.Netns, "netns", nil, "namespace for -i IFACE and -i any: NAME, PATH or pid:N; repeatable (default the current one)")
	f.IntVarP(&o.Count, "count", "c", 0, "exit after this many packets")
	f.Uint32VarP(&o.Snaplen, "snaplen", "s", 262144, "bytes kept of each packet")
	f.StringVarP(&o.Write, "write", "w", "", "write the packets to this pcapng file")
	f.StringVarP(&o.read, "read", "r", "", "print a pcapng file (with its comments) instead of capturing")
	f.BoolVarP(&o.Quiet, "quiet", "q", false, "do not print packets, only the statistics")
	f.BoolVar(&o.NoPayload, "no-payload", false, "cut each packet after its headers (link, IP, transport): no payload is printed or written")
	f.DurationVar(&o.Duration, "duration", 0, "exit after this long")
	f.StringVar(&o.ReadyFile, "ready-file", "", "create this file once every socket is open")
	f.IntVarP(&o.bufferKB, "buffer-size", "B", 4096, "kernel ring per interface, in KiB")
	return c
}

func runCapture(ctx context.Context, e *env, o *captureOptions) error {
	if o.read != "" {
		_, err := capture.ReadFile(o.read, e.stdout)
		return usage(err)
	}
	if err := trace.CheckPrivileges(); err != nil {
		return err
	}
	if o.bufferKB < 8 {
		return &trace.UsageError{Msg: "--buffer-size must be at least 8 (KiB)"}
	}
	block := 4096
	for block*2 <= o.bufferKB*1024/2 && block < 1<<22 {
		block *= 2
	}
	o.Ring = capture.RingConfig{BlockSize: block, NumBlocks: max(2, o.bufferKB*1024/block)}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	stats, err := capture.Run(ctx, o.Options, e.stdout)
	if err != nil {
		return usage(err)
	}
	for _, s := range stats {
		fmt.Fprintf(e.stderr, "%s: %d packets captured, %d received by filter, %d dropped by kernel\n", s.Name, s.Captured, s.Received, s.Dropped)
	}
	return nil
}

// usage turns a capture.UsageError into the CLI's usage error (exit 2).
func usage(err error) error {
	var u *capture.UsageError
	if errors.As(err, &u) {
		return &trace.UsageError{Msg: u.Msg}
	}
	return err
}
