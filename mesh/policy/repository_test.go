package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/membrane-mesh/membrane/mesh/identity"
)

// errorsByText compares errors by their text.
var errorsByText = cmp.Options{
	cmp.Comparer(func(a, b error) bool { return a.Error() == b.Error() }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
}

// TestRepositoryUnrelatedChange: a change to a rule selecting some
// endpoints compiles that rule only and resolves only the endpoints it
// selects; the others get their Result as it was.
func TestRepositoryUnrelatedChange(t *testing.T) {
	ids := IdentitySet{Identities: []Identity{
		{ID: 256, Labels: pod("ns", "app", "a")},
		{ID: 257, Labels: pod("ns", "app", "b")},
		{ID: 258, Labels: pod("ns", "app", "c")},
	}}
	policies := func(port uint16) []Policy {
		return []Policy{
			{Namespace: "ns", Name: "to-a", Rules: []Rule{{
				EndpointSelector: sel("app", "a"),
				Ingress:          []PeerRule{{Endpoints: []Selector{sel("app", "b")}, ToPorts: []PortRule{{Ports: []Port{{Port: port, Proto: TCP}}}}}},
			}}},
			{Namespace: "ns", Name: "to-b", Rules: []Rule{
				{EndpointSelector: sel("app", "b"), Ingress: []PeerRule{{Endpoints: []Selector{sel("app", "c")}}}},
				{EndpointSelector: sel("app", "b"), IngressDeny: []PeerRule{{Endpoints: []Selector{sel("app", "a")}}}},
			}},
		}
	}
	eps := []Endpoint{}
	for _, id := range ids.Identities {
		eps = append(eps, Endpoint{Identity: id.ID, Labels: id.Labels, Namespace: "ns"})
	}
	repo := NewRepository()
	repo.Update(policies(80), ids, Config{})
	for _, ep := range eps {
		repo.Resolve(ep)
	}
	if s := repo.Stats(); s != (Stats{Compiled: 3, Resolved: 3, Expanded: 3}) {
		t.Fatalf("first pass: %+v", s)
	}

	// Nothing changed: nothing compiled or resolved.
	repo.Update(policies(80), ids, Config{})
	for _, ep := range eps {
		repo.Resolve(ep)
	}
	if s := repo.Stats(); s != (Stats{Compiled: 3, Resolved: 3, Expanded: 3, Reused: 3}) {
		t.Fatalf("no change: %+v", s)
	}

	// to-a's rule moves to another port: one rule compiled, endpoint a
	// resolved again (its one rule expanded; merged in full, as that rule
	// holds all its entries), b and c reused.
	repo.Update(policies(8080), ids, Config{})
	got := map[identity.ID]Result{}
	for _, ep := range eps {
		got[ep.Identity] = repo.Resolve(ep)
	}
	if s := repo.Stats(); s != (Stats{Compiled: 4, Resolved: 4, Expanded: 4, Reused: 5}) {
		t.Errorf("one rule changed: %+v, want one rule compiled and one endpoint resolved", s)
	}
	for _, ep := range eps {
		if diff := cmp.Diff(Resolve(ep, policies(8080), ids, Config{}), got[ep.Identity], errorsByText); diff != "" {
			t.Errorf("endpoint %d (-from scratch +incremental):\n%s", ep.Identity, diff)
		}
	}

	// A new identity of app b: the one rule with a peer selector matching
	// it (to-a's, from app b) is compiled again, endpoint a resolved
	// again, b and c reused.
	ids.Identities = append(ids.Identities, Identity{ID: 259, Labels: pod("ns", "app", "b", "v", "2")})
	repo.Update(policies(8080), ids, Config{})
	for _, ep := range eps {
		got[ep.Identity] = repo.Resolve(ep)
	}
	if s := repo.Stats(); s.Compiled != 5 || s.Resolved != 5 || s.Reused != 7 {
		t.Errorf("new identity: %+v, want one rule compiled and one endpoint resolved", s)
	}
	for _, ep := range eps {
		if diff := cmp.Diff(Resolve(ep, policies(8080), ids, Config{}), got[ep.Identity], errorsByText); diff != "" {
			t.Errorf("endpoint %d (-from scratch +incremental):\n%s", ep.Identity, diff)
		}
	}
}

// TestRepositoryIdentityChanges: identities that come, go or change
// compile again only the rules whose peers can include them.
func TestRepositoryIdentityChanges(t *testing.T) {
	policies := []Policy{
		{Namespace: "ns", Name: "web", Rules: []Rule{
			{EndpointSelector: sel("app", "web"), Ingress: []PeerRule{{Endpoints: []Selector{sel("app", "client")}}}},
			{EndpointSelector: sel("app", "web"), Ingress: []PeerRule{{Endpoints: []Selector{sel("app", "monitor")}}}},
			{EndpointSelector: sel("app", "web"), Egress: []PeerRule{{CIDRs: []CIDRRule{{CIDR: netip.MustParsePrefix("10.0.0.0/8")}}}}},
		}},
	}
	ids := IdentitySet{Identities: []Identity{
		{ID: 256, Labels: pod("ns", "app", "web")},
		{ID: 257, Labels: pod("ns", "app", "client")},
		{ID: 258, Labels: pod("ns", "app", "db")},
	}}
	repo := NewRepository()
	check := func(what string, wantCompiled int) {
		t.Helper()
		before := repo.Stats().Compiled
		res := repo.Update(policies, ids, Config{})
		if n := repo.Stats().Compiled - before; n != wantCompiled {
			t.Errorf("%s: %d rules compiled, want %d", what, n, wantCompiled)
		}
		scratch := New(policies, ids, Config{})
		if diff := cmp.Diff(scratch.Problems(), res.Problems(), errorsByText); diff != "" {
			t.Errorf("%s: problems (-from scratch +incremental):\n%s", what, diff)
		}
		for _, id := range ids.Identities {
			ep := Endpoint{Identity: id.ID, Labels: id.Labels, Namespace: "ns"}
			if diff := cmp.Diff(scratch.Resolve(ep), repo.Resolve(ep), errorsByText); diff != "" {
				t.Errorf("%s: endpoint %d (-from scratch +incremental):\n%s", what, id.ID, diff)
			}
		}
	}
	web := policies[:1]
	policies = web
	check("first", 3)
	// A new pod no rule's peers select: nothing.
	ids.Identities = append(ids.Identities, Identity{ID: 259, Labels: pod("ns", "app", "batch")})
	check("identity selected by no peer selector", 0)
	ids.Identities = ids.Identities[:3]
	check("that identity gone", 0)
	ids.Identities = append(ids.Identities, Identity{ID: 259, Labels: pod("ns", "app", "batch")})
	check("back", 0)
	// The cluster entity counts every pod identity.
	policies = append(web, Policy{Namespace: "ns", Name: "db", Rules: []Rule{
		{EndpointSelector: sel("app", "db"), Ingress: []PeerRule{{Entities: []Entity{EntityCluster}}}},
	}})
	check("a policy with the cluster entity", 1)
	// A monitor: the rule from monitors and the cluster entity's.
	ids.Identities = append(ids.Identities, Identity{ID: 260, Labels: pod("ns", "app", "monitor")})
	check("identity a peer selector selects", 2)
	// The batch pod's identity gets labels of a client (same ID, as a
	// test's fake may): the rule from clients and the cluster entity's.
	ids.Identities = slices.Clone(ids.Identities)
	ids.Identities[3].Labels = pod("ns", "app", "client")
	check("identity relabeled", 2)
	// The monitor goes: the rule from monitors and the cluster entity's.
	ids.Identities = slices.Delete(slices.Clone(ids.Identities), 4, 5)
	check("identity removed", 2)
	// Egress to every peer on a named port: every identity's named ports
	// count.
	policies = append(policies, Policy{Namespace: "ns", Name: "named", Rules: []Rule{
		{EndpointSelector: sel("app", "web"), Egress: []PeerRule{{Entities: []Entity{EntityAll}, ToPorts: []PortRule{{Ports: []Port{{Name: "metrics", Proto: TCP}}}}}}},
	}})
	check("a policy with an egress named port", 1)
	ids.Identities = slices.Clone(ids.Identities)
	ids.Identities[2].NamedPorts = map[string][]NamedPort{"metrics": {{Port: 9090, Proto: TCP}}}
	check("named ports changed", 2) // and the cluster entity's
	// Nothing changed: nothing.
	check("no change", 0)
}

// TestRepositoryMatchesFromScratch applies random changes to policies,
// identities, learned names and configuration, and checks after each that
// the Repository's Results, problems and CIDR identities equal a
// from-scratch resolution's.
func TestRepositoryMatchesFromScratch(t *testing.T) {
	var total Stats
	for seed := range uint64(40) {
		// Half the seeds: plain allow and deny rules only, changed
		// mostly one rule at a time (the patched path).
		plain := seed%2 == 1
		t.Run(fmt.Sprintf("seed=%d,plain=%v", seed, plain), func(t *testing.T) {
			g := newPolicyGen(seed)
			g.plain = plain
			repo := NewRepository()
			for step := range 40 {
				if step > 0 {
					g.mutate()
				}
				ids := g.identitySet()
				scratch := New(g.policies, ids, g.cfg)
				inc := repo.Update(g.policies, ids, g.cfg)
				if diff := cmp.Diff(scratch.Problems(), inc.Problems(), errorsByText); diff != "" {
					t.Fatalf("step %d: problems (-from scratch +incremental):\n%s", step, diff)
				}
				if diff := cmp.Diff(scratch.CIDRIdentities(), inc.CIDRIdentities(), errorsByText); diff != "" {
					t.Fatalf("step %d: CIDR identities (-from scratch +incremental):\n%s", step, diff)
				}
				// Some endpoints only now and then, so cached Results
				// also meet changes they missed.
				for i, ep := range g.endpoints() {
					if (i+step)%3 == 0 {
						continue
					}
					want, got := scratch.Resolve(ep), repo.Resolve(ep)
					if diff := cmp.Diff(want, got, errorsByText); diff != "" {
						t.Fatalf("step %d (%s): endpoint %d %v (-from scratch +incremental):\n%s", step, g.last, ep.Identity, ep.Labels, diff)
					}
				}
			}
			s := repo.Stats()
			total.Reused += s.Reused
			total.Patched += s.Patched
			total.Resolved += s.Resolved
			t.Logf("%+v", s)
		})
	}
	// The cases cover every path.
	if total.Reused == 0 || total.Patched == 0 || total.Patched == total.Resolved {
		t.Errorf("over all seeds: %+v: want Results reused, patched and built in full", total)
	}
}

// policyGen makes random policies and identities, and changes them.
type policyGen struct {
	rnd      *rand.Rand
	ids      []Identity
	policies []Policy
	names    []LearnedName
	cfg      Config
	nextID   identity.ID
	last     string // the last change
	// plain: no L7, DNS, authentication or host rules; mostly rule
	// changes.
	plain bool
}

var genApps = []string{"a", "b", "c", "d"}

func newPolicyGen(seed uint64) *policyGen {
	g := &policyGen{rnd: rand.New(rand.NewPCG(seed, 1)), nextID: 256, cfg: Config{ProxyPort: 15001, DNSProxyPort: 15053}}
	for range 6 {
		g.addIdentity()
	}
	for i := range 4 {
		g.policies = append(g.policies, g.policy(fmt.Sprintf("p%d", i)))
	}
	g.names = []LearnedName{{Name: "a.example.com.", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}}}
	return g
}

