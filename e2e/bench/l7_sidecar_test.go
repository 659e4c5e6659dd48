package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/membrane-mesh/membrane/xds/translate"
)

// serverSidecarNode is the server sidecar's L7 input: payment-mesh's
// ingress on the app's port, with payment-l7's rules and peers (app=client's
// addresses: the client and client-mesh pods), listening on the pod IP's
// inbound port, where the pod's iptables redirect every inbound TCP
// connection (translate's listener recovers the original destination).
func (l *l7Bench) serverSidecarNode() (translate.Node, error) {
	_, rules := l7HTTPRules()
	peers := []netip.Prefix{netip.PrefixFrom(l.clientIP, 32), netip.PrefixFrom(l.meshClientIP, 32)}
	n := translate.Node{
		ProxyPort: l7ServerSidecarPort, ListenAddress: l.meshIP, AccessLogCluster: l7AccessLogCluster,
		Ports: []translate.Port{{
			Direction: translate.Ingress, Endpoint: l.meshIP, Port: l7AppPort,
			Rules: []translate.Rule{{Peers: peers, HTTP: rules}},
		}},
	}
	return n, n.Validate()
}

// serverSidecarBootstrap: translate's listener for n with its route
// configuration inline; its
// ORIGINAL_DST cluster becomes a static one (same name and options) to the
// app on the pod's loopback, and the access-log cluster a unix socket.
func serverSidecarBootstrap(n translate.Node, alsSock string) (*bootstrapv3.Bootstrap, error) {
	res, err := n.Resources()
	if err != nil {
		return nil, err
	}
	if len(res.Listeners) != 1 || len(res.Clusters) != 1 {
		return nil, fmt.Errorf("translate: %d listeners, %d clusters: want 1 and 1", len(res.Listeners), len(res.Clusters))
	}
	app := proto.Clone(res.Clusters[0]).(*clusterv3.Cluster)
	app.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
	app.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
	app.LoadAssignment = l7LoadAssignment(app.Name, l7SocketAddress("127.0.0.1", l7AppPort))
	h2, err := http2Upstream()
	if err != nil {
		return nil, err
	}
	als := &clusterv3.Cluster{
		Name:                          l7AccessLogCluster,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:                durationpb.New(time.Second),
		TypedExtensionProtocolOptions: h2,
		LoadAssignment:                l7LoadAssignment(l7AccessLogCluster, &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: alsSock}}}),
	}
	// No ADS: the chain's route configuration goes inline.
	listeners, err := res.InlineRoutes()
	if err != nil {
		return nil, err
	}
	return l7Bootstrap("server-sidecar", listeners, []*clusterv3.Cluster{app, als}), nil
}

// clientSidecarBootstrap: the outbound listener (where the client pod's
// iptables redirect the app's connections) recovers the original
// destination and routes every request there, through translate's
// original-destination cluster (its protocol options), with the sidecar's
// upstream sockets marked so that the iptables let them out.
func clientSidecarBootstrap() (*bootstrapv3.Bootstrap, error) {
	ref, err := (translate.Node{ProxyPort: 1}).Resources()
	if err != nil {
		return nil, err
	}
	up := proto.Clone(ref.Clusters[0]).(*clusterv3.Cluster)
	if up.GetType() != clusterv3.Cluster_ORIGINAL_DST {
		return nil, fmt.Errorf("translate's cluster %s is %s, want ORIGINAL_DST", up.GetName(), up.GetType())
	}
	up.UpstreamBindConfig = &corev3.BindConfig{
		SourceAddress: &corev3.SocketAddress{Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{}},
		SocketOptions: []*corev3.SocketOption{soMark("SO_MARK", l7SidecarMark)},
	}
	router, err := anypb.New(&routerv3.Router{SuppressEnvoyHeaders: true})
	if err != nil {
		return nil, err
	}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: "outbound",
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: "outbound",
			VirtualHosts: []*routev3.VirtualHost{{
				Name: "any", Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: up.GetName()},
						Timeout:          durationpb.New(0),
					}},
				}},
			}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	if err != nil {
		return nil, err
	}
	odst, err := anypb.New(&originaldstv3.OriginalDst{})
	if err != nil {
		return nil, err
	}
	lis := &listenerv3.Listener{
		Name:    "outbound",
		Address: l7SocketAddress("0.0.0.0", l7ClientSidecarPort),
		ListenerFilters: []*listenerv3.ListenerFilter{{
			Name: "envoy.filters.listener.original_dst", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: odst},
		}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
		}}}},
	}
	return l7Bootstrap("client-sidecar", []*listenerv3.Listener{lis}, []*clusterv3.Cluster{up}), nil
}

