package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/membrane-mesh/membrane/encryption/wireguard"
	"github.com/membrane-mesh/membrane/mesh/agentapi"
	"github.com/membrane-mesh/membrane/mesh/clustermesh"
	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/k8s"
	"github.com/membrane-mesh/membrane/mesh/model"
	"github.com/membrane-mesh/membrane/mesh/nldump"
)

// meshRouteProtocol marks the routes to remote clusters' PodCIDRs this
// agent owns (rtnetlink protocol number; the agent replaces and removes
// only routes of this protocol).
const meshRouteProtocol netlink.RouteProtocol = 0xb7

// validateClusterMesh checks the cluster-mesh flags.
func (c Config) validateClusterMesh() []error {
	var errs []error
	if c.ClusterID < 0 || c.ClusterID > clustermesh.MaxID {
		errs = append(errs, fmt.Errorf("--cluster-id %d: must be 0 (no cluster mesh) to %d", c.ClusterID, clustermesh.MaxID))
	}
	if c.ClusterName == "" && c.ClusterID == 0 {
		return errs // not in a mesh
	}
	if err := clustermesh.ValidateName(c.ClusterName); err != nil {
		errs = append(errs, fmt.Errorf("--cluster-name: %w", err))
	}
	if ns, name, ok := strings.Cut(c.ClusterMeshSecret, "/"); c.ClusterID > 0 && !ok || ns == "" || name == "" {
		errs = append(errs, fmt.Errorf("--clustermesh-secret %q: must be NAMESPACE/NAME", c.ClusterMeshSecret))
	}
	if c.ClusterMeshCacheTTL < 0 {
		errs = append(errs, fmt.Errorf("--clustermesh-cache-ttl %s: must not be negative", c.ClusterMeshCacheTTL))
	}
	return errs
}

// meshSink hands remote slices to the service source, remote pods and
// identities to the policy source and remote nodes to the route owner.
type meshSink struct {
	svc    *k8s.ServiceSource
	pol    *k8s.PolicySource
	routes *meshRoutes
}

func (s meshSink) SetRemoteSlices(cluster string, id model.ServiceID, slices []model.EndpointSlice) {
	s.svc.SetRemoteSlices(cluster, id, slices)
}

func (s meshSink) DropCluster(cluster string) {
	s.svc.DropCluster(cluster)
	s.pol.SetRemotePolicy(cluster, nil)
}

func (s meshSink) SetRemotePolicy(cluster string, r *k8s.RemotePolicy) {
	s.pol.SetRemotePolicy(cluster, r)
}

func (s meshSink) SetRemoteNodes(cluster string, nodes []clustermesh.RemoteNode) {
	s.routes.set(cluster, nodes)
}

// meshRoutes owns this node's routes to remote clusters' PodCIDRs: one per
// remote node, via its InternalIP over the underlay. With encryption on,
// the remote nodes that publish a WireGuard key get no such route: they are
// peers of the node's device (wireGuardNodes), whose routes take their
// PodCIDRs through the tunnel.
type meshRoutes struct {
	log   *slog.Logger
	mu    sync.Mutex
	nodes map[string][]clustermesh.RemoteNode
	// changed is told after each change of the remote nodes (the
	// WireGuard peers follow them); nil without encryption.
	changed func()
}

func newMeshRoutes(log *slog.Logger) *meshRoutes {
	return &meshRoutes{log: log, nodes: map[string][]clustermesh.RemoteNode{}}
}

func (m *meshRoutes) set(cluster string, nodes []clustermesh.RemoteNode) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if nodes == nil {
		delete(m.nodes, cluster)
	} else {
		m.nodes[cluster] = nodes
	}
	if err := m.reconcile(); err != nil {
		m.log.Warn("routes to remote clusters", "error", err)
	}
	if m.changed != nil {
		m.changed()
	}
}

// encryptWith turns on encryption of remote pod traffic: f (non-blocking)
// is told of every change of the remote nodes, and the nodes that publish
// a key lose their underlay route.
func (m *meshRoutes) encryptWith(f func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.changed = f
	if err := m.reconcile(); err != nil {
		m.log.Warn("routes to remote clusters", "error", err)
	}
}

// wireGuardNodes lists every remote node for WireGuard peering, named
// CLUSTER/NODE (no local Node name has a slash), so the local and remote
// nodes share one peer derivation: keys, endpoints and PodCIDRs are
// checked, and a PodCIDR claimed twice is reported, the same way.
func (m *meshRoutes) wireGuardNodes() []wireguard.Node {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []wireguard.Node
	for cluster, nodes := range m.nodes {
		for _, n := range nodes {
			out = append(out, remoteWireGuardNode(cluster, n))
		}
	}
	return out
}