func (g *policyGen) pick(s []string) string { return s[g.rnd.IntN(len(s))] }

func (g *policyGen) addIdentity() {
	ns := g.pick([]string{"ns", "other"})
	l := pod(ns, "app", g.pick(genApps), "tier", g.pick([]string{"web", "db"}))
	id := Identity{ID: g.nextID, Labels: l}
	if g.rnd.IntN(2) == 0 {
		id.NamedPorts = map[string][]NamedPort{"http": {{Port: uint16(8000 + g.rnd.IntN(3)), Proto: TCP}}}
	}
	g.nextID++
	g.ids = append(g.ids, id)
}

func (g *policyGen) identitySet() IdentitySet {
	since := map[string]time.Time{}
	for _, p := range g.policies {
		for _, r := range p.Rules {
			for _, pr := range r.Egress {
				for _, f := range pr.FQDNs {
					since[SinceKey(p, f)] = time.Time{}
				}
			}
		}
	}
	return IdentitySet{Identities: slices.Clone(g.ids), Names: slices.Clone(g.names), FQDNSince: since}
}

// endpoints are one endpoint per identity, with a named port or not.
func (g *policyGen) endpoints() []Endpoint {
	var out []Endpoint
	for i, id := range g.ids {
		ep := Endpoint{Identity: id.ID, Labels: id.Labels, Namespace: id.Labels[identity.NamespaceLabel]}
		if i%2 == 0 {
			ep.NamedPorts = map[string]NamedPort{"http": {Port: 8080, Proto: TCP}}
		}
		out = append(out, ep)
	}
	return out
}

