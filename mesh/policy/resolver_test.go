package policy

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/membrane-mesh/membrane/mesh/identity"
)

func pod(ns string, kv ...string) identity.Labels {
	l := identity.Labels{identity.NamespaceLabel: ns}
	for i := 0; i+1 < len(kv); i += 2 {
		l["k8s:"+kv[i]] = kv[i+1]
	}
	return l
}

func testIDs() IdentitySet {
	return IdentitySet{Identities: []Identity{
		{ID: 256, Labels: pod("ns", "app", "a")},
		{ID: 257, Labels: pod("ns", "app", "b")},
		{ID: 258, Labels: pod("other", "app", "a")},
	}}
}

func sel(kv ...string) Selector {
	s := Selector{MatchLabels: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func problemsContain(t *testing.T, errs []error, subs ...string) {
	t.Helper()
	for _, s := range subs {
		found := false
		for _, e := range errs {
			found = found || strings.Contains(e.Error(), s)
		}
		if !found {
			t.Errorf("no problem mentions %q in %v", s, errs)
		}
	}
}

func TestResolveProblems(t *testing.T) {
	policies := []Policy{
		{Namespace: "ns", Name: "bad-subject", Rules: []Rule{{
			EndpointSelector: Selector{MatchExpressions: []Requirement{{Key: "app", Operator: "Like"}}},
			Ingress:          []PeerRule{{Entities: []Entity{EntityAll}}},
		}}},
		{Namespace: "ns", Name: "p", Rules: []Rule{{
			EndpointSelector: sel("app", "b"),
			Ingress: []PeerRule{
				{Endpoints: []Selector{{MatchExpressions: []Requirement{{Key: "app", Operator: OpIn}}}, sel("app", "a")}},
				{Entities: []Entity{"galaxy"}},
				{Entities: []Entity{EntityAll}, ToPorts: []PortRule{{}}},
				{Entities: []Entity{EntityAll}, ToPorts: []PortRule{{Ports: []Port{{EndPort: 90, Proto: TCP}}}}},
				{Entities: []Entity{EntityAll}, ToPorts: []PortRule{{Ports: []Port{{Proto: TCP}}, HTTP: []HTTPRule{{}}}}},
				{Entities: []Entity{EntityAll}, ToPorts: []PortRule{{Ports: []Port{{Name: "http", EndPort: 90}}}}},
				{Entities: []Entity{EntityAll}, ToPorts: []PortRule{{Ports: []Port{{Port: 53}}, HTTP: []HTTPRule{{}}}}},
			},
			Egress: []PeerRule{
				{Entities: []Entity{EntityAll}, ToPorts: []PortRule{{Ports: []Port{{Name: "nope", Proto: UDP}}}}},
				{CIDRs: []CIDRRule{{}}},
			},
		}}},
	}
	r := New(policies, testIDs(), Config{ProxyPort: 15001})
	problemsContain(t, r.Problems(), `bad-subject rules[0]: endpointSelector: matchExpressions[0]: unknown operator "Like"`)
	res := r.Resolve(Endpoint{Identity: 257, Labels: pod("ns", "app", "b")})
	problemsContain(t, res.Problems,
		"ingress[0]: endpoints[0]: matchExpressions[0]: operator In needs values (matches no peer)",
		`ingress[1]: unknown entity "galaxy"`,
		"ingress[2].toPorts[0]: no ports",
		"ingress[3].toPorts[0].ports[0]: a port range needs a port other than 0",
		"ingress[4].toPorts[0].ports[0]: L7 rules need a specific port",
		`ingress[5].toPorts[0].ports[0]: a port range needs a numeric port, not the name "http"`,
		"ingress[6].toPorts[0].ports[0]: HTTP rules need protocol TCP: skipped",
		`egress[0].toPorts[0].ports[0]: no peer has a UDP port named "nope"`,
		"egress[1]: cidrs[0]: invalid prefix",
	)
	// What is valid still applies: the second selector of ingress[0].
	want := []DatapathRule{
		{Direction: Ingress, RemoteIdentity: identity.Host, Verdict: Allow},
		{Direction: Ingress, RemoteIdentity: 256, Verdict: Allow},
	}
	if diff := cmp.Diff(want, res.Rules, cmpopts.IgnoreFields(DatapathRule{}, "Origins")); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}
	if !res.EnforceIngress || !res.EnforceEgress {
		t.Errorf("enforce ingress %v, egress %v; want both", res.EnforceIngress, res.EnforceEgress)
	}
}

func TestResolveMerge(t *testing.T) {
	all := []Entity{EntityAll}
	tcp80 := []PortRule{{Ports: []Port{{Port: 80, Proto: TCP}}}}
	http80 := []PortRule{{Ports: []Port{{Port: 80, Proto: TCP}}, HTTP: []HTTPRule{{Method: "GET"}}}}
	tcp81 := []PortRule{{Ports: []Port{{Port: 81, EndPort: 81, Proto: TCP}}}}
	policies := []Policy{{Namespace: "ns", Name: "p", Rules: []Rule{{
		EndpointSelector: Selector{},
		Ingress: []PeerRule{
			{Entities: all, ToPorts: http80},
			{Entities: all, ToPorts: tcp80, AuthRequired: true},
			{Endpoints: []Selector{sel("app", "a")}, ToPorts: http80, AuthRequired: true},
			{Endpoints: []Selector{sel("app", "a")}, ToPorts: tcp81, AuthRequired: true},
		},
		IngressDeny: []PeerRule{
			{Endpoints: []Selector{sel("app", "a")}, ToPorts: tcp80},
		},
	}}}}
	res := Resolve(Endpoint{Identity: 257, Namespace: "ns", Labels: identity.Labels{"k8s:app": "b"}}, policies, testIDs(), Config{ProxyPort: 15001, EnforceHostIngress: true})
	want := []DatapathRule{
		// Redirect beats allow, authentication ORs.
		{Direction: Ingress, RemoteIdentity: 0, Proto: TCP, Port: 80, Verdict: Redirect, ProxyPort: 15001, AuthRequired: true},
		// Deny beats redirect and drops the authentication flag.
		{Direction: Ingress, RemoteIdentity: 256, Proto: TCP, Port: 80, Verdict: Deny},
		// EndPort equal to Port is no range.
		{Direction: Ingress, RemoteIdentity: 256, Proto: TCP, Port: 81, Verdict: Allow, AuthRequired: true},
	}
	if diff := cmp.Diff(want, res.Rules, cmpopts.IgnoreFields(DatapathRule{}, "Origins")); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}
	// The endpoint's namespace came from Endpoint.Namespace.
	if !res.EnforceIngress {
		t.Error("the namespaced policy did not select the endpoint")
	}
	// The L7 rules: the HTTP rule for every peer and for 256, and every
	// request for every peer (the allow of the same key).
	if len(res.L7) != 2 || !slices.Equal(res.L7[0].RemoteIdentities, []identity.ID{0}) || !cmp.Equal(res.L7[0].HTTP[0], HTTPRule{}) ||
		!slices.Equal(res.L7[1].RemoteIdentities, []identity.ID{0}) || res.L7[1].HTTP[0].Method != "GET" {
		t.Errorf("L7 rules: %+v", res.L7)
	}
	// Each rule requiring authentication is reported: its traffic is dropped.
	if len(res.Problems) != 3 || !errors.Is(res.Problems[0], errAuthUnavailable) || !strings.HasPrefix(res.Problems[0].Error(), "ns/p rules[0] ingress[1]: ") {
		t.Errorf("problems: %v, want the three rules requiring authentication", res.Problems)
	}
	// With mutual authentication on the node, they are applied as written.
	withAuth := Resolve(Endpoint{Identity: 257, Namespace: "ns", Labels: identity.Labels{"k8s:app": "b"}}, policies, testIDs(), Config{ProxyPort: 15001, EnforceHostIngress: true, MutualAuth: true})
	for _, p := range withAuth.Problems {
		if errors.Is(p, errAuthUnavailable) {
			t.Errorf("with mutual authentication: problem %v", p)
		}
	}
	if len(withAuth.Problems) != len(res.Problems)-3 {
		t.Errorf("with mutual authentication: problems %v", withAuth.Problems)
	}
}

