package v1alpha1_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
	"github.com/membrane-mesh/membrane/mesh/policy"
)

func TestPolicyRefIsPolicyString(t *testing.T) {
	for _, p := range []policy.Policy{
		{Kind: "MembraneNetworkPolicy", Namespace: "payments", Name: "payment-l7"},
		{Kind: "MembraneClusterwideNetworkPolicy", Name: "global-l7"},
		{Namespace: "ns", Name: "no-kind"},
		{Name: "bare"},
	} {
		if got, want := v1alpha1.PolicyRef(p.Kind, p.Namespace, p.Name), p.String(); got != want {
			t.Errorf("PolicyRef(%q, %q, %q) = %q, want %q", p.Kind, p.Namespace, p.Name, got, want)
		}
	}
}

func TestProxyRejectionJSON(t *testing.T) {
	const in = `{"version":"7","error":"Proto constraint validation failed","policies":["MembraneNetworkPolicy payments/payment-l7","MembraneClusterwideNetworkPolicy global-l7"],"at":"2025-01-02T03:04:05Z"}`
	var got v1alpha1.ProxyRejection
	if err := json.Unmarshal([]byte(in), &got); err != nil {
		t.Fatal(err)
	}
	want := v1alpha1.ProxyRejection{
		Version: "7",
		Error:   "Proto constraint validation failed",
		Policies: []string{
			v1alpha1.PolicyRef("MembraneNetworkPolicy", "payments", "payment-l7"),
			v1alpha1.PolicyRef("MembraneClusterwideNetworkPolicy", "", "global-l7"),
		},
		At: metav1.NewTime(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decoded (-want +got):\n%s", diff)
	}
	out, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != in {
		t.Errorf("encoded %s, want %s", out, in)
	}
}