// l7ClientRedirect are the client pod's nat rules, as a sidecar mesh
// installs them: every outbound TCP connection of the pod goes to the
// sidecar's outbound port, but the sidecar's own (its mark) and those to
// the loopback (the sidecar's admin).
func l7ClientRedirect() [][]string {
	return natRedirect("OUTPUT", "MESH_OUTPUT", l7ClientSidecarPort, [][]string{
		{"-m", "mark", "--mark", strconv.Itoa(l7SidecarMark)},
		{"-d", "127.0.0.1/32"},
	})
}

// l7ServerRedirect are the server pod's: every inbound TCP connection goes
// to the sidecar's inbound port.
func l7ServerRedirect() [][]string {
	return natRedirect("PREROUTING", "MESH_INBOUND", l7ServerSidecarPort, nil)
}

// redirect installs rules with the host's iptables (nf_tables) in pod's
// network namespace, which goes away with the pod, and prints the
// namespace's nat rules.
func (l *l7Bench) redirect(ctx context.Context, pod *corev1.Pod, rules [][]string) error {
	if err := iptablesIn(ctx, l.netns(pod), rules); err != nil {
		return fmt.Errorf("%s: %w", pod.Name, err)
	}
	out, err := exec.CommandContext(ctx, "nsenter", "--net="+l.netns(pod), "--", "iptables-save", "-t", "nat").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: iptables-save: %w: %s", pod.Name, err, out)
	}
	progress(l.b, "%s: nat rules:\n%s", pod.Name, strings.TrimSpace(string(out)))
	return nil
}

// http2Upstream are a cluster's protocol options for HTTP/2 to its
// upstreams (TypedExtensionProtocolOptions).
func http2Upstream() (map[string]*anypb.Any, error) {
	h2, err := anypb.New(&upstreamhttpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
			},
		},
	})
	if err != nil {
		return nil, err
	}
	return map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2}, nil
}

// soMark sets a sidecar's upstream sockets' mark (SO_MARK, before bind),
// which its pod's nat rules let out.
func soMark(description string, mark int64) *corev3.SocketOption {
	return &corev3.SocketOption{
		Description: description, Level: syscall.SOL_SOCKET, Name: syscall.SO_MARK,
		Value: &corev3.SocketOption_IntValue{IntValue: mark}, State: corev3.SocketOption_STATE_PREBIND,
	}
}

func l7Bootstrap(id string, ls []*listenerv3.Listener, cs []*clusterv3.Cluster) *bootstrapv3.Bootstrap {
	return &bootstrapv3.Bootstrap{
		Node:            &corev3.Node{Id: id, Cluster: "bench-sidecar"},
		Admin:           &bootstrapv3.Admin{Address: l7SocketAddress("127.0.0.1", l7SidecarAdminPort)},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{Listeners: ls, Clusters: cs},
	}
}

func l7SocketAddress(addr string, port uint16) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}

func l7LoadAssignment(cluster string, addr *corev3.Address) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: cluster,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: addr}},
		}}}},
	}
}

// l7Sidecar is an Envoy the benchmark runs in a pod's network namespace,
// in a cgroup of its own below the cluster's.
type l7Sidecar struct {
	name, log, cgroup string
	cmd               *exec.Cmd
	exited            chan struct{}
	err               error
}

