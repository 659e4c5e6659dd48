package agent

import (
	bpfpolicy "github.com/membrane-mesh/membrane/bpf/policy"
	"github.com/membrane-mesh/membrane/bpf/socklb"
	"github.com/membrane-mesh/membrane/encryption/wireguard"
	"github.com/membrane-mesh/membrane/mesh/agentapi"
	"github.com/membrane-mesh/membrane/xds/server"
)

// The API's types live in mesh/agentapi, which links no datapath code;
// these convert the datapath's own types to them.

func lbDump(d socklb.Dump) agentapi.LBDump {
	out := agentapi.LBDump{}
	for _, s := range d.Services {
		ids := make([]uint32, len(s.Backends))
		for i, id := range s.Backends {
			ids[i] = uint32(id)
		}
		out.Services = append(out.Services, agentapi.LBService{
			Frontend: agentapi.LBFrontend{Addr: s.Frontend.Addr, Port: s.Frontend.Port, Proto: agentapi.Proto(s.Frontend.Proto), Scope: uint8(s.Frontend.Scope)},
			Info:     agentapi.LBServiceInfo{RevNATID: s.Info.RevNATID, Flags: uint8(s.Info.Flags), AffinityTimeout: s.Info.AffinityTimeout},
			Backends: ids,
		})
	}
	for _, b := range d.Backends {
		out.Backends = append(out.Backends, agentapi.LBBackendEntry{ID: uint32(b.ID),
			Backend: agentapi.LBBackend{Addr: b.Backend.Addr, Port: b.Backend.Port, Proto: agentapi.Proto(b.Backend.Proto)}})
	}
	for _, r := range d.RevNAT {
		out.RevNAT = append(out.RevNAT, agentapi.LBRevNATEntry{ID: r.ID, Frontend: r.Frontend})
	}
	return out
}

func policyDump(d bpfpolicy.Dump) agentapi.PolicyDump {
	out := agentapi.PolicyDump{}
	for _, c := range d.IPCache {
		out.IPCache = append(out.IPCache, agentapi.IPCacheEntry{Prefix: c.Prefix, Identity: uint32(c.Identity)})
	}
	for _, e := range d.Endpoints {
		out.Endpoints = append(out.Endpoints, agentapi.PolicyEndpointEntry{Ifindex: e.Ifindex, Endpoint: agentapi.PolicyEndpoint{
			ID: uint16(e.Endpoint.ID), Identity: uint32(e.Endpoint.Identity), Addr: e.Endpoint.Addr,
			EnforceIngress: e.Endpoint.EnforceIngress, EnforceEgress: e.Endpoint.EnforceEgress, AuthEgress: e.Endpoint.AuthEgress,
			Pickup: e.Endpoint.Pickup, Track: e.Endpoint.Track,
		}})
	}
	for _, r := range d.Routes {
		out.Routes = append(out.Routes, agentapi.LocalRouteEntry{Addr: r.Addr, Route: agentapi.LocalRoute{Ifindex: r.Route.Ifindex, PodMAC: r.Route.PodMAC, HostMAC: r.Route.HostMAC}})
	}
	for _, p := range d.Policy {
		out.Policy = append(out.Policy, agentapi.PolicyMapEntry{
			Key: agentapi.PolicyKey{EndpointID: uint16(p.Key.EndpointID), Direction: uint8(p.Key.Direction), RemoteIdentity: uint32(p.Key.RemoteIdentity),
				Proto: agentapi.Proto(p.Key.Proto), Port: p.Key.Port, EndPort: p.Key.EndPort},
			Entry:       agentapi.PolicyVerdict{Verdict: uint8(p.Entry.Verdict), ProxyPort: p.Entry.ProxyPort, AuthRequired: p.Entry.AuthRequired},
			DerivedDeny: p.DerivedDeny, DerivedAuth: p.DerivedAuth,
		})
	}
	return out
}

func xdsStatus(s server.Status) agentapi.XDSStatus {
	out := agentapi.XDSStatus{Connected: s.Connected, Streams: s.Streams, Published: s.Published, Acked: s.Acked, AckedAt: s.AckedAt}
	if r := s.Rejected; r != nil {
		out.Rejected = &agentapi.XDSRejection{Version: r.Version, TypeURL: r.TypeURL, Resources: r.Resources, Error: r.Error, At: r.At}
	}
	return out
}

func wireGuardStatus(s wireguard.Status) *agentapi.WireGuardStatus {
	out := &agentapi.WireGuardStatus{Device: s.Device, Backend: string(s.Backend), ListenPort: s.ListenPort,
		PublicKeyFingerprint: s.PublicKeyFingerprint, Peers: make([]agentapi.PeerStatus, 0, len(s.Peers))}
	for _, p := range s.Peers {
		out.Peers = append(out.Peers, agentapi.PeerStatus(p))
	}
	return out
}

func skippedPeers(s []wireguard.Skipped) []agentapi.SkippedPeer {
	out := make([]agentapi.SkippedPeer, 0, len(s))
	for _, k := range s {
		out = append(out, agentapi.SkippedPeer(k))
	}
	return out
}
