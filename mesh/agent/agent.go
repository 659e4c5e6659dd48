package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/membrane-mesh/membrane/bpf/hostfs"
	bpfpolicy "github.com/membrane-mesh/membrane/bpf/policy"
	"github.com/membrane-mesh/membrane/bpf/socklb"
	gwnode "github.com/membrane-mesh/membrane/gateway/node"
	"github.com/membrane-mesh/membrane/mesh/flow"
	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/k8s"
	"github.com/membrane-mesh/membrane/mesh/lb"
)

// Agent is one node's agent.
type Agent struct {
	log    *slog.Logger
	cfg    Config
	client kubernetes.Interface
	dyn    dynamic.Interface
	// membrane reads membrane.io's policies in their Go types (nil: through
	// dyn).
	membrane rest.Interface
	metrics  *metrics
	reg      *prometheus.Registry

	// flows are the recent flows `membrane observe` reads.
	flows *flow.Store

	dp    *socklb.Datapath
	lb    *lb.Reconciler
	eps   *endpoints    // the policy datapath's endpoints
	proxy *proxy        // nil without an L7 proxy
	dns   *dnsPolicy    // nil without a DNS proxy
	enc   *encryption   // nil with encryption off
	ids   *identities   // nil without SPIFFE identities
	cni   *cniInstaller // nil without --cni-conf-dir
	// mesh watches remote clusters (nil without a cluster id); meshRoutes
	// owns the routes to their pods.
	mesh       *k8s.Mesh
	meshRoutes *meshRoutes
	ready      chan struct{} // closed once the first full sync is programmed
	// apiPublished: the agent API certificate's fingerprint is on the Node.
	apiPublished atomic.Bool
	// policyReady is closed once every local endpoint's policy is programmed.
	policyReady chan struct{}
}

// New returns an agent; Run starts it.
func New(log *slog.Logger, cfg Config, client kubernetes.Interface, dyn dynamic.Interface, membrane rest.Interface, reg *prometheus.Registry) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Agent{
		log: log, cfg: cfg, client: client, dyn: dyn, membrane: membrane, reg: reg, metrics: newMetrics(reg),
		ready: make(chan struct{}), policyReady: make(chan struct{}),
		flows: flow.NewStore(cfg.FlowBufferSize, flow.NewMetrics(reg)),
	}, nil
}