func (l *l7Bench) startSidecar(name string, pod *corev1.Pod, bootstrap func() (*bootstrapv3.Bootstrap, error)) (*l7Sidecar, error) {
	bs, err := bootstrap()
	if err != nil {
		return nil, fmt.Errorf("%s sidecar: %w", name, err)
	}
	raw, err := protojson.Marshal(bs)
	if err != nil {
		return nil, fmt.Errorf("%s sidecar: %w", name, err)
	}
	cfg := filepath.Join(l.tmp, name+"-sidecar.json")
	if err := os.WriteFile(cfg, raw, 0o644); err != nil {
		return nil, err
	}
	s := &l7Sidecar{
		name: name, log: filepath.Join(l.tmp, name+"-sidecar.log"), exited: make(chan struct{}),
		cgroup: filepath.Join(l.c.state.Layout().CgroupDir(l.c.state.CgroupRoot), "bench-"+name+"-sidecar"),
	}
	if err := os.Mkdir(s.cgroup, 0o755); err != nil {
		return nil, fmt.Errorf("%s sidecar: %w", name, err)
	}
	cg, err := os.Open(s.cgroup)
	if err != nil {
		return nil, err
	}
	defer cg.Close()
	logf, err := os.Create(s.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	// nsenter execs Envoy: the PID is Envoy's.
	s.cmd = exec.Command("nsenter", "--net="+l.netns(pod), "--", l.envoyBin, "-c", cfg,
		"--disable-hot-restart", "--log-level", "warn")
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd()), Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		_ = os.Remove(s.cgroup)
		return nil, fmt.Errorf("start the %s sidecar: %w", name, err)
	}
	go func() { s.err = s.cmd.Wait(); close(s.exited) }()
	progress(l.b, "%s sidecar: Envoy PID %d in %s's network namespace (%s)", name, s.cmd.Process.Pid, pod.Name, pod.Status.PodIP)
	return s, nil
}

// check fails when the sidecar has exited.
func (s *l7Sidecar) check() error {
	select {
	case <-s.exited:
		return fmt.Errorf("the %s sidecar exited: %v:\n%s", s.name, s.err, tail(s.log, 20))
	default:
		return nil
	}
}

func (s *l7Sidecar) cpu() time.Duration {
	d, _ := cgroupUsage(s.cgroup)
	return d
}

// stop kills the sidecar by PID, waits for it (10 s at most) and removes
// its cgroup.
func (s *l7Sidecar) stop(b *testing.B) {
	_ = s.cmd.Process.Kill()
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		b.Errorf("the %s sidecar (PID %d) did not exit after SIGKILL", s.name, s.cmd.Process.Pid)
		return
	}
	if b.Failed() {
		b.Logf("--- last lines of the %s sidecar's log:\n%s", s.name, tail(s.log, 15))
	}
	// The cgroup empties shortly after the process is reaped.
	_ = pollEvery(context.Background(), 50*time.Millisecond, 5*time.Second, "the sidecar's cgroup removed", func() (bool, error) {
		err := os.Remove(s.cgroup)
		return err == nil || errors.Is(err, os.ErrNotExist), nil
	})
}

// nodePodCgroup is the cgroup of node 2's kube-system pod with the label
// selector sel (the Envoy's, the agent's).
func (l *l7Bench) nodePodCgroup(ctx context.Context, sel string) (string, error) {
	pods, err := l.c.client.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{
		LabelSelector: sel, FieldSelector: "spec.nodeName=" + l.server.Name,
	})
	if err != nil {
		return "", fmt.Errorf("find the %s pod of %s: %w", sel, l.server.Name, err)
	}
	if len(pods.Items) != 1 {
		return "", fmt.Errorf("%d %s pods on %s, want 1", len(pods.Items), sel, l.server.Name)
	}
	dir := l.podCgroup(l.server.Name, string(pods.Items[0].UID))
	if _, err := cgroupUsage(dir); err != nil {
		return "", fmt.Errorf("pod %s: %w", pods.Items[0].Name, err)
	}
	return dir, nil
}

