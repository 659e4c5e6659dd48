package operator

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
)

// authText is the condition of an egress rule requiring authentication in
// a cluster without SPIFFE identities (the policy status tests').
const authText = `spec.egress[0].authentication: mode "required": mutual authentication is off in this cluster (authentication.mutual.enabled), ` +
	`so traffic matching this rule is dropped (drop reason "Authentication required"), even where another rule allows it`

// withAuth is allowPort with a second ingress rule on another port, and an
// egress rule requiring authentication in mode.
func withAuth(mode v1alpha1.AuthenticationMode) *v1alpha1.Rule {
	r := allowPort("80")
	r.Ingress = append(r.Ingress, allowPort("8080").Ingress[0])
	r.Egress = []v1alpha1.EgressRule{{Authentication: &v1alpha1.Authentication{Mode: mode}}}
	return r
}

// TestIngressAuthenticationSupported: an ingress rule requiring
// authentication is mutual TLS, not a drop: nothing is reported, HTTP rules
// on its ports included (the tunnel applies them).
func TestIngressAuthenticationSupported(t *testing.T) {
	r := allowPort("80")
	r.Ingress[0].Authentication = &v1alpha1.Authentication{Mode: v1alpha1.AuthenticationRequired}
	if got := unsupportedFields(r, nil, true); len(got) != 0 {
		t.Errorf("ingress authentication reported: %q", got)
	}
	r = allowHTTP("80")
	r.Ingress[0].Authentication = &v1alpha1.Authentication{Mode: v1alpha1.AuthenticationRequired}
	if got := unsupportedFields(r, nil, true); len(got) != 0 {
		t.Errorf("ingress authentication with HTTP rules reported: %q", got)
	}
	// Without identities in the cluster it drops.
	if got := unsupportedFields(r, nil, false); len(got) != 1 || !strings.HasPrefix(got[0], `spec.ingress[0].authentication: mode "required": mutual authentication is off in this cluster (authentication.mutual.enabled)`) {
		t.Errorf("ingress authentication without identities: %q", got)
	}
}

func TestProgrammedUnsupportedAuthentication(t *testing.T) {
	r, c := newPolicyStatusTest(t, mnp("web", withAuth(v1alpha1.AuthenticationRequired)))
	got := reconcileMNP(t, r, c, "web")
	if v := validOf(t, got.Status); v.Status != metav1.ConditionTrue {
		t.Errorf("Valid condition = %+v, want True", v)
	}
	cond := programmedOf(got.Status)
	if cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != v1alpha1.ReasonUnsupported || cond.Message != authText {
		t.Fatalf("Programmed condition = %+v, want False/Unsupported %q", cond, authText)
	}
	if cond.ObservedGeneration != 1 {
		t.Errorf("observedGeneration = %d, want 1", cond.ObservedGeneration)
	}

	// Dropping the requirement deletes the condition (the policy has no HTTP
	// rules, so nothing else is said about programming).
	got.Spec.Egress[0].Authentication = &v1alpha1.Authentication{Mode: v1alpha1.AuthenticationDisabled}
	got.Generation = 2
	if err := c.Update(context.Background(), got); err != nil {
		t.Fatal(err)
	}
	if cond := programmedOf(reconcileMNP(t, r, c, "web").Status); cond != nil {
		t.Errorf("Programmed condition after disabling authentication = %+v, want none", cond)
	}
}

func TestProgrammedAuthenticationModes(t *testing.T) {
	for _, mode := range []v1alpha1.AuthenticationMode{v1alpha1.AuthenticationDisabled, v1alpha1.AuthenticationAlwaysFail} {
		r, c := newPolicyStatusTest(t, mnp("web", withAuth(mode)))
		if cond := programmedOf(reconcileMNP(t, r, c, "web").Status); cond != nil {
			t.Errorf("mode %s: Programmed condition = %+v, want none", mode, cond)
		}
	}
}

