// Command membrane-agent is Membrane's node agent: it loads the eBPF
// datapath and keeps it equal to the cluster's desired state.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/membrane-mesh/membrane/gateway/synced"
	"github.com/membrane-mesh/membrane/mesh/agent"
	"github.com/membrane-mesh/membrane/mesh/cni/install"
	"github.com/membrane-mesh/membrane/mesh/flow"
	"github.com/membrane-mesh/membrane/mesh/k8s"
	"github.com/membrane-mesh/membrane/xds/mtls"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "membrane-agent:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	if len(args) > 1 {
		switch args[1] {
		case "cleanup":
			return runCleanup(ctx, append([]string{args[0] + " cleanup"}, args[2:]...), stderr)
		case "uninstall":
			return runUninstall(ctx, append([]string{args[0] + " uninstall"}, args[2:]...), stderr)
		case "pause":
			// The cleanup DaemonSet's container: ready once its init
			// container cleaned the node, until deleted.
			<-ctx.Done()
			return nil
		}
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg agent.Config
	proxyPort, debug := agentFlags(fs, &cfg)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil // -help: the usage is printed
		}
		return err
	}
	if *proxyPort > 65535 {
		return fmt.Errorf("--proxy-port %d: not a port", *proxyPort)
	}
	cfg.ProxyPort = uint16(*proxyPort)
	cfg.MTLSOutboundPort, cfg.MTLSTunnelPort = agent.DefaultMTLSOutboundPort, agent.DefaultMTLSTunnelPort
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := newLogger(stderr, *debug).With("node", cfg.NodeName)

	restCfg, err := restConfig(cfg)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes dynamic client: %w", err)
	}
	membrane, err := k8s.NewMembraneClient(restCfg)
	if err != nil {
		return err
	}
	a, err := agent.New(log, cfg, client, dyn, membrane, prometheus.NewRegistry())
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// agentFlags registers the agent's flags on fs, into cfg; `cleanup` takes
// the same ones, so it can run with the agent's command line.
func agentFlags(fs *flag.FlagSet, cfg *agent.Config) (proxyPort *uint, debug *bool) {
	fs.StringVar(&cfg.NodeName, "node-name", os.Getenv("NODE_NAME"), "name of this node")
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig file (empty: in-cluster config)")
	fs.StringVar(&cfg.BPFPinDir, "bpf-pin-dir", "/sys/fs/bpf/membrane", "bpffs directory for pinned maps and links")
	fs.StringVar(&cfg.CgroupPath, "cgroup-path", "/sys/fs/cgroup", "cgroup v2 directory the socket load balancer attaches to")
	fs.StringVar(&cfg.APIAddr, "api-addr", ":9890", "address of /healthz, /metrics and the agent API's TLS tunnel (the API itself needs cluster credentials)")
	fs.StringVar(&cfg.APITLSCert, "api-tls-cert", "", "agent API serving certificate, PEM (empty: self-signed at start; its fingerprint is published on the Node)")
	fs.StringVar(&cfg.APITLSKey, "api-tls-key", "", "key of --api-tls-cert, PEM")
	fs.StringVar(&cfg.APISocket, "api-socket", "", "unix socket serving the agent API to root on the node, without authentication (0600 in a 0700 directory; empty: none)")
	fs.StringVar(&cfg.APIClientCA, "api-client-ca", "", "CA bundle verifying agent API client certificates, PEM (empty: the cluster's, from configmap kube-system/extension-apiserver-authentication)")
	proxyPort = fs.Uint("proxy-port", 15001, "port of the node Envoy's transparent listener for L7-policed connections (0: no L7 policy)")
	cfg.DNSProxyPort = agent.DefaultDNSProxyPort
	fs.Func("tofqdns-proxy-port", fmt.Sprintf("port of the DNS proxy, UDP and TCP, for pods with DNS rules (0: no DNS-aware policy; default %d)", agent.DefaultDNSProxyPort), func(v string) error {
		p, err := strconv.ParseUint(v, 10, 16)
		if err != nil {
			return fmt.Errorf("not a port: %w", err)
		}
		cfg.DNSProxyPort = uint16(p)
		return nil
	})
	fs.Func("tofqdns-min-ttl", "shortest time, in seconds, an address learned from a DNS answer stays allowed, whatever the record's TTL (default 0: the TTL)", func(v string) error {
		n, err := strconv.ParseUint(v, 10, 31)
		if err != nil {
			return fmt.Errorf("not a number of seconds: %w", err)
		}
		cfg.FQDNMinTTL = time.Duration(n) * time.Second
		return nil
	})
	fs.StringVar(&cfg.DNSDenyResponse, "tofqdns-deny-response", "refused", "answer to a DNS question the DNS rules refuse: refused (REFUSED) or drop (none)")
	fs.StringVar(&cfg.FQDNStateFile, "tofqdns-state-file", "", "file keeping the learned DNS names across restarts (empty: fqdn-names.json in --state-dir)")
	fs.StringVar(&cfg.XDSAddr, "xds-addr", "127.0.0.1:9891", "address serving the node's Envoy (ADS and access logs)")
	fs.BoolVar(&cfg.GatewayAPI, "gateway-api", false, "serve the cluster's Gateway API Gateways on the node Envoy (needs the Gateway API CRDs)")
	fs.StringVar(&cfg.GatewaySecretsNamespace, "gateway-secrets-namespace", synced.DefaultNamespace, "namespace of the operator's copies of the Secrets and ConfigMaps Gateways, Ingresses and BackendTLSPolicies refer to: the only ones the agent reads")
	fs.BoolVar(&cfg.EnableEncryption, "enable-encryption", false, "encrypt pod traffic between nodes")
	fs.StringVar(&cfg.EncryptionType, "encryption-type", agent.EncryptionWireGuard, "encryption type (wireguard)")
	fs.StringVar(&cfg.StateDir, "state-dir", "/var/lib/membrane/agent", "directory of what the agent keeps across restarts (WireGuard private key, learned DNS names, the L7 proxy's chain groups; files mode 0600)")
	fs.DurationVar(&cfg.KeyRotationPeriod, "encryption-key-rotation-period", 0, "rotate the WireGuard key when it is this old (0: only on request)")
	fs.StringVar(&cfg.WireGuardBackend, "wireguard-backend", "auto", "WireGuard device: auto (kernel when it has WireGuard, else embedded), kernel or embedded")
	fs.IntVar(&cfg.FlowBufferSize, "flow-buffer-size", flow.DefaultCapacity, "flows the node keeps for observe (the oldest go first)")
	fs.StringVar(&cfg.FlowEvents, "flow-events", "connections", "forwarded packets the datapath reports: connections (the packet opening each), packets (every packet: costly) or drops (none); every drop is reported")
	fs.IntVar(&cfg.MTU, "mtu", 0, "the MTU of the network between the nodes: pods get it (less 80, WireGuard's overhead, with encryption on), and the WireGuard device less 80; 0: the MTU of the interface holding the node's InternalIP, else of the default route's, else 1500")
	fs.StringVar(&cfg.HostRouting, "host-routing", agent.HostRoutingBPF, "how packets between the node's pods travel: bpf (from one pod's interface to the other's after both policies, skipping the node's stack; legacy where the kernel lacks bpf_redirect_peer, Linux 5.10) or legacy (through the node's stack)")
	fs.BoolVar(&cfg.SPIFFE.Enabled, "spiffe", false, "keep X.509-SVIDs from the built-in CA for the service accounts of the node's pods")
	fs.StringVar(&cfg.SPIFFE.TrustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain")
	fs.StringVar(&cfg.SPIFFE.Namespace, "spiffe-namespace", os.Getenv("POD_NAMESPACE"), "namespace of the CA's Service and trust bundle configmap")
	fs.StringVar(&cfg.SPIFFE.CAService, "ca-service", "membrane-spiffe-ca", "Service of the CA's signing endpoint")
	fs.StringVar(&cfg.SPIFFE.BundleConfigMap, "ca-bundle-configmap", "membrane-spiffe-bundle", "configmap holding the trust bundle")
	fs.StringVar(&cfg.SPIFFE.TokenFile, "ca-token-file", "/var/run/secrets/membrane/ca/token", "the agent's service-account token for the CA (audience membrane-ca, bound to the agent's pod)")
	fs.StringVar(&cfg.SPIFFE.SPIREAdminSocket, "spire-admin-socket", "", "with --spiffe: take SVIDs and the trust bundle from the node's SPIRE agent, its Delegated Identity API on this unix socket (empty: the built-in CA)")
	fs.DurationVar(&cfg.MTLSIdleTimeout, "mtls-idle-timeout", mtls.DefaultIdleTimeout, "close a connection that rules require to be authenticated when it carried nothing either way for this long")
	fs.StringVar(&cfg.SPIFFE.WorkloadSocket, "workload-api-socket", "", "unix socket serving the SPIFFE Workload API to the node's pods (empty: none)")
	fs.StringVar(&cfg.ClusterName, "cluster-name", "default", "name of this cluster in a cluster mesh (up to 32 lowercase letters, digits and dashes)")
	fs.IntVar(&cfg.ClusterID, "cluster-id", 0, "id of this cluster in a cluster mesh, 1 to 255 (0: no cluster mesh)")
	fs.StringVar(&cfg.ClusterMeshSecret, "clustermesh-secret", "kube-system/membrane-clustermesh", "NAMESPACE/NAME of the Secret with one read-only kubeconfig per remote cluster (written by membrane clustermesh connect)")
	fs.DurationVar(&cfg.ClusterMeshCacheTTL, "clustermesh-cache-ttl", 30*time.Second, "how long a remote cluster whose API server stopped answering keeps its backends")
	fs.StringVar(&cfg.CNI.ConfDir, "cni-conf-dir", "", "the node's CNI configuration directory: once ready to serve membrane-cni, the agent copies the plugin into --cni-bin-dir and writes --cni-conf-name here with the node's PodCIDR, and keeps it so (empty: installs nothing; needs --api-socket)")
	fs.StringVar(&cfg.CNI.BinDir, "cni-bin-dir", "", "the node's CNI plugin directory --cni-plugin is copied into (empty: membrane-cni is installed some other way)")
	fs.StringVar(&cfg.CNI.ConfName, "cni-conf-name", agent.DefaultCNIConfName, "file name of the CNI configuration list in --cni-conf-dir (the runtime uses the first in name order)")
	fs.StringVar(&cfg.CNI.Plugin, "cni-plugin", defaultCNIPlugin(), "the membrane-cni binary copied into --cni-bin-dir, a file named membrane-cni (default: the one next to this executable)")
	fs.StringVar(&cfg.CNI.DataDir, "cni-data-dir", agent.DefaultCNIDataDir, "membrane-cni's IPAM state directory on the node (dataDir of the CNI config)")
	fs.BoolVar(&cfg.CNI.Exclusive, "cni-exclusive", true, "set every other CNI configuration in --cni-conf-dir aside (renamed with a "+install.SetAsideSuffix+" suffix) once the conflist is written, and any that appears later, so that no pod gets another plugin's network; cleanup renames them back (false: for chaining plugins such as Multus)")
	fs.StringVar(&cfg.CNI.LogFile, "cni-log-file", agent.DefaultCNILogFile, "membrane-cni's log file on the node (logFile of the CNI config; empty: the plugin logs warnings and errors to the runtime)")
	debug = fs.Bool("debug", false, "log debug messages")
	return proxyPort, debug
}

// defaultCNIPlugin is membrane-cni in the directory of this executable
// (empty when that is unknown).
func defaultCNIPlugin() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return filepath.Join(filepath.Dir(exe), "membrane-cni")
}

