// Package translate turns one node's L7 HTTP policy into the Envoy resources
// its node-local Envoy needs: a transparent listener with one filter chain
// per group of redirected pods in one direction on one port (the pods whose
// rules there are the same and come from the same policies: a Deployment's
// pods share one), one route configuration per chain carrying that chain's
// rules (Envoy's RBAC HTTP filter, configured per route), and an
// ORIGINAL_DST cluster that forwards what passes to where the client was
// going. It is pure (no I/O, no clocks): the agent feeds the result to its
// xDS snapshot cache.
//
// The rules live in the route configurations, not in the listener, so a
// change of rules changes one route configuration (delivered over RDS)
// and leaves the listener alone: Envoy reparses what changed, not the node.
// Which pods a chain serves lives in the listener's filter chain matcher,
// not in the chains, so a pod coming or going changes the matcher and no
// chain: Envoy drains no connection for it.
//
// Shape of the output:
//
//   - Listener "membrane-proxy" on ListenAddress:ProxyPort (127.0.0.1 by
//     default), transparent, with the envoy.filters.listener.original_dst
//     listener filter and, with an UpstreamMark, original_src (upstream
//     connections leave from the client's address, with that mark). Its
//     filter_chain_matcher selects a chain by destination port, then the
//     destination address (a pod with ingress rules), then the source
//     address (a pod with egress rules). A connection matching no chain is
//     closed. When a pod's egress and another local pod's ingress are both
//     policed on the same port, a connection between them passes the proxy
//     once, through a third chain of the two groups that runs both RBAC
//     filters, egress first.
//   - Chains are named after their direction(s), group(s) and port:
//     "ingress/group-<digest of the policies>:8080", or with the pod's
//     address instead of the group ("ingress/10.0.1.5:8080") where pods
//     under the same policies have different rules there.
//   - Each chain: an HTTP connection manager (codec AUTO, routes over RDS
//     through ADS: the route configuration named after the chain, no
//     generated x-request-id) with the HTTP filters membrane.rbac.egress
//     and/or membrane.rbac.ingress (Envoy's RBAC filter; their own
//     configuration denies every request, so a route without rules of its
//     own is closed) and envoy.filters.http.router (no dynamic stats),
//     and, when Node.AccessLogCluster is set, a gRPC HTTP access log (log
//     name "membrane", 64 KiB buffers) to that cluster.
//   - Each route configuration (named after its chain): every request to the
//     ORIGINAL_DST cluster, no route timeout, and per RBAC filter of the chain
//     its rules as the route's typed_per_filter_config (one ALLOW policy per
//     rule, so a request no rule allows gets Envoy's 403).
//   - Cluster "membrane-original-dst" (ORIGINAL_DST, CLUSTER_PROVIDED, 5 s
//     connect timeout) that speaks the downstream's HTTP version upstream.
//     The access-log cluster is not generated: it is static in Envoy's
//     bootstrap.
//
// The output is deterministic: the same Node gives equal resources (filter
// chains and route configurations sorted by port, ingress group, egress
// group), and the Any fields are marshalled deterministically, so equal
// inputs give equal bytes. A Translator gives the same output as
// Node.Resources and reuses what it built for an unchanged chain.
package translate

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	grpcalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	origdstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	origsrcv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_src/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Names of the generated resources and of what they refer to.
const (
	ListenerName = "membrane-proxy"
	// NoPortsChain is the listener's one filter chain while no port is
	// redirected to it (no filters: it closes what it gets).
	NoPortsChain       = "no-redirected-ports"
	OriginalDstCluster = "membrane-original-dst"
	AccessLogName      = "membrane"
	// RBACFilterPrefix and a Direction name a chain's RBAC filter: the key
	// of its rules in a route's typed_per_filter_config.
	RBACFilterPrefix = "membrane.rbac."
)

