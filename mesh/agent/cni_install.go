package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/membrane-mesh/membrane/mesh/agentapi"
	"github.com/membrane-mesh/membrane/mesh/cni/install"
	"github.com/membrane-mesh/membrane/mesh/cni/netconf"
)

// Defaults of the --cni-* flags.
const (
	DefaultCNIConfName = "05-membrane.conflist"
	DefaultCNIDataDir  = netconf.DefaultDataDir
	DefaultCNILogFile  = "/var/run/membrane/cni.log"
)

// Intervals of the CNI installation: how often the agent looks again while
// the node has no PodCIDR or an attempt failed, and once the conflist is in
// place.
const (
	cniRetryInterval   = time.Second
	cniRecheckInterval = 10 * time.Second
)

// CNIConfig is the agent's installation of membrane-cni on its node: once
// the agent can serve the plugin, it copies the plugin binary into BinDir
// and writes the network configuration list ConfDir/ConfName.
type CNIConfig struct {
	// ConfDir is the runtime's CNI configuration directory; empty: the
	// agent installs nothing.
	ConfDir string
	// BinDir is the runtime's CNI plugin directory Plugin is copied into;
	// empty: the plugin is installed some other way.
	BinDir string
	// ConfName is the conflist's file name (the runtime uses the first
	// configuration in name order).
	ConfName string
	// Plugin is the membrane-cni binary copied into BinDir.
	Plugin string
	// DataDir (IPAM state), LogFile: the plugin's, written into the
	// conflist as dataDir and logFile.
	DataDir string
	LogFile string
	// Exclusive: every other CNI configuration in ConfDir is set aside
	// (renamed with install.SetAsideSuffix) once the conflist is written,
	// and again whenever one appears, so that no pod of the node gets
	// another plugin's network; `membrane-agent cleanup` renames them
	// back.
	Exclusive bool
}

// validateCNI checks the --cni-* flags; the conflist needs --api-socket.
func (c Config) validateCNI() []error {
	cni := c.CNI
	if cni.ConfDir == "" {
		return nil
	}
	var errs []error
	if !filepath.IsAbs(cni.ConfDir) {
		errs = append(errs, fmt.Errorf("--cni-conf-dir %q: must be an absolute path", cni.ConfDir))
	}
	if cni.BinDir != "" && !filepath.IsAbs(cni.BinDir) {
		errs = append(errs, fmt.Errorf("--cni-bin-dir %q: must be an absolute path (or empty: membrane-cni is installed some other way)", cni.BinDir))
	}
	if err := validConfName(cni.ConfName); err != nil {
		errs = append(errs, err)
	}
	if cni.BinDir != "" && (!filepath.IsAbs(cni.Plugin) || filepath.Base(cni.Plugin) != install.PluginType) {
		errs = append(errs, fmt.Errorf("--cni-plugin %q: must be the absolute path of a file named %s (the conflist's plugin type, the name the runtime runs)", cni.Plugin, install.PluginType))
	}
	if !filepath.IsAbs(cni.DataDir) {
		errs = append(errs, fmt.Errorf("--cni-data-dir %q: must be an absolute path", cni.DataDir))
	}
	if cni.LogFile != "" && !filepath.IsAbs(cni.LogFile) {
		errs = append(errs, fmt.Errorf("--cni-log-file %q: must be an absolute path (or empty: the plugin logs to the runtime)", cni.LogFile))
	}
	if c.APISocket == "" {
		errs = append(errs, errors.New("--cni-conf-dir: needs --api-socket (membrane-cni reports each new pod to the agent over it, so the pod is policed from its first packet)"))
	}
	return errs
}

// validConfName accepts a plain .conflist file name.
func validConfName(name string) error {
	if name == "" || filepath.Base(name) != name || !strings.HasSuffix(name, ".conflist") || name == ".conflist" {
		return fmt.Errorf("--cni-conf-name %q: must be a file name ending in .conflist", name)
	}
	return nil
}

