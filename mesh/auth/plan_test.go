package auth

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/model"
	"github.com/membrane-mesh/membrane/mesh/policy"
	"github.com/membrane-mesh/membrane/xds/mtls"
	"github.com/membrane-mesh/membrane/xds/translate"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("cluster.local")
	frontend = spiffeid.RequireFromPath(td, "/ns/default/sa/frontend")
	backend  = spiffeid.RequireFromPath(td, "/ns/default/sa/backend")
	ip       = netip.MustParseAddr
	eq       = cmpopts.EquateComparable(spiffeid.ID{}, spiffeid.TrustDomain{}, netip.Addr{}, netip.Prefix{})
)

func input(svids ...spiffeid.ID) Input {
	held := map[spiffeid.ID]bool{}
	for _, id := range svids {
		held[id] = true
	}
	return Input{
		Node: "n1", TrustDomain: td, OutboundPort: 15002, SVIDs: held,
		Nodes: []model.Node{{Name: "n1", IPs: []netip.Addr{ip("fd00::1"), ip("172.18.0.2")}}, {Name: "n2", IPs: []netip.Addr{ip("172.18.0.3")}}},
		Pods: []Pod{
			{Namespace: "default", Name: "frontend", Node: "n1", IP: ip("10.0.1.5"), Identity: 100, ServiceAccount: "frontend"},
			{Namespace: "default", Name: "frontend-2", Node: "n2", IP: ip("10.0.2.5"), Identity: 100, ServiceAccount: "frontend"},
			{Namespace: "default", Name: "backend", Node: "n2", IP: ip("10.0.2.7"), Identity: 200, ServiceAccount: "backend"},
			{Namespace: "default", Name: "backend-local", Node: "n1", IP: ip("10.0.1.7"), Identity: 200, ServiceAccount: "backend"},
			{Namespace: "default", Name: "other", Node: "n1", IP: ip("10.0.1.9"), Identity: 300},
		},
		Rules: func(p Pod) []policy.DatapathRule {
			if p.Identity != 200 {
				return nil
			}
			return []policy.DatapathRule{
				{Direction: model.Ingress, RemoteIdentity: 100, Proto: model.TCP, Port: 8080, Verdict: model.Allow, AuthRequired: true},
				{Direction: model.Ingress, RemoteIdentity: 300, Proto: model.TCP, Port: 9090, Verdict: model.Allow},
			}
		},
	}
}

// TestPlan: the local frontend reaches both backends through the proxy (the
// local one too); the local backend accepts the frontend's SPIFFE ID from
// the frontend pods' addresses only; the pod without a rule requiring
// authentication is untouched.
func TestPlan(t *testing.T) {
	got := New(input(frontend, backend))
	want := Plan{
		Egress: map[netip.Addr][]policy.DatapathRule{ip("10.0.1.5"): {{
			Direction: model.Egress, RemoteIdentity: 200, Proto: model.TCP, Port: 8080,
			Verdict: model.Redirect, ProxyPort: 15002, Origins: []string{"mutual authentication"},
		}}},
		Outbound: []mtls.Outbound{
			{Source: ip("10.0.1.5"), SourceID: frontend, Destination: ip("10.0.1.7"), Port: 8080, DestinationID: backend, Node: ip("172.18.0.2")},
			{Source: ip("10.0.1.5"), SourceID: frontend, Destination: ip("10.0.2.7"), Port: 8080, DestinationID: backend, Node: ip("172.18.0.3")},
		},
		Inbound: []mtls.Inbound{{
			Destination: ip("10.0.1.7"), Port: 8080, DestinationID: backend,
			Peers: []mtls.Peer{{ID: frontend, Sources: []netip.Prefix{netip.MustParsePrefix("10.0.1.5/32"), netip.MustParsePrefix("10.0.2.5/32")}}},
		}},
	}
	if diff := cmp.Diff(want, got, eq, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("plan (-want +got):\n%s", diff)
	}
	if err := (mtls.Config{OutboundPort: 15002, TunnelPort: 15008, Outbound: got.Outbound, Inbound: got.Inbound}).Validate(); err != nil {
		t.Errorf("the plan does not translate: %v", err)
	}
}

