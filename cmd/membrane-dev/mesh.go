package main

import (
	"github.com/spf13/cobra"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
)

// newDevLinkCommand joins (or separates) the underlays of two local
// clusters, the network part of a cluster mesh.
func newDevLinkCommand(g *globals, unlink bool) *cobra.Command {
	var name, to string
	use, short := "link", "Join the underlays of two local clusters, so that their nodes reach each other (cluster mesh)"
	if unlink {
		use, short = "unlink", "Separate the underlays of two local clusters (safe to repeat)"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if unlink {
				return localcluster.Unlink(name, to)
			}
			return localcluster.Link(name, to)
		},
	}
	cmd.Flags().StringVar(&name, "name", localcluster.DefaultName, "cluster name")
	cmd.Flags().StringVar(&to, "to", "", "the other cluster's name")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}
