package noderunner

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vishvananda/netlink"

	"github.com/membrane-mesh/membrane/e2e/noderunner/kubeletapi"
	"github.com/membrane-mesh/membrane/e2e/noderunner/runtime"
)

// Run plays the kubelet for cfg.NodeName until ctx is done. It must run in
// the node's network namespace.
func Run(ctx context.Context, log *slog.Logger, cfg Config) error {
	log = log.With("node", cfg.NodeName)
	client, err := newClient(cfg.Kubeconfig, "membrane-node-runner/"+cfg.NodeName)
	if err != nil {
		return err
	}
	routesClient, err := newClient(cfg.RoutesKubeconfig, "membrane-underlay/"+cfg.NodeName)
	if err != nil {
		return err
	}
	node, err := registerNode(ctx, client, cfg)
	if err != nil {
		return err
	}
	log.Info("node registered")
	if err := renewLease(ctx, client, node); err != nil {
		return err
	}
	podCIDR, err := waitPodCIDR(ctx, client, cfg.NodeName)
	if err != nil {
		return err
	}
	log.Info("pod CIDR assigned", "podCIDR", podCIDR)
	nodeIP := netip.MustParseAddr(cfg.NodeIP)
	if cfg.ControlPlaneNetns != "" {
		if err := publishPodCIDR(cfg.ControlPlaneNetns, podCIDR, nodeIP); err != nil {
			return err
		}
	}
	if cfg.StaticCNI != "" {
		if err := installStaticCNI(cfg, podCIDR); err != nil {
			return err
		}
	}
	rt := runtime.New(log.With("component", "runtime"), "")
	exec, err := newNodeExec(cfg, rt)
	if err != nil {
		return err
	}
	net, err := newNetwork(cfg, exec)
	if err != nil {
		return err
	}

	factory := informers.NewSharedInformerFactory(client, 0)
	routesFactory := informers.NewSharedInformerFactory(routesClient, 0)
	podFactory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
	}))
	svcInformer := factory.Core().V1().Services()
	nodeInformer := routesFactory.Core().V1().Nodes()
	podInformer := podFactory.Core().V1().Pods()

	m := newManager(log, cfg, client, rt, net, svcInformer.Lister())
	if err := m.recoverPods(ctx); err != nil {
		return err
	}

	routesKick := make(chan struct{}, 1)
	kick := func() {
		select {
		case routesKick <- struct{}{}:
		default:
		}
	}
	if _, err := nodeInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { kick() },
		UpdateFunc: func(any, any) { kick() },
		DeleteFunc: func(any) { kick() },
	}); err != nil {
		return fmt.Errorf("watch nodes: %w", err)
	}
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { m.upsert(ctx, obj.(*corev1.Pod)) },
		UpdateFunc: func(_, obj any) { m.upsert(ctx, obj.(*corev1.Pod)) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				m.remove(p.UID)
			}
		},
	}); err != nil {
		return fmt.Errorf("watch pods: %w", err)
	}

	api, err := newKubeletAPI(log, cfg, m)
	if err != nil {
		return err
	}

	var wg sync.WaitGroup
	errc := make(chan error, 1)
	goOwned := func(name string, fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(); err != nil && !errors.Is(err, context.Canceled) {
				select {
				case errc <- fmt.Errorf("%s: %w", name, err):
				default:
				}
			}
		}()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	factory.Start(ctx.Done())
	routesFactory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), svcInformer.Informer().HasSynced, nodeInformer.Informer().HasSynced) {
		return errors.New("sync service and node caches: stopped")
	}
	m.startAdopted(ctx)
	podFactory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), podInformer.Informer().HasSynced) {
		return errors.New("sync pod cache: stopped")
	}
	// A pod adopted from an earlier run but deleted before the informer's
	// first list never gets a delete event.
	m.forgetMissing(podInformer.Lister())

	goOwned("kubelet API", func() error { return api.Run(ctx) })
	goOwned("lease", func() error { return heartbeat(ctx, log, client, cfg, node) })
	goOwned("routes", func() error { return routeLoop(ctx, log, cfg.NodeName, nodeInformer.Lister(), routesKick) })

	log.Info("node runner started", "kubeletPort", cfg.KubeletPort)
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		log.Error("node runner component failed", "error", runErr)
	}
	cancel()
	factory.Shutdown()
	routesFactory.Shutdown()
	podFactory.Shutdown()
	wg.Wait()
	m.wait()
	return runErr
}

func waitPodCIDR(ctx context.Context, c kubernetes.Interface, name string) (netip.Prefix, error) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		n, err := c.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err == nil && n.Spec.PodCIDR != "" {
			p, err := netip.ParsePrefix(n.Spec.PodCIDR)
			if err != nil {
				return netip.Prefix{}, fmt.Errorf("node %s PodCIDR %q: %w", name, n.Spec.PodCIDR, err)
			}
			return p, nil
		}
		select {
		case <-ctx.Done():
			return netip.Prefix{}, fmt.Errorf("wait for PodCIDR of node %s: %w", name, ctx.Err())
		case <-t.C:
		}
	}
}

// heartbeat renews the Lease and refreshes the Node status.
func heartbeat(ctx context.Context, log *slog.Logger, c kubernetes.Interface, cfg Config, node *corev1.Node) error {
	lease := time.NewTicker(leaseRenew)
	defer lease.Stop()
	status := time.NewTicker(statusReport)
	defer status.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-lease.C:
			if err := renewLease(ctx, c, node); err != nil {
				log.Warn("renew lease", "error", err)
			}
		case <-status.C:
			n, err := c.CoreV1().Nodes().Get(ctx, cfg.NodeName, metav1.GetOptions{})
			if err == nil {
				_, err = updateNodeStatus(ctx, c, cfg, n)
			}
			if err != nil {
				log.Warn("update node status", "error", err)
			}
		}
	}
}

// routeLoop keeps a route to every other node's PodCIDR in this namespace.
func routeLoop(ctx context.Context, log *slog.Logger, self string, nodes corelisters.NodeLister, kick <-chan struct{}) error {
	h, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	resync := time.NewTicker(30 * time.Second)
	defer resync.Stop()
	for {
		list, err := nodes.List(labels.Everything())
		if err != nil {
			return fmt.Errorf("list nodes: %w", err)
		}
		if err := syncRoutes(h, desiredRoutes(self, list)); err != nil {
			log.Warn("sync pod CIDR routes", "error", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-kick:
		case <-resync.C:
		}
	}
}

func newKubeletAPI(log *slog.Logger, cfg Config, m *Manager) (*kubeletapi.Server, error) {
	cert, err := tls.LoadX509KeyPair(cfg.KubeletCert, cfg.KubeletKey)
	if err != nil {
		return nil, fmt.Errorf("load kubelet serving certificate: %w", err)
	}
	caPEM, err := os.ReadFile(cfg.ClientCA)
	if err != nil {
		return nil, fmt.Errorf("read client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("client CA %s: no certificates", cfg.ClientCA)
	}
	addr := net.JoinHostPort(cfg.NodeIP, strconv.Itoa(cfg.KubeletPort))
	return kubeletapi.NewServer(log.With("component", "kubelet-api"), addr, cert, pool, m), nil
}

func newClient(kubeconfig, userAgent string) (kubernetes.Interface, error) {
	restCfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
	}
	restCfg.QPS, restCfg.Burst = 50, 100
	restCfg.UserAgent = userAgent
	c, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", kubeconfig, err)
	}
	return c, nil
}
