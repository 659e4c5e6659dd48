// Command membrane-operator runs Membrane's cluster-wide controllers:
// identity allocation, policy status and the Gateway API (status and LB
// IPAM) (and, later, Ingress, ...).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1alpha2 "sigs.k8s.io/gateway-api/apis/v1alpha2"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/membrane-mesh/membrane/encryption/spiffe"

	gwcontroller "github.com/membrane-mesh/membrane/gateway/controller"
	"github.com/membrane-mesh/membrane/gateway/synced"
	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
	"github.com/membrane-mesh/membrane/mesh/clustermesh"
	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/lbipam"
	"github.com/membrane-mesh/membrane/mesh/operator"
)

// config is the operator's configuration, from flags.
type config struct {
	kubeconfig  string
	leaderElect bool
	leaderNS    string
	metricsAddr string
	healthAddr  string
	identityGC  time.Duration
	debug       bool
	// clusterName and clusterID: in a cluster mesh (id 1-255) identities
	// carry the cluster and are allocated in its range.
	clusterName string
	clusterID   int
	// Gateway API (and Ingresses): served when gatewayAPI is set.
	gatewayAPI   bool
	gatewayClass string
	// gatewaySecrets is the namespace of the copies of the Secrets and
	// ConfigMaps the Gateways refer to (the agents read only these).
	gatewaySecrets string
	ca             caFlags
	// spireSocket, when set, registers workload identities in the SPIRE
	// server listening on this unix socket.
	spireSocket   string
	spireCluster  string
	spireDelegate []string
}

// caFlags configure the built-in SPIFFE CA.
type caFlags struct {
	enabled     bool
	trustDomain string
	operator.CAConfig
}

