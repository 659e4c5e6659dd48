package bench

// BenchmarkMutualAuthAddedLatency: the request latency and proxy CPU that
// mutual authentication (authentication.mode: required) adds, with
// Membrane's node Envoys against a pair of Envoy sidecars doing mutual TLS,
// on one 2-node cluster, with the same workload and the same Envoy binary,
// TLS version and key type, under two load shapes.
//
// Workload: a busybox client pod on node 1 (service account client) and
// three echo-basic pods (port 3000) on node 2 (service account payment),
// identical but for a label: payment-auth, selected by a
// MembraneNetworkPolicy allowing app=client on TCP 3000 with
// authentication required; payment-plain, allowing app=client on TCP 3000
// and on its sidecar's ports without authentication; payment-mesh,
// allowing app=client on TCP 3000. The load generator is this process, its
// sockets made in the client pod's network namespace (pod IPs, no
// Service).
//
// Arms, every request GET /api/v1/payments/P1:
//
//   - direct: to payment-plain:3000 (the policy datapath, no proxy);
//   - membrane: to payment-auth:3000: node 1's datapath redirects the
//     connection to node 1's Envoy, which carries it in one HTTP/2 CONNECT
//     stream over a pooled mutual TLS 1.3 connection to node 2's Envoy
//     (the client's SVID), which checks the peer's SPIFFE ID and address
//     (RBAC) and connects to the pod from the client's address (the real
//     path, with the built-in CA's SVIDs);
//   - sidecar pair: an Istio-style sidecar mesh with the leanest sidecars,
//     to payment-mesh:3000. The client pod's nat OUTPUT chain redirects
//     the connection to its sidecar (0.0.0.0:15001: original_dst listener
//     filter, TCP proxy to the original destination in mutual TLS 1.3 with
//     the client's SPIFFE certificate, the server's SPIFFE ID required; the
//     sidecar's own sockets carry mark 1337, which the chain leaves alone);
//     payment-mesh's nat PREROUTING chain redirects inbound port 3000 to
//     its sidecar (0.0.0.0:15006: client certificate required, the
//     client's SPIFFE ID allowed by a network RBAC filter, TCP proxy to
//     127.0.0.1:3000). This is the target's reference;
//   - sidecar pair, no redirect (reference): the same TCP-proxy sidecars
//     without traffic capture: the client connects to its sidecar on
//     127.0.0.1:15101, which connects to payment-plain's sidecar on its own
//     port 15102 (the lower bound of a sidecar pair, not a deployable mesh);
//   - HBONE pair (no target): the same sidecars on second listeners
//     (127.0.0.1:15103, payment-plain:15104) speaking Membrane's tunnel
//     protocol: the client sidecar's TCP proxy tunnels each connection in an
//     HTTP/2 CONNECT stream over pooled mutual TLS 1.3 connections, the
//     server sidecar's HTTP/2 connection manager authorizes the client's
//     SPIFFE ID (HTTP RBAC) and connects to 127.0.0.1:3000. It tells the
//     protocol's cost from the node proxies'.
//
// The sidecars' certificates are ECDSA P-256 like the built-in CA's SVIDs,
// from a CA of this process; they run the pinned Envoy in cgroups of their
// own.
//
// Load shapes, each with its own arms, counters and verdicts: keep-alive
// HTTP/1.1 over at most 4 connections per arm, and a new TCP connection per
// request (HTTP/1.1 without keep-alive, at most 4 at a time), as many
// services call each other. Each: fixed rate like BenchmarkL7AddedLatency
// (l7_load_test.go), a warm-up, then rounds with the arms taking turns.
// Every response must be 200; the enforcing proxy's RBAC must have allowed
// the arm's connections; the report counts the mutual TLS connections the
// source-side proxy opened (handshakes) and, for the tunnels, their
// CONNECT streams; the sidecar pair's REDIRECT rules must have matched.
// Proxy CPU per 1,000 requests: membrane counts every Membrane process on
// the path's nodes (both nodes' Envoy pods and both nodes' agent pods,
// whose background work is counted too; the same processes' CPU while the
// direct arm runs is printed as their background); a sidecar pair counts
// its two sidecars.
//
//	MEMBRANE_BENCH_MTLS_REQUESTS=2000   measured requests per arm and shape
//	MEMBRANE_BENCH_MTLS_STATS_DIR=      when set, every Envoy's /stats after each shape goes there
//	MEMBRANE_BENCH_MTLS_IDLE=20s        how long Membrane's processes are measured idle (no traffic
//	                                    at all) before the shapes; 0 skips it
//	MEMBRANE_BENCH_MTLS_PROFILE_DIR=    when set and perf is installed, both agents are sampled
//	                                    (perf record -g) while idle and during the new-connection shape, the
//	                                    reports saved there and their top printed (perf's own
//	                                    cost is then in that shape's agent CPU)

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
	"github.com/membrane-mesh/membrane/e2e/pki"
	"github.com/membrane-mesh/membrane/e2e/testenv"
	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
)

const (
	mtlsBenchCluster = "bench-mtls"
	mtlsBenchPodCIDR = "10.238.0.0/16"
	mtlsBenchNS      = "bench-mtls"
	// mtlsTarget: membrane's added p99 and CPU per request at most this
	// share of the sidecar pair's.
	mtlsTarget = 0.6
	// Envoy's stat of the node's tunnel termination RBAC (xds/mtls).
	mtlsInboundRBAC = `membrane_mtls_inbound\.rbac\.mtls\.allowed$`
	// The server sidecar's network RBAC filter.
	mtlsSidecarRBAC = `sidecar_mtls\.rbac\.allowed$`
)