// An unsupported field turns an L7 policy's Programmed=True into False;
// a node's rejection stays the reason, and the message has both.
func TestProgrammedUnsupportedWithL7(t *testing.T) {
	spec := func() *v1alpha1.Rule {
		r := withAuth(v1alpha1.AuthenticationRequired)
		r.Ingress[1].ToPorts[0].Rules = &v1alpha1.L7Rules{HTTP: []v1alpha1.PortRuleHTTP{{Method: "GET"}}}
		return r
	}
	t.Run("not rejected", func(t *testing.T) {
		r, c := newPolicyStatusTest(t, mnp("web", spec()))
		cond := programmedOf(reconcileMNP(t, r, c, "web").Status)
		if cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != v1alpha1.ReasonUnsupported || cond.Message != authText {
			t.Errorf("Programmed condition = %+v, want False/Unsupported", cond)
		}
	})
	t.Run("rejected", func(t *testing.T) {
		r, c := newPolicyStatusTest(t, mnp("web", spec()), node("n1", rejection(t, "bad regex", webRef)))
		cond := programmedOf(reconcileMNP(t, r, c, "web").Status)
		want := rejectedText("n1", "bad regex") + "; " + authText
		if cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != v1alpha1.ReasonProxyRejected || cond.Message != want {
			t.Errorf("Programmed condition = %+v, want False/ProxyRejected %q", cond, want)
		}
	})
	t.Run("supported again", func(t *testing.T) {
		p := mnp("web", spec())
		p.Spec.Egress[0].Authentication = nil
		p.Status.Conditions = []metav1.Condition{{
			Type: v1alpha1.ConditionProgrammed, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonUnsupported,
			Message: authText, ObservedGeneration: 1, LastTransitionTime: metav1.Unix(1000, 0),
		}}
		r, c := newPolicyStatusTest(t, p)
		cond := programmedOf(reconcileMNP(t, r, c, "web").Status)
		if cond == nil || cond.Status != metav1.ConditionTrue || cond.Reason != v1alpha1.ReasonProgrammed {
			t.Errorf("Programmed condition = %+v, want True/Programmed", cond)
		}
	})
}

func TestProgrammedUnsupportedClusterwideSpecs(t *testing.T) {
	ctx := context.Background()
	egress := v1alpha1.Rule{
		EndpointSelector: &metav1.LabelSelector{},
		Egress: []v1alpha1.EgressRule{
			{EgressCommonRule: v1alpha1.EgressCommonRule{ToEntities: []v1alpha1.Entity{v1alpha1.EntityWorld}}},
			{ToFQDNs: []v1alpha1.FQDNSelector{{MatchName: "example.com"}}, Authentication: &v1alpha1.Authentication{Mode: v1alpha1.AuthenticationRequired}},
		},
	}
	global := &v1alpha1.MembraneClusterwideNetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "global", Generation: 3},
		Specs:      []v1alpha1.Rule{*allowPort("80"), egress},
	}
	r, c := newPolicyStatusTest(t, global)
	key := types.NamespacedName{Name: "global"}
	if _, err := r.clusterwide.Reconcile(ctx, reconcile.Request{NamespacedName: key}); err != nil {
		t.Fatal(err)
	}
	var got v1alpha1.MembraneClusterwideNetworkPolicy
	if err := c.Get(ctx, key, &got); err != nil {
		t.Fatal(err)
	}
	cond := programmedOf(got.Status)
	if cond == nil || cond.Reason != v1alpha1.ReasonUnsupported || cond.ObservedGeneration != 3 {
		t.Fatalf("Programmed condition = %+v, want Unsupported at generation 3", cond)
	}
	if want := "specs[1].egress[1].authentication: "; !strings.Contains(cond.Message, want) {
		t.Errorf("message %q lacks %q", cond.Message, want)
	}
	if strings.Contains(cond.Message, "toFQDNs") {
		t.Errorf("message %q names toFQDNs, which are implemented", cond.Message)
	}
}

