package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"

	"github.com/spf13/cobra"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/membrane-mesh/membrane/mesh/agentclient"
)

// clusterClient is the API server's client and the agents' (reached
// through it, see package agentclient).
type clusterClient struct {
	kubernetes.Interface
	agents *agentclient.Client
	config *rest.Config
}

// client resolves the cluster like kubectl: --kubeconfig, then KUBECONFIG,
// then ~/.kube/config; --context picks a context.
func (g *globals) client() (*clusterClient, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if g.kubeconfig != "" {
		rules.ExplicitPath = g.kubeconfig
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: g.context}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("find the cluster (--kubeconfig, KUBECONFIG or ~/.kube/config): %w", err)
	}
	cfg.UserAgent = "membrane-cli/" + version
	// client-go's default (5 a second) would throttle the commands that
	// ask every agent, e.g. debug bundle's parallel requests.
	cfg.QPS, cfg.Burst = 50, 100
	agents, err := agentclient.New(cfg, agentclient.DefaultPort)
	if err != nil {
		return nil, err
	}
	return &clusterClient{Interface: agents.Kubernetes(), agents: agents, config: cfg}, nil
}

// clientForNodes opens the cluster's client and resolves --node (only):
// that node, or all nodes.
func (g *globals) clientForNodes(ctx context.Context, only string) (*clusterClient, []string, error) {
	c, err := g.client()
	if err != nil {
		return nil, nil, err
	}
	nodes, err := nodeNames(ctx, c, only)
	if err != nil {
		return nil, nil, err
	}
	return c, nodes, nil
}

// nodeNames returns the node named by --node, or all nodes.
func nodeNames(ctx context.Context, c kubernetes.Interface, only string) ([]string, error) {
	if only != "" {
		if _, err := c.CoreV1().Nodes().Get(ctx, only, metav1.GetOptions{}); err != nil {
			return nil, fmt.Errorf("--node %s: %w", only, err)
		}
		return []string{only}, nil
	}
	list, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	var names []string
	for _, n := range list.Items {
		names = append(names, n.Name)
	}
	sort.Strings(names)
	return names, nil
}

// fromAgents GETs path from the agent of every node (through the API
// server's node proxy) and decodes each answer. Nodes whose agent
// does not answer are reported in the error; the others are returned.
func fromAgents[T any](ctx context.Context, c *clusterClient, nodes []string, path string) ([]T, error) {
	out := make([]T, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, node := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.agents.JSON(ctx, node, http.MethodGet, path, &out[i])
		}()
	}
	wg.Wait()
	var ok []T
	for i := range nodes {
		if errs[i] == nil {
			ok = append(ok, out[i])
		}
	}
	return ok, errors.Join(errs...)
}

// agentListCommand is a command that reads path from the agent of every node
// (or of --node) and prints the answers with table, or as JSON with -o json.
// Nodes whose agent did not answer make the command fail after printing the
// others.
func agentListCommand[T any](g *globals, use, short, path string, table func(*globals, []T) error) *cobra.Command {
	var node, output string
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, nodes, err := g.clientForNodes(cmd.Context(), node)
			if err != nil {
				return err
			}
			answers, fetchErr := fromAgents[T](cmd.Context(), c, nodes, path)
			print := table
			if output == "json" {
				print = func(g *globals, v []T) error { return writeJSON(g, v) }
			}
			if err := print(g, answers); err != nil {
				return err
			}
			return fetchErr
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "only this node (default: all nodes)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}