const (
	mtlsArmDirect   = "direct"
	mtlsArmMembrane = "membrane"
	mtlsArmSidecar  = "sidecar pair"
	// The same client sidecar reached on its loopback port, to the server
	// sidecar's own port: no redirect on either side.
	mtlsArmSidecarLocal = "sidecar pair, no redirect"
	mtlsArmHBONE        = "HBONE pair"
	// Node 1's Envoy's tunnel clusters (xds/mtls), a stat name pattern.
	mtlsTunnelClusters = `membrane-mtls-tunnel/.*`
	// The HBONE sidecar pair's ports: the client sidecar's listener
	// (127.0.0.1) and the server sidecar's (payment-plain's address).
	mtlsHBONEClientPort = 15103
	mtlsHBONEServerPort = 15104
	// The HBONE server sidecar's RBAC filter.
	mtlsHBONERBAC = `http\.hbone\.rbac\.allowed$`
)

func BenchmarkMutualAuthAddedLatency(b *testing.B) {
	e := newEnv(b)
	envoyBin := testenv.Tool(b, "envoy")
	requests := 2000
	idleFor := 20 * time.Second
	if v := os.Getenv("MEMBRANE_BENCH_MTLS_IDLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			b.Fatalf("MEMBRANE_BENCH_MTLS_IDLE=%q: want a duration >= 0", v)
		}
		idleFor = d
	}
	if v := os.Getenv("MEMBRANE_BENCH_MTLS_REQUESTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < l7Rounds {
			b.Fatalf("MEMBRANE_BENCH_MTLS_REQUESTS=%q: want >= %d", v, l7Rounds)
		}
		requests = n
	}
	ctx := benchContext(b)
	begin := time.Now()
	load := strings.TrimSpace(wgLoadAvg())

	c := upClusterWith(ctx, b, e, localcluster.Options{
		Name: mtlsBenchCluster, PodCIDR: mtlsBenchPodCIDR,
		HelmSet: []string{"authentication.mutual.enabled=true"},
	})
	defer c.down()
	l := &l7Bench{b: b, c: c, envoyBin: envoyBin, tmp: b.TempDir(), server: c.state.Nodes[1]}
	mesh, meshIP, err := mtlsDeploy(ctx, l)
	if err != nil {
		b.Fatal(err)
	}
	if err := mtlsPolicies(ctx, l); err != nil {
		b.Fatal(err)
	}
	if err := l.waitEnforcing(ctx, mtlsBenchNS); err != nil {
		b.Fatal(err)
	}

	ids, err := newSidecarIdentities()
	if err != nil {
		b.Fatal(err)
	}
	server, err := l.startSidecar("server", l.plain, func() (*bootstrapv3.Bootstrap, error) {
		return mtlsServerSidecar(l.plainIP, ids)
	})
	if err != nil {
		b.Fatal(err)
	}
	defer server.stop(b)
	meshServer, err := l.startSidecar("mesh-server", mesh, func() (*bootstrapv3.Bootstrap, error) {
		return mtlsMeshServerSidecar(ids)
	})
	if err != nil {
		b.Fatal(err)
	}
	defer meshServer.stop(b)
	client, err := l.startSidecar("client", l.client, func() (*bootstrapv3.Bootstrap, error) {
		return mtlsClientSidecar(l.plainIP, ids)
	})
	if err != nil {
		b.Fatal(err)
	}
	defer client.stop(b)
	l.sidecars = []*l7Sidecar{server, meshServer, client}
	clientNS, plainNS, meshNS := l.netns(l.client), l.netns(l.plain), l.netns(mesh)
	// The sidecar mesh's traffic capture, in the pods' network namespaces
	// (they go with the pods).
	if err := iptablesIn(ctx, clientNS, mtlsMeshOutboundRules(meshIP, l7AppPort)); err != nil {
		b.Fatal(err)
	}
	if err := iptablesIn(ctx, meshNS, mtlsMeshInboundRules(l7AppPort)); err != nil {
		b.Fatal(err)
	}

	// Every Membrane process of the path: both nodes' Envoy and agent pods.
	envoys, err := mtlsPodCgroups(ctx, l, "k8s-app=membrane-envoy")
	if err != nil {
		b.Fatal(err)
	}
	agents, err := mtlsPodCgroups(ctx, l, "k8s-app=membrane-agent")
	if err != nil {
		b.Fatal(err)
	}
	sidecarAdmin := fmt.Sprintf("127.0.0.1:%d", l7SidecarAdminPort)
	node1 := c.state.Nodes[0].Netns
	pairCPU := func(s ...*l7Sidecar) func() (time.Duration, error) {
		return func() (time.Duration, error) {
			var d time.Duration
			for _, x := range s {
				d += x.cpu()
			}
			return d, nil
		}
	}
	// arms are one load shape's arms, fresh counters and clients.
	arms := func(keepAlive bool) ([]*mtlsArm, *cpuSplit, *cpuSplit) {
		split := &cpuSplit{groups: [][]string{envoys, agents}, used: make([]time.Duration, 2)}
		// Membrane's processes while the direct arm runs: their background
		// work, with no traffic of theirs.
		idle := &cpuSplit{groups: [][]string{envoys, agents}, used: make([]time.Duration, 2)}
		as := []*mtlsArm{
			{l7Arm: &l7Arm{name: mtlsArmDirect, base: fmt.Sprintf("http://%s:%d", l.plainIP, l7AppPort), cpu: idle.sample}, unit: "direct"},
			{l7Arm: &l7Arm{name: mtlsArmMembrane, base: fmt.Sprintf("http://%s:%d", l.l7IP, l7AppPort), cpu: split.sample}, unit: "membrane",
				rbac:    envoyStat{l.server.Netns, l7NodeEnvoyAdmin, mtlsInboundRBAC},
				conns:   clusterStat(node1, l7NodeEnvoyAdmin, mtlsTunnelClusters, "upstream_cx_total"),
				streams: clusterStat(node1, l7NodeEnvoyAdmin, mtlsTunnelClusters, "upstream_rq_total")},
			{l7Arm: &l7Arm{name: mtlsArmSidecar, base: fmt.Sprintf("http://%s:%d", meshIP, l7AppPort), cpu: pairCPU(client, meshServer)}, unit: "sidecar",
				rbac:  envoyStat{meshNS, sidecarAdmin, mtlsSidecarRBAC},
				conns: clusterStat(clientNS, sidecarAdmin, mtlsMeshCluster, "upstream_cx_total")},
			{l7Arm: &l7Arm{name: mtlsArmSidecarLocal, base: fmt.Sprintf("http://127.0.0.1:%d", l7ClientSidecarPort), cpu: pairCPU(client, server)}, unit: "sidecar-noredirect",
				rbac:  envoyStat{plainNS, sidecarAdmin, mtlsSidecarRBAC},
				conns: clusterStat(clientNS, sidecarAdmin, "server-sidecar", "upstream_cx_total")},
			// The same sidecars, on their HBONE listeners: Membrane's wire
			// protocol between two sidecars (it tells the protocol's cost
			// from the node proxies').
			{l7Arm: &l7Arm{name: mtlsArmHBONE, base: fmt.Sprintf("http://127.0.0.1:%d", mtlsHBONEClientPort), cpu: pairCPU(client, server)}, unit: "hbone",
				rbac:    envoyStat{plainNS, sidecarAdmin, mtlsHBONERBAC},
				conns:   clusterStat(clientNS, sidecarAdmin, "server-hbone", "upstream_cx_total"),
				streams: clusterStat(clientNS, sidecarAdmin, "server-hbone", "upstream_rq_total")},
		}
		for _, a := range as {
			a.deleteCode = http.StatusOK
			a.hc = l7Client(clientNS, keepAlive)
		}
		return as, split, idle
	}
	probe, _, _ := arms(false)
	for _, a := range probe {
		if err := l.waitArm(ctx, a.l7Arm); err != nil {
			b.Fatal(err)
		}
	}
	// The authenticated path is the only way in: the node's own attempt
	// at payment-auth's port is dropped.
	if err := mtlsNodeRefused(ctx, l); err != nil {
		b.Fatal(err)
	}
	rep := &mtlsReport{requests: requests, load: load, envoyBin: envoyBin, sameBinary: l.sameBinaryAsNode(),
		membraneCgroups: len(envoys) + len(agents)}
	profileDir := os.Getenv("MEMBRANE_BENCH_MTLS_PROFILE_DIR")
	var profiles strings.Builder
	if idleFor > 0 {
		// Membrane's processes with no traffic at all: the agents' and
		// Envoys' own background.
		idle := &cpuSplit{groups: [][]string{envoys, agents}, used: make([]time.Duration, 2)}
		var perfs []*l7Perf
		if profileDir != "" {
			for i, cg := range agents {
				p, err := startPerf(profileDir, fmt.Sprintf("agent%d-idle", i+1), cg)
				if err != nil {
					b.Fatal(err)
				}
				if p != nil {
					defer p.stop(ctx)
					perfs = append(perfs, p)
				}
			}
		}
		if _, err := idle.sample(); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		select {
		case <-time.After(idleFor):
		case <-ctx.Done():
			b.Fatal(ctx.Err())
		}
		if _, err := idle.sample(); err != nil {
			b.Fatal(err)
		}
		rep.idleFor = time.Since(start)
		rep.idleEnvoyCPU, rep.idleAgentCPU = idle.used[0], idle.used[1]
		for _, p := range perfs {
			top, err := p.stop(ctx)
			if err != nil {
				b.Fatal(err)
			}
			fmt.Fprintf(&profiles, "  perf of %s, no traffic:\n%s", p.name, top)
		}
	}
	for _, keepAlive := range []bool{true, false} {
		as, split, idle := arms(keepAlive)
		sh := &mtlsShape{keepAlive: keepAlive, arms: as}
		var perfs []*l7Perf
		if profileDir != "" && !keepAlive {
			for i, cg := range agents {
				p, err := startPerf(profileDir, fmt.Sprintf("agent%d-newconn", i+1), cg)
				if err != nil {
					b.Fatal(err)
				}
				if p != nil {
					defer p.stop(ctx)
					perfs = append(perfs, p)
				}
			}
		}
		if err := l.runShape(ctx, sh, requests); err != nil {
			b.Fatalf("%s: %v", sh.name(), err)
		}
		for _, p := range perfs {
			top, err := p.stop(ctx)
			if err != nil {
				b.Fatal(err)
			}
			fmt.Fprintf(&profiles, "  perf of %s during the shape (every arm's time):\n%s", p.name, top)
		}
		sh.envoyCPU, sh.agentCPU = split.used[0], split.used[1]
		sh.idleEnvoyCPU, sh.idleAgentCPU = idle.used[0], idle.used[1]
		rep.shapes = append(rep.shapes, sh)
		prefix := "keepalive"
		if !keepAlive {
			prefix = "newconn"
		}
		if err := mtlsStatsDump(ctx, os.Getenv("MEMBRANE_BENCH_MTLS_STATS_DIR"), prefix, map[string]envoyStat{
			"node1-envoy": {ns: node1, admin: l7NodeEnvoyAdmin}, "node2-envoy": {ns: l.server.Netns, admin: l7NodeEnvoyAdmin},
			"client-sidecar": {ns: clientNS, admin: sidecarAdmin}, "server-sidecar": {ns: plainNS, admin: sidecarAdmin},
			"mesh-server-sidecar": {ns: meshNS, admin: sidecarAdmin},
		}); err != nil {
			b.Fatal(err)
		}
	}
	// The redirects were in the sidecar pair's path.
	for _, r := range []struct {
		ns   string
		port int
	}{{clientNS, mtlsMeshOutboundPort}, {meshNS, mtlsMeshInboundPort}} {
		dump, err := iptablesNatCounters(ctx, r.ns)
		if err != nil {
			b.Fatal(err)
		}
		n, err := redirectedPackets(dump, r.port)
		if err != nil {
			b.Fatal(err)
		}
		if n == 0 {
			b.Fatalf("the REDIRECT to port %d redirected no connection:\n%s", r.port, dump)
		}
		rep.redirected = append(rep.redirected, n)
	}
	rep.took = time.Since(begin)
	fmt.Print(rep.String())
	fmt.Print(profiles.String())
	rep.metrics(b)
	recordSummary(b, rep.summary()...)
}

