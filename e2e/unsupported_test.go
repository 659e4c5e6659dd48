package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/membrane-mesh/membrane/mesh/agentapi"
	"github.com/membrane-mesh/membrane/mesh/flow"
)

// TestPolicyUnsupportedFields: a policy using fields the CRD accepts but
// Membrane does not implement is valid, says Programmed=False (reason
// Unsupported) naming each field, and is enforced as the message says: a
// rule requiring mutual authentication drops its traffic ("Authentication
// required") while the policy's other rule keeps working; `membrane policy
// get` and `kubectl get mnp` show it.
func TestPolicyUnsupportedFields(t *testing.T) {
	k := cluster(t)
	const ns = "unsupported"
	backends, frontends := deployTutorial(t, k, ns)
	other := otherPod(t, k, ns, "other", "other")
	urls := backendURLs(backends)
	fronts := podNames(frontends)

	k.must(`apiVersion: membrane.io/v1alpha1
kind: MembraneNetworkPolicy
metadata: {name: backend, namespace: `+ns+`}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
  - fromEndpoints: [{matchLabels: {app: other}}]
    authentication: {mode: required}
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
`, "apply", "-f", "-")

	waitValid(t, k, ns, "backend", "True", "")
	const authMsg = `spec.ingress[1].authentication: mode "required": mutual authentication is off in this cluster (authentication.mutual.enabled), ` +
		`so traffic matching this rule is dropped (drop reason "Authentication required")`
	waitCondition(t, k, ns, "backend", "Programmed", "False", authMsg)
	if reason := k.must("", "-n", ns, "get", "mnp", "backend", "-o", `jsonpath={.status.conditions[?(@.type=="Programmed")].reason}`); reason != "Unsupported" {
		t.Errorf("Programmed reason = %q, want Unsupported", reason)
	}

	// kubectl shows it at a glance.
	got := k.must("", "-n", ns, "get", "mnp", "backend")
	if lines := strings.Split(strings.TrimSpace(got), "\n"); len(lines) != 2 ||
		!strings.HasPrefix(strings.Join(strings.Fields(lines[0]), " "), "NAME VALID PROGRAMMED") ||
		!strings.HasPrefix(strings.Join(strings.Fields(lines[1]), " "), "backend True False") {
		t.Errorf("kubectl get mnp backend:\n%s", got)
	}

	// The frontend's rule works, same node and across nodes; the rule
	// requiring authentication drops, with its reason.
	expectReach(t, k, ns, fronts, urls, true)
	expectReach(t, k, ns, []string{other.Name}, urls, false)
	line := expectFlow(t, k, []string{"--verdict", "DROPPED", "--from-pod", ns + "/other", "--port", "8080"},
		ns+"/other", ns+"/backend-", "Authentication required DROPPED")
	t.Logf("drop: %s", line)
	// The flow carries the drop reason's code and Hubble name too.
	out := strings.TrimSpace(k.membrane("observe", "--last", "500", "--verdict", "DROPPED", "--from-pod", ns+"/other", "--port", "8080", "-o", "json"))
	var auth int
	for _, l := range strings.Split(out, "\n") {
		var f flow.Flow
		mustJSON(t, l, &f)
		if f.DropReason != nil && f.DropReason.Name == "AUTH_REQUIRED" && f.DropReason.Code == 189 {
			auth++
		}
	}
	if auth == 0 {
		t.Errorf("no flow with drop reason AUTH_REQUIRED (189) in:\n%s", out)
	}

	// policy get shows the entry requiring authentication and why it drops.
	pol := k.membrane("policy", "get", "-n", ns, backends[0].Name)
	t.Logf("policy get:\n%s", pol)
	if !strings.Contains(pol, "allow+auth") || !strings.Contains(pol, "MembraneNetworkPolicy "+ns+"/backend rules[0] ingress[1]: authentication: mutual authentication is off in this cluster (authentication.mutual.enabled)") {
		t.Errorf("policy get does not show the rule requiring authentication:\n%s", pol)
	}
	var entry agentapi.PolicyEntry
	mustJSON(t, k.membrane("policy", "get", "-n", ns, backends[0].Name, "-o", "json"), &entry)
	if len(entry.Problems) != 1 || !strings.Contains(entry.Problems[0], "ingress[1]: authentication") {
		t.Errorf("policy get -o json problems = %q, want the rule requiring authentication", entry.Problems)
	}

	// Without the requirement the rule lets the pod in, and the condition
	// goes away (the policy has no HTTP rules).
	k.must(`apiVersion: membrane.io/v1alpha1
kind: MembraneNetworkPolicy
metadata: {name: backend, namespace: `+ns+`}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
  - fromEndpoints: [{matchLabels: {app: other}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
`, "apply", "-f", "-")
	expectReach(t, k, ns, []string{other.Name}, urls, true)
	eventually(t, policyTimeout, "Programmed condition removed", func() error {
		out, err := k.run(t.Context(), "", "-n", ns, "get", "mnp", "backend", "-o", `jsonpath={.status.conditions[?(@.type=="Programmed")].reason}`)
		if err != nil {
			return err
		}
		if out != "" {
			return fmt.Errorf("Programmed reason %q", out)
		}
		return nil
	})
}