// Run loads the datapath, keeps it in sync with the cluster and serves the
// agent API until ctx is done. The datapath stays attached when it returns:
// Service translation goes on while the agent restarts.
func (a *Agent) Run(ctx context.Context) error {
	// The node may be a fresh machine: mount bpffs where it is missing.
	if _, err := hostfs.MountBPF(a.log, a.cfg.BPFPinDir); err != nil {
		return fmt.Errorf("--bpf-pin-dir: %w", err)
	}
	if err := hostfs.CheckCgroup2(a.cfg.CgroupPath); err != nil {
		return fmt.Errorf("--cgroup-path: %w", err)
	}
	// Pods and the WireGuard device are sized by it.
	a.cfg.MTU = a.underlayMTU(ctx)
	dp, err := socklb.Load(ctx, a.log.With("component", "socklb"), socklb.Options{PinDir: a.cfg.BPFPinDir, CgroupPath: a.cfg.CgroupPath})
	if err != nil {
		return err
	}
	defer dp.Close()
	a.dp = dp
	a.lb = lb.NewReconciler(socketLB{maps: dp.Maps})
	dump, err := dp.Dump()
	if err != nil {
		return fmt.Errorf("read pinned maps: %w", err)
	}
	backends, services := restore(dump)
	a.lb.Restore(backends, services)
	a.log.Info("datapath loaded", "restoredFrontends", len(services), "restoredBackends", len(backends))

	// One set of shared informers: every source registers on it, then it is
	// started once and synced once, below.
	informers := k8s.NewInformers(a.client, a.dyn)
	informers.Membrane = a.membrane
	skipped := func(kind string, _ error) { a.metrics.skipped.WithLabelValues(kind).Inc() }
	src, err := k8s.NewServiceSource(a.log.With("component", "services"), informers, skipped)
	if err != nil {
		return err
	}

	trace := bpfpolicy.TraceNew
	if a.cfg.FlowEvents != "" {
		if trace, err = bpfpolicy.ParseTraceMode(a.cfg.FlowEvents); err != nil {
			return fmt.Errorf("--flow-events %w", err)
		}
	}
	hostRouting, err := a.hostRouting()
	if err != nil {
		return err
	}
	pdp, err := bpfpolicy.Load(ctx, a.log.With("component", "policy-datapath"), bpfpolicy.Options{PinDir: a.cfg.BPFPinDir, Trace: trace, HostRouting: hostRouting})
	if err != nil {
		return err
	}
	defer pdp.Close()
	filter := identity.DefaultFilter()
	if a.cfg.ClusterID != 0 {
		filter.Cluster = a.cfg.ClusterName // identities carry the cluster
	}
	psrc, err := k8s.NewPolicySource(a.log.With("component", "policy"), informers, filter, skipped)
	if err != nil {
		return err
	}
	up := &uplinks{log: a.log.With("component", "host-routing"), dp: pdp, node: a.cfg.NodeName,
		nodes: informers.Typed.Core().V1().Nodes().Lister(), on: hostRouting}
	a.startClusterMesh(src, psrc, identity.DefaultFilter())
	a.eps, err = newEndpoints(a.log.With("component", "endpoints"), a.cfg.NodeName, pdp, psrc, a.flows, newPolicyMetrics(a.reg))
	if err != nil {
		return err
	}
	if a.cfg.ProxyPort != 0 {
		a.proxy = newProxy(a.log.With("component", "proxy"), a.cfg, a.client, a.flows, a.eps)
		a.proxy.waits, a.proxy.onReady = newProxyWaits(a.reg), a.eps.proxyRan
		a.eps.proxy, a.eps.proxyPort = a.proxy, a.cfg.ProxyPort
	}

	if a.cfg.DNSProxyPort != 0 {
		a.dns, err = newDNSPolicy(a.log.With("component", "dns-proxy"), a.cfg, a.eps, a.flows, a.policyReady)
		if err != nil {
			return err
		}
		a.eps.dnsProxyPort, a.eps.names = a.cfg.DNSProxyPort, a.dns.names
		a.reg.MustRegister(a.dns.proxy.Collector())
	}
	if err := installTProxy(ctx, a.log.With("component", "tproxy"), a.cfg); err != nil {
		return err
	}

	l2, err := a.newL2Announcer(informers)
	if err != nil {
		return err
	}
	var gateways *gwnode.Source
	var ingress *gatewayIdentity
	if a.cfg.GatewayAPI {
		ingress = &gatewayIdentity{log: a.log.With("component", "gateway"), node: a.cfg.NodeName,
			nodes: informers.Typed.Core().V1().Nodes().Lister(), addr: holdIngressAddr}
		if gateways, err = gwnode.NewSource(a.log.With("component", "gateway"), informers, a.client.Discovery(), a.cfg.GatewaySecretsNamespace); err != nil {
			return err
		}
	}

	if a.cfg.EnableEncryption {
		a.enc, err = newEncryption(a.log.With("component", "wireguard"), a.cfg, a.client, informers,
			newEncryptionMetrics(a.reg), func() { a.metrics.skipped.WithLabelValues("WireGuardPeer").Inc() })
		if err != nil {
			return err
		}
		if a.mesh != nil {
			a.enc.remote = a.meshRoutes.wireGuardNodes
			a.meshRoutes.encryptWith(a.enc.poke)
		}
	}

	if a.cfg.SPIFFE.Enabled {
		if a.ids, err = newIdentities(a.log.With("component", "spiffe"), a.cfg.SPIFFE, a.cfg.NodeName, a.client, informers, a.reg); err != nil {
			return err
		}
	}
	if a.ids != nil && a.proxy != nil && a.cfg.MTLSOutboundPort != 0 && a.cfg.MTLSTunnelPort != 0 {
		// Rules requiring authentication go through the node proxy's
		// mutual TLS; without identities they drop what they match.
		a.eps.auth = &mutualAuth{svids: a.svidSource(), outboundPort: a.cfg.MTLSOutboundPort, tunnelPort: a.cfg.MTLSTunnelPort, idleTimeout: a.cfg.MTLSIdleTimeout}
		a.proxy.authMetrics = newAuthMetrics(a.reg)
	}

	if a.cfg.CNI.ConfDir != "" {
		nodes := informers.Typed.Core().V1().Nodes()
		a.cni = newCNIInstaller(a.log.With("component", "cni"), a.cfg, nodes.Lister())
		if err := informers.Watch(nodes.Informer(), a.cni.nodeEvents()); err != nil {
			return fmt.Errorf("watch nodes for the CNI config: %w", err)
		}
	}

	api, err := a.listenAPI(ctx)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.annotationEvents(ctx, src)
	a.datapathGauges()
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	wg.Add(14)
	go func() {
		defer wg.Done()
		select {
		case <-informers.Synced():
			up.run(ctx)
		case <-ctx.Done():
		}
	}()
	go func() {
		defer wg.Done()
		if a.cni == nil {
			return
		}
		// The API socket listens already and the endpoint loop starts
		// with the sync: from then on the plugin's ADD is served.
		select {
		case <-informers.Synced():
			a.cni.run(ctx)
		case <-ctx.Done():
		}
	}()
	go func() {
		defer wg.Done()
		if a.ids == nil {
			return
		}
		select {
		case <-informers.Synced():
			a.ids.run(ctx)
		case <-ctx.Done():
		}
	}()
	go func() {
		defer wg.Done()
		select {
		case <-informers.Synced():
		case <-ctx.Done():
			return
		}
		a.runClusterMesh(ctx)
	}()
	go func() {
		defer wg.Done()
		select {
		case <-informers.Synced():
		case <-ctx.Done():
			return
		}
		l2.Run(ctx)
	}()
	go func() {
		defer wg.Done()
		if gateways == nil {
			return
		}
		gwnode.Run(ctx, a.log.With("component", "gateway"), gateways, informers.Synced(),
			ingress.wrap(a.proxy.setGateway), l2.SetGatewayAddresses)
	}()
	go func() {
		defer wg.Done()
		if gateways == nil || gateways.Served().All() {
			return
		}
		if err := gwnode.AwaitKinds(ctx, a.client.Discovery(), gateways.Served(), 5*time.Second); err != nil {
			errc <- err
			cancel()
		}
	}()
	go func() {
		defer wg.Done()
		if err := api.run(ctx); err != nil {
			errc <- err
			cancel()
		}
	}()
	go func() {
		defer wg.Done()
		a.publishAPICertificate(ctx, api.fingerprint)
	}()
	go func() {
		defer wg.Done()
		if a.enc == nil {
			disableEncryption(ctx, a.log.With("component", "wireguard"), a.client, a.cfg.NodeName)
			return
		}
		if err := a.enc.run(ctx); err != nil {
			errc <- fmt.Errorf("encryption: %w", err)
			cancel()
		}
	}()

	go func() {
		defer wg.Done()
		if a.proxy == nil {
			return
		}
		if err := a.proxy.run(ctx); err != nil {
			errc <- fmt.Errorf("L7 proxy: %w", err)
			cancel()
		}
	}()
	go func() {
		defer wg.Done()
		if a.dns == nil {
			return
		}
		// The proxy listens at once (questions wait for the endpoints'
		// first regeneration, see dnsPolicy.wait): a restart loses as few
		// questions as possible.
		if err := a.dns.run(ctx); err != nil {
			errc <- err
			cancel()
		}
	}()
	go func() {
		defer wg.Done()
		if err := a.eps.runEvents(ctx); err != nil {
			errc <- fmt.Errorf("flow events: %w", err)
			cancel()
		}
	}()
	go func() {
		defer wg.Done()
		select {
		case <-informers.Synced():
		case <-ctx.Done():
			return
		}
		a.eps.run(ctx, a.policyReady)
	}()

	informers.Start(ctx)
	if !informers.WaitForSync(ctx) {
		cancel()
		wg.Wait()
		select {
		case err := <-errc:
			return err
		default:
		}
		return fmt.Errorf("sync informers: %w", ctx.Err())
	}
	a.log.Info("informers synced", "pending", src.Pending())

	handled := 0
	initial := src.Pending()
	src.Run(ctx, func(st k8s.ServiceState) {
		a.sync(st)
		handled++
		if handled == initial {
			// Every service of the initial lists is programmed: what the
			// maps still hold from before is stale.
			if err := a.lb.Prune(); err != nil {
				a.log.Error("prune stale datapath entries", "error", err)
			}
			close(a.ready)
			a.log.Info("initial sync programmed", "services", initial)
		}
	})
	if initial == 0 {
		_ = a.lb.Prune()
	}
	cancel()
	wg.Wait()
	informers.Shutdown()
	select {
	case err := <-errc:
		return err
	default:
	}
	return nil
}