// mtlsArm is an arm and the counters that show which proxies it crossed.
type mtlsArm struct {
	*l7Arm
	unit string // its metrics' prefix
	// rbac is the enforcing proxy's RBAC allowed counter; conns the
	// upstream connections the source-side proxy opened to the other one
	// (mutual TLS handshakes); streams its HTTP/2 CONNECT streams (tunnels
	// only).
	rbac, conns, streams        envoyStat
	connsBefore, connsDelta     float64
	streamsBefore, streamsDelta float64
}

// mtlsShape is one load shape's measurement.
type mtlsShape struct {
	keepAlive bool
	arms      []*mtlsArm
	// envoyCPU and agentCPU split membrane's measured CPU time; the idle
	// ones are the same processes' while the direct arm ran.
	envoyCPU, agentCPU         time.Duration
	idleEnvoyCPU, idleAgentCPU time.Duration
}

func (s *mtlsShape) name() string {
	if s.keepAlive {
		return "keep-alive"
	}
	return "new connection per request"
}

func (s *mtlsShape) arm(name string) *mtlsArm {
	for _, a := range s.arms {
		if a.name == name {
			return a
		}
	}
	return nil
}

// runShape: the counters, a warm-up, then rounds with the arms taking
// turns, then the counters again; the enforcing proxies' RBAC must have
// allowed connections.
func (l *l7Bench) runShape(ctx context.Context, sh *mtlsShape, requests int) error {
	defer func() {
		for _, a := range sh.arms {
			a.hc.CloseIdleConnections()
		}
	}()
	read := func(s envoyStat) (float64, error) {
		if s.filter == "" {
			return 0, nil
		}
		return s.get(ctx)
	}
	var err error
	for _, a := range sh.arms {
		if a.rbacBefore, err = read(a.rbac); err != nil {
			return fmt.Errorf("%s: %w", a.name, err)
		}
		if a.connsBefore, err = read(a.conns); err != nil {
			return fmt.Errorf("%s: %w", a.name, err)
		}
		if a.streamsBefore, err = read(a.streams); err != nil {
			return fmt.Errorf("%s: %w", a.name, err)
		}
	}
	for _, a := range sh.arms {
		if _, err := l.run(ctx, a.l7Arm, l7Warmup, false); err != nil {
			return fmt.Errorf("%s: warm-up: %w", a.name, err)
		}
		progress(l.b, "%s, %s: warm-up of %d requests done", sh.name(), a.name, l7Warmup)
	}
	arms := make([]*l7Arm, len(sh.arms))
	for i, a := range sh.arms {
		arms[i] = a.l7Arm
	}
	if err := l.rounds(ctx, arms, requests, sh.name()+" ", 26); err != nil {
		return err
	}
	for _, a := range sh.arms {
		if a.rbac.filter == "" {
			continue
		}
		after, err := read(a.rbac)
		if err != nil {
			return fmt.Errorf("%s: %w", a.name, err)
		}
		a.rbacDelta = after - a.rbacBefore
		// Connections, not requests: at least one per pooled connection.
		if a.rbacDelta < 1 {
			return fmt.Errorf("%s: the enforcing proxy's RBAC allowed no connection, but %d requests got a 200: they bypassed it", a.name, a.ok)
		}
		if after, err = read(a.conns); err != nil {
			return fmt.Errorf("%s: %w", a.name, err)
		}
		a.connsDelta = after - a.connsBefore
		if after, err = read(a.streams); err != nil {
			return fmt.Errorf("%s: %w", a.name, err)
		}
		a.streamsDelta = after - a.streamsBefore
	}
	return nil
}