// cniInstaller keeps membrane-cni and its conflist on the node.
type cniInstaller struct {
	log    *slog.Logger
	cfg    CNIConfig
	socket string // the agent's --api-socket, the plugin's agentSocket
	mtu    int    // the pods' (Config.PodMTU)
	node   string
	nodes  corelisters.NodeLister
	// kick asks run for an attempt now (a change of the Node, an ADD of
	// an address outside its PodCIDR).
	kick chan struct{}

	// pluginChecked: the installed plugin was compared with --cni-plugin
	// in full once (only run touches it).
	pluginChecked bool

	mu sync.Mutex
	st agentapi.CNIStatus
	// waiting: "waiting for the PodCIDR" was logged; lastErr: the error
	// logged last (each is logged once, until the next success).
	waiting bool
	lastErr string
}

func newCNIInstaller(log *slog.Logger, cfg Config, nodes corelisters.NodeLister) *cniInstaller {
	return &cniInstaller{log: log, cfg: cfg.CNI, socket: cfg.APISocket, mtu: cfg.PodMTU(), node: cfg.NodeName, nodes: nodes, kick: make(chan struct{}, 1),
		st: agentapi.CNIStatus{Config: filepath.Join(cfg.CNI.ConfDir, cfg.CNI.ConfName), Error: "not installed yet"}}
}

// run installs the plugin and the conflist, then keeps them in place until
// ctx is done: it writes the conflist again when the node's PodCIDR changes
// (at once: see nodeEvents) or when someone else removed or
// changed it. Call it once the agent
// serves --api-socket and the informers synced. Errors are logged, shown
// in the status and retried.
func (c *cniInstaller) run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
			if !t.Stop() {
				<-t.C
			}
		}
		t.Reset(c.sync())
	}
}

// poke asks run for an attempt now.
func (c *cniInstaller) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// nodeEvents pokes run when a Node comes or goes (this node's, deleted and
// registered again, may have another PodCIDR) or this node's PodCIDR
// changes; heartbeats change nothing here.
func (c *cniInstaller) nodeEvents() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { c.poke() },
		UpdateFunc: func(old, cur any) {
			o, ok := old.(*corev1.Node)
			n, ok2 := cur.(*corev1.Node)
			if ok && ok2 && n.Name == c.node && nodePodCIDR(o) != nodePodCIDR(n) {
				c.poke()
			}
		},
		DeleteFunc: func(any) { c.poke() },
	}
}

// checkAddr refuses a new pod address outside the node's PodCIDR: the
// runtime read a configuration written for an earlier PodCIDR (the Node
// was registered again). The conflist is written again at once, and the
// runtime's next ADD takes it up.
func (c *cniInstaller) checkAddr(addr netip.Addr) error {
	cidr, err := c.podCIDR()
	if err != nil || !cidr.IsValid() || cidr.Contains(addr) {
		return nil // nothing to tell it by
	}
	c.poke()
	return fmt.Errorf("address %s is outside the node's PodCIDR %s: the CNI configuration is of an earlier PodCIDR; %s is written again", addr, cidr, c.st.Config)
}

