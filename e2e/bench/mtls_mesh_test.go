package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	origdstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The redirected sidecar pair, as an Istio sidecar mesh captures traffic:
// the client pod's nat OUTPUT chain redirects the app's connections to
// payment-mesh:3000 to the client sidecar's outbound port, and the
// sidecar's own connections (socket mark mtlsMeshMark) are left alone;
// payment-mesh's nat PREROUTING chain redirects inbound port 3000 to its
// sidecar's inbound port.
const (
	mtlsMeshOutboundPort = 15001
	mtlsMeshInboundPort  = 15006
	mtlsMeshMark         = 1337
	mtlsMeshOutChain     = "MESH_OUTPUT"
	mtlsMeshInChain      = "MESH_INBOUND"
	// The client sidecar's ORIGINAL_DST cluster for the redirected
	// connections.
	mtlsMeshCluster = "mesh-original-dst"
)

// mtlsMeshOutboundRules: the client pod's nat OUTPUT redirect of the app's
// connections to dst:port into the client sidecar, except the sidecar's
// own (marked) ones.
func mtlsMeshOutboundRules(dst netip.Addr, port uint16) [][]string {
	return natRedirect("OUTPUT", mtlsMeshOutChain, mtlsMeshOutboundPort, [][]string{{"-m", "mark", "--mark", strconv.Itoa(mtlsMeshMark)}},
		"-d", dst.String()+"/32", "--dport", strconv.Itoa(int(port)))
}

// mtlsMeshInboundRules: the server pod's nat PREROUTING redirect of
// inbound port into its sidecar.
func mtlsMeshInboundRules(port uint16) [][]string {
	return natRedirect("PREROUTING", mtlsMeshInChain, mtlsMeshInboundPort, nil, "--dport", strconv.Itoa(int(port)))
}

// natRedirect are the nat rules of a sidecar mesh's traffic capture: a new
// chain jumped to from hook for every TCP packet, in which the packets
// matching one of returns go back (RETURN) and the TCP ones matching
// match are redirected to the sidecar's toPort (REDIRECT).
func natRedirect(hook, chain string, toPort int, returns [][]string, match ...string) [][]string {
	rules := [][]string{
		{"-t", "nat", "-N", chain},
		{"-t", "nat", "-A", hook, "-p", "tcp", "-j", chain},
	}
	for _, r := range returns {
		rules = append(rules, append(append([]string{"-t", "nat", "-A", chain}, r...), "-j", "RETURN"))
	}
	redirect := append(append([]string{"-t", "nat", "-A", chain, "-p", "tcp"}, match...), "-j", "REDIRECT", "--to-ports", strconv.Itoa(toPort))
	return append(rules, redirect)
}

// iptablesIn runs each rule with iptables in the network namespace at
// nsPath (a pod's: the rules go with it).
func iptablesIn(ctx context.Context, nsPath string, rules [][]string) error {
	for _, r := range rules {
		args := append([]string{"--net=" + nsPath, "--", "iptables", "-w"}, r...)
		if out, err := exec.CommandContext(ctx, "nsenter", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("iptables %s in %s: %w: %s", strings.Join(r, " "), nsPath, err, out)
		}
	}
	return nil
}

// iptablesNatCounters is iptables-save -c -t nat of the network namespace
// at nsPath: the rules with their packet and byte counters.
func iptablesNatCounters(ctx context.Context, nsPath string) (string, error) {
	out, err := exec.CommandContext(ctx, "nsenter", "--net="+nsPath, "--", "iptables-save", "-c", "-t", "nat").Output()
	if err != nil {
		return "", fmt.Errorf("iptables-save in %s: %w", nsPath, err)
	}
	return string(out), nil
}

// redirectedPackets is the packet counter of the REDIRECT rule to port in
// an iptables-save -c dump.
func redirectedPackets(dump string, port int) (int, error) {
	want := "--to-ports " + strconv.Itoa(port)
	for _, line := range strings.Split(dump, "\n") {
		if !strings.Contains(line, "-j REDIRECT") || !strings.Contains(line, want) || !strings.HasPrefix(line, "[") {
			continue
		}
		pk, _, ok := strings.Cut(strings.TrimPrefix(line, "["), ":")
		if !ok {
			break
		}
		return strconv.Atoi(pk)
	}
	return 0, fmt.Errorf("no REDIRECT rule to port %d in:\n%s", port, dump)
}