// mtlsDeploy starts the client on node 1 and the three payment pods on
// node 2 with their service accounts, and waits until they run; it
// returns payment-mesh and its address.
func mtlsDeploy(ctx context.Context, l *l7Bench) (*corev1.Pod, netip.Addr, error) {
	start := time.Now()
	client := l.c.client
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: mtlsBenchNS}}, metav1.CreateOptions{}); err != nil {
		return nil, netip.Addr{}, fmt.Errorf("create namespace: %w", err)
	}
	for _, sa := range []string{"client", "payment"} {
		if _, err := client.CoreV1().ServiceAccounts(mtlsBenchNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			return nil, netip.Addr{}, fmt.Errorf("create service account %s: %w", sa, err)
		}
	}
	pods := []*corev1.Pod{
		l.clientPod(mtlsBenchNS, "client", "client"),
		l.paymentPod(mtlsBenchNS, "auth", "payment"), l.paymentPod(mtlsBenchNS, "plain", "payment"), l.paymentPod(mtlsBenchNS, "mesh", "payment"),
	}
	got, ips, err := l.c.runPods(ctx, mtlsBenchNS, pods)
	if err != nil {
		return nil, netip.Addr{}, err
	}
	l.client, l.l7, l.plain = got[0], got[1], got[2]
	l.clientIP, l.l7IP, l.plainIP = ips[0], ips[1], ips[2]
	progress(l.b, "pods running in %s: client %s on %s, payment-auth %s, payment-plain %s and payment-mesh %s on %s",
		time.Since(start).Round(time.Millisecond), l.clientIP, l.client.Spec.NodeName, l.l7IP, l.plainIP, ips[3], l.server.Name)
	return got[3], ips[3], nil
}

