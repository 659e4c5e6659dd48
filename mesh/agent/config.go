// Package agent is the node agent: it keeps the node's eBPF datapath equal
// to the cluster's desired state and serves what it programmed.
package agent

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	bpfpolicy "github.com/membrane-mesh/membrane/bpf/policy"
	"github.com/membrane-mesh/membrane/encryption/wireguard"
)

// Config is the agent's configuration, from flags.
type Config struct {
	NodeName string
	// Kubeconfig is empty inside a pod (in-cluster config).
	Kubeconfig string
	// BPFPinDir holds the pinned maps and links: an agent restart reuses them.
	BPFPinDir string
	// CgroupPath is the cgroup v2 directory the socket programs attach to:
	// every process below it gets Service translation.
	CgroupPath string
	// APIAddr serves /healthz and /metrics in plaintext, and the agent API
	// only inside its TLS tunnel (see api.go).
	APIAddr string
	// APITLSCert and APITLSKey are the agent API's serving certificate
	// (PEM files); empty: a self-signed one made at start. Either way its
	// fingerprint is published on the Node, where clients pin it.
	APITLSCert, APITLSKey string
	// APIClientCA verifies API clients' certificates (PEM file); empty:
	// the cluster's client CA, read from the API server.
	APIClientCA string
	// APISocket serves the agent API without authentication on a unix
	// socket only root can use (0600, in a 0700 directory); empty: none.
	APISocket string

	// ProxyPort is the node Envoy's transparent listener port L7-policed
	// connections are redirected to; 0 disables L7 policy (HTTP rules are
	// reported as not applied).
	ProxyPort uint16
	// DNSProxyPort is the DNS proxy's transparent port (UDP and TCP) the
	// DNS traffic of pods with DNS rules is redirected to; 0 disables
	// DNS-aware policy (DNS rules are reported as not applied).
	DNSProxyPort uint16
	// DNSDenyResponse is what a refused question gets: "refused" (an
	// answer with REFUSED) or "drop" (none).
	DNSDenyResponse string
	// FQDNMinTTL is the shortest time a learned address stays allowed,
	// whatever its record's TTL.
	FQDNMinTTL time.Duration
	// FQDNStateFile keeps the learned names across restarts; empty:
	// StateDir/fqdn-names.json.
	FQDNStateFile string
	// XDSAddr serves the node's Envoy: ADS and the access-log service
	// (loopback: Envoy runs on the node, in its network namespace).
	XDSAddr string
	// MTLSOutboundPort is the node Envoy's transparent listener for
	// connections that rules require to be authenticated; MTLSTunnelPort
	// is where node Envoys accept each other's mutual TLS. Used once the
	// node holds workload identities.
	MTLSOutboundPort uint16
	MTLSTunnelPort   uint16
	// MTLSIdleTimeout closes an authenticated connection idle this long
	// (0: mtls.DefaultIdleTimeout).
	MTLSIdleTimeout time.Duration

	// SPIFFE are the node's workload identities (see identity.go).
	SPIFFE SPIFFEConfig

	// GatewayAPI serves the cluster's Gateways (Gateway API) on the node
	// Envoy and announces the Gateway addresses this node owns (needs
	// ProxyPort).
	GatewayAPI bool
	// GatewaySecretsNamespace holds the operator's copies of the Secrets
	// and ConfigMaps the Gateways refer to: the only ones the agent reads.
	GatewaySecretsNamespace string

	// Encryption of node-to-node pod traffic (see encryption.go).
	EnableEncryption bool
	EncryptionType   string
	// StateDir holds what the agent keeps across restarts (files mode
	// 0600): the WireGuard private key, the learned DNS names and the L7
	// proxy's groups (proxy_groups.go).
	StateDir string
	// KeyRotationPeriod rotates the WireGuard key when it is that old; 0
	// never rotates on its own.
	KeyRotationPeriod time.Duration
	// WireGuardBackend is auto, kernel or embedded.
	WireGuardBackend string

	// ClusterName and ClusterID name this cluster in a cluster mesh; id 0
	// keeps the cluster out of any mesh.
	ClusterName string
	ClusterID   int
	// ClusterMeshSecret (NAMESPACE/NAME) holds a kubeconfig per remote
	// cluster, written by `membrane clustermesh connect`.
	ClusterMeshSecret string
	// ClusterMeshCacheTTL is how long a remote cluster that stopped
	// answering keeps its backends.
	ClusterMeshCacheTTL time.Duration

	// FlowBufferSize is the number of flows the node keeps for observe
	// (0: flow.DefaultCapacity).
	FlowBufferSize int
	// FlowEvents selects the forwarded packets the datapath reports:
	// "connections" (the packet opening each connection; default),
	// "packets" (every packet) or "drops" (none: drops only). Every drop
	// is reported in each mode.
	FlowEvents string
	// HostRouting is how packets between the node's pods travel:
	// HostRoutingBPF (default) hands them from one pod's interface to the
	// other's after both policies, skipping the node's stack (where the
	// kernel lacks bpf_redirect_peer, the agent falls back to legacy);
	// HostRoutingLegacy routes them through the node's stack.
	HostRouting string

	// MTU is the underlay's: of the network between the nodes (0:
	// detected when the agent runs, see Agent.underlayMTU). Pods get it,
	// less wireguard.Overhead with encryption on, and so does the
	// WireGuard device.
	MTU int

	// CNI installs membrane-cni and its conflist on the node (see
	// cni_install.go); CNI.ConfDir empty: nothing is installed.
	CNI CNIConfig
}

