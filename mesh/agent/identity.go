package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	delegatedv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/agent/delegatedidentity/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/membrane-mesh/membrane/encryption/spiffe"
	"github.com/membrane-mesh/membrane/mesh/k8s"
	"github.com/membrane-mesh/membrane/mesh/svid"
	"github.com/membrane-mesh/membrane/mesh/svid/spire"
	"github.com/membrane-mesh/membrane/mesh/svid/workload"
)

// SPIFFEConfig configures the node's workload identities (X.509-SVIDs from
// the built-in CA).
type SPIFFEConfig struct {
	Enabled     bool
	TrustDomain string
	// Namespace holds the CA's Service and the bundle ConfigMap.
	Namespace string
	// CAService is the Service whose EndpointSlices list the CA's signing
	// endpoints.
	CAService string
	// BundleConfigMap holds the trust bundle the CA publishes.
	BundleConfigMap string
	// TokenFile is the agent's pod-bound service-account token for the CA's
	// audience (a projected volume; re-read for every request).
	TokenFile string
	// WorkloadSocket serves the SPIFFE Workload API to the node's pods
	// (empty: not served).
	WorkloadSocket string
	// SPIREAdminSocket, when set, takes the SVIDs and the trust bundle from
	// the node's SPIRE agent (its Delegated Identity API on this socket)
	// instead of the built-in CA.
	SPIREAdminSocket string
}

func (c SPIFFEConfig) validate() []error {
	if !c.Enabled {
		return nil
	}
	var errs []error
	if _, err := spiffeid.TrustDomainFromString(c.TrustDomain); err != nil {
		errs = append(errs, fmt.Errorf("--trust-domain %q: %w", c.TrustDomain, err))
	}
	if c.SPIREAdminSocket != "" && !filepath.IsAbs(c.SPIREAdminSocket) {
		errs = append(errs, fmt.Errorf("--spire-admin-socket %q: must be an absolute path", c.SPIREAdminSocket))
	}
	if c.SPIREAdminSocket == "" && (c.Namespace == "" || c.CAService == "" || c.BundleConfigMap == "" || c.TokenFile == "") {
		errs = append(errs, errors.New("--spiffe-namespace, --ca-service, --ca-bundle-configmap and --ca-token-file must not be empty with --spiffe"))
	}
	if c.WorkloadSocket != "" && !filepath.IsAbs(c.WorkloadSocket) {
		errs = append(errs, fmt.Errorf("--workload-api-socket %q: must be an absolute path", c.WorkloadSocket))
	}
	return errs
}

// identities keeps the SVIDs of the service accounts of the node's pods.
type identities struct {
	log    *slog.Logger
	cfg    SPIFFEConfig
	node   string
	td     spiffeid.TrustDomain
	mgr    keeper
	pods   corelisters.PodLister
	slices discoverylisters.EndpointSliceLister
	bundle informers.SharedInformerFactory
	poke   chan struct{}
}

func newIdentities(log *slog.Logger, cfg SPIFFEConfig, node string, client kubernetes.Interface, inf *k8s.Informers, reg prometheus.Registerer) (*identities, error) {
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("--trust-domain: %w", err)
	}
	id := &identities{
		log: log, cfg: cfg, node: node, td: td,
		pods:   inf.Typed.Core().V1().Pods().Lister(),
		slices: inf.Typed.Discovery().V1().EndpointSlices().Lister(),
		poke:   make(chan struct{}, 1),
		bundle: informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(cfg.Namespace),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("metadata.name", cfg.BundleConfigMap).String()
			})),
	}
	if cfg.SPIREAdminSocket != "" {
		conn, err := spire.Dial(cfg.SPIREAdminSocket)
		if err != nil {
			return nil, err
		}
		id.mgr = spire.NewDelegated(log, td, delegatedv1.NewDelegatedIdentityClient(conn))
	} else {
		var mgr *svid.Manager
		ca := svid.NewCAClient(td, id.caEndpoints, cfg.TokenFile, bundleSource{func() *x509bundle.Bundle { return mgr.Snapshot().Bundle }})
		mgr = svid.NewManager(log, td, ca, svid.NewMetrics(reg))
		id.mgr = mgr
	}
	touch := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { id.touch() },
		UpdateFunc: func(any, any) { id.touch() },
		DeleteFunc: func(any) { id.touch() },
	}
	if err := inf.Watch(inf.Typed.Core().V1().Pods().Informer(), touch); err != nil {
		return nil, fmt.Errorf("watch pods: %w", err)
	}
	if _, err := id.bundle.Core().V1().ConfigMaps().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { id.setBundle(o) },
		UpdateFunc: func(_, o any) { id.setBundle(o) },
	}); err != nil {
		return nil, fmt.Errorf("watch trust bundle: %w", err)
	}
	return id, nil
}

// keeper keeps the SVIDs of the wanted SPIFFE IDs: the built-in CA's
// svid.Manager or SPIRE's spire.Delegated.
type keeper interface {
	svid.Source
	SetWanted(ids []spiffeid.ID)
	Run(ctx context.Context)
}