// mtlsPolicies: payment-auth allows app=client on TCP 3000 with
// authentication required; payment-plain allows it on 3000 and on the
// server sidecar's ports; payment-mesh on 3000 (its sidecar's redirect
// comes after the policy, in the pod).
func mtlsPolicies(ctx context.Context, l *l7Bench) error {
	from := []metav1.LabelSelector{{MatchLabels: map[string]string{"app": "client"}}}
	tcp := func(port int) v1alpha1.PortProtocol {
		return v1alpha1.PortProtocol{Port: strconv.Itoa(port), Protocol: v1alpha1.ProtoTCP}
	}
	policy := func(variant string, auth *v1alpha1.Authentication, ports ...v1alpha1.PortProtocol) *v1alpha1.MembraneNetworkPolicy {
		return &v1alpha1.MembraneNetworkPolicy{
			TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "MembraneNetworkPolicy"},
			ObjectMeta: metav1.ObjectMeta{Name: "payment-" + variant, Namespace: mtlsBenchNS},
			Spec: &v1alpha1.Rule{
				EndpointSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "payment", "variant": variant}},
				Ingress: []v1alpha1.IngressRule{{
					IngressCommonRule: v1alpha1.IngressCommonRule{FromEndpoints: from},
					ToPorts:           []v1alpha1.PortRule{{Ports: ports}},
					Authentication:    auth,
				}},
			},
		}
	}
	return l.createPolicies(ctx, mtlsBenchNS,
		policy("auth", &v1alpha1.Authentication{Mode: v1alpha1.AuthenticationRequired}, tcp(l7AppPort)),
		policy("plain", nil, tcp(l7AppPort), tcp(l7ServerSidecarPort), tcp(mtlsHBONEServerPort)),
		policy("mesh", nil, tcp(l7AppPort)),
	)
}

// mtlsNodeRefused checks that node 2 itself cannot reach payment-auth's
// port (the datapath drops what did not come through the proxy).
func mtlsNodeRefused(ctx context.Context, l *l7Bench) error {
	hc := l7Client(l.server.Netns, false)
	hc.Timeout = 3 * time.Second
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s:%d%s", l.l7IP, l7AppPort, l7Path), nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err == nil {
		resp.Body.Close()
		return fmt.Errorf("node %s reached payment-auth without authentication: %s", l.server.Name, resp.Status)
	}
	return nil
}

// cpuSplit sums the CPU time of groups of cgroups; sample is an l7Arm's
// cpu function: run calls it at the start and at the end of each measured
// round, and used accumulates each group's time between the two.
type cpuSplit struct {
	groups [][]string
	start  []time.Duration
	used   []time.Duration
}

func (c *cpuSplit) sample() (time.Duration, error) {
	now := make([]time.Duration, len(c.groups))
	var total time.Duration
	for i, g := range c.groups {
		for _, d := range g {
			u, err := cgroupUsage(d)
			if err != nil {
				return 0, err
			}
			now[i] += u
		}
		total += now[i]
	}
	if c.start == nil {
		c.start = now
	} else {
		for i := range now {
			c.used[i] += now[i] - c.start[i]
		}
		c.start = nil
	}
	return total, nil
}

// mtlsPodCgroups are the cgroups of the kube-system pods matching sel on
// both nodes.
func mtlsPodCgroups(ctx context.Context, l *l7Bench, sel string) ([]string, error) {
	pods, err := l.c.client.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, fmt.Errorf("list pods %s: %w", sel, err)
	}
	if len(pods.Items) != len(l.c.state.Nodes) {
		return nil, fmt.Errorf("%d pods %s, want one per node (%d)", len(pods.Items), sel, len(l.c.state.Nodes))
	}
	var dirs []string
	for _, p := range pods.Items {
		dir := l.podCgroup(p.Spec.NodeName, string(p.UID))
		if _, err := cgroupUsage(dir); err != nil {
			return nil, fmt.Errorf("pod %s: %w", p.Name, err)
		}
		dirs = append(dirs, dir)
	}
	return dirs, nil
}

// envoyCounter sums the Envoy counters matching the regular expression
// filter, of the Envoy whose admin is at addr in the network namespace at
// nsPath.
func envoyCounter(ctx context.Context, nsPath, addr, filter string) (float64, error) {
	body, err := l7AdminGet(ctx, nsPath, addr, "/stats?filter="+url.QueryEscape(filter))
	if err != nil {
		return 0, err
	}
	sum, n := 0.0, 0
	for _, line := range strings.Split(string(body), "\n") {
		_, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		x, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return 0, fmt.Errorf("Envoy stats at %s: line %q: %w", addr, line, err)
		}
		sum += x
		n++
	}
	if n == 0 {
		return 0, fmt.Errorf("Envoy stats at %s: no counter matches %s", addr, filter)
	}
	return sum, nil
}

// sidecarIdentities are the sidecar pair's certificates: SPIFFE IDs of the
// client's and payment's service accounts from one CA.
type sidecarIdentities struct {
	caPEM                 []byte
	clientID, serverID    string
	clientCert, clientKey []byte
	serverCert, serverKey []byte
}

func newSidecarIdentities() (*sidecarIdentities, error) {
	ca, err := pki.NewCA("bench sidecar CA")
	if err != nil {
		return nil, err
	}
	ids := &sidecarIdentities{
		caPEM:    pki.CertPEM(ca.Cert),
		clientID: "spiffe://cluster.local/ns/" + mtlsBenchNS + "/sa/client",
		serverID: "spiffe://cluster.local/ns/" + mtlsBenchNS + "/sa/payment",
	}
	issue := func(id string) ([]byte, []byte, error) {
		u, err := url.Parse(id)
		if err != nil {
			return nil, nil, err
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()),
			URIs:         []*url.URL{u},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
		if err != nil {
			return nil, nil, fmt.Errorf("sign %s: %w", id, err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, err
		}
		k, err := pki.KeyPEM(key)
		if err != nil {
			return nil, nil, err
		}
		return pki.CertPEM(c), k, nil
	}
	if ids.clientCert, ids.clientKey, err = issue(ids.clientID); err != nil {
		return nil, err
	}
	if ids.serverCert, ids.serverKey, err = issue(ids.serverID); err != nil {
		return nil, err
	}
	return ids, nil
}

// sidecarTLS: TLS 1.3 only (like xds/mtls), the certificate and key
// inline, the CA as trust anchor, and the peer's SPIFFE ID when want is
// set.
func sidecarTLS(cert, key, ca []byte, want string) *tlsv3.CommonTlsContext {
	inline := func(b []byte) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
	}
	v := &tlsv3.CertificateValidationContext{TrustedCa: inline(ca)}
	if want != "" {
		v.MatchTypedSubjectAltNames = []*tlsv3.SubjectAltNameMatcher{{
			SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: want}},
		}}
	}
	return &tlsv3.CommonTlsContext{
		TlsParams: &tlsv3.TlsParameters{
			TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
			TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
		},
		TlsCertificates:       []*tlsv3.TlsCertificate{{CertificateChain: inline(cert), PrivateKey: inline(key)}},
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: v},
	}
}