// Well-known Envoy extension names.
const (
	originalDstFilter = "envoy.filters.listener.original_dst"
	originalSrcFilter = "envoy.filters.listener.original_src"
	hcmFilter         = "envoy.filters.network.http_connection_manager"
	routerFilter      = "envoy.filters.http.router"
	grpcAccessLogger  = "envoy.access_loggers.http_grpc"
	httpProtocolOpts  = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

const connectTimeout = 5 * time.Second

// accessLogBuffer is what each Envoy worker buffers of access log entries
// before it sends them (some 100 requests' worth).
const accessLogBuffer = 64 << 10

// Resources is one node's L7 Envoy configuration, split per xDS type.
type Resources struct {
	Listeners []*listenerv3.Listener
	// Routes are the filter chains' route configurations, served over RDS.
	Routes   []*routev3.RouteConfiguration
	Clusters []*clusterv3.Cluster
	// Secrets are SDS secrets (the node's SVIDs and trust bundle, the
	// gateway listeners' certificates); this package adds none.
	Secrets []*tlsv3.Secret
}

// Resources translates n. Every error is a problem of the input (see
// Validate). A node with no redirected ports keeps its listener, with one
// filter chain of no filters that closes every connection (Envoy refuses
// a listener without filter chains): its first redirected port is then a
// change of the listener's filter chains, which Envoy applies in place,
// not a new listener to bind and start.
func (n Node) Resources() (Resources, error) {
	return NewTranslator().Resources(n)
}

// side is the rules of one pod in one direction on one port, merged from
// every Port entry for it.
type side struct {
	dir      Direction
	endpoint netip.Addr
	port     uint16
	rules    []namedRule
	origins  []string
}

// namedRule is a rule with its place in its side ("rules[2]"), which
// names its RBAC policy.
type namedRule struct {
	name string
	Rule
}

// group is the rules of one direction on one port that one filter chain
// and route configuration enforce for its endpoints. The pods whose rules
// there come from the same origins share one when those rules are the same
// for all of them (a Deployment's pods under one policy); otherwise each
// pod has its own. Label is how names show it: "group-" and a digest of
// the origins, which stays while the rules change (a rule change is a
// change of the route configuration only) and while pods come and go (a
// change of the listener's matcher only, which drains no connection); or
// the pod's address.
type group struct {
	dir       Direction
	port      uint16
	label     string
	rules     []namedRule
	origins   []string
	endpoints []netip.Addr // sorted
}

// chain is one filter chain: the connections to port from an endpoint of
// egress (if set) to an endpoint of ingress (if set), policed by egress
// then ingress.
type chain struct {
	port            uint16
	egress, ingress *group
}

func (c chain) name() string {
	var parts []string
	if c.egress != nil {
		parts = append(parts, "egress/"+c.egress.label)
	}
	if c.ingress != nil {
		parts = append(parts, "ingress/"+c.ingress.label)
	}
	return fmt.Sprintf("%s:%d", strings.Join(parts, "+"), c.port)
}

// groups are the chain's groups in the order their filters run.
func (c chain) groups() []*group {
	var out []*group
	for _, g := range []*group{c.egress, c.ingress} {
		if g != nil {
			out = append(out, g)
		}
	}
	return out
}

// StatPrefix is the stat prefix of the filter chain named name (the name
// of its route configuration too): the name with every character that is
// not a letter or digit replaced by '_' (dots would split Envoy's stat
// names).
func StatPrefix(name string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, name)
}

