package convert

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
	"github.com/membrane-mesh/membrane/mesh/policy"
)

// The golden files are mesh/policy's; the flag is accepted here so that
// go test ./mesh/policy/... -update works.
var _ = flag.Bool("update", false, "rewrite the golden files (none in this package)")

var cmpOpts = []cmp.Option{cmpopts.EquateComparable(netip.Prefix{}), cmpopts.EquateEmpty()}

// TestCiliumExamples converts the Cilium documentation examples v1alpha1
// tests with, without errors.
func TestCiliumExamples(t *testing.T) {
	files, err := filepath.Glob("../../api/v1alpha1/testdata/cilium/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(raw, &tm); err != nil {
			t.Fatal(err)
		}
		var p policy.Policy
		var errs field.ErrorList
		switch tm.Kind {
		case KindMembraneNetworkPolicy:
			var mnp v1alpha1.MembraneNetworkPolicy
			if err := yaml.UnmarshalStrict(raw, &mnp); err != nil {
				t.Fatal(err)
			}
			mnp.Namespace = "default"
			p, errs = FromMembranePolicy(&mnp)
		case KindMembraneClusterwideNetworkPolicy:
			var mcnp v1alpha1.MembraneClusterwideNetworkPolicy
			if err := yaml.UnmarshalStrict(raw, &mcnp); err != nil {
				t.Fatal(err)
			}
			p, errs = FromMembraneClusterwidePolicy(&mcnp)
		default:
			t.Fatalf("%s: kind %q", f, tm.Kind)
		}
		if len(errs) > 0 || len(p.Rules) == 0 {
			t.Errorf("%s: %v (%d rules)", filepath.Base(f), errs, len(p.Rules))
		}
	}
}

