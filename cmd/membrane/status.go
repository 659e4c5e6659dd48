package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/membrane-mesh/membrane/mesh/agentapi"
)

func newStatusCommand(g *globals) *cobra.Command {
	cmd := agentListCommand(g, "status", "Show each node's agent: sync, endpoints, Services, L7 proxy (xDS) and encryption", agentapi.PathStatus,
		func(g *globals, list []agentapi.NodeStatus) error {
			if err := printStatus(g, list, time.Now()); err != nil {
				return err
			}
			return printClusterGateways(g)
		})
	cmd.Long = `Show each node's agent: whether its initial sync is programmed, its
endpoints by state, its Services, its L7 proxy (is the node's Envoy
connected over xDS, does it run the newest configuration, or did it reject
it, with Envoy's error) and its encryption mode; then each Gateway with
its address, Programmed condition and listeners; then each Ingress with
its address, whether it is programmed (it has its address) and its rules,
followed by the Warning Events on the Ingresses. Below the nodes come their
problems: configurations their Envoy rejected, and CNI configurations the
agent could not write (-o json has each node's CNI configuration).

With --wait it first waits (up to --wait-duration) until every node's
agent answers and is ready, its Envoy (where L7 policy is on) is connected
and runs the newest configuration, and no node has a CNI or WireGuard
problem; it fails naming what is not, after printing the status.`
	var wait bool
	var waitFor time.Duration
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until every agent is ready and its proxy in sync")
	cmd.Flags().DurationVar(&waitFor, "wait-duration", 5*time.Minute, "how long --wait waits")
	show := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if !wait {
			return show(cmd, args)
		}
		node, _ := cmd.Flags().GetString("node")
		waitErr := waitReady(cmd.Context(), g, node, waitFor)
		return errors.Join(show(cmd, args), waitErr)
	}
	return cmd
}

// waitReady polls the agents of every node (or of node) until notReady
// finds nothing, or d has passed.
func waitReady(ctx context.Context, g *globals, node string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var problems []string
	for {
		c, nodes, err := g.clientForNodes(ctx, node)
		if err == nil {
			list, fetchErr := fromAgents[agentapi.NodeStatus](ctx, c, nodes, agentapi.PathStatus)
			problems = notReady(nodes, list, fetchErr)
		} else {
			problems = []string{err.Error()}
		}
		if len(problems) == 0 {
			return nil
		}
		g.logger().Debug("waiting", "not ready", problems)
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s: %s", d, strings.Join(problems, "; "))
		case <-time.After(time.Second):
		}
	}
}

// notReady says what keeps the nodes from ready: an agent that did not
// answer or is syncing, an Envoy not connected or not running the newest
// configuration, a CNI or WireGuard problem.
func notReady(nodes []string, list []agentapi.NodeStatus, fetchErr error) []string {
	var out []string
	answered := map[string]bool{}
	for _, s := range list {
		answered[s.Node] = true
		switch p := s.Proxy; {
		case !s.Ready:
			out = append(out, s.Node+": agent syncing")
		case p != nil && !p.Connected:
			out = append(out, s.Node+": envoy not connected")
		case p != nil && !p.InSync():
			out = append(out, fmt.Sprintf("%s: envoy runs %s, not %s", s.Node, orNone(p.Acked), p.Published))
		}
		if c := s.CNI; c != nil && c.Error != "" {
			out = append(out, cniProblem(s.Node, c))
		}
		if wg := s.WireGuard; wg != nil && wg.Error != "" {
			out = append(out, s.Node+": wireguard: "+wg.Error)
		}
	}
	for _, n := range nodes {
		if !answered[n] {
			msg := n + ": agent did not answer"
			if fetchErr != nil {
				msg += " (" + fetchErr.Error() + ")"
			}
			out = append(out, msg)
			fetchErr = nil // once is enough
		}
	}
	return out
}

func printStatus(g *globals, list []agentapi.NodeStatus, now time.Time) error {
	w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tAGENT\tENDPOINTS\tSERVICES\tL7 PROXY\tENCRYPTION")
	var problems []string
	for _, s := range list {
		agentState := "syncing"
		if s.Ready {
			agentState = "ready"
		}
		var eps []string
		for _, state := range slices.Sorted(maps.Keys(s.Endpoints)) {
			eps = append(eps, fmt.Sprintf("%d %s", s.Endpoints[state], state))
		}
		if len(eps) == 0 {
			eps = []string{"0"}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\n", s.Node, agentState, strings.Join(eps, ", "), s.Services, proxyState(s.Proxy, now), encryptionState(s))
		if p := s.Proxy; p != nil && p.Rejected != nil {
			problems = append(problems, fmt.Sprintf("%s: Envoy rejected version %s %s ago: %s", s.Node, p.Rejected.Version, now.Sub(p.Rejected.At).Round(time.Second), strings.TrimSpace(p.Rejected.Error)))
		}
		if c := s.CNI; c != nil && c.Error != "" {
			problems = append(problems, cniProblem(s.Node, c))
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, r := range problems {
		fmt.Fprintln(g.stdout, r)
	}
	return nil
}

// proxyState is one line on the node's Envoy.
func proxyState(p *agentapi.ProxyStatus, now time.Time) string {
	switch {
	case p == nil:
		return "disabled"
	case !p.Connected:
		return "envoy not connected"
	case p.Rejected != nil:
		return fmt.Sprintf("rejected %s, running %s", p.Rejected.Version, orNone(p.Acked))
	case p.InSync():
		return fmt.Sprintf("in sync (%s, %s ago)", p.Acked, now.Sub(p.AckedAt).Round(time.Second))
	}
	return fmt.Sprintf("applying %s, running %s", p.Published, orNone(p.Acked))
}

// encryptionState is one line on the node's encryption.
func encryptionState(s agentapi.NodeStatus) string {
	wg := s.WireGuard
	switch {
	case wg == nil:
		return s.Encryption
	case wg.Error != "":
		return s.Encryption + " (error: " + wg.Error + ")"
	}
	return fmt.Sprintf("%s %s, key %s, %d peers", s.Encryption, wg.Backend, wg.PublicKeyFingerprint, wg.Peers)
}

// cniProblem is one line on a node whose CNI config is not in place or not
// up to date.
func cniProblem(node string, c *agentapi.CNIStatus) string {
	if c.PodCIDR == "" {
		return fmt.Sprintf("%s: CNI config %s not written: %s", node, c.Config, c.Error)
	}
	return fmt.Sprintf("%s: CNI config %s (podCIDR %s): %s", node, c.Config, c.PodCIDR, c.Error)
}

func orNone(v string) string {
	if v == "" {
		return "none"
	}
	return v
}

// printClusterGateways prints the Gateways and the Ingresses after the
// nodes' table.
func printClusterGateways(g *globals) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A user who may read the agents but not the Gateways or the
	// Ingresses still gets the nodes, and a note saying what is left out.
	gws, err := listGateways(ctx, c)
	switch {
	case apierrors.IsForbidden(err):
		fmt.Fprintf(g.stderr, "Gateways not shown: %v\n", err)
	case err != nil:
		return err
	default:
		if err := printGateways(g.stdout, gws); err != nil {
			return err
		}
	}
	ings, events, err := listIngresses(ctx, c)
	switch {
	case apierrors.IsForbidden(err):
		fmt.Fprintf(g.stderr, "Ingresses not shown: %v\n", err)
		return nil
	case err != nil:
		return err
	}
	return printIngresses(g.stdout, ings, events, time.Now())
}