// chains merges the ports per (direction, endpoint, port) into sides,
// groups the sides (labelled by labels, else by sharedLabel), and pairs
// every egress group with every ingress group of the same port (a
// connection between two policed pods of the node passes the proxy once,
// through both). Sorted by port, then ingress, then egress label.
func chains(ports []Port, labels []GroupLabel) []chain {
	labelOf := map[string]string{}
	for _, gl := range labels {
		labelOf[groupKey(gl.Direction, gl.Port, gl.Origins)] = gl.Label
	}
	type key struct {
		dir      Direction
		endpoint netip.Addr
		port     uint16
	}
	sides := map[key]*side{}
	var order []key
	for _, p := range ports {
		k := key{p.Direction, p.Endpoint.Unmap(), p.Port}
		s, ok := sides[k]
		if !ok {
			s = &side{dir: k.dir, endpoint: k.endpoint, port: k.port}
			sides[k] = s
			order = append(order, k)
		}
		for _, r := range p.Rules {
			s.rules = append(s.rules, namedRule{"rules[" + strconv.Itoa(len(s.rules)) + "]", r})
		}
		s.origins = append(s.origins, p.Origins...)
	}
	// Sides of one direction and port whose rules come from the same
	// origins form a group when their rules are all the same.
	type sourceKey struct {
		dir     Direction
		port    uint16
		origins string
	}
	bySource := map[sourceKey][]*side{}
	var keys []sourceKey
	for _, k := range order {
		s := sides[k]
		slices.Sort(s.origins)
		s.origins = slices.Compact(s.origins)
		gk := sourceKey{s.dir, s.port, strings.Join(s.origins, "\n")}
		if _, ok := bySource[gk]; !ok {
			keys = append(keys, gk)
		}
		bySource[gk] = append(bySource[gk], s)
	}
	byPort := map[uint16]struct{ egress, ingress []*group }{}
	var portOrder []uint16
	for _, gk := range keys {
		ss := bySource[gk]
		var gs []*group
		if !slices.ContainsFunc(ss[1:], func(s *side) bool { return !equalRules(s.rules, ss[0].rules) }) {
			label, ok := labelOf[groupKey(gk.dir, gk.port, ss[0].origins)]
			if !ok {
				label = sharedLabel(gk.dir, gk.port, ss[0].origins)
			}
			g := &group{dir: gk.dir, port: gk.port, label: label, rules: ss[0].rules, origins: ss[0].origins}
			for _, s := range ss {
				g.endpoints = append(g.endpoints, s.endpoint)
			}
			slices.SortFunc(g.endpoints, netip.Addr.Compare)
			gs = append(gs, g)
		} else {
			for _, s := range ss {
				gs = append(gs, &group{dir: s.dir, port: s.port, label: s.endpoint.String(), rules: s.rules, origins: s.origins, endpoints: []netip.Addr{s.endpoint}})
			}
		}
		bp, ok := byPort[gk.port]
		if !ok {
			portOrder = append(portOrder, gk.port)
		}
		if gk.dir == Ingress {
			bp.ingress = append(bp.ingress, gs...)
		} else {
			bp.egress = append(bp.egress, gs...)
		}
		byPort[gk.port] = bp
	}
	var out []chain
	for _, port := range portOrder {
		bp := byPort[port]
		for _, in := range bp.ingress {
			out = append(out, chain{port: port, ingress: in})
		}
		for _, eg := range bp.egress {
			out = append(out, chain{port: port, egress: eg})
			for _, in := range bp.ingress {
				out = append(out, chain{port: port, egress: eg, ingress: in})
			}
		}
	}
	label := func(g *group) string {
		if g == nil {
			return ""
		}
		return g.label
	}
	slices.SortFunc(out, func(a, b chain) int {
		return cmp.Or(cmp.Compare(a.port, b.port), cmp.Compare(label(a.ingress), label(b.ingress)), cmp.Compare(label(a.egress), label(b.egress)))
	})
	return out
}

// sharedLabel names the group of the sides of dir and port whose rules
// come from origins.
func sharedLabel(dir Direction, port uint16, origins []string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%d\n%s", dir, port, strings.Join(origins, "\n"))
	return "group-" + hex.EncodeToString(h.Sum(nil)[:6])
}

// groupKey identifies the group of the sides of dir and port whose rules
// come from origins.
func groupKey(dir Direction, port uint16, origins []string) string {
	return fmt.Sprintf("%s %d %s", dir, port, strings.Join(origins, "\n"))
}

// labelKey identifies label among the labels of the groups of dir and
// port: one group each.
func labelKey(dir Direction, port uint16, label string) string {
	return fmt.Sprintf("%s %d %s", dir, port, label)
}

// Group is a group of pods that share a filter chain: those whose rules
// in one direction on one port come from the same origins, and are the
// same.
type Group struct {
	GroupLabel
	Endpoints []netip.Addr `json:"endpoints"` // sorted
}

// ValidateGroups reports every problem of groups (e.g. read back from a
// file) that would keep InheritLabels from labelling each group of a node
// once, each naming its field, joined.
func ValidateGroups(groups []Group) error {
	var errs []error
	labels := make([]GroupLabel, len(groups))
	for i, g := range groups {
		labels[i] = g.GroupLabel
		if !slices.IsSortedFunc(g.Endpoints, netip.Addr.Compare) {
			errs = append(errs, fmt.Errorf("groups[%d].endpoints: must be sorted", i))
		}
		for j, a := range g.Endpoints {
			if !a.IsValid() {
				errs = append(errs, fmt.Errorf("groups[%d].endpoints[%d]: missing or invalid address", i, j))
			}
		}
	}
	validateLabels(labels, func(i int, field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("groups[%d].%s: %s", i, field, fmt.Sprintf(format, args...)))
	})
	return errors.Join(errs...)
}

