package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/membrane-mesh/membrane/mesh/flow"
)

// TestRevokedConnection: taking a client's access away at L3/L4 also ends
// the connections it opened before (Cilium's semantics): their next packet
// meets the new policy and is dropped, whether the client is on the
// server's node (host routing) or another one, and `membrane observe` shows
// the drop of an established flow. A client the new policy still allows
// keeps its open connection, and access given back lets a new one in.
func TestRevokedConnection(t *testing.T) {
	k := cluster(t)
	const ns = "revoke"
	nodes := shared.cluster.Nodes
	k.must(fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n", ns)+
		echoPod(ns, "server", nodes[1].Name, "app: server")+
		sleepPod(ns, "remote", nodes[0].Name, "app: client")+sleepPod(ns, "local", nodes[1].Name, "app: client")+
		sleepPod(ns, "keeper", nodes[0].Name, "app: keeper"), "apply", "-f", "-")
	t.Cleanup(func() { k.must("", "delete", "namespace", ns, "--wait=false") })
	k.must("", "-n", ns, "wait", "--for=condition=Ready", "pod/server", "pod/remote", "pod/local", "pod/keeper", "--timeout=90s")
	server := getPod(t, k, ns, "server")
	dest := net.JoinHostPort(server.Status.PodIP, "3000")
	dial := func(p corev1.Pod) (*keptConn, error) {
		return dialKept(filepath.Join(shared.cluster.Layout().RunDir(), "netns", p.Spec.NodeName, string(p.UID)), dest)
	}
	policy := func(apps string) string {
		return `apiVersion: membrane.io/v1alpha1
kind: MembraneNetworkPolicy
metadata: {name: server, namespace: ` + ns + `}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
  - fromEndpoints: [{matchExpressions: [{key: app, operator: In, values: [` + apps + `]}]}]
    toPorts: [{ports: [{port: "3000", protocol: TCP}]}]
`
	}
	ok := func(c *keptConn) error {
		resp, err := c.get("/")
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}

	k.must(policy("client, keeper"), "apply", "-f", "-")
	names := []string{"remote", "local", "keeper"}
	conns := map[string]*keptConn{}
	eventually(t, policyTimeout, "a kept-alive connection from each client", func() error {
		for _, name := range names {
			if conns[name] != nil {
				continue
			}
			c, err := dial(getPod(t, k, ns, name))
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if err := ok(c); err != nil {
				c.c.Close()
				return fmt.Errorf("%s: %w", name, err)
			}
			conns[name] = c
		}
		return nil
	})
	t.Cleanup(func() {
		for _, c := range conns {
			c.c.Close()
		}
	})

	rechecked := func() float64 {
		return metricValue(strings.Join(agentMetric(t, k, server.Spec.NodeName, "membrane_datapath_rechecked_flows"), "\n"),
			"membrane_datapath_rechecked_flows")
	}
	recheckedBefore := rechecked()

	// Only the keeper may come in now.
	k.must(policy("keeper"), "apply", "-f", "-")
	revoked := time.Now()
	eventually(t, policyTimeout, "a new connection from remote dropped", func() error {
		c, err := dial(getPod(t, k, ns, "remote"))
		if err != nil {
			return nil
		}
		defer c.c.Close()
		if err := ok(c); err == nil {
			return fmt.Errorf("a new connection got through")
		}
		return nil
	})
	for _, name := range []string{"remote", "local"} {
		if err := ok(conns[name]); err == nil {
			t.Errorf("the connection %s opened before the revocation still got an answer", name)
		} else {
			t.Logf("the connection %s opened before the revocation: %v (%s after the policy write)", name, err, time.Since(revoked).Round(100*time.Millisecond))
		}
	}
	if err := ok(conns["keeper"]); err != nil {
		t.Errorf("the keeper's connection, still allowed: %v", err)
	}
	// Three open connections on the server's interface, each checked again.
	if n := rechecked() - recheckedBefore; n < 3 {
		t.Errorf("%v flows checked again on %s after the change, want at least 3", n, server.Spec.NodeName)
	}

	// The drops of the open connections, as flows.
	eventually(t, policyTimeout, "dropped established flows from both clients", func() error {
		out := k.membrane("observe", "--last", "500", "-o", "json", "--verdict", "DROPPED", "--to-pod", ns+"/server")
		seen := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var f flow.Flow
			if json.Unmarshal([]byte(l), &f) != nil || f.CTState != "established" || f.DropReason == nil {
				continue
			}
			seen[f.Source.PodName] = f.DropReason.Description
		}
		for _, name := range []string{"remote", "local"} {
			if seen[name] != "Policy denied" {
				return fmt.Errorf("established flows dropped, by source pod: %v; want remote and local, Policy denied", seen)
			}
		}
		return nil
	})

	// Access given back: a new connection gets in.
	k.must(policy("client, keeper"), "apply", "-f", "-")
	eventually(t, policyTimeout, "a new connection from remote after access is given back", func() error {
		c, err := dial(getPod(t, k, ns, "remote"))
		if err != nil {
			return err
		}
		defer c.c.Close()
		return ok(c)
	})
}
