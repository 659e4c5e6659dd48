package main

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
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
		Short: "Say whether a new connection would pass policy, and which rules decide",
		Long: `Say whether a new connection from SOURCE to DESTINATION on PORT would
pass policy: SOURCE's egress policy as its node's agent enforces it, then
DESTINATION's ingress policy as its node's agent does, each decided by the
datapath's precedence (a deny wins, then the most specific entry).
SOURCE and DESTINATION are pods, [NAMESPACE/]NAME (NAMESPACE defaults to
-n), or IPv4 addresses: a pod's address stands for the pod; another
address (outside the cluster, a node's) has the identity the other end's
node gives it (its ipcache: world, a CIDR's, host, remote-node) and no
policy of its own. One of them must be a pod. The protocol is TCP unless
given (8053/UDP). A connection the L7 proxy takes shows the HTTP rules it
then applies per request; one that needs mutual authentication says so.
The answer is the agents' current state: a policy just changed may not
have reached them yet.`,
		Example: `  membrane policy trace -n shop frontend-7d9f backend-5c4b --port 8080
  membrane policy trace -n shop backend-5c4b 198.19.2.11 --port 443
  membrane policy trace 10.244.1.7 shop/backend-5c4b --port 8053/UDP -o json`,
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
			var ends [2]traceEnd
			for i, arg := range args {
				if ends[i], err = resolveTraceEnd(cmd.Context(), c, namespace, arg); err != nil {
					return err
				}
			}
			if ends[0].pod == nil && ends[1].pod == nil {
				return fmt.Errorf("%s and %s are no pods' addresses: one end must be a pod", args[0], args[1])
			}
			for i := range ends {
				if ends[i].pod == nil {
					ends[i].node = ends[1-i].pod.Node
					if ends[i].id, err = addressIdentity(cmd.Context(), c, ends[i].node, ends[i].addr); err != nil {
						return err
					}
				}
			}
			src, dst := ends[0], ends[1]
			t := policy.TraceOf(src.decide(policy.Egress, dst.id, proto, dport), dst.decide(policy.Ingress, src.id, proto, dport))
			if output == "json" {
				return writeJSON(g, t)
			}
			fmt.Fprintf(g.stdout, "%s -> %s %s/%d: %s\n", src, dst, proto, dport, verdictWord(t))
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

// traceEnd is one end of a traced connection: a pod, with the policy its
// node enforces, or an address that is no pod's, with the identity the
// other end's node gives it.
type traceEnd struct {
	pod  *agentapi.PolicyEntry // nil: an address
	addr netip.Addr
	node string // the pod's; for an address, the node whose ipcache named it
	id   identity.ID
}

func (e traceEnd) String() string {
	if e.pod != nil {
		return fmt.Sprintf("%s/%s (identity %d, node %s)", e.pod.Endpoint.Namespace, e.pod.Endpoint.Pod, e.id, e.node)
	}
	return fmt.Sprintf("%s (%s in the ipcache of %s)", e.addr, policy.RemoteString(e.id), e.node)
}

// decide is the end's decision on a new flow in direction dir with the
// peer of identity remote.
func (e traceEnd) decide(dir policy.Direction, remote identity.ID, proto model.Protocol, port uint16) policy.Decision {
	if e.pod == nil {
		return policy.NotEndpoint(dir, remote, proto, port)
	}
	d := e.pod.Result.Lookup(dir, remote, proto, port)
	d.Endpoint = e.id
	return d
}

// resolveTraceEnd reads a traced connection's end: a pod ([ns/]name, ns
// by default), or an IPv4 address: a running pod's (not of the host
// network) stands for the pod.
func resolveTraceEnd(ctx context.Context, c *clusterClient, ns, arg string) (traceEnd, error) {
	addr, err := netip.ParseAddr(arg)
	if err != nil {
		p, err := podPolicy(ctx, c, ns, arg)
		if err != nil {
			return traceEnd{}, err
		}
		return traceEnd{pod: &p, node: p.Node, id: identity.ID(p.Endpoint.Identity)}, nil
	}
	if !addr.Is4() {
		return traceEnd{}, fmt.Errorf("%s: only IPv4 addresses are traced", arg)
	}
	pods, err := c.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "status.podIP=" + addr.String()})
	if err != nil {
		return traceEnd{}, fmt.Errorf("find the pod of %s: %w", addr, err)
	}
	for _, p := range pods.Items {
		if !p.Spec.HostNetwork && p.Status.Phase == corev1.PodRunning {
			return resolveTraceEnd(ctx, c, ns, p.Namespace+"/"+p.Name)
		}
	}
	return traceEnd{addr: addr}, nil
}

// addressIdentity is the identity node's datapath gives addr: its ipcache
// entry of the longest prefix holding it, world without one.
func addressIdentity(ctx context.Context, c *clusterClient, node string, addr netip.Addr) (identity.ID, error) {
	answers, err := fromAgents[agentapi.IPCacheLookup](ctx, c, []string{node}, agentapi.IPCachePath(addr))
	if err != nil {
		return 0, err
	}
	return identity.ID(answers[0].Identity), nil
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