// Groups returns n's groups, labelled as n's chains are named. Pods with
// a chain of their own are not in a group.
func Groups(n Node) []Group {
	var out []Group
	seen := map[*group]bool{}
	for _, c := range chains(n.Ports, n.GroupLabels) {
		for _, g := range c.groups() {
			if seen[g] || !isGroupLabel(g.label) {
				continue
			}
			seen[g] = true
			out = append(out, Group{GroupLabel{g.dir, g.port, g.origins, g.label}, g.endpoints})
		}
	}
	return out
}

// InheritLabels returns the labels that keep the chains of prev (the
// Groups of the configuration published before next) where next's groups
// continue them, so Envoy keeps those chains and their connections
// (Envoy drains the connections of a chain that changes or goes):
//   - a group whose origins prev had keeps its label;
//   - a group with new origins takes the label of a group of prev, of the
//     same direction and port, whose origins next no longer has and which
//     shares pods with it (a policy selecting all of a group's pods joined
//     or left their set): the pairs sharing the most pods first, the
//     smaller label first on a tie;
//   - any other group gets a digest of its origins, made unique if a
//     group kept that label.
//
// Only the labels that differ from a digest of the group's origins are
// returned.
func InheritLabels(prev []Group, next Node) []GroupLabel {
	cur := Groups(Node{Ports: next.Ports})
	byKey := func(gs []Group) map[string]int {
		m := make(map[string]int, len(gs))
		for i, g := range gs {
			m[groupKey(g.Direction, g.Port, g.Origins)] = i
		}
		return m
	}
	prevByKey, curByKey := byKey(prev), byKey(cur)
	label := make([]string, len(cur))
	taken := map[string]bool{} // by labelKey
	take := func(i int, l string) {
		label[i] = l
		taken[labelKey(cur[i].Direction, cur[i].Port, l)] = true
	}
	for i, g := range cur {
		if j, ok := prevByKey[groupKey(g.Direction, g.Port, g.Origins)]; ok {
			take(i, prev[j].Label)
		}
	}
	// The pairs that share the most pods first.
	type pair struct{ cur, prev, shared int }
	var pairs []pair
	for i, g := range cur {
		if label[i] != "" {
			continue
		}
		for j, p := range prev {
			if _, stays := curByKey[groupKey(p.Direction, p.Port, p.Origins)]; stays || p.Direction != g.Direction || p.Port != g.Port {
				continue
			}
			if n := commonSorted(p.Endpoints, g.Endpoints); n > 0 {
				pairs = append(pairs, pair{i, j, n})
			}
		}
	}
	slices.SortFunc(pairs, func(x, y pair) int {
		return cmp.Or(cmp.Compare(y.shared, x.shared), cmp.Compare(prev[x.prev].Label, prev[y.prev].Label), cmp.Compare(x.cur, y.cur))
	})
	for _, pr := range pairs {
		p := prev[pr.prev]
		if label[pr.cur] == "" && !taken[labelKey(p.Direction, p.Port, p.Label)] {
			take(pr.cur, p.Label)
		}
	}
	var out []GroupLabel
	for i, g := range cur {
		l := label[i]
		if l == "" {
			l = sharedLabel(g.Direction, g.Port, g.Origins)
			for n := 1; taken[labelKey(g.Direction, g.Port, l)]; n++ {
				l = sharedLabel(g.Direction, g.Port, append(slices.Clone(g.Origins), "#"+strconv.Itoa(n)))
			}
			take(i, l)
		}
		if l != sharedLabel(g.Direction, g.Port, g.Origins) {
			out = append(out, GroupLabel{g.Direction, g.Port, g.Origins, l})
		}
	}
	return out
}

// commonSorted counts the addresses two sorted lists share.
func commonSorted(a, b []netip.Addr) int {
	n := 0
	for len(a) > 0 && len(b) > 0 {
		switch c := a[0].Compare(b[0]); {
		case c < 0:
			a = a[1:]
		case c > 0:
			b = b[1:]
		default:
			n++
			a, b = a[1:], b[1:]
		}
	}
	return n
}

// RouteOrigins maps the name of each route configuration n translates to
// to the origins (Port.Origins) of the rules it carries, sorted and
// without duplicates: what a rejection of that route configuration is
// about. It does not validate n.
func RouteOrigins(n Node) map[string][]string {
	out := map[string][]string{}
	for _, c := range chains(n.Ports, n.GroupLabels) {
		var o []string
		for _, g := range c.groups() {
			o = append(o, g.origins...)
		}
		slices.Sort(o)
		out[c.name()] = slices.Compact(o)
	}
	return out
}