func (g *policyGen) selector() Selector {
	switch g.rnd.IntN(7) {
	case 0:
		return Selector{}
	case 6:
		return sel("tier", g.pick([]string{"web", "db"}))
	case 1:
		return Selector{MatchExpressions: []Requirement{{Key: "app", Operator: OpIn, Values: []string{g.pick(genApps), g.pick(genApps)}}}}
	case 2:
		return Selector{MatchExpressions: []Requirement{{Key: "app", Operator: "Bad"}}}
	default:
		return sel("app", g.pick(genApps))
	}
}

func (g *policyGen) ports() []PortRule {
	k := g.rnd.IntN(6)
	if g.plain && (k == 2 || k == 3) {
		k = 4
	}
	switch k {
	case 0:
		return nil
	case 1:
		return []PortRule{{Ports: []Port{{Name: "http", Proto: TCP}}}}
	case 2:
		return []PortRule{{Ports: []Port{{Port: 80, Proto: TCP}}, HTTP: []HTTPRule{{Method: "GET", Path: "/" + g.pick(genApps)}}}}
	case 3:
		return []PortRule{{Ports: []Port{{Port: 53, Proto: UDP}}, DNS: []FQDN{{MatchPattern: "*.example.com"}}}}
	default:
		return []PortRule{{Ports: []Port{{Port: uint16(1000 + g.rnd.IntN(20)), Proto: g.pick2(TCP, UDP)}}}}
	}
}

