package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
	"github.com/membrane-mesh/membrane/e2e/noderunner"
)

func newDevCommand(g *globals) *cobra.Command {
	dev := &cobra.Command{
		Use:   "membrane-dev",
		Short: "Run a local Kubernetes cluster made of real parts, for development and tests",
	}
	setUpRoot(dev, g)
	dev.AddCommand(newDevUpCommand(g), newDevDownCommand(g), newDevStatusCommand(g),
		newDevKubeconfigCommand(g), newDevListCommand(g), newDevNodeCommand(g), newDevHelmCommand(g),
		newDevWorldHostCommand(g), newDevLinkCommand(g, false), newDevLinkCommand(g, true))
	return dev
}

// defaultToolsDir is where `make tools` caches what the cluster runs.
func defaultToolsDir() string {
	if d := os.Getenv("MEMBRANE_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "/root/.cache/membrane"
	}
	return filepath.Join(home, ".cache", "membrane")
}

// defaultBinDir is the directory of this executable: `make build` puts all
// of Membrane's binaries side by side.
func defaultBinDir() string {
	exe, err := os.Executable()
	if err != nil {
		return "bin"
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	return filepath.Dir(exe)
}

func newDevUpCommand(g *globals) *cobra.Command {
	o := localcluster.Options{}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Create a local cluster: a bare cluster plus the Membrane chart",
		Long: "Create a local cluster: a bare cluster (control plane, nodes, underlay), then\n" +
			"Membrane installed from charts/membrane with the pinned helm and values that fit\n" +
			"the cluster, then cluster DNS. It returns once the nodes are Ready and the chart's\n" +
			"workloads are available. --encryption and --set become chart values.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := localcluster.Up(cmd.Context(), g.logger(), o)
			if err != nil {
				return err
			}
			l := s.Layout()
			fmt.Fprintf(g.stdout, "Cluster %q is up: %d nodes, API server %s\n", s.Name, len(s.Nodes), l.APIServerURL())
			fmt.Fprintf(g.stdout, "Kubeconfig: %s\n", l.Kubeconfig())
			if !s.NoMembrane {
				fmt.Fprintf(g.stdout, "Membrane: helm release membrane in kube-system (chart and values in %s)\n", l.HelmDir())
			}
			fmt.Fprintf(g.stdout, "  export KUBECONFIG=$(membrane dev kubeconfig --name %s)\n", s.Name)
			printWorld(g, l)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Name, "name", localcluster.DefaultName, "cluster name")
	f.IntVar(&o.Nodes, "nodes", localcluster.DefaultNodes, "number of nodes")
	f.StringVar(&o.PodCIDR, "pod-cidr", localcluster.DefaultPodCIDR, "cluster pod CIDR (each node gets a /24 of it)")
	f.StringVar(&o.ServiceCIDR, "service-cidr", localcluster.DefaultServiceCIDR, "service CIDR")
	f.StringVar(&o.ToolsDir, "tools-dir", defaultToolsDir(), "where 'make tools' put Kubernetes, etcd and the pod images")
	f.StringVar(&o.BinDir, "bin-dir", defaultBinDir(), "where Membrane's binaries are")
	f.BoolVar(&o.NoMembrane, "no-membrane", false, "a bare cluster: no Membrane chart (so no Service translation) and no cluster DNS")
	f.StringVar(&o.IdentityProvider, "identity-provider", "", "workload identities (SPIFFE X.509-SVIDs): builtin (the operator's CA) or spire (SPIRE server and agents, built by make tools); default: none")
	f.StringVar(&o.Encryption, "encryption", "", "encrypt pod traffic between nodes: wireguard (default: off; the chart's encryption values)")
	f.IntVar(&o.ClusterID, "cluster-id", 0, "id of the cluster in a cluster mesh, 1-255 (the chart's cluster.id; cluster.name is --name)")
	f.IntVar(&o.UnderlayMTU, "underlay-mtu", 0, "MTU of the nodes' links to the underlay, 1280-9000 (default: 1500), as a cloud network's would be")
	f.StringArrayVar(&o.HelmSet, "set", nil, "a chart value over the local cluster's, KEY=VALUE as helm --set takes it (repeatable)")
	return cmd
}

