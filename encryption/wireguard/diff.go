package wireguard

import (
	"errors"
	"net"
	"net/netip"
	"slices"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// ErrNoChanges is returned by Manager.Reconfig (and Diff) when the device
// and its routes already match the desired configuration.
var ErrNoChanges = errors.New("no changes made to the WireGuard configuration")

// Diff returns the wgctrl configuration that turns the device have into
// want, touching only what differs: removed peers, new peers, and peers
// whose endpoint, allowed IPs or keepalive changed. A peer whose key
// changed is a removal and an addition (WireGuard identifies peers by key).
// It returns ErrNoChanges when nothing differs.
func Diff(want Config, have *wgtypes.Device) (wgtypes.Config, error) {
	var cfg wgtypes.Config
	changed := false
	if have.PrivateKey != want.PrivateKey.wg() {
		k := want.PrivateKey.wg()
		cfg.PrivateKey = &k
		changed = true
	}
	if have.ListenPort != want.ListenPort {
		port := want.ListenPort
		cfg.ListenPort = &port
		changed = true
	}
	wanted := map[wgtypes.Key]Peer{}
	for _, p := range want.Peers {
		wanted[p.PublicKey.wg()] = p
	}
	current := map[wgtypes.Key]wgtypes.Peer{}
	for _, p := range have.Peers {
		current[p.PublicKey] = p
		if _, ok := wanted[p.PublicKey]; !ok {
			cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: p.PublicKey, Remove: true})
			changed = true
		}
	}
	// Removals first, so an addition may take over their allowed IPs.
	for _, p := range want.Peers {
		key := p.PublicKey.wg()
		pc := peerConfig(p)
		cur, ok := current[key]
		if !ok {
			cfg.Peers = append(cfg.Peers, pc)
			changed = true
			continue
		}
		if samePeer(cur, p) {
			continue
		}
		pc.UpdateOnly = true
		cfg.Peers = append(cfg.Peers, pc)
		changed = true
	}
	if !changed {
		return wgtypes.Config{}, ErrNoChanges
	}
	return cfg, nil
}

func peerConfig(p Peer) wgtypes.PeerConfig {
	keepalive := KeepaliveInterval
	pc := wgtypes.PeerConfig{
		PublicKey:                   p.PublicKey.wg(),
		Endpoint:                    net.UDPAddrFromAddrPort(p.Endpoint),
		PersistentKeepaliveInterval: &keepalive,
		ReplaceAllowedIPs:           true,
	}
	for _, a := range p.AllowedIPs {
		pc.AllowedIPs = append(pc.AllowedIPs, prefixToIPNet(a))
	}
	return pc
}

func samePeer(cur wgtypes.Peer, p Peer) bool {
	if cur.PersistentKeepaliveInterval != KeepaliveInterval {
		return false
	}
	if cur.Endpoint == nil || cur.Endpoint.AddrPort() != p.Endpoint {
		if cur.Endpoint == nil || netip.AddrPortFrom(cur.Endpoint.AddrPort().Addr().Unmap(), cur.Endpoint.AddrPort().Port()) != p.Endpoint {
			return false
		}
	}
	have := make([]netip.Prefix, 0, len(cur.AllowedIPs))
	for _, a := range cur.AllowedIPs {
		if pfx, ok := ipNetToPrefix(a); ok {
			have = append(have, pfx)
		}
	}
	sortPrefixes(have)
	return slices.Equal(have, p.AllowedIPs)
}

func prefixToIPNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func ipNetToPrefix(n net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	a = a.Unmap()
	return netip.PrefixFrom(a, ones).Masked(), true
}