func newLogger(w io.Writer, debug bool) *slog.Logger {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// restConfig is the Kubernetes client configuration of --kubeconfig, or the
// in-cluster one.
func restConfig(cfg agent.Config) (*rest.Config, error) {
	var restCfg *rest.Config
	var err error
	if cfg.Kubeconfig != "" {
		restCfg, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	} else {
		restCfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config: %w", err)
	}
	restCfg.UserAgent = "membrane-agent/" + cfg.NodeName
	restCfg.QPS, restCfg.Burst = 100, 200
	// Built-in kinds in protobuf, as kube-proxy does: the Service and
	// EndpointSlice watches decode cheaper than in JSON. The dynamic and
	// Membrane clients set JSON themselves.
	restCfg.ContentType = runtime.ContentTypeProtobuf
	restCfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	return restCfg, nil
}

// runCleanup is `membrane-agent cleanup`: it removes everything the agent
// with the same flags programmed on this node (see agent.Cleanup), e.g.
// before Membrane is uninstalled. The Kubernetes API is optional: without
// one, or when it fails, the Node keeps the agent's annotations.
func runCleanup(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s [flags]\n\nRemoves everything membrane-agent programmed on this node: the CNI config it wrote (with\n--cni-conf-dir; the membrane-cni binary stays), eBPF programs, pinned maps and links, the L7\nproxy's nftables table and ip rule, the WireGuard device and its routing, the WireGuard key\nand, when the Kubernetes API answers, the agent's Node annotations.\nRun it in the node's network namespace after the agent stopped, with the agent's flags.\n\n", fs.Name())
		fs.PrintDefaults()
	}
	var cfg agent.Config
	_, debug := agentFlags(fs, &cfg)
	annotations := fs.Bool("node-annotations", true, "also remove the agent's annotations from the Node (best effort; needs --node-name and the Kubernetes API)")
	waitStopped := fs.String("wait-agent-stopped", "", "first wait until nothing accepts TCP connections on this address (the agent's --api-addr on the node) for --wait-quiet (empty: do not wait)")
	waitQuiet := fs.Duration("wait-quiet", 5*time.Second, "how long --wait-agent-stopped must stay closed")
	waitTimeout := fs.Duration("wait-timeout", 5*time.Minute, "give up waiting for --wait-agent-stopped after this long")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("cleanup: unexpected arguments %q", fs.Args())
	}
	if err := cfg.ValidateCleanup(); err != nil {
		return err
	}
	log := newLogger(stderr, *debug).With("node", cfg.NodeName)
	if *waitStopped != "" {
		log.Info("waiting for the agent to stop", "addr", *waitStopped)
		wctx, cancel := context.WithTimeout(ctx, *waitTimeout)
		err := agent.AwaitStopped(wctx, *waitStopped, *waitQuiet, time.Second)
		cancel()
		if err != nil {
			return fmt.Errorf("cleanup: --wait-agent-stopped %s: %w", *waitStopped, err)
		}
	}
	var client kubernetes.Interface
	switch {
	case !*annotations:
	case cfg.NodeName == "":
		log.Info("node annotations left: no --node-name")
	default:
		restCfg, err := restConfig(cfg)
		if err == nil {
			client, err = kubernetes.NewForConfig(restCfg)
		}
		if err != nil {
			log.Warn("node annotations left: no Kubernetes API", "error", err)
			client = nil
		}
	}
	if err := agent.Cleanup(ctx, log, cfg, client); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	log.Info("node cleaned up")
	return nil
}

