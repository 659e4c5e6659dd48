package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
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
	var only, output string
	test := &cobra.Command{
		Use:   "test",
		Short: "Run test pods and check pod to pod, node to pod, Services, DNS, the world, NetworkPolicy, L7 policy and encryption",
		Long: `Run echo servers and curl clients in a namespace of the test's own
(--namespace, labelled app.kubernetes.io/managed-by=membrane-connectivity-test;
a namespace without that label is never touched) on the first two nodes
whose agent is ready, and check from inside the clients:

  pod-to-pod/same-node        a client reaches an echo pod of its node
  pod-to-pod/cross-node       ... and one of the other node
  encryption/pod-to-pod-cross-node
                              with WireGuard on, 5 requests of 16 KiB each way
                              to the other node's echo pod show (at least) in
                              the client node's tunnel counters of that node
  pod-to-service/cluster-ip   the echo Service's ClusterIP, both echo pods answering
  pod-to-service/dns          the Service by its name (cluster DNS)
  node-to-pod/same-node       a client in the first node's network namespace
  node-to-pod/cross-node      (hostNetwork; --host-client=false leaves it out)
  node-to-service/cluster-ip  reaches both echo pods and the ClusterIP
  pod-to-world/http           a client gets an HTTP answer from --external-url
                              (any status; skipped without it)
  network-policy/denied       with a NetworkPolicy admitting role=client only,
  network-policy/allowed      another pod gets no answer and the client does
  flows/policy-drop           the drop shows in the flows of echo-a's node (Policy denied)
  l7-policy/denied-path       with a MembraneNetworkPolicy allowing GET /public/.*,
  l7-policy/allowed-path      /private answers 403 and /public/hello 200
  flows/l7-http               the HTTP response GET /private 403 shows in the flows

Each check retries until its condition holds or --timeout passes (a
policy just written takes a moment to reach the datapath). The L7 checks
are skipped when the agents run no L7 proxy, the encryption check when
the nodes do not encrypt, the cross-node checks on a one-node cluster. The namespace is removed at the end (--keep leaves it).
The command fails when a check failed, naming the failed checks. --test
runs the checks whose names match a regular expression (the pods are made
all the same). -o json prints, at the end, the namespace, the nodes and
every check's name, status (passed, failed, skipped), detail and duration.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if errs := validation.IsDNS1123Label(o.Namespace); len(errs) > 0 {
				return fmt.Errorf("--namespace %q: %s", o.Namespace, strings.Join(errs, "; "))
			}
			if o.Timeout < time.Second {
				return fmt.Errorf("--timeout %s: must be at least 1s", o.Timeout)
			}
			if output != "text" && output != "json" {
				return fmt.Errorf("--output %q: must be text or json", output)
			}
			if o.ExternalURL != "" {
				if u, err := url.Parse(o.ExternalURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					return fmt.Errorf("--external-url %q: must be an http or https URL", o.ExternalURL)
				}
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
			used := nodes[:min(2, len(nodes))]
			if o.Encryption, err = encrypting(ctx, c, used); err != nil {
				return err
			}
			kube.TunnelSource = func(ctx context.Context, node, peer string) (connectivity.Transfer, error) {
				return tunnelTransfer(ctx, c, node, peer)
			}
			progress := g.stdout
			if output == "json" {
				progress = io.Discard
			}
			fmt.Fprintf(progress, "Testing in namespace %s on nodes %s\n", o.Namespace, strings.Join(used, ", "))
			results, err := connectivity.Run(ctx, g.logger(), kube, o, nodes, progress)
			if err != nil {
				return err
			}
			line, failed := connectivity.Summary(results)
			if output == "json" {
				err = writeJSON(g, struct {
					Namespace string                `json:"namespace"`
					Nodes     []string              `json:"nodes"`
					Results   []connectivity.Result `json:"results"`
				}{o.Namespace, used, results})
			} else {
				fmt.Fprintln(g.stdout, line)
			}
			return errors.Join(err, failed)
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
	f.BoolVar(&o.HostClient, "host-client", true, "run a client in the first node's network namespace (hostNetwork) for the node-to-* checks")
	f.StringVar(&o.ExternalURL, "external-url", "", "an http(s) URL outside the cluster for the pod-to-world check (skipped when empty)")
	f.StringVarP(&output, "output", "o", "text", "output format: text (each check as it ends) or json (all at the end)")
	cmd.AddCommand(test)
	return cmd
}

// encrypting reports whether every one of nodes encrypts its traffic to
// the others with WireGuard (its agent says so).
func encrypting(ctx context.Context, c *clusterClient, nodes []string) (bool, error) {
	list, err := fromAgents[agentapi.EncryptionStatus](ctx, c, nodes, agentapi.PathEncryption)
	if err != nil {
		return false, fmt.Errorf("read the nodes' encryption status: %w", err)
	}
	for _, s := range list {
		if s.WireGuard == nil {
			return false, nil
		}
	}
	return len(list) > 0, nil
}

// tunnelTransfer is what node's WireGuard device has sent to peer's and
// received from it (its agent's encryption status).
func tunnelTransfer(ctx context.Context, c *clusterClient, node, peer string) (connectivity.Transfer, error) {
	list, err := fromAgents[agentapi.EncryptionStatus](ctx, c, []string{node}, agentapi.PathEncryption)
	if err != nil {
		return connectivity.Transfer{}, err
	}
	if wg := list[0].WireGuard; wg != nil {
		for _, p := range wg.Peers {
			if p.Node == peer {
				return connectivity.Transfer{Sent: p.TransmitBytes, Received: p.ReceiveBytes}, nil
			}
		}
	}
	return connectivity.Transfer{}, fmt.Errorf("node %s has no WireGuard peer %s", node, peer)
}