func remoteWireGuardNode(cluster string, n clustermesh.RemoteNode) wireguard.Node {
	return wireguard.Node{Name: cluster + "/" + n.Name, IP: n.IP, PodCIDRs: slices.Clone(n.PodCIDRs), Key: n.WireGuardKey}
}

// reconcile makes the main table hold exactly the wanted routes of
// meshRouteProtocol. Called with m.mu held.
func (m *meshRoutes) reconcile() error {
	want := map[netip.Prefix]netip.Addr{}
	for _, nodes := range m.nodes {
		for _, n := range nodes {
			if m.changed != nil && n.WireGuardKey != "" {
				// Only through the tunnel: while the node is not (yet, or
				// no longer) a peer its pods are unreachable, never sent
				// in plaintext.
				continue
			}
			for _, p := range n.PodCIDRs {
				want[p.Masked()] = n.IP
			}
		}
	}
	have, err := nldump.Retry(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: meshRouteProtocol, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	var errs []error
	for _, r := range have {
		if r.Dst == nil {
			continue
		}
		p, ok := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		gw, _ := netip.AddrFromSlice(r.Gw)
		if ok {
			if via, w := want[netip.PrefixFrom(p.Unmap(), ones)]; w && via == gw.Unmap() {
				continue
			}
		}
		if err := netlink.RouteDel(&r); err != nil {
			errs = append(errs, fmt.Errorf("delete route %s: %w", r.Dst, err))
		}
	}
	for p, via := range want {
		r := &netlink.Route{
			Dst:      &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)},
			Gw:       via.AsSlice(),
			Protocol: meshRouteProtocol,
			Table:    unix.RT_TABLE_MAIN,
		}
		if err := netlink.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("route %s via %s: %w", p, via, err))
		}
	}
	return errors.Join(errs...)
}

// clear removes every route this agent owns to remote clusters.
func (m *meshRoutes) clear() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nodes = map[string][]clustermesh.RemoteNode{}
	return m.reconcile()
}

// routes lists the wanted routes, for status.
func (m *meshRoutes) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, nodes := range m.nodes {
		for _, x := range nodes {
			n += len(x.PodCIDRs)
		}
	}
	return n
}

// startClusterMesh watches the remote clusters of the mesh Secret when
// this cluster has an id; without one it removes routes left from before.
func (a *Agent) startClusterMesh(src *k8s.ServiceSource, psrc *k8s.PolicySource, filter identity.Filter) {
	a.meshRoutes = newMeshRoutes(a.log.With("component", "clustermesh"))
	if a.cfg.ClusterID == 0 {
		if err := a.meshRoutes.clear(); err != nil {
			a.log.Warn("remove routes to remote clusters", "error", err)
		}
		return
	}
	ns, name, _ := strings.Cut(a.cfg.ClusterMeshSecret, "/")
	ttl := a.cfg.ClusterMeshCacheTTL
	a.mesh = k8s.NewMesh(a.log.With("component", "clustermesh"), k8s.MeshConfig{
		Cluster: a.cfg.ClusterName, Namespace: ns, Secret: name, CacheTTL: ttl, Filter: filter,
	}, a.client, meshSink{svc: src, pol: psrc, routes: a.meshRoutes})
}

func (a *Agent) runClusterMesh(ctx context.Context) {
	if a.mesh == nil {
		return
	}
	a.mesh.Run(ctx)
}

func (a *Agent) clusterMeshStatus() clustermesh.Status {
	st := clustermesh.Status{Cluster: a.cfg.ClusterName, ID: a.cfg.ClusterID, CacheTTL: a.cfg.ClusterMeshCacheTTL.String(), Remotes: []clustermesh.RemoteStatus{}}
	if a.mesh != nil {
		st.Remotes = a.mesh.Status()
	}
	return st
}

func (a *Agent) clusterMeshRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+agentapi.PathClusterMesh, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, agentapi.ClusterMeshStatus{Node: a.cfg.NodeName, Status: a.clusterMeshStatus()})
	})
}

// annotationEvents records a Warning Event on each Service whose
// cluster-mesh annotation cannot be used (the Service then behaves as if
// the annotation were absent), until ctx is done.
func (a *Agent) annotationEvents(ctx context.Context, src *k8s.ServiceSource) {
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: a.client.CoreV1().Events("")})
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "membrane-agent", Host: a.cfg.NodeName})
	go func() {
		<-ctx.Done()
		broadcaster.Shutdown()
	}()
	src.OnAnnotationProblem(func(svc *corev1.Service, err error) {
		recorder.Eventf(svc, corev1.EventTypeWarning, "InvalidClusterMeshAnnotation",
			"membrane-agent on %s ignored a cluster-mesh annotation (the Service behaves as if it were absent): %s", a.cfg.NodeName, err)
	})
}