func tlsSocket(m proto.Message) (*corev3.TransportSocket, error) {
	a, err := anypb.New(m)
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}, nil
}

func tcpProxyFilter(stat, cluster string, tunnel *tcpproxyv3.TcpProxy_TunnelingConfig) (*listenerv3.Filter, error) {
	a, err := anypb.New(&tcpproxyv3.TcpProxy{StatPrefix: stat, ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster}, TunnelingConfig: tunnel})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Filter{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}, nil
}

func staticCluster(name string, to netip.AddrPort, ts *corev3.TransportSocket) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(5 * time.Second),
		LoadAssignment:       l7LoadAssignment(name, l7SocketAddress(to.Addr().String(), to.Port())),
		TransportSocket:      ts,
	}
}

// mtlsClientSidecar: 127.0.0.1:15101 proxies every connection to the
// server sidecar on server:15102, in mutual TLS with the client's
// certificate, requiring the server's SPIFFE ID; 127.0.0.1:15103 does the
// same to server:15104 inside one HTTP/2 CONNECT stream per connection (to
// 127.0.0.1:3000), as Membrane's tunnel does; 0.0.0.0:15001 takes the
// connections the pod's nat OUTPUT chain redirects and proxies them in the
// same mutual TLS to their original destination (see mtls_mesh_test.go).
func mtlsClientSidecar(server netip.Addr, ids *sidecarIdentities) (*bootstrapv3.Bootstrap, error) {
	ts, err := tlsSocket(&tlsv3.UpstreamTlsContext{CommonTlsContext: sidecarTLS(ids.clientCert, ids.clientKey, ids.caPEM, ids.serverID)})
	if err != nil {
		return nil, err
	}
	tp, err := tcpProxyFilter("sidecar_outbound", "server-sidecar", nil)
	if err != nil {
		return nil, err
	}
	app := fmt.Sprintf("127.0.0.1:%d", l7AppPort)
	tunnel, err := tcpProxyFilter("hbone_outbound", "server-hbone", &tcpproxyv3.TcpProxy_TunnelingConfig{
		Hostname:     app,
		HeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-forwarded-for", Value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}}},
	})
	if err != nil {
		return nil, err
	}
	h2, err := http2Upstream()
	if err != nil {
		return nil, err
	}
	hbone := staticCluster("server-hbone", netip.AddrPortFrom(server, mtlsHBONEServerPort), ts)
	hbone.TypedExtensionProtocolOptions = h2
	meshL, meshC, err := mtlsMeshClientListener(ts)
	if err != nil {
		return nil, err
	}
	ls := []*listenerv3.Listener{
		{
			Name:         "outbound",
			Address:      l7SocketAddress("127.0.0.1", l7ClientSidecarPort),
			FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{tp}}},
		},
		{
			Name:         "hbone-outbound",
			Address:      l7SocketAddress("127.0.0.1", mtlsHBONEClientPort),
			FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{tunnel}}},
		},
		meshL,
	}
	return l7Bootstrap("client-sidecar", ls, []*clusterv3.Cluster{staticCluster("server-sidecar", netip.AddrPortFrom(server, l7ServerSidecarPort), ts), hbone, meshC}), nil
}

// mtlsServerSidecar: on server:15102, mutual TLS requiring a client
// certificate of the CA, the client's SPIFFE ID allowed by a network RBAC
// filter, then to the app on 127.0.0.1:3000; on server:15104 the same TLS,
// then an HTTP/2 connection manager taking CONNECT streams (the client's
// SPIFFE ID allowed by an HTTP RBAC filter) to the app, as Membrane's
// receiving node proxy does.
func mtlsServerSidecar(server netip.Addr, ids *sidecarIdentities) (*bootstrapv3.Bootstrap, error) {
	ts, rbac, err := sidecarInbound(ids)
	if err != nil {
		return nil, err
	}
	tp, err := tcpProxyFilter("sidecar_inbound", "app", nil)
	if err != nil {
		return nil, err
	}
	httpRBAC, err := anypb.New(&rbachttpv3.RBAC{Rules: sidecarRules(ids)})
	if err != nil {
		return nil, err
	}
	router, err := anypb.New(&routerv3.Router{SuppressEnvoyHeaders: true})
	if err != nil {
		return nil, err
	}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: "hbone",
		CodecType:  hcmv3.HttpConnectionManager_HTTP2,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: "hbone",
			VirtualHosts: []*routev3.VirtualHost{{
				Name: "app", Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_ConnectMatcher_{ConnectMatcher: &routev3.RouteMatch_ConnectMatcher{}}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "app"},
						Timeout:          durationpb.New(0),
						UpgradeConfigs: []*routev3.RouteAction_UpgradeConfig{{
							UpgradeType: "CONNECT", ConnectConfig: &routev3.RouteAction_UpgradeConfig_ConnectConfig{},
						}},
					}},
				}},
			}},
		}},
		UseRemoteAddress: wrapperspb.Bool(false),
		HttpFilters: []*hcmv3.HttpFilter{
			{Name: "envoy.filters.http.rbac", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: httpRBAC}},
			{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}},
		},
		UpgradeConfigs:       []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "CONNECT"}},
		Http2ProtocolOptions: &corev3.Http2ProtocolOptions{AllowConnect: true},
	})
	if err != nil {
		return nil, err
	}
	ls := []*listenerv3.Listener{
		{
			Name:    "inbound",
			Address: l7SocketAddress(server.String(), l7ServerSidecarPort),
			FilterChains: []*listenerv3.FilterChain{{
				TransportSocket: ts,
				Filters:         []*listenerv3.Filter{rbac, tp},
			}},
		},
		{
			Name:    "hbone-inbound",
			Address: l7SocketAddress(server.String(), mtlsHBONEServerPort),
			FilterChains: []*listenerv3.FilterChain{{
				TransportSocket: ts,
				Filters: []*listenerv3.Filter{{
					Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
				}},
			}},
		},
	}
	app := staticCluster("app", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), l7AppPort), nil)
	return l7Bootstrap("server-sidecar", ls, []*clusterv3.Cluster{app}), nil
}

