package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestConnectivityTest runs `membrane connectivity test` on the shared
// cluster: every check passes (pod-to-world against the local cluster's
// outside world) and the test's namespace is gone afterwards; -o json
// prints one document with every check;
// with a clusterwide policy isolating the test's echo pods, the checks
// that need them fail, the command fails naming them, and the policy
// checks (whose policies allow the client) still pass; --test runs only
// the checks it selects; a namespace the test did not make is refused and
// left alone.
func TestConnectivityTest(t *testing.T) {
	k := cluster(t)
	const ns = "membrane-ct"
	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
		defer cancel()
		var out bytes.Buffer
		cmd := k.membraneCommand(ctx, append([]string{"connectivity", "test", "--namespace", ns}, args...)...)
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		t.Logf("membrane connectivity test %s:\n%s", strings.Join(args, " "), out.String())
		return out.String(), err
	}
	gone := func() {
		t.Helper()
		if out, err := k.run(t.Context(), "", "get", "namespace", ns, "--ignore-not-found", "-o", "name"); err != nil || out != "" {
			t.Errorf("namespace %s is still there after the test: %q, %v", ns, out, err)
		}
	}

	all := []string{"pod-to-pod/same-node", "pod-to-pod/cross-node", "pod-to-service/cluster-ip", "pod-to-service/dns",
		"node-to-pod/same-node", "node-to-pod/cross-node", "node-to-service/cluster-ip", "pod-to-world/http",
		"network-policy/denied", "network-policy/allowed", "flows/policy-drop", "l7-policy/denied-path", "l7-policy/allowed-path", "flows/l7-http"}
	t.Run("every check passes", func(t *testing.T) {
		// The local cluster's outside world serves api.example.com.
		out, err := run("--external-url", "http://api.example.com/")
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
		for _, c := range all {
			if !strings.Contains(out, "✓ "+c+" ") {
				t.Errorf("check %s did not pass", c)
			}
		}
		// Encryption is off on the shared cluster.
		if !strings.Contains(out, "14 passed, 0 failed, 1 skipped") || !strings.Contains(out, "- encryption/pod-to-pod-cross-node ") {
			t.Errorf("no summary of 14 passed checks and the encryption check skipped")
		}
		gone()
	})

	t.Run("json output", func(t *testing.T) {
		out, err := run("--test", "^(pod|node)-to-pod/same-node$", "-o", "json")
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
		var doc struct {
			Namespace string   `json:"namespace"`
			Nodes     []string `json:"nodes"`
			Results   []struct {
				Name, Status, Detail string
			} `json:"results"`
		}
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("the output is not one JSON document: %v", err)
		}
		got := map[string]string{}
		for _, r := range doc.Results {
			got[r.Name] = r.Status
		}
		if doc.Namespace != ns || len(doc.Nodes) != 2 || len(got) != len(all)+1 || got["pod-to-pod/same-node"] != "passed" ||
			got["node-to-pod/same-node"] != "passed" || got["pod-to-world/http"] != "skipped" {
			t.Errorf("namespace %q, nodes %v, statuses %v: want the two selected checks passed and the others skipped", doc.Namespace, doc.Nodes, got)
		}
		gone()
	})

	t.Run("isolated echo pods fail the checks that need them", func(t *testing.T) {
		k.must(`apiVersion: membrane.io/v1alpha1
kind: MembraneClusterwideNetworkPolicy
metadata: {name: e2e-isolate-ct-echo}
spec:
  endpointSelector: {matchLabels: {app: echo, k8s:io.kubernetes.pod.namespace: `+ns+`}}
  ingress: [{}]
`, "apply", "-f", "-")
		t.Cleanup(func() {
			k.must("", "delete", "membraneclusterwidenetworkpolicy", "e2e-isolate-ct-echo", "--ignore-not-found")
		})
		out, err := run("--timeout", "5s")
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("exit: %v, want exit status 1", err)
		}
		// The local node stays allowed (Cilium's default), the other
		// node's namespace is not.
		const failed = "6 of 15 checks failed: pod-to-pod/same-node, pod-to-pod/cross-node, pod-to-service/cluster-ip, pod-to-service/dns, " +
			"node-to-pod/cross-node, node-to-service/cluster-ip"
		if !strings.Contains(out, failed) || !strings.Contains(out, "7 passed, 6 failed, 2 skipped") {
			t.Errorf("want %q and the summary 7 passed, 6 failed, 2 skipped", failed)
		}
		if !strings.Contains(out, "✗ pod-to-pod/same-node") || !strings.Contains(out, "timed out (exit 28)") {
			t.Errorf("the failed check does not say what curl saw")
		}
		gone()
	})

	t.Run("only the checks --test selects run", func(t *testing.T) {
		out, err := run("--test", "^pod-to-pod/")
		if err != nil || !strings.Contains(out, "2 passed, 0 failed, 13 skipped") || !strings.Contains(out, "- network-policy/denied ") {
			t.Errorf("exit %v: want the two pod-to-pod checks passed and the others skipped", err)
		}
		gone()
	})

	t.Run("a namespace of another owner is refused", func(t *testing.T) {
		k.must("", "create", "namespace", ns)
		t.Cleanup(func() { k.must("", "delete", "namespace", ns, "--ignore-not-found", "--wait=false") })
		out, err := run()
		if err == nil || !strings.Contains(out, "namespace "+ns+" exists and is not the connectivity test's") {
			t.Fatalf("exit %v: want the refusal naming the namespace", err)
		}
		if out, err := k.run(t.Context(), "", "get", "namespace", ns, "-o", "name"); err != nil || strings.TrimSpace(out) != "namespace/"+ns {
			t.Errorf("the foreign namespace: %q, %v", out, err)
		}
	})
}
