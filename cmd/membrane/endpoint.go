package main

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/membrane-mesh/membrane/mesh/agentapi"
	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/policy"
)

func newEndpointCommand(g *globals) *cobra.Command {
	ep := &cobra.Command{Use: "endpoint", Short: "Inspect the endpoints (local pods) each agent enforces policy on"}
	ep.AddCommand(agentListCommand(g, "list", "List each node's endpoints: ID, identity, labels, policy enforcement state", agentapi.PathEndpoints, printEndpoints))
	return ep
}

func printEndpoints(g *globals, lists []agentapi.EndpointList) error {
	w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tENDPOINT\tPOD\tIPV4\tIDENTITY\tINGRESS ENFORCEMENT\tEGRESS ENFORCEMENT\tRULES\tSTATE\tLABELS")
	for _, l := range lists {
		for _, e := range l.Endpoints {
			id := "-"
			if e.ID != 0 {
				id = strconv.Itoa(int(e.ID))
			}
			state := e.State
			if e.Error != "" {
				state += ": " + e.Error
			}
			fmt.Fprintf(w, "%s\t%s\t%s/%s\t%s\t%d\t%s\t%s\t%d\t%s\t%s\n", l.Node, id, e.Namespace, e.Pod, e.IP, e.Identity,
				enabled(e.EnforceIngress), enabled(e.EnforceEgress), e.Rules, state, strings.Join(shownLabels(e.Labels), ","))
		}
	}
	return w.Flush()
}

// shownLabels leaves out the namespace's labels (-o json has them all).
func shownLabels(ls []string) []string {
	var out []string
	for _, l := range ls {
		if !strings.HasPrefix(l, identity.NamespaceLabelsPre) {
			out = append(out, l)
		}
	}
	return out
}

func enabled(b bool) string {
	if b {
		return "Enabled"
	}
	return "Disabled"
}

func newPolicyCommand(g *globals) *cobra.Command {
	pol := &cobra.Command{Use: "policy", Short: "Inspect the policy applied to endpoints"}
	var namespace, output string
	get := &cobra.Command{
		Use:   "get POD",
		Short: "Show the policy rules the pod's node enforces for it, and the policies they come from",
		Long: `Show the policy rules the pod's node enforces for it, and the policies they come from.

Entries whose verdict ends in +auth come from rules with authentication.mode
required: only what the node's proxy delivers from a mutual-TLS tunnel passes
them (without SPIFFE identities in the cluster, nothing: the datapath drops
what they match, drop reason "Authentication required"); entries from "mutual
authentication" send the pod's connections into such tunnels. The parts of policies not
applied as written, such as these rules, are listed after the table ("Not
applied: ..."), after the DNS rules the node's DNS proxy enforces for the pod
and its toFQDNs selectors.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			pod, err := c.CoreV1().Pods(namespace).Get(cmd.Context(), args[0], metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("pod %s/%s: %w", namespace, args[0], err)
			}
			if pod.Spec.NodeName == "" {
				return fmt.Errorf("pod %s/%s: not scheduled to a node yet", namespace, args[0])
			}
			answers, err := fromAgents[agentapi.PolicyEntry](cmd.Context(), c, []string{pod.Spec.NodeName}, agentapi.EndpointPolicyPath(namespace, args[0]))
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(g, answers[0])
			}
			return printPolicy(g, answers[0])
		},
	}
	get.Flags().StringVarP(&namespace, "namespace", "n", "default", "the pod's namespace")
	get.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	pol.AddCommand(get, newPolicyTraceCommand(g))
	return pol
}

func printPolicy(g *globals, p agentapi.PolicyEntry) error {
	e := p.Endpoint
	fmt.Fprintf(g.stdout, "Endpoint %d  %s/%s  %s  identity %d  node %s\n", e.ID, e.Namespace, e.Pod, e.IP, e.Identity, p.Node)
	fmt.Fprintf(g.stdout, "Ingress enforcement: %s   Egress enforcement: %s\n\n", enabled(p.Result.EnforceIngress), enabled(p.Result.EnforceEgress))
	w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "DIRECTION\tREMOTE IDENTITY\tPROTOCOL\tPORT\tVERDICT\tFROM")
	for _, r := range p.Result.Rules {
		port := "any"
		if r.Port != 0 {
			port = strconv.Itoa(int(r.Port))
			if r.EndPort > r.Port {
				port += "-" + strconv.Itoa(int(r.EndPort))
			}
		}
		verdict := r.Verdict.String()
		if r.Verdict == policy.Redirect {
			verdict += ":" + strconv.Itoa(int(r.ProxyPort))
		}
		if r.AuthRequired {
			verdict += "+auth"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Direction, policy.RemoteString(r.RemoteIdentity), r.Proto, port, verdict, strings.Join(r.Origins, "; "))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, d := range p.Result.DNS {
		ids := make([]string, len(d.RemoteIdentities))
		for i, id := range d.RemoteIdentities {
			ids[i] = policy.RemoteString(id)
		}
		names := make([]string, len(d.Names))
		for i, n := range d.Names {
			names[i] = n.String()
		}
		fmt.Fprintf(g.stdout, "DNS rule: %s to %s %s/%d: %s\n", d.Direction, strings.Join(ids, ","), d.Proto, d.Port, strings.Join(names, ", "))
	}
	for _, f := range p.Result.FQDNSelectors {
		fmt.Fprintf(g.stdout, "toFQDNs: %s\n", f)
	}
	for _, pr := range p.Problems {
		fmt.Fprintf(g.stdout, "Not applied: %s\n", pr)
	}
	return nil
}