func (g *policyGen) pick2(a, b Proto) Proto {
	if g.rnd.IntN(2) == 0 {
		return a
	}
	return b
}

func (g *policyGen) peerRule() PeerRule {
	var pr PeerRule
	switch g.rnd.IntN(6) {
	case 0:
		pr.Entities = []Entity{g.pickEntity()}
	case 1:
		pr.CIDRs = []CIDRRule{{CIDR: netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", g.rnd.IntN(4))), Except: []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24")}}}
	case 2:
		pr.FQDNs = []FQDN{{MatchPattern: "*.example.com"}}
	default:
		pr.Endpoints = []Selector{g.selector()}
	}
	pr.ToPorts = g.ports()
	pr.AuthRequired = !g.plain && g.rnd.IntN(8) == 0
	return pr
}

func (g *policyGen) pickEntity() Entity {
	if g.plain {
		return []Entity{EntityAll, EntityWorld}[g.rnd.IntN(2)]
	}
	return []Entity{EntityAll, EntityWorld, EntityCluster, EntityHost, EntityInit}[g.rnd.IntN(5)]
}

func (g *policyGen) rule() Rule {
	r := Rule{EndpointSelector: g.selector()}
	for range g.rnd.IntN(3) {
		pr := g.peerRule()
		switch g.rnd.IntN(4) {
		case 0:
			r.Ingress = append(r.Ingress, pr)
		case 1:
			r.IngressDeny = append(r.IngressDeny, pr)
		case 2:
			pr.FQDNs = nil
			r.EgressDeny = append(r.EgressDeny, pr)
		default:
			r.Egress = append(r.Egress, pr)
		}
	}
	return r
}

