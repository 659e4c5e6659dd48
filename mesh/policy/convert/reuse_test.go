package convert

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
)

// reuseGen makes random versions of one policy object: rules added,
// removed, changed (their peers, ports, selectors, L7 and deny rules),
// made invalid, moved between spec and specs.
type reuseGen struct{ rnd *rand.Rand }

func (g reuseGen) rule() v1alpha1.Rule {
	r := v1alpha1.Rule{EndpointSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprint("a", g.rnd.IntN(3))}}}
	for range 1 + g.rnd.IntN(4) {
		g.change(&r)
	}
	return r
}

// change changes r in one random way.
func (g reuseGen) change(r *v1alpha1.Rule) {
	port := []v1alpha1.PortRule{{Ports: []v1alpha1.PortProtocol{{Port: fmt.Sprint(1000 + g.rnd.IntN(5)), Protocol: v1alpha1.ProtoTCP}}}}
	peer := v1alpha1.IngressCommonRule{FromEndpoints: []metav1.LabelSelector{{MatchLabels: map[string]string{"group": fmt.Sprint("g", g.rnd.IntN(4))}}}}
	switch g.rnd.IntN(8) {
	case 0:
		r.Ingress = append(slices.Clone(r.Ingress), v1alpha1.IngressRule{IngressCommonRule: peer, ToPorts: port})
	case 1:
		port[0].Rules = &v1alpha1.L7Rules{HTTP: []v1alpha1.PortRuleHTTP{{Method: "GET", Path: "/" + fmt.Sprint(g.rnd.IntN(3))}}}
		r.Ingress = append(slices.Clone(r.Ingress), v1alpha1.IngressRule{IngressCommonRule: peer, ToPorts: port})
	case 2:
		r.IngressDeny = append(slices.Clone(r.IngressDeny), v1alpha1.IngressDenyRule{IngressCommonRule: peer, ToPorts: []v1alpha1.PortDenyRule{{Ports: port[0].Ports}}})
	case 3:
		r.Ingress = append(slices.Clone(r.Ingress), v1alpha1.IngressRule{IngressCommonRule: v1alpha1.IngressCommonRule{FromCIDR: []v1alpha1.CIDR{v1alpha1.CIDR(fmt.Sprintf("10.%d.0.0/16", g.rnd.IntN(3)))}}, ToPorts: port})
	case 4:
		// Invalid: a protocol policy has no ports for.
		port[0].Ports[0].Protocol = "ICMP"
		r.Ingress = append(slices.Clone(r.Ingress), v1alpha1.IngressRule{IngressCommonRule: peer, ToPorts: port})
	case 5:
		// Invalid: a selector's label key.
		r.EndpointSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"bad key!": "x"}}
	case 6:
		r.EndpointSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprint("a", g.rnd.IntN(3))}}
	default:
		if len(r.Ingress) > 0 {
			r.Ingress = slices.Delete(slices.Clone(r.Ingress), 0, 1)
		}
	}
}

// next returns a changed copy of p (p itself unchanged: informers' objects
// are never modified).
func (g reuseGen) next(p *v1alpha1.MembraneNetworkPolicy) *v1alpha1.MembraneNetworkPolicy {
	q := p.DeepCopy()
	switch k := g.rnd.IntN(10); {
	case k < 5 && len(q.Specs) > 0:
		g.change(&q.Specs[g.rnd.IntN(len(q.Specs))])
	case k < 6:
		q.Specs = append(q.Specs, g.rule())
	case k < 7 && len(q.Specs) > 0:
		i := g.rnd.IntN(len(q.Specs))
		q.Specs = slices.Delete(q.Specs, i, i+1)
	case k < 8:
		if q.Spec == nil {
			r := g.rule()
			q.Spec = &r
		} else {
			g.change(q.Spec)
		}
	case k < 9:
		q.Spec = nil
	default:
		q.Namespace = []string{"ns", ""}[g.rnd.IntN(2)] // "" is invalid
	}
	return q
}

// TestFromMembranePolicyReusing converts random versions of policies one
// after the other, reusing the previous conversion, and checks each
// against a conversion from scratch: the same rules and the same errors
// (the fields at fault named), with invalid versions leaving the last
// valid one to reuse. Unchanged rules are taken from the last conversion.
func TestFromMembranePolicyReusing(t *testing.T) {
	var reused, valid, invalid int
	for seed := range uint64(30) {
		g := reuseGen{rand.New(rand.NewPCG(seed, 2))}
		p := &v1alpha1.MembraneNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"}}
		for range 1 + g.rnd.IntN(4) {
			p.Specs = append(p.Specs, g.rule())
		}
		var reuse Reuse
		lastValid := p
		for step := range 60 {
			switch {
			case step == 0:
			case p != lastValid && g.rnd.IntN(2) == 0:
				p = g.next(lastValid) // an invalid version fixed
			default:
				p = g.next(p)
			}
			want, wantErrs := FromMembranePolicy(p)
			got, next, errs := FromMembranePolicyReusing(p, reuse)
			if diff := cmp.Diff(wantErrs, errs); diff != "" {
				t.Fatalf("seed %d step %d: errors (-from scratch +reusing):\n%s", seed, step, diff)
			}
			if diff := cmp.Diff(want, got, cmpOpts...); diff != "" {
				t.Fatalf("seed %d step %d: policy (-from scratch +reusing):\n%s", seed, step, diff)
			}
			if len(errs) > 0 {
				invalid++
				if !sameReuse(next, reuse) {
					t.Fatalf("seed %d step %d: an invalid version replaced what the next one reuses", seed, step)
				}
				continue
			}
			valid++
			lastValid = p
			// A rule equal to the last valid version's in its place is
			// the same conversion (its slices shared).
			for i := range p.Specs {
				j, k := i, i // in got.Rules, in reuse.rules
				if p.Spec != nil {
					j++
				}
				if reuse.spec != nil {
					k++
				}
				if i < len(reuse.specs) && cmp.Equal(p.Specs[i], reuse.specs[i]) && len(got.Rules[j].Ingress) > 0 {
					if &got.Rules[j].Ingress[0] != &reuse.rules[k].Ingress[0] {
						t.Fatalf("seed %d step %d: specs[%d] unchanged but converted again", seed, step, i)
					}
					reused++
				}
			}
			reuse = next
		}
	}
	t.Logf("%d valid versions, %d invalid, %d rules reused", valid, invalid, reused)
	if valid == 0 || invalid == 0 || reused == 0 {
		t.Errorf("cases not covered: %d valid, %d invalid, %d reused", valid, invalid, reused)
	}
}

func sameReuse(a, b Reuse) bool {
	return a.spec == b.spec && len(a.specs) == len(b.specs) && (len(a.specs) == 0 || &a.specs[0] == &b.specs[0])
}
