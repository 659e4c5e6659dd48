package translate

import (
	"fmt"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// Translator translates nodes as Node.Resources does, and reuses what it
// built for the previous node where the input is the same: the regexes it
// checked, the route configuration of every chain whose rules did not
// change, the listener while the set of chains stays, and the cluster. A
// one-rule change of a large node so costs one route configuration, and
// the unchanged resources are the same objects as before (which the xDS
// server uses to skip hashing them again). The output is equal to
// Node.Resources's; the reused resources are shared and must not be
// modified. A Translator is not safe for concurrent use.
type Translator struct {
	regexes     regexes
	routes      map[string]routeEntry // by route configuration name
	listenerKey string
	listener    *listenerv3.Listener
	cluster     *clusterv3.Cluster
}

// routeEntry is a route configuration and (a copy of) the rules it was
// built from.
type routeEntry struct {
	egress, ingress []namedRule
	route           *routev3.RouteConfiguration
}

// NewTranslator returns a Translator that has built nothing yet.
func NewTranslator() *Translator { return &Translator{} }

// Resources translates n (see Node.Resources).
func (t *Translator) Resources(n Node) (Resources, error) {
	rx := &t.regexes
	rx.begin()
	if err := n.validate(rx.check); err != nil {
		return Resources{}, fmt.Errorf("invalid L7 configuration: %w", err)
	}

	var out Resources
	routes := map[string]routeEntry{}
	cs := chains(n.Ports, n.GroupLabels)
	names := make(map[string]bool, len(cs))
	for _, c := range cs {
		if names[c.name()] {
			return Resources{}, fmt.Errorf("invalid L7 configuration: groupLabels: two filter chains named %s", c.name())
		}
		names[c.name()] = true
	}
	l, err := t.buildListener(n, cs)
	if err != nil {
		return Resources{}, fmt.Errorf("listener %s: %w", ListenerName, err)
	}
	out.Listeners = []*listenerv3.Listener{l}
	for _, c := range cs {
		name := c.name()
		e, ok := t.routes[name]
		if !ok || !equalRules(e.egress, rulesOf(c.egress)) || !equalRules(e.ingress, rulesOf(c.ingress)) {
			rc, err := routeConfig(c, rx)
			if err != nil {
				return Resources{}, fmt.Errorf("route configuration %s: %w", name, err)
			}
			e = routeEntry{egress: cloneRules(rulesOf(c.egress)), ingress: cloneRules(rulesOf(c.ingress)), route: rc}
		}
		routes[name] = e
		out.Routes = append(out.Routes, e.route)
	}
	t.routes = routes
	if t.cluster == nil {
		c, err := originalDstCluster()
		if err != nil {
			return Resources{}, fmt.Errorf("cluster %s: %w", OriginalDstCluster, err)
		}
		t.cluster = c
	}
	out.Clusters = []*clusterv3.Cluster{t.cluster}
	return out, nil
}

// buildListener is the listener of cs, the previous one when the node's
// settings and the chains' names and endpoints are the same (the filter
// chains and their matcher depend on nothing else).
func (t *Translator) buildListener(n Node, cs []chain) (*listenerv3.Listener, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s %d %q", n.ProxyPort, n.ListenAddress, n.UpstreamMark, n.AccessLogCluster)
	for _, c := range cs {
		b.WriteByte(' ')
		b.WriteString(c.name())
		for _, g := range c.groups() {
			for _, a := range g.endpoints {
				b.WriteByte(',')
				b.WriteString(a.String())
			}
		}
	}
	key := b.String()
	if t.listener != nil && key == t.listenerKey {
		return t.listener, nil
	}
	l, err := buildListener(n, cs)
	if err != nil {
		return nil, err
	}
	t.listener, t.listenerKey = l, key
	return l, nil
}

func rulesOf(g *group) []namedRule {
	if g == nil {
		return nil
	}
	return g.rules
}

// equalRules compares rules field by field (reflect.DeepEqual is several
// times slower, and this runs over every rule of the node).
func equalRules(a, b []namedRule) bool {
	return slices.EqualFunc(a, b, func(x, y namedRule) bool {
		return x.name == y.name && slices.Equal(x.Peers, y.Peers) &&
			slices.EqualFunc(x.HTTP, y.HTTP, func(p, q HTTPRule) bool {
				return p.Method == q.Method && p.Path == q.Path && p.Host == q.Host && slices.Equal(p.Headers, q.Headers)
			})
	})
}

// cloneRules copies rs deeply: the caller may change its Node afterwards.
func cloneRules(rs []namedRule) []namedRule {
	out := make([]namedRule, len(rs))
	for i, r := range rs {
		out[i] = namedRule{name: r.name, Rule: Rule{Peers: slices.Clone(r.Peers), HTTP: make([]HTTPRule, len(r.HTTP))}}
		for j, h := range r.HTTP {
			h.Headers = slices.Clone(h.Headers)
			out[i].HTTP[j] = h
		}
	}
	return out
}

// regexes remembers what it learned about regexes: whether they are valid
// and their matchers. It forgets those a translation did not use once
// they are most of what it holds.
type regexes struct {
	m    map[string]*regexInfo
	gen  uint64 // of the current translation
	used int    // entries the current translation used
}

type regexInfo struct {
	gen      uint64 // of the last translation that used it
	err      error  // of checkRegex
	checked  bool
	matchers []*matcherv3.StringMatcher // of stringMatchers; shared, read-only
}

// begin starts a translation.
func (rx *regexes) begin() {
	if rx.m == nil {
		rx.m = map[string]*regexInfo{}
	}
	if len(rx.m) > 2*rx.used+64 {
		for re, i := range rx.m {
			if i.gen != rx.gen {
				delete(rx.m, re)
			}
		}
	}
	rx.gen++
	rx.used = 0
}

func (rx *regexes) get(re string) *regexInfo {
	i, ok := rx.m[re]
	if !ok {
		i = &regexInfo{}
		rx.m[re] = i
	}
	if i.gen != rx.gen {
		i.gen = rx.gen
		rx.used++
	}
	return i
}

func (rx *regexes) check(re string) error {
	if _, _, _, ok := quickLiteral(re); ok {
		return nil // no need to remember it
	}
	i := rx.get(re)
	if !i.checked {
		i.err, i.checked = checkRegex(re), true
	}
	return i.err
}

func (rx *regexes) matchers(re string) []*matcherv3.StringMatcher {
	i := rx.get(re)
	if i.matchers == nil {
		i.matchers = stringMatchers(re)
	}
	return i.matchers
}
