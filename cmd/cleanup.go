package cmd

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/nattrace/nattrace/trace"
	"github.com/nattrace/nattrace/trace/state"
)

func newCleanupCmd(e *env) *cobra.Command {
	dir := state.DefaultDir
	c := &cobra.Command{
		Use:   "cleanup",
		Short: "Remove trace rules and settings left by nattrace sessions that died",
		Long: `Remove what nattrace sessions that no longer run left behind (after a
SIGKILL or a crash): their nft tables, iptables-legacy TRACE rules and nf_log
bindings, in every namespace that still exists. Running sessions are not touched.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := trace.CheckPrivileges(); err != nil {
				return err
			}
			rep := trace.CleanupStale(dir)
			for _, r := range rep.Removed {
				fmt.Fprintln(e.stdout, r)
			}
			for _, s := range rep.Live {
				fmt.Fprintf(e.stdout, "session %s (pid %d) is running: left alone\n", s.ID, s.PID)
			}
			if len(rep.Removed) == 0 && rep.Err() == nil {
				fmt.Fprintln(e.stdout, "nothing to clean up")
			}
			return rep.Err()
		},
	}
	c.Flags().StringVar(&dir, "state-dir", dir, "where session state files live")
	c.Flags().MarkHidden("state-dir")
	return c
}
