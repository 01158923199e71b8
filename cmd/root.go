// Package cmd holds nattrace's commands, one per file. Flags are bound to
// option structs owned by the domain packages.
package cmd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nattrace/nattrace/trace"
)

// Exit codes.
const (
	ExitOK       = 0
	ExitFailure  = 1
	ExitUsage    = 2
	ExitInternal = 3
)

// env is what commands need from the process.
type env struct {
	version string
	stdout  io.Writer
	stderr  io.Writer
}

func newRoot(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "nattrace",
		Short: "Where did my packet go? Trace packets through netfilter, NAT and routing",
		Long: `nattrace temporarily installs trace rules, follows matching packets through
every table, chain and rule they hit (nftables, iptables-nft, iptables-legacy),
and prints, per packet, the rules with their text, the NAT and the fate:
forwarded, delivered, sent or dropped - and by what. It removes everything it
added when it exits.`,
		Version:       e.version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &trace.UsageError{Msg: err.Error() + " (see '" + c.CommandPath() + " --help')"}
	})
	root.AddCommand(newFlowCmd(e), newCaptureCmd(e), newDoctorCmd(e), newCleanupCmd(e), newReportCmd(e), newDemoCmd(e), newVersionCmd(e))
	return root
}

// Execute runs nattrace with args and returns the exit code.
func Execute(version string, args []string) int {
	e := &env{version: version, stdout: os.Stdout, stderr: os.Stderr}
	root := newRoot(e)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return ExitOK
	}
	msg := strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
	fmt.Fprintf(e.stderr, "nattrace: %s\n", msg)
	var ie *internalError
	switch {
	case trace.IsUsage(err) || isCobraUsage(err):
		return ExitUsage
	case errors.As(err, &ie):
		return ExitInternal
	}
	return ExitFailure
}

func isCobraUsage(err error) bool {
	s := err.Error()
	return strings.HasPrefix(s, "unknown command") || strings.HasPrefix(s, "unknown flag") ||
		strings.HasPrefix(s, "accepts ") || strings.Contains(s, "requires at least")
}

// internalError is a recovered panic.
type internalError struct{ msg string }

func (e *internalError) Error() string { return e.msg }
