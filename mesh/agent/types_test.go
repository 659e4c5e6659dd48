package agent

import (
	"encoding/json"
	"net"
	"net/netip"
	"testing"
	"time"

	bpfpolicy "github.com/membrane-mesh/membrane/bpf/policy"
	"github.com/membrane-mesh/membrane/bpf/socklb"
	"github.com/membrane-mesh/membrane/encryption/wireguard"
	"github.com/membrane-mesh/membrane/xds/server"
)

// TestAPITypesKeepJSON: the API's mirrors of the datapath's dump and status
// types encode exactly as the datapath's own types do, so clients of
// either see the same JSON.
func TestAPITypesKeepJSON(t *testing.T) {
	a, p := netip.MustParseAddr, netip.MustParsePrefix
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	lb := socklb.Dump{
		Services: []socklb.Service{{Frontend: socklb.Frontend{Addr: a("10.96.0.10"), Port: 53, Proto: socklb.UDP, Scope: socklb.ScopeInternal},
			Info: socklb.ServiceInfo{RevNATID: 7, Flags: socklb.FlagAffinity, AffinityTimeout: 3 * time.Hour}, Backends: []socklb.BackendID{3, 0, 9}}},
		Backends: []socklb.BackendEntry{{ID: 3, Backend: socklb.Backend{Addr: a("10.244.1.5"), Port: 5353, Proto: socklb.UDP}}},
		RevNAT:   []socklb.RevNATEntry{{ID: 7, Frontend: netip.MustParseAddrPort("10.96.0.10:53")}},
	}
	pol := bpfpolicy.Dump{
		IPCache:   []bpfpolicy.IPCacheEntry{{Prefix: p("10.244.1.5/32"), Identity: 300}},
		Endpoints: []bpfpolicy.EndpointEntry{{Ifindex: 12, Endpoint: bpfpolicy.Endpoint{ID: 4, Identity: 300, Addr: a("10.244.1.5"), EnforceIngress: true, EnforceEgress: true}}},
		Routes: []bpfpolicy.LocalRouteEntry{{Addr: a("10.244.1.5"), Route: bpfpolicy.LocalRoute{Ifindex: 12,
			PodMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, HostMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}}}},
		Policy: []bpfpolicy.PolicyMapEntry{{Key: bpfpolicy.PolicyKey{EndpointID: 4, Direction: bpfpolicy.Egress, RemoteIdentity: 301, Proto: bpfpolicy.TCP, Port: 80, EndPort: 90},
			Entry: bpfpolicy.PolicyEntry{Verdict: bpfpolicy.Redirect, ProxyPort: 15001, AuthRequired: true}, DerivedDeny: true, DerivedAuth: true}},
	}
	xds := server.Status{Connected: true, Streams: 2, Published: "v2", Acked: "v1", AckedAt: at,
		Rejected: &server.Rejection{Version: "v2", TypeURL: "type.googleapis.com/envoy.config.listener.v3.Listener", Resources: []string{"membrane-proxy"}, Error: "bad", At: at}}
	wg := wireguard.Status{Device: "membrane-wg0", Backend: wireguard.BackendKernel, ListenPort: 51871, PublicKeyFingerprint: "ab12",
		Peers: []wireguard.PeerStatus{{Node: "n2", PublicKeyFingerprint: "cd34", Endpoint: "198.18.1.11:51871", AllowedIPs: []string{"10.244.2.0/24"}, LatestHandshake: at, ReceiveBytes: 1, TransmitBytes: 2}}}
	skipped := []wireguard.Skipped{{Node: "n3", Reason: "bad key", Key: "xyz"}}
	for _, tc := range []struct {
		name      string
		own, mine any
	}{
		{"lb dump", lb, lbDump(lb)},
		{"policy dump", pol, policyDump(pol)},
		{"xds status", xds, xdsStatus(xds)},
		{"wireguard status", wg, wireGuardStatus(wg)},
		{"skipped peers", skipped, skippedPeers(skipped)},
	} {
		want, err := json.Marshal(tc.own)
		if err != nil {
			t.Fatal(err)
		}
		got, err := json.Marshal(tc.mine)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, want)
		}
	}
	if got, want := lbDump(lb).Services[0].Frontend.String(), lb.Services[0].Frontend.String(); got != want {
		t.Errorf("frontend %q, want %q", got, want)
	}
	if got, want := lbDump(lb).Backends[0].Backend.String(), lb.Backends[0].Backend.String(); got != want {
		t.Errorf("backend %q, want %q", got, want)
	}
}
