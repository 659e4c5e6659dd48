package wireguard

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"time"
)

// Defaults of the device every node creates.
const (
	DeviceName = "membrane_wg0"
	ListenPort = 51871
	// Overhead is what WireGuard adds to a packet at most (outer IPv6
	// header, UDP, its own header and tag): the device's MTU is the
	// underlay's less this.
	Overhead = 80
	// KeepaliveInterval makes a peer that was just (re)configured — a new
	// node, or a rotated key — handshake at once rather than at its next
	// packet, and keeps the handshake fresh for status.
	KeepaliveInterval = 25 * time.Second
	// AnnotationPublicKey is where each node publishes its public key.
	AnnotationPublicKey = "network.membrane.io/wg-pub-key"
)

// Node is a cluster node as WireGuard sees it (converted from the
// Kubernetes Node by the watch layer).
type Node struct {
	Name string
	// IP is the node's InternalIP: the peer's endpoint.
	IP       netip.Addr
	PodCIDRs []netip.Prefix
	// Key is the raw AnnotationPublicKey value, "" when the node publishes
	// none (encryption off there, or its agent not started yet).
	Key string
}

// Peer is one other node in the device's configuration.
type Peer struct {
	Node       string
	PublicKey  PublicKey
	Endpoint   netip.AddrPort
	AllowedIPs []netip.Prefix // sorted
}

// Skipped is a node that publishes a key that cannot be used.
type Skipped struct {
	Node   string `json:"node"`
	Reason string `json:"reason"`
	// Key is the offending annotation value (a public value; shortened).
	Key string `json:"key,omitempty"`
}

// Config is the whole desired state of the device.
type Config struct {
	PrivateKey PrivateKey
	ListenPort int
	Peers      []Peer // sorted by node name
}

// Peers derives the peers of node self from every node of the cluster:
// all other nodes that publish a valid key and have an InternalIP and a
// PodCIDR. A node without a key is not a peer (its pods stay reachable
// over the underlay); a node whose key or addresses cannot be used is
// reported in skipped and left out, and every other peer is kept.
func Peers(self string, selfKey PublicKey, nodes []Node, port int) (peers []Peer, skipped []Skipped) {
	sorted := slices.Clone(nodes)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	keys := map[[KeyLen]byte]string{}
	var claimed []netip.Prefix
	claimedBy := map[netip.Prefix]string{}
	for _, n := range sorted {
		if n.Name == self || n.Key == "" {
			continue
		}
		skip := func(reason string) {
			skipped = append(skipped, Skipped{Node: n.Name, Reason: reason, Key: shorten(n.Key)})
		}
		pub, err := ParsePublicKey(n.Key)
		if err != nil {
			skip(fmt.Sprintf("annotation %s: %v", AnnotationPublicKey, err))
			continue
		}
		if pub.Equal(selfKey) {
			skip("publishes this node's own public key")
			continue
		}
		if other, dup := keys[pub.k]; dup {
			skip("public key already used by node " + other)
			continue
		}
		if !n.IP.IsValid() {
			skip("no InternalIP")
			continue
		}
		var allowed []netip.Prefix
		conflict := ""
		for _, c := range n.PodCIDRs {
			c = c.Masked()
			for _, o := range claimed {
				if o.Overlaps(c) {
					conflict = fmt.Sprintf("PodCIDR %s overlaps %s of node %s", c, o, claimedBy[o])
				}
			}
			allowed = append(allowed, c)
		}
		if conflict != "" {
			skip(conflict)
			continue
		}
		if len(allowed) == 0 {
			continue // no PodCIDR yet: nothing to route to it
		}
		sortPrefixes(allowed)
		allowed = slices.Compact(allowed)
		keys[pub.k] = n.Name
		for _, c := range allowed {
			claimed = append(claimed, c)
			claimedBy[c] = n.Name
		}
		peers = append(peers, Peer{Node: n.Name, PublicKey: pub, Endpoint: netip.AddrPortFrom(n.IP.Unmap(), uint16(port)), AllowedIPs: allowed})
	}
	return peers, skipped
}

func sortPrefixes(p []netip.Prefix) {
	sort.Slice(p, func(i, j int) bool {
		if c := p[i].Addr().Compare(p[j].Addr()); c != 0 {
			return c < 0
		}
		return p[i].Bits() < p[j].Bits()
	})
}

// shorten keeps garbage out of logs and events at a bounded size.
func shorten(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