func newDevDownCommand(g *globals) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Remove a local cluster and everything it created (safe to repeat)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return localcluster.Down(cmd.Context(), g.logger(), name)
		},
	}
	cmd.Flags().StringVar(&name, "name", localcluster.DefaultName, "cluster name")
	return cmd
}

func newDevHelmCommand(g *globals) *cobra.Command {
	var name, toolsDir string
	cmd := &cobra.Command{
		Use:   "helm [--name NAME] -- HELM-ARGS...",
		Short: "Run the pinned helm against a local cluster",
		Long: "Run the pinned helm against a local cluster, e.g.\n" +
			"  membrane dev helm -- list -n kube-system\n" +
			"  membrane dev helm -- upgrade --set encryption.enabled=true\n" +
			"An upgrade takes only --set KEY=VALUE arguments: the release's chart, values files\n" +
			"and the values `up` was given come first.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := localcluster.Helm(cmd.Context(), toolsDir, name, args...)
			fmt.Fprint(g.stdout, out)
			return err
		},
	}
	cmd.Flags().StringVar(&name, "name", localcluster.DefaultName, "cluster name")
	cmd.Flags().StringVar(&toolsDir, "tools-dir", defaultToolsDir(), "where 'make tools' put helm")
	return cmd
}

func newDevKubeconfigCommand(g *globals) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print the path of a local cluster's admin kubeconfig",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			s, err := localcluster.Load(name)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(g.stdout, s.Layout().Kubeconfig())
			return err
		},
	}
	cmd.Flags().StringVar(&name, "name", localcluster.DefaultName, "cluster name")
	return cmd
}

func newDevListCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List local clusters",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			names, err := localcluster.List()
			if err != nil {
				return err
			}
			for _, n := range names {
				fmt.Fprintln(g.stdout, n)
			}
			return nil
		},
	}
}

func newDevStatusCommand(g *globals) *cobra.Command {
	var name, output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a local cluster's components and nodes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("-o %q: must be table or json", output)
			}
			st, err := localcluster.GetStatus(cmd.Context(), name)
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			return printDevStatus(g, st)
		},
	}
	cmd.Flags().StringVar(&name, "name", localcluster.DefaultName, "cluster name")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func printDevStatus(g *globals, st *localcluster.Status) error {
	w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "Cluster:\t%s\n", st.Name)
	fmt.Fprintf(w, "API server:\t%s\n", st.APIServer)
	fmt.Fprintf(w, "Kubeconfig:\t%s\n", st.Kubeconfig)
	fmt.Fprintf(w, "Pod CIDR:\t%s\n", st.PodCIDR)
	fmt.Fprintf(w, "Service CIDR:\t%s\n", st.ServiceCIDR)
	fmt.Fprintf(w, "Underlay:\t%s on bridge %s\n", st.Underlay, st.Bridge)
	fmt.Fprintf(w, "Membrane:\t%s\n\n", st.Membrane)
	fmt.Fprintln(w, "COMPONENT\tPID\tSTATE\tLOG")
	for _, c := range st.Components {
		state := "running"
		if !c.Running {
			state = "exited"
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", c.Name, c.PID, state, c.Log)
	}
	fmt.Fprintln(w, "\nNODE\tREADY\tNODE IP\tUNDERLAY\tNETNS\tPOD CIDR")
	for _, n := range st.Nodes {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s (host side %s)\t%s\t%s\n", n.Name, n.Ready, n.IP, n.Underlay, n.HostLink, n.Netns, n.PodCIDR)
	}
	return w.Flush()
}

// newDevNodeCommand runs a node runner; `dev up` starts one per node inside
// the node's network namespace.
func newDevNodeCommand(g *globals) *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:    "node",
		Short:  "Run the node runner of a local cluster node (started by `dev up`)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := noderunner.LoadConfig(path)
			if err != nil {
				return err
			}
			return noderunner.Run(cmd.Context(), g.logger(), cfg)
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "node runner config file")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}