// cgroupsCPU is the CPU time of each of the cgroups dirs.
func cgroupsCPU(dirs ...string) func() ([]time.Duration, error) {
	return func() ([]time.Duration, error) {
		out := make([]time.Duration, len(dirs))
		for i, d := range dirs {
			u, err := cgroupUsage(d)
			if err != nil {
				return nil, err
			}
			out[i] = u
		}
		return out, nil
	}
}

// softirqTime is the machine's softirq CPU time so far (/proc/stat, every
// CPU, in clock ticks of 10 ms): the kernel's packet processing that no
// cgroup may have been charged for, whoever caused it.
func softirqTime() (time.Duration, error) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	// cpu user nice system idle iowait irq softirq ...
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	ticks, err := strconv.ParseInt(f[7], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/stat softirq %q: %w", f[7], err)
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// sameBinaryAsNode reports whether the sidecars' Envoy is the node Envoy
// image's binary, byte for byte.
func (l *l7Bench) sameBinaryAsNode() bool {
	a, err1 := os.ReadFile(l.envoyBin)
	bb, err2 := os.ReadFile(filepath.Join(l.c.env.toolsDir, "images", "envoyproxy_envoy", "rootfs", "usr", "local", "bin", "envoy"))
	return err1 == nil && err2 == nil && string(a) == string(bb)
}

// rbacAllowed sums the RBAC filters' ingress "allowed" counters of the
// Envoy whose admin is at addr in the network namespace at nsPath.
func rbacAllowed(ctx context.Context, nsPath, addr string) (float64, error) {
	body, err := l7AdminGet(ctx, nsPath, addr, "/stats?filter="+url.QueryEscape(`rbac\.ingress\.allowed$`))
	if err != nil {
		return 0, err
	}
	sum, n := 0.0, 0
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		_, v, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			continue
		}
		x, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return 0, fmt.Errorf("Envoy stats at %s: line %q: %w", addr, sc.Text(), err)
		}
		sum += x
		n++
	}
	if n == 0 {
		return 0, fmt.Errorf("Envoy stats at %s: no RBAC ingress counter", addr)
	}
	return sum, nil
}

func l7AdminGet(ctx context.Context, nsPath, addr, path string) ([]byte, error) {
	hc := l7Client(nsPath, false)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("Envoy admin %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("Envoy admin %s%s: %w", addr, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("Envoy admin %s%s: %s", addr, path, resp.Status)
	}
	return body, nil
}

// sameRules checks that the node Envoy's live filter chain for payment-l7
// and the server sidecar's have equal HTTP connection managers (RBAC
// filters, router, access log, options) with equal route configurations
// (the RBAC rules), but for the stat prefix and the route configuration's
// and route's names, which name the chain. The node Envoy's route
// configuration is the one it got over RDS.
func (l *l7Bench) sameRules(ctx context.Context, sidecar translate.Node) error {
	body, err := l7AdminGet(ctx, l.server.Netns, l7NodeEnvoyAdmin, "/config_dump?resource=dynamic_listeners")
	if err != nil {
		return err
	}
	var dump struct {
		Configs []struct {
			ActiveState struct {
				Listener json.RawMessage `json:"listener"`
			} `json:"active_state"`
		} `json:"configs"`
	}
	if err := json.Unmarshal(body, &dump); err != nil {
		return fmt.Errorf("node Envoy's config_dump: %w", err)
	}
	var live *hcmv3.HttpConnectionManager
	for _, c := range dump.Configs {
		var a anypb.Any
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(c.ActiveState.Listener, &a); err != nil {
			return fmt.Errorf("node Envoy's config_dump: listener: %w", err)
		}
		var lis listenerv3.Listener
		if err := a.UnmarshalTo(&lis); err != nil {
			return fmt.Errorf("node Envoy's config_dump: listener: %w", err)
		}
		if live, err = chainHCM(&lis, l.l7IP, l7AppPort); err != nil {
			return fmt.Errorf("node Envoy: %w", err)
		}
		if live != nil {
			break
		}
	}
	if live == nil {
		return fmt.Errorf("node Envoy on %s: no filter chain for %s:%d in:\n%s", l.server.Name, l.l7IP, l7AppPort, body)
	}
	rc, err := l.liveRouteConfig(ctx, live.GetRds().GetRouteConfigName())
	if err != nil {
		return err
	}
	live.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}
	res, err := sidecar.Resources()
	if err != nil {
		return err
	}
	listeners, err := res.InlineRoutes()
	if err != nil {
		return err
	}
	mine, err := chainHCM(listeners[0], l.meshIP, l7AppPort)
	if err != nil || mine == nil {
		return fmt.Errorf("the server sidecar's filter chain: %v", err)
	}
	if d := cmp.Diff(withoutNames(live), withoutNames(mine), protocmp.Transform()); d != "" {
		return fmt.Errorf("the node Envoy's and the server sidecar's HTTP connection managers differ (-node +sidecar):\n%s", d)
	}
	return nil
}

