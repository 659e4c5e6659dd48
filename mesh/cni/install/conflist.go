// Package install puts membrane-cni on a node: it renders the network
// configuration list the plugin reads (mesh/cni/netconf) and installs it,
// and the plugin binary, atomically into the runtime's CNI directories.
package install

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"

	"github.com/membrane-mesh/membrane/mesh/cni/netconf"
)

// Network is the conflist's network name; PluginType the plugin's type,
// the name of its binary in the CNI bin directory.
const (
	Network    = "membrane"
	PluginType = "membrane-cni"
	// CNIVersion is the CNI specification version of the conflist.
	CNIVersion = "1.0.0"
)

// Options are the node-specific fields of the conflist.
type Options struct {
	// PodCIDR is the node's IPv4 PodCIDR; pod addresses come from it.
	PodCIDR netip.Prefix
	// DataDir holds the plugin's IPAM state (an absolute path).
	DataDir string
	// LogFile receives the plugin's logs (an absolute path; empty: the
	// plugin writes warnings and errors to stderr).
	LogFile string
	// AgentSocket is the agent API's unix socket, over which ADD has the
	// agent police a new pod's interface (an absolute path; empty: the
	// plugin tells no one).
	AgentSocket string
	// MTU is the pods' interfaces' (0: the plugin's default, 1500).
	MTU int
}

type conflist struct {
	CNIVersion string   `json:"cniVersion"`
	Name       string   `json:"name"`
	Plugins    []plugin `json:"plugins"`
}

// plugin carries the fields of netconf.Config the agent sets.
type plugin struct {
	Type        string `json:"type"`
	PodCIDR     string `json:"podCIDR"`
	DataDir     string `json:"dataDir"`
	LogFile     string `json:"logFile,omitempty"`
	AgentSocket string `json:"agentSocket,omitempty"`
	MTU         int    `json:"mtu,omitempty"`
}

// Conflist renders the network configuration list of o: indented JSON
// ending in a newline. Its error names the field at fault.
func Conflist(o Options) ([]byte, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(conflist{
		CNIVersion: CNIVersion,
		Name:       Network,
		Plugins: []plugin{{
			Type:        PluginType,
			PodCIDR:     o.PodCIDR.Masked().String(),
			DataDir:     o.DataDir,
			LogFile:     o.LogFile,
			AgentSocket: o.AgentSocket,
			MTU:         o.MTU,
		}},
	}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode conflist: %w", err)
	}
	return append(b, '\n'), nil
}

func (o Options) validate() error {
	var errs []error
	switch p := o.PodCIDR; {
	case !p.IsValid():
		errs = append(errs, errors.New("podCIDR: missing (the node's PodCIDR, e.g. 10.244.1.0/24)"))
	case !p.Addr().Is4():
		errs = append(errs, fmt.Errorf("podCIDR %s: not IPv4 (membrane-cni allocates IPv4 addresses only)", p))
	case p.Bits() > 30:
		errs = append(errs, fmt.Errorf("podCIDR %s: too small, need /30 or larger", p))
	}
	if o.DataDir == "" || !filepath.IsAbs(o.DataDir) {
		errs = append(errs, fmt.Errorf("dataDir %q: must be an absolute path", o.DataDir))
	}
	if o.LogFile != "" && !filepath.IsAbs(o.LogFile) {
		errs = append(errs, fmt.Errorf("logFile %q: must be an absolute path (or empty)", o.LogFile))
	}
	if o.MTU != 0 && (o.MTU < netconf.MinMTU || o.MTU > netconf.MaxMTU) {
		errs = append(errs, fmt.Errorf("mtu %d: want %d to %d (or 0)", o.MTU, netconf.MinMTU, netconf.MaxMTU))
	}
	if o.AgentSocket != "" && !filepath.IsAbs(o.AgentSocket) {
		errs = append(errs, fmt.Errorf("agentSocket %q: must be an absolute path (or empty)", o.AgentSocket))
	}
	return errors.Join(errs...)
}