// TestResolveDeterministic: the order of policies and identities does not
// matter, and every endpoint gets the same CIDR identities.
func TestResolveDeterministic(t *testing.T) {
	policies := []Policy{
		{Namespace: "ns", Name: "a", Rules: []Rule{{EndpointSelector: sel("app", "a"),
			Egress: []PeerRule{{CIDRs: []CIDRRule{{CIDR: netip.MustParsePrefix("10.0.0.0/8")}}}, {Entities: []Entity{EntityCluster}}}}}},
		{Namespace: "ns", Name: "b", Rules: []Rule{{EndpointSelector: sel("app", "b"),
			Egress: []PeerRule{{CIDRs: []CIDRRule{{CIDR: netip.MustParsePrefix("192.0.2.0/24")}}}, {Entities: []Entity{"bogus"}}}}}},
		{Namespace: "ns", Name: "c", Rules: []Rule{{EndpointSelector: Selector{},
			Ingress: []PeerRule{{Entities: []Entity{"bogus"}}, {Endpoints: []Selector{{}}}}}}},
	}
	ids := testIDs()
	r1 := New(policies, ids, Config{})
	rev := slices.Clone(policies)
	slices.Reverse(rev)
	revIDs := IdentitySet{Identities: slices.Clone(ids.Identities)}
	slices.Reverse(revIDs.Identities)
	r2 := New(rev, revIDs, Config{})
	opts := []cmp.Option{cmpopts.EquateComparable(netip.Prefix{}), cmp.Comparer(func(a, b error) bool { return a.Error() == b.Error() })}
	for _, ep := range []Endpoint{{Identity: 256, Labels: pod("ns", "app", "a")}, {Identity: 257, Labels: pod("ns", "app", "b")}} {
		if diff := cmp.Diff(r1.Resolve(ep), r2.Resolve(ep), opts...); diff != "" {
			t.Errorf("endpoint %d depends on input order:\n%s", ep.Identity, diff)
		}
	}
	a := r1.Resolve(Endpoint{Identity: 256, Labels: pod("ns", "app", "a")})
	b := r1.Resolve(Endpoint{Identity: 257, Labels: pod("ns", "app", "b")})
	if len(a.CIDRIdentities) != 2 || !slices.Equal(a.CIDRIdentities, b.CIDRIdentities) || !slices.Equal(a.CIDRIdentities, r1.CIDRIdentities()) {
		t.Errorf("CIDR identities differ: %v, %v", a.CIDRIdentities, b.CIDRIdentities)
	}
	// A previous allocation is kept.
	prev := []CIDRIdentity{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), ID: MinCIDRIdentity + 42}}
	r3 := New(policies, IdentitySet{Identities: ids.Identities, CIDRs: prev}, Config{})
	if got := r3.CIDRIdentities()[0]; got != prev[0] {
		t.Errorf("previous allocation not kept: %v", got)
	}
}