func buildListener(n Node, cs []chain) (*listenerv3.Listener, error) {
	origDst, err := marshalAny(&origdstv3.OriginalDst{})
	if err != nil {
		return nil, err
	}
	addr := n.ListenAddress
	if !addr.IsValid() {
		addr = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	l := &listenerv3.Listener{
		Name:        ListenerName,
		Address:     socketAddress(addr.Unmap().String(), n.ProxyPort),
		Transparent: wrapperspb.Bool(true),
		ListenerFilters: []*listenerv3.ListenerFilter{{
			Name:       originalDstFilter,
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: origDst},
		}},
	}
	if n.UpstreamMark != 0 {
		origSrc, err := marshalAny(&origsrcv3.OriginalSrc{Mark: n.UpstreamMark})
		if err != nil {
			return nil, err
		}
		l.ListenerFilters = append(l.ListenerFilters, &listenerv3.ListenerFilter{
			Name:       originalSrcFilter,
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: origSrc},
		})
	}
	if len(cs) == 0 {
		l.FilterChains = []*listenerv3.FilterChain{{Name: NoPortsChain}}
		return l, nil
	}
	for _, c := range cs {
		fc, err := filterChain(c, n.AccessLogCluster)
		if err != nil {
			return nil, fmt.Errorf("filter chain %s: %w", c.name(), err)
		}
		l.FilterChains = append(l.FilterChains, fc)
	}
	m, err := chainMatcher(cs)
	if err != nil {
		return nil, fmt.Errorf("filter chain matcher: %w", err)
	}
	l.FilterChainMatcher = m
	return l, nil
}

// filterChain is the chain's HTTP connection manager. It depends neither
// on the chain's rules (those are in its route configuration) nor on its
// endpoints (the listener's matcher selects it).
func filterChain(c chain, accessLogCluster string) (*listenerv3.FilterChain, error) {
	var filters []*hcmv3.HttpFilter
	for _, g := range c.groups() {
		f, err := rbacHTTPFilter(g.dir)
		if err != nil {
			return nil, fmt.Errorf("%s rbac: %w", g.dir, err)
		}
		filters = append(filters, f)
	}
	// No per-cluster dynamic stats (a histogram and counters per request
	// that nothing reads): the proxy's CPU per request is the point.
	router, err := marshalAny(&routerv3.Router{SuppressEnvoyHeaders: true, DynamicStats: wrapperspb.Bool(false)})
	if err != nil {
		return nil, err
	}
	filters = append(filters, &hcmv3.HttpFilter{
		Name:       routerFilter,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router},
	})
	m := &hcmv3.HttpConnectionManager{
		StatPrefix: StatPrefix(c.name()),
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    ADS(),
			RouteConfigName: c.name(),
		}},
		HttpFilters: filters,
		// RBAC sees (and the upstream gets) the normalized path, so
		// "/public/../admin" cannot slip past a rule on "/admin.*".
		NormalizePath: wrapperspb.Bool(true),
		MergeSlashes:  true,
		// Be transparent: keep the server's Server header, allow
		// WebSocket upgrades (RBAC still checks the upgrade request).
		ServerHeaderTransformation: hcmv3.HttpConnectionManager_PASS_THROUGH,
		UpgradeConfigs:             []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
		// Nor add an x-request-id the client did not send (nothing uses
		// it, and generating one costs every request).
		GenerateRequestId: wrapperspb.Bool(false),
	}
	if accessLogCluster != "" {
		al, err := accessLog(accessLogCluster)
		if err != nil {
			return nil, err
		}
		m.AccessLog = []*accesslogv3.AccessLog{al}
	}
	hcm, err := marshalAny(m)
	if err != nil {
		return nil, err
	}
	return &listenerv3.FilterChain{
		Name: c.name(),
		Filters: []*listenerv3.Filter{{
			Name:       hcmFilter,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
		}},
	}, nil
}