func (g *policyGen) policy(name string) Policy {
	p := Policy{Kind: "MembraneNetworkPolicy", Namespace: g.pick([]string{"ns", "other", ""}), Name: name}
	for range 1 + g.rnd.IntN(3) {
		p.Rules = append(p.Rules, g.rule())
	}
	return p
}

// mutate makes one change, the kind at random.
func (g *policyGen) mutate() {
	k := g.rnd.IntN(13)
	if g.plain && k < 8 {
		k = 0
	}
	switch {
	case k < 4 && len(g.policies) > 0:
		// Change one rule of one policy (a copy: the Repository keeps
		// the previous version).
		i := g.rnd.IntN(len(g.policies))
		p := g.policies[i]
		p.Rules = slices.Clone(p.Rules)
		p.Rules[g.rnd.IntN(len(p.Rules))] = g.rule()
		g.policies[i] = p
		g.last = "rule of " + p.Name + " changed"
	case k < 5:
		g.policies = append(g.policies, g.policy(fmt.Sprintf("p%d", len(g.policies)+g.rnd.IntN(100))))
		slices.SortFunc(g.policies, func(a, b Policy) int { return strings.Compare(a.String(), b.String()) })
		g.policies = slices.CompactFunc(g.policies, func(a, b Policy) bool { return a.String() == b.String() })
		g.last = "policy added"
	case k < 6 && len(g.policies) > 1:
		i := g.rnd.IntN(len(g.policies))
		g.last = "policy " + g.policies[i].Name + " removed"
		g.policies = slices.Delete(slices.Clone(g.policies), i, i+1)
	case k < 7:
		g.addIdentity()
		g.last = "identity added"
	case k < 8 && len(g.ids) > 1:
		// A label change: a pod gets another identity.
		i := g.rnd.IntN(len(g.ids))
		g.ids = slices.Delete(slices.Clone(g.ids), i, i+1)
		g.addIdentity()
		g.last = "identity replaced"
	case k < 9:
		g.names = append(slices.Clone(g.names), LearnedName{Name: g.pick(genApps) + ".example.com.", IPs: []netip.Addr{netip.AddrFrom4([4]byte{192, 0, 2, byte(2 + g.rnd.IntN(50))})}})
		g.last = "name learned"
	case k < 10:
		g.cfg.MutualAuth = !g.cfg.MutualAuth
		g.last = "configuration changed"
	case k < 11 && len(g.ids) > 0:
		// Other labels under the same ID.
		i := g.rnd.IntN(len(g.ids))
		g.ids = slices.Clone(g.ids)
		g.ids[i].Labels = pod(g.pick([]string{"ns", "other"}), "app", g.pick(genApps), "tier", g.pick([]string{"web", "db"}))
		g.last = fmt.Sprintf("identity %d relabeled", g.ids[i].ID)
	case k < 12 && len(g.ids) > 1:
		i := g.rnd.IntN(len(g.ids))
		g.last = fmt.Sprintf("identity %d removed", g.ids[i].ID)
		g.ids = slices.Delete(slices.Clone(g.ids), i, i+1)
	case len(g.ids) > 0:
		// Other named ports, the labels the same.
		i := g.rnd.IntN(len(g.ids))
		g.ids = slices.Clone(g.ids)
		if g.ids[i].NamedPorts == nil {
			g.ids[i].NamedPorts = map[string][]NamedPort{"http": {{Port: uint16(8000 + g.rnd.IntN(3)), Proto: TCP}}}
		} else {
			g.ids[i].NamedPorts = nil
		}
		g.last = fmt.Sprintf("identity %d named ports changed", g.ids[i].ID)
	default:
		g.addIdentity()
		g.last = "identity added"
	}
}

