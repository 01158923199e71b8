package cmd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nattrace/nattrace/report"
	"github.com/nattrace/nattrace/trace"
)

type reportOptions struct {
	report.HTMLOptions
	out        string
	embedLimit string
}

func newReportCmd(e *env) *cobra.Command {
	o := &reportOptions{}
	c := &cobra.Command{
		Use:   "report [flags] DIR",
		Short: "Render a recorded session as one self-contained HTML file",
		Long: `Render a session recorded with 'nattrace flow --record DIR' as one HTML file
that opens anywhere, offline, and can be attached to an incident ticket: a
summary with each connection's fate and the rule that dropped it, NAT diagrams
and conntrack history per connection, every packet's path through the hooks,
the namespaces' state at the start and the end (with what changed), and the
capture as a download. The file is created with mode 0600.`,
		Example: `  nattrace flow --record /tmp/inc42 --duration 30s 'tcp port 8080'
  nattrace report /tmp/inc42 -o inc42.html`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return runReport(e, args[0], o)
		},
	}
	f := c.Flags()
	f.StringVarP(&o.out, "output", "o", "", "write the report to this file (default DIR/report.html)")
	f.StringVar(&o.embedLimit, "embed-limit", "16M", "attach the capture inside the page when it is at most this size (K, M, G suffixes; 0: never)")
	f.BoolVar(&o.NoPayload, "no-payload", false, "leave packet payloads out of the page and the attached capture")
	return c
}

// parseSize reads 123, 64K, 16M, 1G (powers of 1024).
func parseSize(s string) (int64, error) {
	mult := int64(1)
	t := strings.ToUpper(strings.TrimSuffix(strings.TrimSuffix(strings.TrimSpace(s), "B"), "i"))
	switch {
	case strings.HasSuffix(t, "K"):
		mult, t = 1<<10, t[:len(t)-1]
	case strings.HasSuffix(t, "M"):
		mult, t = 1<<20, t[:len(t)-1]
	case strings.HasSuffix(t, "G"):
		mult, t = 1<<30, t[:len(t)-1]
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("%q is not a size (e.g. 0, 512K, 16M)", s)
	}
	return n * mult, nil
}

func runReport(e *env, dir string, o *reportOptions) (err error) {
	limit, err := parseSize(o.embedLimit)
	if err != nil {
		return &trace.UsageError{Msg: "--embed-limit: " + err.Error()}
	}
	o.EmbedLimit = limit
	out := o.out
	if out == "" {
		out = filepath.Join(dir, "report.html")
	}
	n, err := writeReport(dir, out, e.version, o.HTMLOptions)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "report written to %s (%s)\n", out, n)
	return nil
}

// writeReport renders a recording into out (mode 0600, replaced whole).
func writeReport(dir, out, version string, o report.HTMLOptions) (summary string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &internalError{msg: fmt.Sprintf("internal error rendering %s: %v", dir, r)}
		}
	}()
	rec, err := report.LoadRecording(dir)
	if err != nil {
		var re *report.RecordingError
		if errors.As(err, &re) {
			return "", fmt.Errorf("cannot read the recording: %v", re)
		}
		return "", err
	}
	o.Generator = "nattrace " + version
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		return "", &trace.UsageError{Msg: fmt.Sprintf("-o %s: %v", out, errors.Unwrap(err))}
	}
	defer os.Remove(tmp.Name()) // after a successful rename: nothing to remove
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", err
	}
	if err := report.RenderHTML(tmp, rec, o); err != nil {
		tmp.Close()
		return "", fmt.Errorf("rendering %s: %v", out, err)
	}
	st, _ := tmp.Stat()
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d packets, %s", len(rec.Packets), report.ByteSize(st.Size())), nil
}