func (c config) validate() error {
	var errs []error
	if c.identityGC < time.Second {
		errs = append(errs, fmt.Errorf("--identity-gc-interval %s: must be at least 1s", c.identityGC))
	}
	if c.clusterID < 0 || c.clusterID > clustermesh.MaxID {
		errs = append(errs, fmt.Errorf("--cluster-id %d: must be 0 (no cluster mesh) to %d", c.clusterID, clustermesh.MaxID))
	}
	if c.clusterID != 0 {
		if err := clustermesh.ValidateName(c.clusterName); err != nil {
			errs = append(errs, fmt.Errorf("--cluster-name: %w", err))
		}
	}
	for _, s := range c.spireDelegate {
		if typ, val, ok := strings.Cut(s, ":"); !ok || typ == "" || val == "" {
			errs = append(errs, fmt.Errorf("--spire-delegate-selectors %q: must be type:value", s))
		}
	}
	if c.gatewayAPI {
		if msgs := validation.IsDNS1123Label(c.gatewaySecrets); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--gateway-secrets-namespace %q: %s", c.gatewaySecrets, strings.Join(msgs, "; ")))
		}
	}
	if c.leaderElect && c.leaderNS == "" {
		errs = append(errs, errors.New("--leader-election-namespace: required with --leader-elect"))
	}
	if c.ca.enabled {
		if _, err := spiffeid.TrustDomainFromString(c.ca.trustDomain); err != nil {
			errs = append(errs, fmt.Errorf("--trust-domain %q: %w", c.ca.trustDomain, err))
		}
		if err := c.ca.Policy.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("--svid-ttl, --ca-ttl, --ca-propagation: %w", err))
		}
		if c.ca.Namespace == "" || c.ca.Secret == "" || c.ca.ConfigMap == "" || c.ca.AgentServiceAccount == "" || c.ca.Audience == "" || c.ca.Addr == "" {
			errs = append(errs, errors.New("--ca-namespace, --ca-secret, --ca-bundle-configmap, --ca-agent-service-account, --ca-audience and --ca-addr must not be empty with --spiffe-ca"))
		}
	}
	return errors.Join(errs...)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "membrane-operator:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	fs.StringVar(&cfg.kubeconfig, "kubeconfig", "", "kubeconfig file (empty: in-cluster config)")
	fs.BoolVar(&cfg.leaderElect, "leader-elect", true, "elect one active operator")
	fs.StringVar(&cfg.leaderNS, "leader-election-namespace", "kube-system", "namespace of the leader-election lease")
	fs.StringVar(&cfg.metricsAddr, "metrics-addr", "127.0.0.1:9963", "Prometheus metrics address (0 disables)")
	fs.StringVar(&cfg.healthAddr, "health-addr", "127.0.0.1:9892", "/healthz and /readyz address")
	fs.DurationVar(&cfg.identityGC, "identity-gc-interval", 30*time.Second, "how often unused identities are looked for")
	fs.StringVar(&cfg.clusterName, "cluster-name", "default", "name of this cluster in a cluster mesh: with --cluster-id, identities carry it")
	fs.IntVar(&cfg.clusterID, "cluster-id", 0, "id of this cluster in a cluster mesh, 1-255: identities are allocated in its range (0: no cluster mesh)")
	fs.BoolVar(&cfg.debug, "debug", false, "log debug messages")
	fs.StringVar(&cfg.spireSocket, "spire-server-socket", "", "register the pods' workload identities in the SPIRE server whose API listens on this unix socket (empty: no SPIRE)")
	fs.Func("spire-delegate-selectors", "SPIRE selectors (type:value, comma-separated) of the node agents' processes for their delegate entry (default: k8s:ns and k8s:sa of their pods)", func(v string) error {
		cfg.spireDelegate = append(cfg.spireDelegate, strings.Split(v, ",")...)
		return nil
	})
	fs.StringVar(&cfg.spireCluster, "spire-cluster", "membrane", "cluster name the SPIRE agents attest with (k8s_psat)")
	fs.BoolVar(&cfg.ca.enabled, "spiffe-ca", false, "run the built-in SPIFFE CA, issuing X.509-SVIDs to node agents")
	fs.StringVar(&cfg.ca.trustDomain, "trust-domain", spiffe.DefaultTrustDomain, "SPIFFE trust domain")
	fs.DurationVar(&cfg.ca.Policy.MaxSVIDTTL, "svid-ttl", time.Hour, "lifetime of issued X.509-SVIDs")
	fs.DurationVar(&cfg.ca.Policy.CATTL, "ca-ttl", 30*24*time.Hour, "lifetime of a CA certificate (a new CA is prepared at two thirds of it)")
	fs.DurationVar(&cfg.ca.Policy.Propagation, "ca-propagation", time.Minute, "how long a new CA is in the trust bundle before it signs")
	fs.StringVar(&cfg.ca.Namespace, "ca-namespace", os.Getenv("POD_NAMESPACE"), "namespace of the CA secret, the bundle configmap and the node agents")
	fs.StringVar(&cfg.ca.Secret, "ca-secret", "membrane-spiffe-ca", "secret holding the CA keys (created when missing)")
	fs.StringVar(&cfg.ca.ConfigMap, "ca-bundle-configmap", "membrane-spiffe-bundle", "configmap the trust bundle is published in")
	fs.StringVar(&cfg.ca.AgentServiceAccount, "ca-agent-service-account", "membrane-agent", "service account of the node agents")
	fs.StringVar(&cfg.ca.Audience, "ca-audience", "membrane-ca", "audience the node agents' tokens must be issued for")
	fs.StringVar(&cfg.ca.Addr, "ca-addr", ":9894", "TLS address of the SVID signing endpoint")
	fs.DurationVar(&cfg.ca.Interval, "ca-interval", 10*time.Second, "how often the CA state is checked")
	fs.BoolVar(&cfg.gatewayAPI, "gateway-api", false, "serve Gateways and Ingresses (their addresses come from the MembraneLoadBalancerIPPools)")
	fs.StringVar(&cfg.gatewayClass, "gateway-class", "membrane", "Gateway API: the GatewayClass to create when missing (empty: none)")
	fs.StringVar(&cfg.gatewaySecrets, "gateway-secrets-namespace", synced.DefaultNamespace, "Gateway API: namespace of the copies of the Secrets and ConfigMaps Gateways, Ingresses and BackendTLSPolicies refer to, the only ones the agents read (must exist)")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil // -help: the usage is printed
		}
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	level := slog.LevelInfo
	if cfg.debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	ctrl.SetLogger(logr.FromSlogHandler(log.Handler()))

	var restCfg *rest.Config
	var err error
	if cfg.kubeconfig != "" {
		restCfg, err = clientcmd.BuildConfigFromFlags("", cfg.kubeconfig)
	} else {
		restCfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return fmt.Errorf("kubernetes client config: %w", err)
	}
	restCfg.UserAgent = "membrane-operator"
	// client-go's default (5 requests/s, bursts of 10) makes the status
	// writes of 1,000 HTTPRoutes take over 3 minutes.
	restCfg.QPS, restCfg.Burst = 100, 200
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return fmt.Errorf("scheme: %w", err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return fmt.Errorf("scheme: %w", err)
	}
	// Nothing reads the objects' managed fields: the cache goes without.
	cacheOpts := cache.Options{DefaultTransform: cache.TransformStripManagedFields()}
	if cfg.gatewayAPI {
		if err := gwv1.Install(scheme); err != nil {
			return fmt.Errorf("scheme: %w", err)
		}
		if err := gwv1beta1.Install(scheme); err != nil {
			return fmt.Errorf("scheme: %w", err)
		}
		if err := gwv1alpha2.Install(scheme); err != nil {
			return fmt.Errorf("scheme: %w", err)
		}
		// Only TLS Secrets (HTTPS listeners' certificates) and the CA
		// certificates of ConfigMaps are read.
		cacheOpts.ByObject = map[client.Object]cache.ByObject{
			&corev1.Secret{}:    {Field: fields.OneTermEqualSelector("type", string(corev1.SecretTypeTLS))},
			&corev1.ConfigMap{}: {Transform: gwcontroller.TrimConfigMap},
		}
	}
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Cache:                   cacheOpts,
		Scheme:                  scheme,
		LeaderElection:          cfg.leaderElect,
		LeaderElectionID:        "membrane-operator",
		LeaderElectionNamespace: cfg.leaderNS,
		Metrics:                 metricsserver.Options{BindAddress: cfg.metricsAddr},
		HealthProbeBindAddress:  cfg.healthAddr,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	filter := identity.DefaultFilter()
	if cfg.clusterID != 0 {
		filter.Cluster = cfg.clusterName
	}
	ids := operator.NewIdentityController(log.With("controller", "identity"), mgr.GetClient(), filter, uint8(cfg.clusterID), cfg.identityGC)
	if err := ids.Setup(mgr); err != nil {
		return err
	}
	policyStatus := operator.NewPolicyStatusController(log.With("controller", "policy-status"), mgr.GetClient())
	policyStatus.MutualAuth = cfg.ca.enabled
	if err := policyStatus.Setup(ctx, mgr); err != nil {
		return err
	}
	// One assignment for Services, Gateways and Ingresses, computed by
	// two controllers.
	addresses := &lbipam.Ledger{}
	ipam := operator.NewLBIPAMController(log.With("controller", "lb-ipam"), mgr.GetClient(), addresses)
	if cfg.ca.enabled {
		if err := setupCA(log, mgr, restCfg, cfg.ca); err != nil {
			return err
		}
	}
	if cfg.spireSocket != "" {
		if err := setupSPIRE(log, mgr, cfg); err != nil {
			return err
		}
	}
	if cfg.gatewayAPI {
		gw := gwcontroller.New(log.With("controller", "gateway-api"), mgr.GetClient(), gwcontroller.Config{ClassName: cfg.gatewayClass, SecretsNamespace: cfg.gatewaySecrets, Addresses: addresses})
		if err := gw.Setup(ctx, mgr); err != nil {
			return err
		}
		ipam.WithOtherClaims(operator.OtherClaims{Claims: gw.Claims, Watch: gwcontroller.Watched()})
	}
	if err := ipam.Setup(ctx, mgr); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", func(*http.Request) error { return nil }); err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	log.Info("membrane-operator starting")
	return mgr.Start(ctx)
}