// TestPlanL7: a port requiring authentication whose entry also redirects
// to the L7 proxy gets the destination's L7 rules of that port in the
// tunnel, their remote identities as SPIFFE IDs, and the local entry is
// rewritten as an allow requiring authentication; an entry without L7 on
// another port is untouched.
func TestPlanL7(t *testing.T) {
	in := input(frontend, backend)
	in.Rules = func(p Pod) []policy.DatapathRule {
		if p.Identity != 200 {
			return nil
		}
		return []policy.DatapathRule{
			{Direction: model.Ingress, RemoteIdentity: 100, Proto: model.TCP, Port: 8080, Verdict: model.Redirect, ProxyPort: 15001, AuthRequired: true, Origins: []string{"p1"}},
			{Direction: model.Ingress, RemoteIdentity: 100, Proto: model.TCP, Port: 9090, Verdict: model.Allow, AuthRequired: true},
		}
	}
	in.L7 = func(p Pod) []policy.L7Rule {
		return []policy.L7Rule{
			{Direction: model.Ingress, Proto: model.TCP, Port: 8080, RemoteIdentities: []identity.ID{100}, HTTP: []policy.HTTPRule{{Method: "GET", Path: "/public/.*"}}},
			{Direction: model.Ingress, Proto: model.TCP, Port: 7070, RemoteIdentities: []identity.ID{100}, HTTP: []policy.HTTPRule{{Method: "POST"}}},
			{Direction: model.Egress, Proto: model.TCP, Port: 8080, RemoteIdentities: []identity.ID{100}, HTTP: []policy.HTTPRule{{Method: "PUT"}}},
		}
	}
	got := New(in)
	frontendPeers := []mtls.Peer{{ID: frontend, Sources: []netip.Prefix{netip.MustParsePrefix("10.0.1.5/32"), netip.MustParsePrefix("10.0.2.5/32")}}}
	wantInbound := []mtls.Inbound{
		{Destination: ip("10.0.1.7"), Port: 8080, DestinationID: backend, Peers: frontendPeers, L7: &mtls.L7{Rules: []mtls.L7Rule{
			{Peers: frontendPeers, HTTP: []translate.HTTPRule{{Method: "GET", Path: "/public/.*"}}},
		}}},
		{Destination: ip("10.0.1.7"), Port: 9090, DestinationID: backend, Peers: frontendPeers},
	}
	if diff := cmp.Diff(wantInbound, got.Inbound, eq); diff != "" {
		t.Errorf("inbound (-want +got):\n%s", diff)
	}
	wantIngress := map[netip.Addr][]policy.DatapathRule{ip("10.0.1.7"): {{
		Direction: model.Ingress, RemoteIdentity: 100, Proto: model.TCP, Port: 8080, Verdict: model.Allow, AuthRequired: true,
		Origins: []string{"p1", "mutual authentication (L7 rules in the tunnel)"},
	}}}
	if diff := cmp.Diff(wantIngress, got.Ingress, eq); diff != "" {
		t.Errorf("ingress (-want +got):\n%s", diff)
	}
	// The source side is unchanged: the frontend's connections to both
	// ports take the tunnel.
	if len(got.Egress[ip("10.0.1.5")]) != 2 {
		t.Errorf("egress: %v", got.Egress)
	}
	if err := (mtls.Config{OutboundPort: 15002, TunnelPort: 15008, Outbound: got.Outbound, Inbound: got.Inbound}).Validate(); err != nil {
		t.Errorf("the plan does not translate: %v", err)
	}
	// Without the backend's SVID nothing is rewritten: the datapath keeps
	// dropping the port's traffic.
	in.SVIDs = map[spiffeid.ID]bool{frontend: true}
	if got := New(in); len(got.Ingress) != 0 {
		t.Errorf("without the backend's SVID: ingress %v", got.Ingress)
	}
}

// TestPlanWithoutSVIDs: a side whose SVID the node lacks is left out (the
// destination's datapath drops such connections).
func TestPlanWithoutSVIDs(t *testing.T) {
	got := New(input(backend))
	if len(got.Egress) != 0 || len(got.Outbound) != 0 {
		t.Errorf("without the frontend's SVID: egress %v, outbound %v", got.Egress, got.Outbound)
	}
	if len(got.Inbound) != 1 {
		t.Errorf("the local backend's inbound: %v", got.Inbound)
	}
	got = New(input(frontend))
	if len(got.Inbound) != 0 || len(got.Outbound) != 2 {
		t.Errorf("without the backend's SVID: inbound %v, outbound %v", got.Inbound, got.Outbound)
	}
}

// TestPlanAnyPeerAndRanges: remote identity 0 allows every identity of the
// trust domain and sends every local pod through the proxy; a range is
// planned port by port, a too wide one is reported.
func TestPlanAnyPeerAndRanges(t *testing.T) {
	in := input(frontend, backend, spiffeid.RequireFromPath(td, "/ns/default/sa/default"))
	in.Rules = func(p Pod) []policy.DatapathRule {
		if p.Name != "backend-local" {
			return nil
		}
		return []policy.DatapathRule{
			{Direction: model.Ingress, RemoteIdentity: 0, Proto: model.AnyProtocol, Port: 8000, EndPort: 8001, Verdict: model.Allow, AuthRequired: true},
			{Direction: model.Ingress, RemoteIdentity: 0, Proto: model.TCP, Port: 1000, EndPort: 2000, Verdict: model.Allow, AuthRequired: true},
		}
	}
	got := New(in)
	if len(got.Inbound) != 2 || got.Inbound[0].Port != 8000 || got.Inbound[1].Port != 8001 ||
		!cmp.Equal(got.Inbound[0].Peers, []mtls.Peer{{TrustDomain: td}}, eq) {
		t.Errorf("inbound: %+v", got.Inbound)
	}
	// Every local pod (frontend, backend-local, other) has an egress redirect.
	if len(got.Egress) != 3 {
		t.Errorf("egress: %v", got.Egress)
	}
	if len(got.Problems) != 1 {
		t.Errorf("problems: %v, want the wide range", got.Problems)
	}
}

