package wireguard

import (
	"net/netip"
	"strings"
	"testing"
)

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

func TestPeers(t *testing.T) {
	self, a, b, c := mustKey(t), mustKey(t), mustKey(t), mustKey(t)
	nodes := []Node{
		{Name: "n3", IP: netip.MustParseAddr("198.18.1.13"), PodCIDRs: pfx("10.244.2.0/24"), Key: c.Public().Encode()},
		{Name: "n1", IP: netip.MustParseAddr("198.18.1.11"), PodCIDRs: pfx("10.244.0.0/24"), Key: self.Public().Encode()},
		{Name: "n2", IP: netip.MustParseAddr("198.18.1.12"), PodCIDRs: pfx("fd00::/64", "10.244.1.7/24"), Key: a.Public().Encode()},
		{Name: "nokey", IP: netip.MustParseAddr("198.18.1.14"), PodCIDRs: pfx("10.244.3.0/24")},
		{Name: "nocidr", IP: netip.MustParseAddr("198.18.1.15"), Key: b.Public().Encode()},
		{Name: "garbage", IP: netip.MustParseAddr("198.18.1.16"), PodCIDRs: pfx("10.244.5.0/24"), Key: "not-a-key"},
		{Name: "zero", IP: netip.MustParseAddr("198.18.1.17"), PodCIDRs: pfx("10.244.6.0/24"), Key: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="},
		{Name: "noip", PodCIDRs: pfx("10.244.7.0/24"), Key: mustKey(t).Public().Encode()},
		{Name: "z-dupkey", IP: netip.MustParseAddr("198.18.1.19"), PodCIDRs: pfx("10.244.8.0/24"), Key: a.Public().Encode()},
		{Name: "z-overlap", IP: netip.MustParseAddr("198.18.1.20"), PodCIDRs: pfx("10.244.2.128/25"), Key: mustKey(t).Public().Encode()},
		{Name: "z-selfkey", IP: netip.MustParseAddr("198.18.1.21"), PodCIDRs: pfx("10.244.9.0/24"), Key: self.Public().Encode()},
	}
	peers, skipped := Peers("n1", self.Public(), nodes, ListenPort)
	var names []string
	for _, p := range peers {
		names = append(names, p.Node)
	}
	if got := strings.Join(names, ","); got != "n2,n3" {
		t.Fatalf("peers %s, want n2,n3", got)
	}
	n2 := peers[0]
	if !n2.PublicKey.Equal(a.Public()) || n2.Endpoint != netip.MustParseAddrPort("198.18.1.12:51871") {
		t.Errorf("n2: %+v", n2)
	}
	if got := n2.AllowedIPs; len(got) != 2 || got[0] != netip.MustParsePrefix("10.244.1.0/24") || got[1] != netip.MustParsePrefix("fd00::/64") {
		t.Errorf("n2 allowed IPs %v (masked and sorted)", got)
	}
	want := map[string]string{
		"garbage": "not base64", "zero": "all-zero", "noip": "no InternalIP",
		"z-dupkey": "already used by node n2", "z-overlap": "overlaps 10.244.2.0/24 of node n3",
		"z-selfkey": "own public key",
	}
	if len(skipped) != len(want) {
		t.Errorf("skipped %+v", skipped)
	}
	for _, s := range skipped {
		if w, ok := want[s.Node]; !ok || !strings.Contains(s.Reason, w) {
			t.Errorf("skipped %s: %q, want %q", s.Node, s.Reason, w)
		}
	}
}
