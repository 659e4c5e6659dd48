// Package netconf parses and validates the membrane-cni network configuration:
// one plugin entry of a conflist, as the runtime hands it to the plugin.
//
//	{"type": "membrane-cni", "podCIDR": "10.244.1.0/24",
//	 "dataDir": "/var/lib/membrane/cni", "mtu": 1500,
//	 "logFile": "/var/log/membrane-cni.log", "agentSocket": ""}
package netconf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
)

// Defaults for optional fields, and the range of mtu.
const (
	DefaultDataDir = "/var/lib/membrane/cni"
	DefaultMTU     = 1500
	MinMTU         = 68
	MaxMTU         = 65535
)

// Config is the plugin's network configuration.
type Config struct {
	types.NetConf

	// PodCIDR is the node's PodCIDR; pod addresses come from it. Required.
	PodCIDR string `json:"podCIDR"`
	// DataDir holds the IPAM state. Default DefaultDataDir.
	DataDir string `json:"dataDir,omitempty"`
	// MTU of both ends of the veth pair. Default DefaultMTU.
	MTU int `json:"mtu,omitempty"`
	// LogFile receives the plugin's logs (JSON lines, info level and up).
	// When empty, warnings and errors go to stderr.
	LogFile string `json:"logFile,omitempty"`
	// AgentSocket is where the node agent listens for endpoint events. When
	// empty the plugin tells no one about endpoints.
	AgentSocket string `json:"agentSocket,omitempty"`

	// Prefix is PodCIDR, parsed and masked.
	Prefix netip.Prefix `json:"-"`
}

// Parse decodes and validates a network configuration and applies defaults.
// Errors are *types.Error with the CNI code for the runtime.
func Parse(data []byte) (Config, error) {
	cfg, err := Decode(data)
	if err != nil {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Decode decodes a network configuration and applies defaults without
// validating PodCIDR, for commands (DEL) that must work even with a
// configuration that could no longer ADD.
func Decode(data []byte) (Config, error) {
	var cfg Config
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&cfg); err != nil {
		return Config{}, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode network config: %v", err), "")
	}
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	return cfg, nil
}

// Validate checks the fields and fills in Prefix.
func (c *Config) Validate() error {
	if c.PodCIDR == "" {
		return invalid("podCIDR is required (the node's PodCIDR, e.g. 10.244.1.0/24)")
	}
	prefix, err := netip.ParsePrefix(c.PodCIDR)
	if err != nil {
		return invalid(fmt.Sprintf("podCIDR %q is not a valid CIDR: %v", c.PodCIDR, err))
	}
	if !prefix.Addr().Is4() || prefix.Addr().Is4In6() {
		return invalid(fmt.Sprintf("podCIDR %q: IPv6 is not supported yet, use an IPv4 CIDR", c.PodCIDR))
	}
	if prefix.Bits() > 30 {
		return invalid(fmt.Sprintf("podCIDR %q is too small: need /30 or larger (network, broadcast and .1 are not allocated)", c.PodCIDR))
	}
	if c.MTU < MinMTU || c.MTU > MaxMTU {
		return invalid(fmt.Sprintf("mtu %d out of range [%d, %d]", c.MTU, MinMTU, MaxMTU))
	}
	c.Prefix = prefix.Masked()
	return nil
}

func invalid(msg string) error {
	return types.NewError(types.ErrInvalidNetworkConfig, msg, "")
}
