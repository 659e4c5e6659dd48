package main

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/membrane-mesh/membrane/mesh/agentapi"
	"github.com/membrane-mesh/membrane/mesh/connectivity"
	"github.com/membrane-mesh/membrane/mesh/flow"
)

func newConnectivityCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "connectivity",
		Short: "Check the cluster's pod networking end to end",
	}
	o := connectivity.Options{}
	var only string
	test := &cobra.Command{
		Use:   "test",
		Short: "Run test pods and check pod to pod, Services, DNS, NetworkPolicy and L7 policy",
		Long: `Run echo servers and curl clients in a namespace of the test's own
(--namespace, labelled app.kubernetes.io/managed-by=membrane-connectivity-test;
a namespace without that label is never touched) on the first two nodes
whose agent is ready, and check from inside the clients:

  pod-to-pod/same-node        a client reaches an echo pod of its node
  pod-to-pod/cross-node       ... and one of the other node
  pod-to-service/cluster-ip   the echo Service's ClusterIP, both echo pods answering
  pod-to-service/dns          the Service by its name (cluster DNS)
  network-policy/denied       with a NetworkPolicy admitting role=client only,
  network-policy/allowed      another pod gets no answer and the client does
  flows/policy-drop           the drop shows in the flows of echo-a's node (Policy denied)
  l7-policy/denied-path       with a MembraneNetworkPolicy allowing GET /public/.*,
  l7-policy/allowed-path      /private answers 403 and /public/hello 200
  flows/l7-http               the HTTP response GET /private 403 shows in the flows

Each check retries until its condition holds or --timeout passes (a
policy just written takes a moment to reach the datapath). The L7 checks
are skipped when the agents run no L7 proxy, the cross-node check on a
one-node cluster. The namespace is removed at the end (--keep leaves it).
The command fails when a check failed, naming the failed checks. --test
runs the checks whose names match a regular expression (the pods are made
all the same).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if errs := validation.IsDNS1123Label(o.Namespace); len(errs) > 0 {
				return fmt.Errorf("--namespace %q: %s", o.Namespace, strings.Join(errs, "; "))
			}
			if o.Timeout < time.Second {
				return fmt.Errorf("--timeout %s: must be at least 1s", o.Timeout)
			}
			if only != "" {
				re, err := regexp.Compile(only)
				if err != nil {
					return fmt.Errorf("--test %q: %w", only, err)
				}
				o.Only = re
			}
			ctx := cmd.Context()
			c, all, err := g.clientForNodes(ctx, "")
			if err != nil {
				return err
			}
			statuses, err := fromAgents[agentapi.NodeStatus](ctx, c, all, agentapi.PathStatus)
			if err != nil {
				g.logger().Warn("some agents did not answer: their nodes are not used", "error", err)
			}
			var nodes []string
			o.L7 = len(statuses) > 0
			for _, s := range statuses {
				if s.Ready {
					nodes = append(nodes, s.Node)
				}
				o.L7 = o.L7 && s.Proxy != nil
			}
			if len(nodes) == 0 {
				return errors.New("no node has a ready agent (see membrane status)")
			}
			slices.Sort(nodes)
			kube, err := connectivity.NewKube(c.config, o.Namespace)
			if err != nil {
				return err
			}
			kube.FlowSource = func(ctx context.Context, node string, req flow.Request) ([]flow.Flow, error) {
				var out []flow.Flow
				_, err := streamFlows(ctx, c, node, req, func(f flow.Flow) error { out = append(out, f); return nil }, nil)
				return out, err
			}
			o.Flows = true
			fmt.Fprintf(g.stdout, "Testing in namespace %s on nodes %s\n", o.Namespace, strings.Join(nodes[:min(2, len(nodes))], ", "))
			results, err := connectivity.Run(ctx, g.logger(), kube, o, nodes, g.stdout)
			if err != nil {
				return err
			}
			line, err := connectivity.Summary(results)
			fmt.Fprintln(g.stdout, line)
			return err
		},
	}
	f := test.Flags()
	f.StringVar(&o.Namespace, "namespace", "membrane-test", "namespace of the test's pods, made and removed by the test")
	f.StringVar(&o.ClientImage, "client-image", "curlimages/curl:8.5.0", "image of the client pods (needs curl and sleep)")
	f.StringVar(&o.EchoImage, "echo-image", "gcr.io/k8s-staging-gateway-api/echo-basic:v20240412-v1.0.0-394-g40c666fd",
		"image of the echo pods (the Gateway API conformance suite's echo-basic: port 3000, answers with its pod's name)")
	f.DurationVar(&o.Timeout, "timeout", time.Minute, "bound of the wait for the pods and of each check")
	f.BoolVar(&o.Keep, "keep", false, "leave the namespace and its pods")
	f.StringVar(&only, "test", "", "run only the checks whose names match this regular expression (e.g. 'policy'); the others are skipped")
	cmd.AddCommand(test)
	return cmd
}