// svidSource is the node's identities for the proxy's SDS secrets; nil
// without SPIFFE identities.
func (a *Agent) svidSource() svid.Source {
	if a.ids == nil {
		return nil
	}
	return a.ids.mgr
}

// bundleSource adapts the manager's bundle for the CA client's server
// verification.
type bundleSource struct{ get func() *x509bundle.Bundle }

func (b bundleSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	bundle := b.get()
	if bundle == nil || bundle.Empty() || bundle.TrustDomain() != td {
		return nil, fmt.Errorf("no trust bundle for %s yet", td)
	}
	return bundle, nil
}

func (id *identities) touch() {
	select {
	case id.poke <- struct{}{}:
	default:
	}
}

func (id *identities) setBundle(o any) {
	cm, ok := o.(*corev1.ConfigMap)
	if !ok || cm.Name != id.cfg.BundleConfigMap {
		return
	}
	b, err := x509bundle.Parse(id.td, []byte(cm.Data[spiffe.BundleKey]))
	if err != nil {
		id.log.Error("trust bundle unreadable", "configmap", id.cfg.Namespace+"/"+cm.Name, "error", err)
		return
	}
	if mgr, ok := id.mgr.(*svid.Manager); ok { // SPIRE brings its own bundle
		mgr.SetBundle(b)
	}
}

// wanted is the SPIFFE IDs of the service accounts of the pods on this node
// (not host-network pods: they have the node's addresses, not an identity
// of their own) that have not terminated.
func (id *identities) wanted() []spiffeid.ID {
	pods, err := id.pods.List(labels.Everything())
	if err != nil {
		return nil
	}
	var ids []spiffeid.ID
	for _, p := range pods {
		if !podHoldsIdentity(p, id.node) {
			continue
		}
		wid, err := spiffe.WorkloadID(id.td, p.Namespace, p.Spec.ServiceAccountName)
		if err != nil {
			id.log.Warn("no spiffe id for pod", "pod", p.Namespace+"/"+p.Name, "error", err)
			continue
		}
		if !slices.Contains(ids, wid) {
			ids = append(ids, wid)
		}
	}
	return ids
}

func podHoldsIdentity(p *corev1.Pod, node string) bool {
	return p.Spec.NodeName == node && !p.Spec.HostNetwork && p.DeletionTimestamp == nil &&
		(p.Status.Phase == corev1.PodPending || p.Status.Phase == corev1.PodRunning)
}

// caEndpoints lists the ready addresses of the CA's Service.
func (id *identities) caEndpoints() ([]string, error) {
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: id.cfg.CAService})
	eps, err := id.slices.EndpointSlices(id.cfg.Namespace).List(sel)
	if err != nil {
		return nil, err
	}
	var addrs []string
	for _, s := range eps {
		for _, port := range s.Ports {
			if port.Port == nil {
				continue
			}
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && !*e.Conditions.Ready {
					continue
				}
				for _, a := range e.Addresses {
					addrs = append(addrs, net.JoinHostPort(a, strconv.Itoa(int(*port.Port))))
				}
			}
		}
	}
	return addrs, nil
}

// IdentityOf implements workload.Attestor: the SPIFFE ID of a pod of this
// node that holds an identity.
func (id *identities) IdentityOf(podUID string) (spiffeid.ID, error) {
	pods, err := id.pods.List(labels.Everything())
	if err != nil {
		return spiffeid.ID{}, err
	}
	for _, p := range pods {
		if string(p.UID) != podUID {
			continue
		}
		if !podHoldsIdentity(p, id.node) {
			break
		}
		return spiffe.WorkloadID(id.td, p.Namespace, p.Spec.ServiceAccountName)
	}
	return spiffeid.ID{}, fmt.Errorf("pod %s: %w", podUID, workload.ErrNoIdentity)
}

// run keeps the SVIDs (and serves the Workload API) until ctx ends; call it
// once the shared informers synced.
func (id *identities) run(ctx context.Context) {
	id.bundle.Start(ctx.Done())
	defer id.bundle.Shutdown()
	done := make(chan struct{})
	go func() {
		defer close(done)
		id.mgr.Run(ctx)
	}()
	if id.cfg.WorkloadSocket != "" {
		served := make(chan struct{})
		go func() {
			defer close(served)
			srv := workload.NewServer(id.log.With("component", "workload-api"), id.mgr, id)
			if err := srv.Serve(ctx, id.cfg.WorkloadSocket); err != nil {
				id.log.Error("SPIFFE Workload API stopped", "error", err)
			}
		}()
		defer func() { <-served }()
	}
	// Pod events come in bursts: recompute at most every 200ms.
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	id.mgr.SetWanted(id.wanted())
	for {
		select {
		case <-ctx.Done():
			<-done
			return
		case <-id.poke:
			select {
			case <-t.C:
			case <-ctx.Done():
				<-done
				return
			}
			id.mgr.SetWanted(id.wanted())
		}
	}
}