// routeConfig sends every request to the ORIGINAL_DST cluster, with the
// chain's rules as the configuration of its RBAC filters. The route
// timeout is disabled: the proxy must not cut long requests or streams the
// client would otherwise have kept.
func routeConfig(c chain, rx *regexes) (*routev3.RouteConfiguration, error) {
	name := c.name()
	perFilter := map[string]*anypb.Any{}
	for _, g := range c.groups() {
		cfg, err := rbacPerRoute(g.dir, g.rules, rx)
		if err != nil {
			return nil, fmt.Errorf("%s rbac: %w", g.dir, err)
		}
		perFilter[RBACFilterPrefix+string(g.dir)] = cfg
	}
	return &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    "any",
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				// Access logs carry the route's name: the chain's.
				Name:  name,
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: OriginalDstCluster},
					Timeout:          durationpb.New(0),
				}},
				TypedPerFilterConfig: perFilter,
			}},
		}},
	}, nil
}

func accessLog(cluster string) (*accesslogv3.AccessLog, error) {
	cfg, err := marshalAny(&grpcalsv3.HttpGrpcAccessLogConfig{
		CommonConfig: &grpcalsv3.CommonGrpcAccessLogConfig{
			LogName: AccessLogName,
			GrpcService: &corev3.GrpcService{
				TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
					EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster},
				},
			},
			TransportApiVersion: corev3.ApiVersion_V3,
			// Fewer, larger batches than Envoy's 16 KiB: fewer gRPC
			// messages for the agent to wake up for; still flushed every
			// second (Envoy's default interval).
			BufferSizeBytes: wrapperspb.UInt32(accessLogBuffer),
		},
	})
	if err != nil {
		return nil, err
	}
	return &accesslogv3.AccessLog{
		Name:       grpcAccessLogger,
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: cfg},
	}, nil
}

// originalDstCluster forwards to each connection's original destination,
// with the downstream's HTTP version (so gRPC over h2c keeps working).
func originalDstCluster() (*clusterv3.Cluster, error) {
	return OriginalDstHTTPCluster(OriginalDstCluster)
}

// OriginalDstHTTPCluster is a cluster, called name, that forwards HTTP to each
// connection's original destination in the downstream's HTTP version.
func OriginalDstHTTPCluster(name string) (*clusterv3.Cluster, error) {
	opts, err := marshalAny(&upstreamhttpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{
			UseDownstreamProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
				HttpProtocolOptions:  &corev3.Http1ProtocolOptions{},
				Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
			},
		},
	})
	if err != nil {
		return nil, err
	}
	return &clusterv3.Cluster{
		Name:                          name,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:                      clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:                durationpb.New(connectTimeout),
		TypedExtensionProtocolOptions: map[string]*anypb.Any{httpProtocolOpts: opts},
	}, nil
}

func socketAddress(addr string, port uint16) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       addr,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}

func cidr(p netip.Prefix) *corev3.CidrRange {
	p = p.Masked()
	return &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}
}

// marshalAny packs m deterministically (RBAC policies are a map).
func marshalAny(m proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, fmt.Errorf("marshal %T: %w", m, err)
	}
	return a, nil
}

// InlineRoutes returns copies of the listeners whose filter chains carry
// their route configurations inline instead of over RDS: the same policy
// for an Envoy configured without ADS (a static bootstrap). Connection
// managers with inline routes stay as they are.
func (r Resources) InlineRoutes() ([]*listenerv3.Listener, error) {
	byName := make(map[string]*routev3.RouteConfiguration, len(r.Routes))
	for _, rc := range r.Routes {
		byName[rc.GetName()] = rc
	}
	out := make([]*listenerv3.Listener, 0, len(r.Listeners))
	for _, l := range r.Listeners {
		l = proto.Clone(l).(*listenerv3.Listener)
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				if f.GetName() != hcmFilter {
					continue
				}
				var m hcmv3.HttpConnectionManager
				if err := f.GetTypedConfig().UnmarshalTo(&m); err != nil {
					return nil, fmt.Errorf("filter chain %s: %w", fc.GetName(), err)
				}
				if m.GetRds() == nil {
					continue // inline already
				}
				name := m.GetRds().GetRouteConfigName()
				rc, ok := byName[name]
				if !ok {
					return nil, fmt.Errorf("filter chain %s: no route configuration %q", fc.GetName(), name)
				}
				m.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}
				a, err := marshalAny(&m)
				if err != nil {
					return nil, err
				}
				f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
			}
		}
		out = append(out, l)
	}
	return out, nil
}

// ADS is the config source of the resources the node Envoy gets over its
// aggregated stream from the agent (route configurations, secrets).
func ADS() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}