func TestFromMembrane(t *testing.T) {
	const manifest = `
endpointSelector:
  matchLabels: {app: api}
ingress:
- {}
- toPorts:
  - ports:
    - {port: "80"}
    - {port: "8000", endPort: 8100, protocol: UDP}
  - ports:
    - {port: http, protocol: TCP}
    rules:
      http:
      - method: GET
        headers: ["X-A: 1", "X-B"]
        headerMatches:
        - {name: X-C, value: "2", mismatch: LOG}
  authentication: {mode: required}
- fromEndpoints: [{}]
  fromEntities: [world]
  fromCIDR: [10.1.2.3/8]
  fromCIDRSet:
  - {cidr: 192.0.2.0/24, except: [192.0.2.128/25]}
  authentication: {mode: disabled}
ingressDeny:
- toPorts:
  - ports: [{port: "22", protocol: SCTP}]
egress:
- toFQDNs: [{matchName: example.com}]
  toPorts:
  - ports: [{port: "53", protocol: ANY}]
    rules:
      dns: [{matchPattern: "*"}]
  authentication: {mode: test-always-fail}
egressDeny:
- toEndpoints:
  - matchExpressions:
    - {key: k8s:app, operator: In, values: [x]}
`
	var r v1alpha1.Rule
	if err := yaml.UnmarshalStrict([]byte(manifest), &r); err != nil {
		t.Fatal(err)
	}
	got, errs := FromMembrane(&r)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	all := []policy.Entity{policy.EntityAll}
	want := policy.Rule{
		EndpointSelector: policy.Selector{MatchLabels: map[string]string{"app": "api"}},
		Ingress: []policy.PeerRule{
			{}, // no peers: default deny only
			{
				Entities: all, // toPorts without peers: every peer
				ToPorts: []policy.PortRule{{
					Ports: []policy.Port{{Port: 80}, {Port: 8000, EndPort: 8100, Proto: policy.UDP}},
				}, {
					Ports: []policy.Port{{Name: "http", Proto: policy.TCP}},
					HTTP: []policy.HTTPRule{{Method: "GET", Headers: []policy.HeaderMatch{
						{Name: "X-A", Value: "1"}, {Name: "X-B"}, {Name: "X-C", Value: "2", Mismatch: "LOG"}}}},
				}},
				AuthRequired: true,
			},
			{
				Endpoints: []policy.Selector{{}},
				Entities:  []policy.Entity{policy.EntityWorld},
				CIDRs: []policy.CIDRRule{
					{CIDR: netip.MustParsePrefix("10.0.0.0/8")},
					{CIDR: netip.MustParsePrefix("192.0.2.0/24"), Except: []netip.Prefix{netip.MustParsePrefix("192.0.2.128/25")}},
				},
			},
		},
		IngressDeny: []policy.PeerRule{{Entities: all, ToPorts: []policy.PortRule{{Ports: []policy.Port{{Port: 22, Proto: policy.SCTP}}}}}},
		Egress: []policy.PeerRule{{
			FQDNs:          []policy.FQDN{{MatchName: "example.com"}},
			ToPorts:        []policy.PortRule{{Ports: []policy.Port{{Port: 53}}, DNS: []policy.FQDN{{MatchPattern: "*"}}}},
			AuthRequired:   true,
			AuthAlwaysFail: true, // test-always-fail
		}},
		EgressDeny: []policy.PeerRule{{Endpoints: []policy.Selector{{MatchExpressions: []policy.Requirement{
			{Key: "k8s:app", Operator: policy.OpIn, Values: []string{"x"}}}}}}},
	}
	if diff := cmp.Diff(want, got, cmpOpts...); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestFromMembraneErrors(t *testing.T) {
	r := v1alpha1.Rule{Ingress: []v1alpha1.IngressRule{{IngressCommonRule: v1alpha1.IngressCommonRule{FromCIDR: []v1alpha1.CIDR{"nope"}}}}}
	got, errs := FromMembrane(&r)
	if len(errs) != 2 || !cmp.Equal(got, policy.Rule{}) {
		t.Errorf("got %+v, %v; want the zero rule and 2 errors (endpointSelector, fromCIDR)", got, errs)
	}
	mnp := v1alpha1.MembraneNetworkPolicy{Spec: &v1alpha1.Rule{EndpointSelector: &metav1.LabelSelector{}}}
	mnp.Name = "no-namespace"
	if _, errs := FromMembranePolicy(&mnp); len(errs) != 1 || errs[0].Field != "metadata.namespace" {
		t.Errorf("without a namespace: %v", errs)
	}
	mnp.Namespace = "ns"
	mnp.Specs = []v1alpha1.Rule{{EndpointSelector: &metav1.LabelSelector{}}}
	p, errs := FromMembranePolicy(&mnp)
	if len(errs) != 0 || p.Namespace != "ns" || p.Kind != KindMembraneNetworkPolicy || len(p.Rules) != 2 {
		t.Errorf("spec and specs: %+v, %v", p, errs)
	}
}

func decodeNP(t *testing.T, manifest string) *networkingv1.NetworkPolicy {
	t.Helper()
	var np networkingv1.NetworkPolicy
	if err := yaml.UnmarshalStrict([]byte(manifest), &np); err != nil {
		t.Fatal(err)
	}
	return &np
}

func TestFromNetworkPolicy(t *testing.T) {
	np := decodeNP(t, `
metadata: {name: np, namespace: shop}
spec:
  podSelector:
    matchLabels: {app: api}
  ingress:
  - from:
    - podSelector:
        matchLabels: {app: web}
    - namespaceSelector:
        matchLabels: {team: a}
      podSelector:
        matchExpressions:
        - {key: app, operator: Exists}
    - namespaceSelector: {}
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
    ports:
    - {}
    - {port: 53, protocol: UDP}
    - {port: metrics}
    - {port: 8000, endPort: 8080, protocol: SCTP}
  - {}
  egress:
  - to:
    - podSelector: {}
`)
	got, errs := FromNetworkPolicy(np)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	nsExists := policy.Requirement{Key: "k8s:io.kubernetes.pod.namespace", Operator: policy.OpExists}
	want := policy.Policy{Kind: KindNetworkPolicy, Namespace: "shop", Name: "np", Rules: []policy.Rule{{
		EndpointSelector: policy.Selector{MatchLabels: map[string]string{"k8s:app": "api"}},
		Ingress: []policy.PeerRule{
			{
				Endpoints: []policy.Selector{
					{MatchLabels: map[string]string{"k8s:app": "web"}},
					{
						MatchLabels:      map[string]string{"k8s:io.cilium.k8s.namespace.labels.team": "a"},
						MatchExpressions: []policy.Requirement{{Key: "k8s:app", Operator: policy.OpExists}, nsExists},
					},
					{MatchExpressions: []policy.Requirement{nsExists}},
				},
				CIDRs: []policy.CIDRRule{{CIDR: netip.MustParsePrefix("10.0.0.0/8"), Except: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}},
				ToPorts: []policy.PortRule{{Ports: []policy.Port{
					{Proto: policy.TCP}, {Port: 53, Proto: policy.UDP}, {Name: "metrics", Proto: policy.TCP},
					{Port: 8000, EndPort: 8080, Proto: policy.SCTP},
				}}},
			},
			{Entities: []policy.Entity{policy.EntityAll}},
		},
		// No policyTypes, but egress rules: Egress is isolated too.
		Egress: []policy.PeerRule{{Endpoints: []policy.Selector{{}}}},
	}}}
	if diff := cmp.Diff(want, got, cmpOpts...); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestFromNetworkPolicyTypes(t *testing.T) {
	for _, c := range []struct {
		name                      string
		manifest                  string
		ingress, egress           int // rules; -1 not isolated
		ingressPeers, egressPeers bool
	}{
		{"no types, no rules: ingress isolated", `{metadata: {name: x, namespace: n}, spec: {podSelector: {}}}`, 1, -1, false, false},
		{"no types, egress rules: both isolated", `{metadata: {name: x, namespace: n}, spec: {podSelector: {}, egress: [{}]}}`, 1, 1, false, true},
		{"Egress only", `{metadata: {name: x, namespace: n}, spec: {podSelector: {}, policyTypes: [Egress], ingress: [{}]}}`, -1, 1, false, false},
		{"both, no rules", `{metadata: {name: x, namespace: n}, spec: {podSelector: {}, policyTypes: [Ingress, Egress]}}`, 1, 1, false, false},
	} {
		p, errs := FromNetworkPolicy(decodeNP(t, c.manifest))
		if len(errs) > 0 {
			t.Fatalf("%s: %v", c.name, errs)
		}
		r := p.Rules[0]
		check := func(dir string, rules []policy.PeerRule, want int, peers bool) {
			if want < 0 {
				if rules != nil {
					t.Errorf("%s: %s isolated: %+v", c.name, dir, rules)
				}
				return
			}
			if len(rules) != want {
				t.Errorf("%s: %s has %d rules, want %d", c.name, dir, len(rules), want)
				return
			}
			if got := len(rules[0].Entities) > 0; got != peers {
				t.Errorf("%s: %s rule peers %v, want %v", c.name, dir, rules[0], peers)
			}
		}
		check("ingress", r.Ingress, c.ingress, c.ingressPeers)
		check("egress", r.Egress, c.egress, c.egressPeers)
	}
}

func TestFromNetworkPolicyErrors(t *testing.T) {
	np := decodeNP(t, `
metadata: {name: bad}
spec:
  podSelector:
    matchExpressions: [{key: app, operator: Near}]
  policyTypes: [Sideways]
  ingress:
  - from:
    - ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}
    - ipBlock: {cidr: nope}
    - ipBlock: {cidr: 10.0.0.0/8}
      podSelector: {}
    ports:
    - {port: 0}
    - {port: 80, protocol: ICMP}
    - {port: http, endPort: 90}
    - {port: 90, endPort: 80}
`)
	got, errs := FromNetworkPolicy(np)
	var fields []string
	for _, e := range errs {
		fields = append(fields, e.Field)
	}
	want := []string{
		"metadata.namespace",
		"spec.podSelector.matchExpressions[0].operator",
		"spec.policyTypes[0]",
	}
	if len(got.Rules) != 0 || !strings.HasPrefix(strings.Join(fields, ","), strings.Join(want, ",")) {
		t.Errorf("errors %v", errs)
	}
	np.Namespace = "n"
	np.Spec.PolicyTypes = nil
	np.Spec.PodSelector = metav1.LabelSelector{}
	_, errs = FromNetworkPolicy(np)
	fields = nil
	for _, e := range errs {
		fields = append(fields, e.Field)
	}
	want = []string{
		"spec.ingress[0].from[0].ipBlock.except[0]",
		"spec.ingress[0].from[1].ipBlock.cidr",
		"spec.ingress[0].from[2]",
		"spec.ingress[0].ports[0].port",
		"spec.ingress[0].ports[1].protocol",
		"spec.ingress[0].ports[2].endPort",
		"spec.ingress[0].ports[3].endPort",
	}
	if diff := cmp.Diff(want, fields); diff != "" {
		t.Errorf("error fields (-want +got):\n%s\n%v", diff, errs)
	}
}
