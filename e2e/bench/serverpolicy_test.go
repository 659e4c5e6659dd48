package bench

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	bpfpolicy "github.com/membrane-mesh/membrane/bpf/policy"
	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
)

// serverPolicyName is the 250-rule ingress policy the policy arms apply to
// the backend pods: rule 0 allows the client pod to the HTTP port; rules
// 1..199 allow it to TCP 10000+j, rules 200..249 a /24 of their own to TCP
// 20000+j: every rule is a policy map entry of each backend.
const (
	serverPolicyName  = "bench-250"
	serverPolicyRules = 250
)

func serverPolicy() (*unstructured.Unstructured, error) {
	mnp := &v1alpha1.MembraneNetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "MembraneNetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: serverPolicyName, Namespace: benchNS},
	}
	for j := range serverPolicyRules {
		if j%policyRulesPerSpec == 0 {
			mnp.Specs = append(mnp.Specs, v1alpha1.Rule{
				EndpointSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "backend"}},
				Description:      fmt.Sprintf("benchmark rules %d..%d", j, min(j+policyRulesPerSpec, serverPolicyRules)-1),
			})
		}
		var r v1alpha1.IngressRule
		switch {
		case j == 0:
			r.FromEndpoints = []metav1.LabelSelector{{MatchLabels: map[string]string{"app": "client"}}}
			r.ToPorts = tcpPort(benchPortHTTP)
		case j < policyPeerRules:
			r.FromEndpoints = []metav1.LabelSelector{{MatchLabels: map[string]string{"app": "client"}}}
			r.ToPorts = tcpPort(10000 + j)
		default:
			r.FromCIDR = []v1alpha1.CIDR{v1alpha1.CIDR(fmt.Sprintf("172.16.%d.0/24", j-policyPeerRules))}
			r.ToPorts = tcpPort(20000 + j)
		}
		spec := &mnp.Specs[len(mnp.Specs)-1]
		spec.Ingress = append(spec.Ingress, r)
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(mnp)
	if err != nil {
		return nil, fmt.Errorf("policy to unstructured: %w", err)
	}
	unstructured.RemoveNestedField(obj, "status")
	return &unstructured.Unstructured{Object: obj}, nil
}

// setServerPolicy applies (on) or deletes the server policy on the Membrane
// cluster and waits until every node's datapath enforces ingress on its
// backend pod with all rules written (on), or no longer enforces it.
func (c *cluster) setServerPolicy(ctx context.Context, probe *dpProbe, on bool) error {
	dyn, err := dynamicClient(c.state.Layout().Kubeconfig())
	if err != nil {
		return err
	}
	res := dyn.Resource(v1alpha1.SchemeGroupVersion.WithResource("membranenetworkpolicies")).Namespace(benchNS)
	start := time.Now()
	if on {
		pol, err := serverPolicy()
		if err != nil {
			return err
		}
		if _, err := res.Create(ctx, pol, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create policy %s: %w", serverPolicyName, err)
		}
	} else if err := res.Delete(ctx, serverPolicyName, metav1.DeleteOptions{}); err != nil {
		return fmt.Errorf("delete policy %s: %w", serverPolicyName, err)
	}
	what := fmt.Sprintf("the %d-rule policy enforced on the backends", serverPolicyRules)
	if !on {
		what = "the backends' policy removed"
	}
	err = poll(ctx, 2*time.Minute, what, func() (bool, error) {
		for _, n := range probe.nodes {
			ok, err := backendEnforced(n.maps, c.backIPs, on)
			if err != nil || !ok {
				return false, err
			}
		}
		return true, nil
	})
	if err == nil {
		progress(c.b, "%s in %s", what, time.Since(start).Round(time.Millisecond))
	}
	return err
}

// backendEnforced: the node's backend pod (one of ips) enforces ingress
// with at least serverPolicyRules entries (want), or does not enforce it.
func backendEnforced(m *bpfpolicy.Maps, ips []netip.Addr, want bool) (bool, error) {
	d, err := m.Dump()
	if err != nil {
		return false, err
	}
	for _, e := range d.Endpoints {
		ep := e.Endpoint
		found := false
		for _, ip := range ips {
			found = found || ep.Addr == ip
		}
		if !found {
			continue
		}
		if !want {
			return !ep.EnforceIngress, nil
		}
		if !ep.EnforceIngress {
			return false, nil
		}
		n := 0
		for _, p := range d.Policy {
			if p.Key.EndpointID == ep.ID && p.Key.Direction == bpfpolicy.Ingress {
				n++
			}
		}
		return n >= serverPolicyRules, nil
	}
	return false, nil
}