// TestRepositorySelectorCaches: the peer selectors' matches and the
// endpoint selectors' are kept across Updates; a changed peer selector, a
// new or relabeled identity, a changed endpoint selector and an endpoint
// with other labels each give the entries a from-scratch resolution
// gives, and the peer matches are kept only while the identities are the
// same.
func TestRepositorySelectorCaches(t *testing.T) {
	ids := IdentitySet{Identities: []Identity{
		{ID: 300, Labels: pod("ns", "app", "a")},
		{ID: 301, Labels: pod("ns", "app", "b")},
		{ID: 302, Labels: pod("ns", "app", "web")},
	}}
	web := Endpoint{Identity: 302, Labels: pod("ns", "app", "web"), Namespace: "ns"}
	policy := func(subject string, peers ...string) []Policy {
		r := Rule{EndpointSelector: sel("app", subject)}
		for i, p := range peers {
			r.Ingress = append(r.Ingress, PeerRule{Endpoints: []Selector{sel("app", p)}, ToPorts: []PortRule{{Ports: []Port{{Port: uint16(80 + i), Proto: TCP}}}}})
		}
		return []Policy{{Kind: "MembraneNetworkPolicy", Namespace: "ns", Name: "p", Rules: []Rule{r}}}
	}
	// peers are the (remote identity, port) of ep's ingress allow entries
	// other than the host's, sorted.
	peers := func(res Result) []string {
		var out []string
		for _, d := range res.Rules {
			if d.Direction == Ingress && d.RemoteIdentity != identity.Host {
				out = append(out, fmt.Sprintf("%d:%d", d.RemoteIdentity, d.Port))
			}
		}
		slices.Sort(out)
		return out
	}
	repo := NewRepository()
	step := func(name string, policies []Policy, ids IdentitySet, ep Endpoint, want ...string) {
		t.Helper()
		repo.Update(policies, ids, Config{})
		got := repo.Resolve(ep)
		if diff := cmp.Diff(New(policies, ids, Config{}).Resolve(ep), got, errorsByText); diff != "" {
			t.Fatalf("%s: (-from scratch +repository):\n%s", name, diff)
		}
		slices.Sort(want)
		if g := peers(got); !slices.Equal(g, want) {
			t.Errorf("%s: entries %v, want %v", name, g, want)
		}
	}
	step("first", policy("web", "a", "a"), ids, web, "300:80", "300:81")
	matches := repo.cur.peerMatches
	if len(matches) != 1 {
		t.Errorf("peer matches: %d, want 1 (one selector for two rules)", len(matches))
	}
	step("a peer selector changed", policy("web", "a", "b"), ids, web, "300:80", "301:81")
	if len(repo.cur.peerMatches) != 2 || reflect.ValueOf(repo.cur.peerMatches).Pointer() != reflect.ValueOf(matches).Pointer() {
		t.Errorf("the same identities: the peer matches are not kept (%d)", len(repo.cur.peerMatches))
	}
	more := ids
	more.Identities = append(slices.Clone(ids.Identities), Identity{ID: 303, Labels: pod("ns", "app", "a", "v", "2")})
	step("a new identity", policy("web", "a", "b"), more, web, "300:80", "303:80", "301:81")
	if reflect.ValueOf(repo.cur.peerMatches).Pointer() == reflect.ValueOf(matches).Pointer() {
		t.Error("new identity: the peer matches of the old identities are kept")
	}
	relabeled := IdentitySet{Identities: slices.Clone(more.Identities)}
	relabeled.Identities[0].Labels = pod("ns", "app", "b")
	step("an identity relabeled", policy("web", "a", "b"), relabeled, web, "303:80", "300:81", "301:81")
	step("the endpoint selector changed", policy("b", "a", "b"), relabeled, Endpoint{Identity: 301, Labels: pod("ns", "app", "b"), Namespace: "ns"}, "303:80", "300:81", "301:81")
	step("no longer selected", policy("b", "a", "b"), relabeled, web)
	step("an endpoint of other labels", policy("b", "a", "b"), relabeled, Endpoint{Identity: 300, Labels: pod("ns", "app", "b"), Namespace: "ns"}, "303:80", "300:81", "301:81")
}