// sync translates one service for this node and programs it.
func (a *Agent) sync(st k8s.ServiceState) {
	start := time.Now()
	var entries []lb.Entry
	var problems []error
	if st.Service != nil {
		entries, problems = lb.Entries(*st.Service, st.Slices, st.Nodes, a.cfg.NodeName)
	}
	for _, p := range problems {
		a.metrics.skipped.WithLabelValues("ServicePort").Inc()
		a.log.Warn("skipped part of a service", "service", st.ID, "reason", p)
	}
	if err := a.lb.Apply(st.ID, entries); err != nil {
		a.metrics.syncs.WithLabelValues("error").Inc()
		a.log.Error("program service", "service", st.ID, "error", err)
	} else {
		a.metrics.syncs.WithLabelValues("ok").Inc()
	}
	a.metrics.syncDuration.Observe(time.Since(start).Seconds())
	a.log.Debug("service programmed", "service", st.ID, "frontends", len(entries), "took", time.Since(start))
}

// datapathGauges registers the datapath's counters, the programmed
// services and the policy maps' usage, read when scraped.
func (a *Agent) datapathGauges() {
	gauges := append([]prometheus.Collector{a.metrics.datapathStats, a.metrics.services}, a.eps.metrics.datapathGauges()...)
	a.reg.MustRegister(newOnScrape(scrapeMaxAge, a.refreshDatapathGauges, gauges...))
}