// sync makes one attempt and returns when to make the next.
func (c *cniInstaller) sync() time.Duration {
	if err := c.installPlugin(); err != nil {
		c.failed(err)
		return cniRetryInterval
	}
	cidr, err := c.podCIDR()
	if err != nil {
		c.failed(err)
		return cniRetryInterval
	}
	if !cidr.IsValid() {
		c.waitForPodCIDR()
		return cniRetryInterval
	}
	conf, err := install.Conflist(install.Options{PodCIDR: cidr, DataDir: c.cfg.DataDir, LogFile: c.cfg.LogFile, AgentSocket: c.socket, MTU: c.mtu})
	if err != nil {
		c.failed(fmt.Errorf("render the CNI config: %w", err))
		return cniRetryInterval
	}
	changed, err := install.WriteConfig(c.cfg.ConfDir, c.cfg.ConfName, conf)
	if err != nil {
		c.failed(fmt.Errorf("write the CNI config: %w", err))
		return cniRetryInterval
	}
	if c.cfg.Exclusive {
		moved, err := install.SetAside(c.cfg.ConfDir, c.cfg.ConfName)
		for _, name := range moved {
			c.log.Info("another CNI config set aside: the runtime uses only Membrane's (--cni-exclusive)",
				"file", filepath.Join(c.cfg.ConfDir, name), "renamedTo", name+install.SetAsideSuffix)
		}
		if err != nil {
			c.failed(fmt.Errorf("set the other CNI configs aside (--cni-exclusive): %w", err))
			return cniRetryInterval
		}
	}
	c.mu.Lock()
	c.st.PodCIDR, c.st.Error = cidr.String(), ""
	c.waiting, c.lastErr = false, ""
	c.mu.Unlock()
	if changed {
		c.log.Info("CNI config written", "path", c.st.Config, "podCIDR", cidr, "mtu", c.mtu)
	}
	return cniRecheckInterval
}

// installPlugin copies the plugin binary into --cni-bin-dir unless it is
// there already: compared in full the first time, then by size (the check
// runs at every attempt), so a removed or replaced plugin comes back before
// the conflist that names it is rewritten.
func (c *cniInstaller) installPlugin() error {
	if c.cfg.BinDir == "" {
		return nil
	}
	dst := filepath.Join(c.cfg.BinDir, filepath.Base(c.cfg.Plugin))
	src, err := os.Stat(c.cfg.Plugin)
	if err != nil {
		return fmt.Errorf("--cni-plugin: %w", err)
	}
	if cur, err := os.Stat(dst); err == nil && cur.Size() == src.Size() && c.pluginChecked {
		return nil
	}
	changed, err := install.CopyBinary(c.cfg.Plugin, c.cfg.BinDir)
	if err != nil {
		return fmt.Errorf("install the CNI plugin into --cni-bin-dir: %w", err)
	}
	if changed {
		c.log.Info("CNI plugin installed", "path", dst, "from", c.cfg.Plugin)
	}
	c.pluginChecked = true
	return nil
}

// podCIDR is the node's IPv4 PodCIDR: the first of spec.podCIDRs, else
// spec.podCIDR; the zero Prefix while the node has none.
func (c *cniInstaller) podCIDR() (netip.Prefix, error) {
	n, err := c.nodes.Get(c.node)
	if apierrors.IsNotFound(err) {
		return netip.Prefix{}, nil
	} else if err != nil {
		return netip.Prefix{}, fmt.Errorf("read node %s: %w", c.node, err)
	}
	return nodePodCIDR(n), nil
}

// nodePodCIDR is n's first IPv4 PodCIDR.
func nodePodCIDR(n *corev1.Node) netip.Prefix {
	for _, s := range append(append([]string(nil), n.Spec.PodCIDRs...), n.Spec.PodCIDR) {
		if p, err := netip.ParsePrefix(s); err == nil && p.Addr().Is4() {
			return p.Masked()
		}
	}
	return netip.Prefix{}
}

// waitForPodCIDR notes that the node has no IPv4 PodCIDR yet.
func (c *cniInstaller) waitForPodCIDR() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.Error = "waiting for the node's IPv4 PodCIDR (spec.podCIDRs)"
	if !c.waiting {
		c.waiting = true
		c.log.Info("waiting for the node's IPv4 PodCIDR to write the CNI config", "path", c.st.Config)
	}
}

// failed records err, and logs it unless it was the last one logged.
func (c *cniInstaller) failed(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.Error = err.Error()
	if c.lastErr != c.st.Error {
		c.lastErr = c.st.Error
		c.log.Error("install CNI (retrying)", "path", c.st.Config, "error", err)
	}
}

// status is what `membrane status` shows.
func (c *cniInstaller) status() agentapi.CNIStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}
