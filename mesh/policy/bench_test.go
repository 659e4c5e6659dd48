package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/membrane-mesh/membrane/mesh/identity"
)

// benchShape is the node agent's shape under BenchmarkPolicyChangeToEnforced:
// groups identities, one policy selecting them all with 200 fromEndpoints
// rules (one group each, its own port) and 50 fromCIDR rules, and 50 local
// endpoints.
func benchShape(groups int) ([]Policy, IdentitySet, []Endpoint) {
	var ids IdentitySet
	for g := range groups {
		ids.Identities = append(ids.Identities, Identity{ID: identity.ID(1000 + g), Labels: pod("bench", "bench", "policy", "group", fmt.Sprintf("g%d", g))})
	}
	p := Policy{Kind: "MembraneNetworkPolicy", Namespace: "bench", Name: "bench"}
	for j := range 250 {
		if j%32 == 0 {
			p.Rules = append(p.Rules, Rule{EndpointSelector: sel("bench", "policy")})
		}
		var pr PeerRule
		if j < 200 {
			pr = PeerRule{Endpoints: []Selector{sel("group", fmt.Sprintf("g%d", j%groups))}, ToPorts: []PortRule{{Ports: []Port{{Port: uint16(10000 + j), Proto: TCP}}}}}
		} else {
			pr = PeerRule{CIDRs: []CIDRRule{{CIDR: netip.MustParsePrefix(fmt.Sprintf("172.16.%d.0/24", j-200))}}, ToPorts: []PortRule{{Ports: []Port{{Port: uint16(20000 + j), Proto: TCP}}}}}
		}
		r := &p.Rules[len(p.Rules)-1]
		r.Ingress = append(r.Ingress, pr)
	}
	var eps []Endpoint
	for i := range 50 {
		id := ids.Identities[i%groups]
		eps = append(eps, Endpoint{Identity: id.ID, Labels: id.Labels, Namespace: "bench"})
	}
	return []Policy{p}, ids, eps
}

// BenchmarkNewAndResolve: every change compiled and resolved from scratch
// (what BenchmarkRepositoryChange avoids): all rules compiled, each local
// endpoint's distinct identity resolved.
func BenchmarkNewAndResolve(b *testing.B) {
	for _, groups := range []int{100, 10} {
		b.Run(fmt.Sprintf("identities=%d", groups), func(b *testing.B) {
			policies, ids, eps := benchShape(groups)
			for b.Loop() {
				r := New(policies, ids, Config{ProxyPort: 15001})
				seen := map[identity.ID]bool{}
				for _, ep := range eps {
					if !seen[ep.Identity] {
						seen[ep.Identity] = true
						r.Resolve(ep)
					}
				}
			}
		})
	}
}

// BenchmarkRepositoryChange: one rule of the policy moves to another port
// (as the agent sees BenchmarkPolicyChangeToEnforced's "change"), then
// every local endpoint is resolved, through a Repository.
func BenchmarkRepositoryChange(b *testing.B) {
	for _, groups := range []int{100, 10} {
		b.Run(fmt.Sprintf("identities=%d", groups), func(b *testing.B) {
			policies, ids, eps := benchShape(groups)
			repo := NewRepository()
			i := 0
			for b.Loop() {
				p := policies[0]
				p.Rules = slices.Clone(p.Rules)
				r := &p.Rules[i%len(p.Rules)]
				r.Ingress = slices.Clone(r.Ingress)
				r.Ingress[0].ToPorts = []PortRule{{Ports: []Port{{Port: uint16(30000 + i), Proto: TCP}}}}
				policies = []Policy{p}
				i++
				repo.Update(policies, ids, Config{ProxyPort: 15001})
				for _, ep := range eps {
					repo.Resolve(ep)
				}
			}
		})
	}
}

// BenchmarkRepositoryNewIdentity: a pod of a new identity comes (the
// labels of one group with another version label, so the rules from its
// group select it), then every local endpoint is resolved, through a
// Repository.
func BenchmarkRepositoryNewIdentity(b *testing.B) {
	for _, groups := range []int{100, 10} {
		b.Run(fmt.Sprintf("identities=%d", groups), func(b *testing.B) {
			policies, ids, eps := benchShape(groups)
			repo := NewRepository()
			repo.Update(policies, ids, Config{ProxyPort: 15001})
			base := ids.Identities
			i := 0
			for b.Loop() {
				id := Identity{ID: identity.ID(100000 + i), Labels: pod("bench", "bench", "policy", "group", fmt.Sprintf("g%d", i%groups), "version", fmt.Sprint(i))}
				i++
				ids.Identities = append(slices.Clip(base), id)
				repo.Update(policies, ids, Config{ProxyPort: 15001})
				for _, ep := range append(eps, Endpoint{Identity: id.ID, Labels: id.Labels, Namespace: "bench"}) {
					repo.Resolve(ep)
				}
			}
		})
	}
}