// mtlsReport prints the measurements.
type mtlsReport struct {
	shapes     []*mtlsShape
	requests   int
	load       string
	envoyBin   string
	sameBinary bool
	took       time.Duration
	// idleFor is how long Membrane's processes were measured with no
	// traffic, idleEnvoyCPU and idleAgentCPU what they used meanwhile.
	idleFor                    time.Duration
	idleEnvoyCPU, idleAgentCPU time.Duration
	membraneCgroups            int
	// redirected: packets the client pod's and payment-mesh's REDIRECT
	// rules matched (connections' first packets).
	redirected []int
}

// ratio is membrane's added p99 and CPU per request over arm's; ok false
// when arm added nothing.
func (s *mtlsShape) ratio(arm string) (p99, cpu float64, p99ok, cpuok bool) {
	d, m, o := s.arm(mtlsArmDirect).stats(), s.arm(mtlsArmMembrane).stats(), s.arm(arm).stats()
	if o.p99 > d.p99 {
		p99, p99ok = float64(m.p99-d.p99)/float64(o.p99-d.p99), true
	}
	if o.cpuPer1k > 0 {
		cpu, cpuok = m.cpuPer1k/o.cpuPer1k, true
	}
	return p99, cpu, p99ok, cpuok
}

func (r *mtlsReport) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n== Mutual authentication: latency and CPU added by Membrane's node Envoys vs an mTLS sidecar pair ==\n")
	fmt.Fprintf(&sb, "One 2-node local cluster (built-in CA); echo-basic pods payment-auth, payment-plain and payment-mesh on node 2, the\n")
	fmt.Fprintf(&sb, "client pod on node 1; the load generator dials from the client pod's network namespace. GET %s, %d req/s, at most\n", l7Path, l7Rate)
	fmt.Fprintf(&sb, "%d requests (and connections) at a time per arm; per load shape %d warm-up requests per arm, then %d rounds of ~%d\n",
		l7Pool, l7Warmup, l7Rounds, (r.requests+l7Rounds-1)/l7Rounds)
	fmt.Fprintf(&sb, "requests per arm, the arms taking turns. Load shapes: keep-alive HTTP/1.1 (at most %d connections per arm, reused), and\n", l7Pool)
	fmt.Fprintf(&sb, "a new TCP connection per request (HTTP/1.1 without keep-alive; latency includes the connect).\n")
	fmt.Fprintf(&sb, "  %-27s to payment-plain:3000 (L3/L4 allow policy, no proxy)\n", mtlsArmDirect+":")
	fmt.Fprintf(&sb, "  %-27s to payment-auth:3000, authentication required: node 1's datapath redirects it to node 1's Envoy, mutual\n", mtlsArmMembrane+":")
	fmt.Fprintf(&sb, "  %-27s TLS 1.3 + one HTTP/2 CONNECT stream per connection over pooled tunnel connections, node 2's Envoy (RBAC)\n", "")
	fmt.Fprintf(&sb, "  %-27s to payment-mesh:3000: the client pod's nat OUTPUT REDIRECT to the client sidecar's :%d (original_dst,\n", mtlsArmSidecar+":", mtlsMeshOutboundPort)
	fmt.Fprintf(&sb, "  %-27s TCP proxy, mutual TLS 1.3 to the original destination, its own sockets marked %d and not redirected),\n", "", mtlsMeshMark)
	fmt.Fprintf(&sb, "  %-27s payment-mesh's nat PREROUTING REDIRECT of port 3000 to its sidecar's :%d (client certificate required,\n", "", mtlsMeshInboundPort)
	fmt.Fprintf(&sb, "  %-27s SPIFFE ID RBAC, TCP proxy to 127.0.0.1:3000): an Istio-style capture with the leanest sidecars\n", "")
	fmt.Fprintf(&sb, "  %-27s the same TCP-proxy sidecars without capture: to the client sidecar on 127.0.0.1:%d, to payment-plain's\n", mtlsArmSidecarLocal+":", l7ClientSidecarPort)
	fmt.Fprintf(&sb, "  %-27s sidecar on its own port %d (reference, not a deployable mesh)\n", "", l7ServerSidecarPort)
	fmt.Fprintf(&sb, "  %-27s the same sidecars on 127.0.0.1:%d and payment-plain:%d speaking Membrane's tunnel protocol (mutual TLS 1.3,\n", mtlsArmHBONE+":", mtlsHBONEClientPort, mtlsHBONEServerPort)
	fmt.Fprintf(&sb, "  %-27s one HTTP/2 CONNECT stream per connection, HTTP RBAC on the SPIFFE ID): the protocol's cost without the node proxies\n", "")
	same := "the node Envoy image's binary, byte for byte"
	if !r.sameBinary {
		same = "NOT the node Envoy image's binary"
	}
	fmt.Fprintf(&sb, "Sidecars run %s (%s); TLS 1.3 with Envoy's default suites and ECDSA P-256 keys on every arm.\n", r.envoyBin, same)
	fmt.Fprintf(&sb, "Proxy CPU: membrane = %d cgroups (both nodes' Envoy and agent pods); a sidecar pair = its two sidecars' cgroups.\n", r.membraneCgroups)
	if r.idleFor > 0 {
		perMin := func(x time.Duration) float64 { return x.Seconds() / r.idleFor.Minutes() }
		fmt.Fprintf(&sb, "Idle (no traffic, %s before the shapes), CPU-s per minute: both agents %.3f, both node Envoys %.3f\n",
			r.idleFor.Round(time.Second), perMin(r.idleAgentCPU), perMin(r.idleEnvoyCPU))
	}
	for _, sh := range r.shapes {
		r.shape(&sb, sh)
	}
	fmt.Fprintf(&sb, "\nNotes:\n")
	fmt.Fprintf(&sb, "- \"RBAC-allowed\": the enforcing Envoy's RBAC allowed counter over the shape (connections or CONNECT streams, not requests).\n")
	fmt.Fprintf(&sb, "- \"mTLS conns\": upstream connections the source-side proxy opened to the other proxy over the shape (each one a TLS\n")
	fmt.Fprintf(&sb, "  handshake); \"streams\": HTTP/2 CONNECT streams it sent over them (tunnel arms).\n")
	fmt.Fprintf(&sb, "- latency: from the request's start (dial included when the connection is new) to the end of the response body, in the\n")
	fmt.Fprintf(&sb, "  Go client; percentiles are nearest-rank over all rounds.\n")
	if len(r.redirected) == 2 {
		fmt.Fprintf(&sb, "- sidecar pair capture: the client pod's REDIRECT matched %d packets, payment-mesh's %d.\n", r.redirected[0], r.redirected[1])
	}
	fmt.Fprintf(&sb, "- load average before: %s; after: %s; whole benchmark %s\n", r.load, strings.TrimSpace(wgLoadAvg()), r.took.Round(time.Second))
	return sb.String()
}

