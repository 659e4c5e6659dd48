package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/membrane-mesh/membrane/mesh/agentapi"
	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/model"
	"github.com/membrane-mesh/membrane/mesh/policy"
)

func newPolicyTraceCommand(g *globals) *cobra.Command {
	var namespace, port, output string
	cmd := &cobra.Command{
		Use:   "trace SOURCE DESTINATION --port PORT[/PROTOCOL]",
		Short: "Say whether a new connection from one pod to another would pass policy, and which rules decide",
		Long: `Say whether a new connection from pod SOURCE to pod DESTINATION on PORT
would pass policy: SOURCE's egress policy as its node's agent enforces it,
then DESTINATION's ingress policy as its node's agent does, each decided
by the datapath's precedence (a deny wins, then the most specific entry).
Pods are [NAMESPACE/]NAME (NAMESPACE defaults to -n). The protocol is TCP
unless given (8053/UDP). A connection the L7 proxy takes shows the HTTP
rules it then applies per request; one that needs mutual authentication
says so. The answer is the agents' current state: a policy just changed
may not have reached them yet.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			proto, dport, err := parsePortProto(port)
			if err != nil {
				return fmt.Errorf("--port %q: %w", port, err)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			var ends [2]agentapi.PolicyEntry
			for i, arg := range args {
				if ends[i], err = podPolicy(cmd.Context(), c, namespace, arg); err != nil {
					return err
				}
			}
			src, dst := ends[0], ends[1]
			t := policy.TraceResolved(src.Result, identity.ID(src.Endpoint.Identity), dst.Result, identity.ID(dst.Endpoint.Identity), proto, dport)
			if output == "json" {
				return writeJSON(g, t)
			}
			fmt.Fprintf(g.stdout, "%s/%s (identity %d, node %s) -> %s/%s (identity %d, node %s) %s/%d: %s\n",
				src.Endpoint.Namespace, src.Endpoint.Pod, src.Endpoint.Identity, src.Node,
				dst.Endpoint.Namespace, dst.Endpoint.Pod, dst.Endpoint.Identity, dst.Node, proto, dport, verdictWord(t))
			for _, d := range []policy.Decision{t.Egress, t.Ingress} {
				fmt.Fprintf(g.stdout, "  %s\n", d)
				for _, l := range d.L7 {
					for _, h := range l.HTTP {
						fmt.Fprintf(g.stdout, "    the proxy allows %s (%s)\n", httpRule(h), strings.Join(l.Origins, "; "))
					}
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "namespace of the pods given without one")
	cmd.Flags().StringVar(&port, "port", "", "destination port, PORT or PORT/PROTOCOL (TCP, UDP or SCTP; default TCP)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	_ = cmd.MarkFlagRequired("port")
	return cmd
}

// podPolicy is the policy the node of pod ([namespace/]name, namespace ns
// by default) enforces for it.
func podPolicy(ctx context.Context, c *clusterClient, ns, pod string) (agentapi.PolicyEntry, error) {
	if n, name, ok := strings.Cut(pod, "/"); ok {
		ns, pod = n, name
	}
	p, err := c.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return agentapi.PolicyEntry{}, fmt.Errorf("pod %s/%s: %w", ns, pod, err)
	}
	if p.Spec.NodeName == "" {
		return agentapi.PolicyEntry{}, fmt.Errorf("pod %s/%s: not scheduled to a node yet", ns, pod)
	}
	if p.Spec.HostNetwork {
		return agentapi.PolicyEntry{}, fmt.Errorf("pod %s/%s: runs in its node's network namespace, with the node's (host) policy", ns, pod)
	}
	answers, err := fromAgents[agentapi.PolicyEntry](ctx, c, []string{p.Spec.NodeName}, agentapi.EndpointPolicyPath(ns, pod))
	if err != nil {
		return agentapi.PolicyEntry{}, err
	}
	return answers[0], nil
}

// parsePortProto reads PORT or PORT/PROTOCOL (TCP by default).
func parsePortProto(s string) (model.Protocol, uint16, error) {
	portStr, protoStr, _ := strings.Cut(s, "/")
	n, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || n == 0 {
		return 0, 0, fmt.Errorf("port must be 1 to 65535")
	}
	proto, err := model.ParseProtocol(strings.ToUpper(protoStr))
	if err != nil {
		return 0, 0, err
	}
	return proto, uint16(n), nil
}

// verdictWord is the trace's outcome in a word or three.
func verdictWord(t policy.TraceResult) string {
	switch {
	case !t.Allowed:
		return "DENIED"
	case t.Egress.AuthRequired || t.Ingress.AuthRequired:
		return "ALLOWED once the peers are authenticated"
	case t.Egress.Verdict == policy.Redirect || t.Ingress.Verdict == policy.Redirect:
		return "ALLOWED to the L7 proxy, whose HTTP rules decide each request"
	}
	return "ALLOWED"
}

// httpRule is one HTTP rule of the proxy, as policies write it.
func httpRule(h policy.HTTPRule) string {
	var parts []string
	for _, p := range []struct{ name, v string }{{"method", h.Method}, {"path", h.Path}, {"host", h.Host}} {
		if p.v != "" {
			parts = append(parts, p.name+" "+p.v)
		}
	}
	for _, hm := range h.Headers {
		parts = append(parts, "header "+strings.TrimSuffix(hm.Name+": "+hm.Value, ": "))
	}
	if len(parts) == 0 {
		return "every request"
	}
	return strings.Join(parts, ", ")
}