func (a *Agent) refreshDatapathGauges() {
	if c, err := a.dp.Counters(); err == nil {
		for name, v := range map[string]uint64{
			"translated": c.Translated, "reverse_translated": c.ReverseTranslated,
			"no_backend": c.NoBackend, "slot_missing": c.SlotMissing,
			"backend_missing": c.BackendMissing, "affinity_hit": c.AffinityHits,
			"reverse_stale": c.ReverseStale,
		} {
			a.metrics.datapathStats.WithLabelValues(name).Set(float64(v))
		}
	}
	a.metrics.services.Set(float64(len(a.lb.Snapshot())))
	if err := a.eps.metrics.datapath(a.eps.dp); err != nil {
		a.log.Debug("read policy datapath counters", "error", err)
	}
}

// hostRouting decides --host-routing: bpf where the kernel has it.
func (a *Agent) hostRouting() (bool, error) {
	if a.cfg.HostRouting == HostRoutingLegacy {
		a.log.Info("host routing: legacy (the node's stack)")
		return false, nil
	}
	ok, err := bpfpolicy.HaveHostRouting()
	if err != nil {
		return false, fmt.Errorf("--host-routing: %w", err)
	}
	if !ok {
		a.log.Warn("host routing: legacy: the kernel lacks bpf_redirect_peer (Linux 5.10)")
		return false, nil
	}
	a.log.Info("host routing: bpf")
	return true, nil
}