// liveRouteConfig is the route configuration name the node Envoy got over
// RDS.
func (l *l7Bench) liveRouteConfig(ctx context.Context, name string) (*routev3.RouteConfiguration, error) {
	body, err := l7AdminGet(ctx, l.server.Netns, l7NodeEnvoyAdmin, "/config_dump?resource=dynamic_route_configs")
	if err != nil {
		return nil, err
	}
	var dump struct {
		Configs []struct {
			RouteConfig json.RawMessage `json:"route_config"`
		} `json:"configs"`
	}
	if err := json.Unmarshal(body, &dump); err != nil {
		return nil, fmt.Errorf("node Envoy's config_dump: %w", err)
	}
	for _, c := range dump.Configs {
		var a anypb.Any
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(c.RouteConfig, &a); err != nil {
			return nil, fmt.Errorf("node Envoy's config_dump: route configuration: %w", err)
		}
		var rc routev3.RouteConfiguration
		if err := a.UnmarshalTo(&rc); err != nil {
			return nil, fmt.Errorf("node Envoy's config_dump: route configuration: %w", err)
		}
		if rc.GetName() == name {
			return &rc, nil
		}
	}
	return nil, fmt.Errorf("node Envoy on %s: no route configuration %q in:\n%s", l.server.Name, name, body)
}

// chainHCM is the HTTP connection manager of l's filter chain for
// ingress to dst:port; nil when there is none.
func chainHCM(l *listenerv3.Listener, dst netip.Addr, port uint16) (*hcmv3.HttpConnectionManager, error) {
	// A client with no egress rules of its own gets dst's ingress chain.
	name, err := translate.SelectChain(l, netip.IPv4Unspecified(), dst, port)
	if err != nil {
		return nil, err
	}
	for _, fc := range l.GetFilterChains() {
		if name == "" || fc.GetName() != name {
			continue
		}
		for _, f := range fc.GetFilters() {
			if f.GetName() != "envoy.filters.network.http_connection_manager" {
				continue
			}
			var h hcmv3.HttpConnectionManager
			if err := f.GetTypedConfig().UnmarshalTo(&h); err != nil {
				return nil, fmt.Errorf("filter chain %s: %w", fc.GetName(), err)
			}
			if rbacOf(&h) == nil {
				return nil, fmt.Errorf("filter chain %s: no RBAC filter", fc.GetName())
			}
			return &h, nil
		}
	}
	return nil, nil
}

func rbacOf(h *hcmv3.HttpConnectionManager) *rbacv3.RBAC {
	for _, f := range h.GetHttpFilters() {
		var r rbacv3.RBAC
		if strings.HasPrefix(f.GetName(), translate.RBACFilterPrefix) && f.GetTypedConfig().UnmarshalTo(&r) == nil {
			return &r
		}
	}
	return nil
}

func withoutNames(h *hcmv3.HttpConnectionManager) *hcmv3.HttpConnectionManager {
	h = proto.Clone(h).(*hcmv3.HttpConnectionManager)
	h.StatPrefix = ""
	if rc := h.GetRouteConfig(); rc != nil {
		rc.Name = ""
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				r.Name = ""
			}
		}
	}
	return h
}