func TestID(t *testing.T) {
	id, err := ID(td, "shop", "")
	if err != nil || id.String() != "spiffe://cluster.local/ns/shop/sa/default" {
		t.Fatalf("ID = %v, %v", id, err)
	}
	if _, err := ID(td, "a/b", "x"); err == nil {
		t.Fatal("a namespace with a slash made an ID")
	}
	if p := PodFrom("ns", "p", "n", ip("10.0.0.1"), 5, identity.Labels{identity.ServiceAccount: "sa1"}); p.ServiceAccount != "sa1" {
		t.Fatalf("PodFrom: %+v", p)
	}
}

// TestPlanEgress: the frontend's egress rule requiring authentication to
// the backend: the local frontend's connections to both backends take the
// tunnel, and the local backend accepts the frontends' SPIFFE ID from each
// frontend pod's address, with the backend's L7 rules for the frontend
// where its ingress redirects the frontend to the L7 proxy.
func TestPlanEgress(t *testing.T) {
	in := input(frontend, backend)
	in.Rules = func(p Pod) []policy.DatapathRule {
		switch p.Identity {
		case 100:
			return []policy.DatapathRule{{Direction: model.Egress, RemoteIdentity: 200, Proto: model.TCP, Port: 8080, Verdict: model.Allow, AuthRequired: true}}
		case 200:
			return []policy.DatapathRule{{Direction: model.Ingress, RemoteIdentity: 100, Proto: model.TCP, Port: 8080, Verdict: model.Redirect, ProxyPort: 15001}}
		}
		return nil
	}
	in.L7 = func(p Pod) []policy.L7Rule {
		if p.Identity != 200 {
			return nil
		}
		return []policy.L7Rule{{Direction: model.Ingress, Proto: model.TCP, Port: 8080, RemoteIdentities: []identity.ID{100}, HTTP: []policy.HTTPRule{{Method: "GET"}}}}
	}
	got := New(in)
	wantEgress := map[netip.Addr][]policy.DatapathRule{ip("10.0.1.5"): {{
		Direction: model.Egress, RemoteIdentity: 200, Proto: model.TCP, Port: 8080,
		Verdict: model.Redirect, ProxyPort: 15002, Origins: []string{"mutual authentication"},
	}}}
	if diff := cmp.Diff(wantEgress, got.Egress, eq); diff != "" {
		t.Errorf("egress (-want +got):\n%s", diff)
	}
	wantOutbound := []mtls.Outbound{
		{Source: ip("10.0.1.5"), SourceID: frontend, Destination: ip("10.0.1.7"), Port: 8080, DestinationID: backend, Node: ip("172.18.0.2")},
		{Source: ip("10.0.1.5"), SourceID: frontend, Destination: ip("10.0.2.7"), Port: 8080, DestinationID: backend, Node: ip("172.18.0.3")},
	}
	if diff := cmp.Diff(wantOutbound, got.Outbound, eq); diff != "" {
		t.Errorf("outbound (-want +got):\n%s", diff)
	}
	frontendPeers := []mtls.Peer{{ID: frontend, Sources: []netip.Prefix{netip.MustParsePrefix("10.0.1.5/32"), netip.MustParsePrefix("10.0.2.5/32")}}}
	l7 := &mtls.L7{Rules: []mtls.L7Rule{{Peers: frontendPeers, HTTP: []translate.HTTPRule{{Method: "GET"}}}}}
	wantInbound := []mtls.Inbound{
		{Destination: ip("10.0.1.7"), Port: 8080, DestinationID: backend, L7: l7,
			Peers: []mtls.Peer{{ID: frontend, Sources: []netip.Prefix{netip.MustParsePrefix("10.0.1.5/32")}}}},
		{Destination: ip("10.0.1.7"), Port: 8080, DestinationID: backend, L7: l7,
			Peers: []mtls.Peer{{ID: frontend, Sources: []netip.Prefix{netip.MustParsePrefix("10.0.2.5/32")}}}},
	}
	if diff := cmp.Diff(wantInbound, got.Inbound, eq); diff != "" {
		t.Errorf("inbound (-want +got):\n%s", diff)
	}
	if len(got.Ingress) != 0 {
		t.Errorf("the backend's entries were rewritten: %v", got.Ingress)
	}
	if err := (mtls.Config{OutboundPort: 15002, TunnelPort: 15008, Outbound: got.Outbound, Inbound: got.Inbound}).Validate(); err != nil {
		t.Errorf("the plan does not translate: %v", err)
	}
}