// mtlsMeshClientListener is the client sidecar's outbound listener for
// redirected connections: the original destination recovered from the
// redirect (original_dst listener filter), proxied in mutual TLS to that
// destination (ORIGINAL_DST cluster) from sockets marked mtlsMeshMark.
func mtlsMeshClientListener(ts *corev3.TransportSocket) (*listenerv3.Listener, *clusterv3.Cluster, error) {
	origDst, err := anypb.New(&origdstv3.OriginalDst{})
	if err != nil {
		return nil, nil, err
	}
	tp, err := tcpProxyFilter("mesh_outbound", mtlsMeshCluster, nil)
	if err != nil {
		return nil, nil, err
	}
	l := &listenerv3.Listener{
		Name:    "mesh-outbound",
		Address: l7SocketAddress("0.0.0.0", mtlsMeshOutboundPort),
		ListenerFilters: []*listenerv3.ListenerFilter{{
			Name: "envoy.filters.listener.original_dst", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: origDst},
		}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{tp}}},
	}
	c := &clusterv3.Cluster{
		Name:                 mtlsMeshCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       durationpb.New(5 * time.Second),
		TransportSocket:      ts,
		UpstreamBindConfig:   &corev3.BindConfig{SocketOptions: []*corev3.SocketOption{soMark("SO_MARK: not redirected again", mtlsMeshMark)}},
	}
	return l, c, nil
}

// sidecarInbound is a server sidecar's mutual TLS (client certificate of
// the CA required) and network RBAC filter allowing the client's SPIFFE
// ID.
func sidecarInbound(ids *sidecarIdentities) (*corev3.TransportSocket, *listenerv3.Filter, error) {
	ts, err := tlsSocket(&tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext:         sidecarTLS(ids.serverCert, ids.serverKey, ids.caPEM, ""),
	})
	if err != nil {
		return nil, nil, err
	}
	rbac, err := anypb.New(&rbacnetv3.RBAC{StatPrefix: "sidecar_mtls.", Rules: sidecarRules(ids)})
	if err != nil {
		return nil, nil, err
	}
	return ts, &listenerv3.Filter{Name: "envoy.filters.network.rbac", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: rbac}}, nil
}

// sidecarRules allow the client's SPIFFE ID.
func sidecarRules(ids *sidecarIdentities) *rbacconfigv3.RBAC {
	return &rbacconfigv3.RBAC{Action: rbacconfigv3.RBAC_ALLOW, Policies: map[string]*rbacconfigv3.Policy{
		"client": {
			Permissions: []*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_Any{Any: true}}},
			Principals: []*rbacconfigv3.Principal{{Identifier: &rbacconfigv3.Principal_Authenticated_{
				Authenticated: &rbacconfigv3.Principal_Authenticated{PrincipalName: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_Exact{Exact: ids.clientID}}},
			}}},
		},
	}}
}

// mtlsMeshServerSidecar: payment-mesh's sidecar takes the redirected
// inbound connections on 0.0.0.0:15006: mutual TLS, the client's SPIFFE ID
// allowed by a network RBAC filter, then to the app on 127.0.0.1:3000.
func mtlsMeshServerSidecar(ids *sidecarIdentities) (*bootstrapv3.Bootstrap, error) {
	ts, rbac, err := sidecarInbound(ids)
	if err != nil {
		return nil, err
	}
	tp, err := tcpProxyFilter("mesh_inbound", "app", nil)
	if err != nil {
		return nil, err
	}
	l := &listenerv3.Listener{
		Name:         "mesh-inbound",
		Address:      l7SocketAddress("0.0.0.0", mtlsMeshInboundPort),
		FilterChains: []*listenerv3.FilterChain{{TransportSocket: ts, Filters: []*listenerv3.Filter{rbac, tp}}},
	}
	app := staticCluster("app", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), l7AppPort), nil)
	return l7Bootstrap("mesh-server-sidecar", []*listenerv3.Listener{l}, []*clusterv3.Cluster{app}), nil
}

// envoyStat names an Envoy counter: the admin at admin in the network
// namespace at ns, the stats matching filter summed.
type envoyStat struct {
	ns, admin, filter string
}

func (s envoyStat) get(ctx context.Context) (float64, error) {
	return envoyCounter(ctx, s.ns, s.admin, s.filter)
}

// clusterStat is the counter name of cluster (a regular expression).
func clusterStat(ns, admin, cluster, name string) envoyStat {
	return envoyStat{ns: ns, admin: admin, filter: `^cluster\.` + cluster + `\.` + name + `$`}
}

// mtlsStatsDump writes, when dir is set (MEMBRANE_BENCH_MTLS_STATS_DIR),
// each named Envoy's /stats to dir/<prefix>-<name>.txt.
func mtlsStatsDump(ctx context.Context, dir, prefix string, admins map[string]envoyStat) error {
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("stats dir: %w", err)
	}
	for name, a := range admins {
		body, err := l7AdminGet(ctx, a.ns, a.admin, "/stats")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, prefix+"-"+name+".txt"), body, 0o644); err != nil {
			return err
		}
	}
	return nil
}