func (r *mtlsReport) shape(sb *strings.Builder, sh *mtlsShape) {
	fmt.Fprintf(sb, "\n-- %s --\n", sh.name())
	direct := sh.arm(mtlsArmDirect).stats()
	tw := tabwriter.NewWriter(sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "arm\trequests\tp50\tp90\tp99\tmax\tadded p50\tadded p99\tproxy CPU-s/1k req\tRBAC-allowed\tmTLS conns\tstreams\t")
	for _, a := range sh.arms {
		s := a.stats()
		added50, added99, cpu, rbac, conns, streams := "-", "-", "-", "-", "-", "-"
		if a.name != mtlsArmDirect {
			added50, added99 = us(s.p50-direct.p50), us(s.p99-direct.p99)
			cpu = fmt.Sprintf("%.3f", s.cpuPer1k)
			rbac = fmt.Sprintf("%.0f", a.rbacDelta)
			conns = fmt.Sprintf("%.0f", a.connsDelta)
		}
		if a.streams.filter != "" {
			streams = fmt.Sprintf("%.0f", a.streamsDelta)
		}
		name := a.name
		if a.truncated {
			name += " (60 s budget hit)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, s.n, us(s.p50), us(s.p90), us(s.p99), us(s.max),
			added50, added99, cpu, rbac, conns, streams)
	}
	tw.Flush()
	verdict := func(ratio float64) string {
		if ratio <= mtlsTarget {
			return "met"
		}
		return "MISSED"
	}
	p99, cpu, p99ok, cpuok := sh.ratio(mtlsArmSidecar)
	if p99ok {
		fmt.Fprintf(sb, "%s: membrane added p99 / sidecar pair added p99: %.3f (target <= %.1f: %s)\n", sh.name(), p99, mtlsTarget, verdict(p99))
	} else {
		fmt.Fprintf(sb, "%s: membrane added p99 / sidecar pair added p99: - (the sidecar pair added nothing at p99; target <= %.1f: not evaluated)\n", sh.name(), mtlsTarget)
	}
	if cpuok {
		fmt.Fprintf(sb, "%s: proxy CPU per request, membrane / sidecar pair: %.3f (target <= %.1f: %s)\n", sh.name(), cpu, mtlsTarget, verdict(cpu))
	}
	m, d := sh.arm(mtlsArmMembrane).stats(), direct
	for _, ref := range []string{mtlsArmSidecarLocal, mtlsArmHBONE} {
		o := sh.arm(ref).stats()
		if o.p50 > d.p50 && o.p99 > d.p99 && o.cpuPer1k > 0 {
			fmt.Fprintf(sb, "membrane / %s (no target): added p50 %.3f, added p99 %.3f, CPU per request %.3f\n", ref,
				float64(m.p50-d.p50)/float64(o.p50-d.p50), float64(m.p99-d.p99)/float64(o.p99-d.p99), m.cpuPer1k/o.cpuPer1k)
		}
	}
	if m.n > 0 {
		per1k := func(x time.Duration) float64 { return x.Seconds() / float64(m.n) * 1000 }
		fmt.Fprintf(sb, "membrane's CPU-s/1k req: node Envoys %.3f, agents %.3f (their background work over the arm's measured time included)\n",
			per1k(sh.envoyCPU), per1k(sh.agentCPU))
	}
	if d := sh.arm(mtlsArmDirect); d.stats().n > 0 {
		per1k := func(x time.Duration) float64 { return x.Seconds() / float64(d.stats().n) * 1000 }
		fmt.Fprintf(sb, "the same processes while the direct arm ran (background, no traffic through them), per 1k direct requests: node Envoys %.3f, agents %.3f\n",
			per1k(sh.idleEnvoyCPU), per1k(sh.idleAgentCPU))
	}
}

func (r *mtlsReport) metrics(b *testing.B) {
	b.ReportMetric(0, "ns/op")
	for _, sh := range r.shapes {
		prefix := "keepalive-"
		if !sh.keepAlive {
			prefix = "newconn-"
		}
		direct := sh.arm(mtlsArmDirect).stats()
		for _, a := range sh.arms {
			s := a.stats()
			unit := prefix + a.unit
			b.ReportMetric(float64(s.p50.Microseconds()), unit+"-p50-µs")
			b.ReportMetric(float64(s.p99.Microseconds()), unit+"-p99-µs")
			if a.name != mtlsArmDirect {
				b.ReportMetric(float64((s.p50 - direct.p50).Microseconds()), unit+"-added-p50-µs")
				b.ReportMetric(float64((s.p99 - direct.p99).Microseconds()), unit+"-added-p99-µs")
				b.ReportMetric(s.cpuPer1k, unit+"-CPUs/1k")
			}
		}
		if p99, cpu, p99ok, cpuok := sh.ratio(mtlsArmSidecar); p99ok && cpuok {
			b.ReportMetric(p99, prefix+"membrane/sidecar-added-p99")
			b.ReportMetric(cpu, prefix+"membrane/sidecar-CPU")
		}
	}
}