func setupCA(log *slog.Logger, mgr ctrl.Manager, restCfg *rest.Config, f caFlags) error {
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	metrics, err := spiffe.NewMetrics(ctrlmetrics.Registry)
	if err != nil {
		return err
	}
	f.TrustDomain = spiffeid.RequireTrustDomainFromString(f.trustDomain)
	return operator.NewCA(log.With("controller", "spiffe-ca"), f.CAConfig, client, metrics).Setup(mgr)
}

func setupSPIRE(log *slog.Logger, mgr ctrl.Manager, cfg config) error {
	td, err := spiffeid.TrustDomainFromString(cfg.ca.trustDomain)
	if err != nil {
		return fmt.Errorf("--trust-domain: %w", err)
	}
	conn, err := grpc.NewClient("unix://"+cfg.spireSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("--spire-server-socket %s: %w", cfg.spireSocket, err)
	}
	reg := operator.NewSPIRERegistrar(log.With("controller", "spire-registrar"), operator.SPIREConfig{
		TrustDomain: td, Cluster: cfg.spireCluster,
		AgentNamespace: cfg.ca.Namespace, AgentServiceAccount: cfg.ca.AgentServiceAccount, DelegateSelectors: cfg.spireDelegate,
		SVIDTTL: cfg.ca.Policy.MaxSVIDTTL, Interval: 5 * time.Second,
	}, mgr.GetClient(), entryv1.NewEntryClient(conn))
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		defer conn.Close()
		return reg.Run(ctx)
	})); err != nil {
		return fmt.Errorf("SPIRE registrar: %w", err)
	}
	return nil
}
