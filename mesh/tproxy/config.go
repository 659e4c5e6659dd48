// Package tproxy installs the node-side plumbing that hands connections the
// eBPF datapath marked for the proxy to the node's Envoy, Cilium-style:
//
//   - an nftables table "ip membrane_proxy" whose prerouting chain (priority
//     mangle) tproxies packets carrying Config.ToProxyMark to the proxy's
//     transparent listener, and marks return traffic for the proxy's
//     transparent upstream sockets (Envoy's original_src) with
//     Config.LocalMark;
//   - an IPv4 rule "fwmark LocalMark/MarkMask lookup Table" and the route
//     "local 0.0.0.0/0 dev lo" in Table, so that marked packets are delivered
//     locally instead of being forwarded.
//
// Everything is installed in the network namespace of the calling thread.
// The nftables table and the routing table Config.Table belong to this
// package: Install and Remove rewrite them as a whole, including IPv4 rules
// that look Table up, and touch nothing else.
package tproxy

import (
	"errors"
	"fmt"
	"net/netip"
)

// Names of the nftables objects Install owns.
const (
	TableName = "membrane_proxy"
	ChainName = "prerouting"
)

// Defaults, as in Cilium: the low half of the mark selects "to the local
// table", the high half of the to-proxy mark carries the proxy port. The
// rule comes before every other routing rule but the kernel's local one
// (Cilium's is 9 too): a reply for a proxy's transparent socket must reach
// it even where another rule (WireGuard's, pref 1000) would send it to its
// destination's node.
const (
	DefaultLocalMark    = 0x0200
	DefaultMarkMask     = 0x0F00
	DefaultTable        = 2004
	DefaultRulePriority = 9
)

// Config describes the plumbing for the node's transparent proxy
// listeners: the L7 proxy's (TCP) and any Extra ones, e.g. the DNS proxy's
// (UDP and TCP), each selected by its own to-proxy mark.
type Config struct {
	// Port is the L7 proxy's transparent listener port, e.g. 15001; 0:
	// none (then Extra must have a listener).
	Port uint16
	// ListenAddr is the listener's IPv4 address, e.g. 127.0.0.1.
	ListenAddr netip.Addr
	// ToProxyMark is the exact mark the datapath puts on packets for the
	// proxy, conventionally Port<<16 | LocalMark.
	ToProxyMark uint32
	// LocalMark, within MarkMask, routes a packet through Table.
	LocalMark uint32
	// MarkMask is the part of the mark the ip rule matches.
	MarkMask uint32
	// Table is the routing table holding "local 0.0.0.0/0 dev lo". It is
	// owned by this package.
	Table int
	// RulePriority is the priority of the ip rule that looks Table up.
	RulePriority int
	// Extra are further transparent listeners on ListenAddr.
	Extra []Listener
}

// Listener is a transparent listener for marked packets of its protocols.
type Listener struct {
	Port uint16
	// ToProxyMark is the exact mark of packets for it, conventionally
	// Port<<16 | LocalMark.
	ToProxyMark uint32
	TCP, UDP    bool
}

// NewConfig returns the conventional configuration for a proxy listening
// on 127.0.0.1:port.
func NewConfig(port uint16) Config {
	return Config{
		Port:         port,
		ListenAddr:   netip.AddrFrom4([4]byte{127, 0, 0, 1}),
		ToProxyMark:  uint32(port)<<16 | DefaultLocalMark,
		LocalMark:    DefaultLocalMark,
		MarkMask:     DefaultMarkMask,
		Table:        DefaultTable,
		RulePriority: DefaultRulePriority,
	}
}

// Validate reports every field that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.Port == 0 && len(c.Extra) == 0 {
		errs = append(errs, errors.New("port must not be 0 without extra listeners"))
	}
	marks := map[uint32]bool{}
	if c.Port != 0 {
		marks[c.ToProxyMark] = true
	}
	for i, l := range c.Extra {
		switch {
		case l.Port == 0:
			errs = append(errs, fmt.Errorf("extra listener %d: port must not be 0", i))
		case !l.TCP && !l.UDP:
			errs = append(errs, fmt.Errorf("extra listener %d (port %d): needs TCP or UDP", i, l.Port))
		case l.ToProxyMark == 0 || l.ToProxyMark == c.LocalMark || marks[l.ToProxyMark]:
			errs = append(errs, fmt.Errorf("extra listener %d (port %d): to-proxy mark %#x must be non-zero, differ from the local mark and from the other listeners'", i, l.Port, l.ToProxyMark))
		}
		marks[l.ToProxyMark] = true
	}
	if !c.ListenAddr.Is4() {
		errs = append(errs, fmt.Errorf("listen address %q is not IPv4", c.ListenAddr))
	}
	if c.MarkMask == 0 {
		errs = append(errs, errors.New("mark mask must not be 0"))
	}
	if c.LocalMark == 0 || c.LocalMark&^c.MarkMask != 0 {
		errs = append(errs, fmt.Errorf("local mark %#x must be non-zero and within mask %#x", c.LocalMark, c.MarkMask))
	}
	if c.Port != 0 && (c.ToProxyMark == 0 || c.ToProxyMark == c.LocalMark) {
		errs = append(errs, fmt.Errorf("to-proxy mark %#x must be non-zero and differ from the local mark", c.ToProxyMark))
	}
	// 253, 254 and 255 are the kernel's default, main and local tables.
	if c.Table <= 0 || c.Table >= 253 && c.Table <= 255 || int64(c.Table) > 1<<32-1 {
		errs = append(errs, fmt.Errorf("routing table %d must be a positive id other than 253-255", c.Table))
	}
	// 0, 32766 and 32767 hold the kernel's local, main and default rules.
	if c.RulePriority <= 0 || c.RulePriority >= 32766 {
		errs = append(errs, fmt.Errorf("rule priority %d must be in [1, 32765]", c.RulePriority))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid tproxy config: %w", err)
	}
	return nil
}
