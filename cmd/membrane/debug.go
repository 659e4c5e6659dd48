package main

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/membrane-mesh/membrane/mesh/agentapi"
)

func newDebugCommand(g *globals) *cobra.Command {
	d := &cobra.Command{Use: "debug", Short: "Collect what it takes to find where a node agent's time and memory go"}
	var node, kind, out string
	var seconds int
	profile := &cobra.Command{
		Use:   "profile",
		Short: "Save a pprof profile of a node's agent (read it with go tool pprof)",
		Long: "Save a pprof profile of a node's agent: a CPU profile over --seconds, or a snapshot of its heap,\n" +
			"allocations or goroutines. The file is pprof's format: go tool pprof -top FILE.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains(agentapi.ProfileKinds(), kind) {
				return fmt.Errorf("--kind %q: want one of %s", kind, strings.Join(agentapi.ProfileKinds(), ", "))
			}
			if seconds < 1 || seconds > agentapi.MaxProfileSeconds {
				return fmt.Errorf("--seconds %d: want 1 to %d", seconds, agentapi.MaxProfileSeconds)
			}
			if out == "" {
				out = node + "." + kind + ".pprof"
			}
			c, _, err := g.clientForNodes(cmd.Context(), node)
			if err != nil {
				return err
			}
			q := url.Values{"kind": {kind}}
			if kind == "cpu" {
				q.Set("seconds", strconv.Itoa(seconds))
				fmt.Fprintf(g.stderr, "Profiling the agent of node %s for %d s...\n", node, seconds)
			}
			body, err := c.agents.Stream(cmd.Context(), node, agentapi.PathDebugProfile, q)
			if err != nil {
				return err
			}
			defer body.Close()
			f, err := os.Create(out)
			if err != nil {
				return fmt.Errorf("-o: %w", err)
			}
			n, err := io.Copy(f, body)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("write %s: %w", out, err)
			}
			_, err = fmt.Fprintf(g.stdout, "Node %s: %s profile saved to %s (%d bytes); read it with: go tool pprof -top %s\n", node, kind, out, n, out)
			return err
		},
	}
	profile.Flags().StringVar(&node, "node", "", "the node whose agent to profile")
	profile.Flags().StringVar(&kind, "kind", "cpu", "the profile: "+strings.Join(agentapi.ProfileKinds(), ", "))
	profile.Flags().IntVar(&seconds, "seconds", agentapi.DefaultProfileSeconds, fmt.Sprintf("how long a CPU profile runs (1 to %d)", agentapi.MaxProfileSeconds))
	profile.Flags().StringVarP(&out, "output", "o", "", "the file to write (default <node>.<kind>.pprof)")
	_ = profile.MarkFlagRequired("node")
	d.AddCommand(profile, newBundleCommand(g))
	return d
}