// TestClusterEntity: the cluster entity is the reserved in-cluster
// identities and the listed endpoint identities, never world or CIDR
// identities even if listed.
func TestClusterEntity(t *testing.T) {
	ids := testIDs()
	ids.Identities = append(ids.Identities, Identity{ID: identity.World}, Identity{ID: MinCIDRIdentity + 1})
	policies := []Policy{{Name: "cw", Rules: []Rule{{EndpointSelector: Selector{},
		Egress: []PeerRule{{Entities: []Entity{EntityCluster}}}}}}}
	res := Resolve(Endpoint{Identity: 256, Labels: pod("ns", "app", "a")}, policies, ids, Config{})
	var got []identity.ID
	for _, r := range res.Rules {
		got = append(got, r.RemoteIdentity)
	}
	want := []identity.ID{identity.Host, identity.Unmanaged, identity.Health, identity.Init, identity.RemoteNode, identity.KubeAPIServer, identity.Ingress, 256, 257, 258}
	if !slices.Equal(got, want) {
		t.Errorf("cluster = %v, want %v", got, want)
	}
}

func TestTrace(t *testing.T) {
	policies := []Policy{{Namespace: "ns", Name: "b", Rules: []Rule{{
		EndpointSelector: sel("app", "b"),
		Ingress:          []PeerRule{{Endpoints: []Selector{sel("app", "a")}, ToPorts: []PortRule{{Ports: []Port{{Port: 8080, Proto: TCP}}}}}},
	}}}}
	a := Endpoint{Identity: 256, Labels: pod("ns", "app", "a")}
	b := Endpoint{Identity: 257, Labels: pod("ns", "app", "b")}
	if tr := Trace(a, b, TCP, 8080, policies, testIDs(), Config{}); !tr.Allowed || tr.Ingress.Rule == nil ||
		!slices.Equal(tr.Ingress.Rule.Origins, []string{"ns/b rules[0] ingress[0]"}) {
		t.Errorf("a -> b 8080: %s", tr)
	}
	if tr := Trace(a, b, TCP, 8081, policies, testIDs(), Config{}); tr.Allowed || tr.Ingress.Reason != ReasonDenied || tr.Egress.Reason != ReasonNotEnforced {
		t.Errorf("a -> b 8081: %s", tr)
	}
}