func TestUnsupportedFields(t *testing.T) {
	dns := func(sels ...v1alpha1.FQDNSelector) v1alpha1.EgressRule {
		return v1alpha1.EgressRule{ToPorts: []v1alpha1.PortRule{
			{Ports: []v1alpha1.PortProtocol{{Port: "80"}}},
			{Ports: []v1alpha1.PortProtocol{{Port: "53"}}, Rules: &v1alpha1.L7Rules{DNS: sels}},
		}}
	}
	header := func(actions ...v1alpha1.MismatchAction) *v1alpha1.Rule {
		r := allowHTTP("80")
		for _, a := range actions {
			r.Ingress[0].ToPorts[0].Rules.HTTP[0].HeaderMatches = append(r.Ingress[0].ToPorts[0].Rules.HTTP[0].HeaderMatches,
				v1alpha1.HeaderMatch{Name: "X-Id", Value: "1", Mismatch: a})
		}
		return r
	}
	for _, tc := range []struct {
		name  string
		spec  *v1alpha1.Rule
		specs []v1alpha1.Rule
		want  []string
	}{
		{name: "none", spec: allowHTTP("80")},
		{name: "egress authentication to every peer and protocol", spec: &v1alpha1.Rule{Egress: []v1alpha1.EgressRule{{}, {Authentication: &v1alpha1.Authentication{Mode: v1alpha1.AuthenticationRequired}}}},
			want: []string{
				`spec.egress[1].authentication: mode "required" authenticates TCP connections to pods (toEndpoints) only: traffic this rule matches to other peers (toEntities, toCIDR, toCIDRSet, toFQDNs, or every peer without toEndpoints) is dropped (drop reason "Authentication required")`,
				`spec.egress[1].authentication: mode "required" authenticates TCP connections to pods (toEndpoints) only: traffic this rule matches of other protocols (UDP and SCTP; every protocol, TCP included, without toPorts or on port 0 of protocol ANY) is dropped (drop reason "Authentication required")`,
			}},
		{name: "egress authentication to pods' TCP ports", spec: &v1alpha1.Rule{Egress: []v1alpha1.EgressRule{{
			EgressCommonRule: v1alpha1.EgressCommonRule{ToEndpoints: []metav1.LabelSelector{{MatchLabels: map[string]string{"app": "b"}}}},
			ToPorts:          []v1alpha1.PortRule{{Ports: []v1alpha1.PortProtocol{{Port: "8080", Protocol: v1alpha1.ProtoTCP}}}},
			Authentication:   &v1alpha1.Authentication{Mode: v1alpha1.AuthenticationRequired},
		}}}},
		{name: "egress authentication with HTTP rules", spec: &v1alpha1.Rule{Egress: []v1alpha1.EgressRule{{
			EgressCommonRule: v1alpha1.EgressCommonRule{ToEndpoints: []metav1.LabelSelector{{MatchLabels: map[string]string{"app": "b"}}}},
			ToPorts: []v1alpha1.PortRule{{Ports: []v1alpha1.PortProtocol{{Port: "8080", Protocol: v1alpha1.ProtoTCP}},
				Rules: &v1alpha1.L7Rules{HTTP: []v1alpha1.PortRuleHTTP{{Method: "GET"}}}}},
			Authentication: &v1alpha1.Authentication{Mode: v1alpha1.AuthenticationRequired},
		}}},
			want: []string{`spec.egress[0].authentication: mode "required" with HTTP rules on the rule's ports: the two do not compose on the sending side, so traffic matching this rule is dropped (drop reason "Authentication required")`}},
		{name: "dns every name", spec: &v1alpha1.Rule{Egress: []v1alpha1.EgressRule{dns(v1alpha1.FQDNSelector{MatchName: "a.example"}, v1alpha1.FQDNSelector{MatchPattern: "*"})}}},
		{name: "dns names", specs: []v1alpha1.Rule{{}, {Egress: []v1alpha1.EgressRule{dns(v1alpha1.FQDNSelector{MatchPattern: "*.example.com"})}}}},
		{name: "toFQDNs", spec: &v1alpha1.Rule{Egress: []v1alpha1.EgressRule{{ToFQDNs: []v1alpha1.FQDNSelector{{MatchName: "api.example.com"}}}}}},
		{name: "mismatch actions", spec: header("", v1alpha1.MismatchLog, v1alpha1.MismatchReplace),
			want: []string{
				`spec.ingress[0].toPorts[0].rules.http[0].headerMatches[1].mismatch: "LOG" is not implemented yet: a request whose header does not match is allowed, and the mismatch is not logged`,
				`spec.ingress[0].toPorts[0].rules.http[0].headerMatches[2].mismatch: "REPLACE" is not implemented yet: a request whose header does not match is allowed with the header unchanged`,
			}},
	} {
		if diff := cmp.Diff(tc.want, unsupportedFields(tc.spec, tc.specs, true)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}