// runUninstall is `membrane-agent uninstall`, the chart's pre-delete hook:
// it stops the agents and waits until the cleanup DaemonSet cleaned every
// node (see agent.AwaitUninstallCleanup).
func runUninstall(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg agent.UninstallConfig
	fs.StringVar(&cfg.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "namespace of the agent and cleanup DaemonSets")
	fs.StringVar(&cfg.AgentDaemonSet, "agent-daemonset", "membrane-agent", "the agent DaemonSet, deleted first")
	fs.StringVar(&cfg.AgentSelector, "agent-selector", "k8s-app=membrane-agent", "label selector of the agent pods waited for to be gone")
	fs.StringVar(&cfg.CleanupDaemonSet, "cleanup-daemonset", "membrane-cleanup", "the DaemonSet whose pods clean their node, waited for to be ready on every node")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (empty: in-cluster config)")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("uninstall: unexpected arguments %q", fs.Args())
	}
	if cfg.Namespace == "" {
		return errors.New("uninstall: --namespace: empty (set it or POD_NAMESPACE)")
	}
	if cfg.AgentDaemonSet == "" || cfg.CleanupDaemonSet == "" || cfg.AgentSelector == "" {
		return errors.New("uninstall: --agent-daemonset, --agent-selector and --cleanup-daemonset must not be empty")
	}
	restCfg, err := restConfig(agent.Config{Kubeconfig: *kubeconfig, NodeName: "uninstall"})
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := agent.AwaitUninstallCleanup(ctx, newLogger(stderr, false), client, cfg); err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	return nil
}