// DefaultMTU is the underlay MTU assumed when --mtu is not given and none
// is detected.
const DefaultMTU = 1500

// UnderlayMTU is MTU, or DefaultMTU when unset.
func (c Config) UnderlayMTU() int {
	if c.MTU == 0 {
		return DefaultMTU
	}
	return c.MTU
}

// PodMTU is the MTU of the pods' interfaces: the underlay's, less what
// encryption adds to each packet.
func (c Config) PodMTU() int {
	if c.EnableEncryption {
		return c.UnderlayMTU() - wireguard.Overhead
	}
	return c.UnderlayMTU()
}

// HostRouting modes (--host-routing).
const (
	HostRoutingBPF    = "bpf"
	HostRoutingLegacy = "legacy"
)

// The range of --mtu: IPv6's minimum and the largest IPv4 packet.
const (
	minMTU = 1280
	maxMTU = 65535
)

// DefaultDNSProxyPort is --tofqdns-proxy-port's default.
const DefaultDNSProxyPort = 10053

// MaxFlowBufferSize bounds --flow-buffer-size: the ring is allocated whole.
const MaxFlowBufferSize = 1 << 18

// Validate reports the first field at fault, by its flag name.
func (c Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("--node-name: required (or set NODE_NAME)"))
	}
	if c.BPFPinDir == "" || !filepath.IsAbs(c.BPFPinDir) {
		errs = append(errs, fmt.Errorf("--bpf-pin-dir %q: must be an absolute path on bpffs", c.BPFPinDir))
	}
	if c.CgroupPath == "" || !filepath.IsAbs(c.CgroupPath) {
		errs = append(errs, fmt.Errorf("--cgroup-path %q: must be an absolute cgroup v2 directory", c.CgroupPath))
	}
	if _, _, err := net.SplitHostPort(c.APIAddr); err != nil {
		errs = append(errs, fmt.Errorf("--api-addr %q: %w", c.APIAddr, err))
	}
	if (c.APITLSCert == "") != (c.APITLSKey == "") {
		errs = append(errs, fmt.Errorf("--api-tls-cert %q and --api-tls-key %q: set both or neither", c.APITLSCert, c.APITLSKey))
	}
	if c.APISocket != "" && !filepath.IsAbs(c.APISocket) {
		errs = append(errs, fmt.Errorf("--api-socket %q: must be an absolute path", c.APISocket))
	}
	if c.ProxyPort != 0 {
		if _, _, err := net.SplitHostPort(c.XDSAddr); err != nil {
			errs = append(errs, fmt.Errorf("--xds-addr %q: %w", c.XDSAddr, err))
		}
		if c.MTLSIdleTimeout < 0 {
			errs = append(errs, fmt.Errorf("--mtls-idle-timeout %s: must not be negative", c.MTLSIdleTimeout))
		}
		if c.MTLSOutboundPort == c.ProxyPort || c.MTLSTunnelPort == c.ProxyPort || (c.MTLSOutboundPort != 0 && c.MTLSOutboundPort == c.MTLSTunnelPort) {
			errs = append(errs, fmt.Errorf("--mtls-outbound-port %d, --mtls-tunnel-port %d: must differ from each other and from --proxy-port %d",
				c.MTLSOutboundPort, c.MTLSTunnelPort, c.ProxyPort))
		}
	}
	if c.FlowEvents != "" {
		if _, err := bpfpolicy.ParseTraceMode(c.FlowEvents); err != nil {
			errs = append(errs, fmt.Errorf("--flow-events %w", err))
		}
	}
	if c.MTU != 0 && (c.MTU < minMTU || c.MTU > maxMTU) {
		errs = append(errs, fmt.Errorf("--mtu %d: want %d to %d (the underlay's MTU)", c.MTU, minMTU, maxMTU))
	}
	switch c.HostRouting {
	case "", HostRoutingBPF, HostRoutingLegacy:
	default:
		errs = append(errs, fmt.Errorf("--host-routing %q: want bpf or legacy", c.HostRouting))
	}
	if c.DNSProxyPort != 0 && c.DNSProxyPort == c.ProxyPort {
		errs = append(errs, fmt.Errorf("--tofqdns-proxy-port %d: must differ from --proxy-port", c.DNSProxyPort))
	}
	if c.DNSProxyPort != 0 && c.FQDNStateFile == "" && !filepath.IsAbs(c.StateDir) {
		errs = append(errs, fmt.Errorf("--state-dir %q: must be an absolute path (it keeps the learned DNS names)", c.StateDir))
	}
	if c.FQDNStateFile != "" && !filepath.IsAbs(c.FQDNStateFile) {
		errs = append(errs, fmt.Errorf("--tofqdns-state-file %q: must be an absolute path", c.FQDNStateFile))
	}
	switch c.DNSDenyResponse {
	case "", "refused", "drop":
	default:
		errs = append(errs, fmt.Errorf("--tofqdns-deny-response %q: must be refused or drop", c.DNSDenyResponse))
	}
	if c.FQDNMinTTL < 0 {
		errs = append(errs, fmt.Errorf("--tofqdns-min-ttl %s: must not be negative", c.FQDNMinTTL))
	}
	if c.GatewayAPI && c.ProxyPort == 0 {
		errs = append(errs, errors.New("--gateway-api: needs the node proxy (--proxy-port not 0)"))
	}
	if msgs := validation.IsDNS1123Label(c.GatewaySecretsNamespace); c.GatewayAPI && len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--gateway-secrets-namespace %q: %s", c.GatewaySecretsNamespace, strings.Join(msgs, "; ")))
	}
	if c.FlowBufferSize < 0 || c.FlowBufferSize > MaxFlowBufferSize {
		errs = append(errs, fmt.Errorf("--flow-buffer-size %d: must be 0 (default) to %d", c.FlowBufferSize, MaxFlowBufferSize))
	}
	errs = append(errs, c.validateEncryption()...)
	errs = append(errs, c.SPIFFE.validate()...)
	errs = append(errs, c.validateClusterMesh()...)
	errs = append(errs, c.validateCNI()...)
	return errors.Join(errs...)
}

// fqdnStateFile is where the learned names are kept.
func (c Config) fqdnStateFile() string {
	if c.FQDNStateFile != "" {
		return c.FQDNStateFile
	}
	return filepath.Join(c.StateDir, "fqdn-names.json")
}
