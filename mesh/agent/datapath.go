package agent

import (
	"time"

	"github.com/membrane-mesh/membrane/bpf/socklb"
	"github.com/membrane-mesh/membrane/mesh/lb"
	"github.com/membrane-mesh/membrane/mesh/model"
)

// socketLB adapts the socket load balancer's maps to the reconciler.
type socketLB struct {
	maps *socklb.Maps
}

func (d socketLB) UpsertBackend(id lb.BackendID, b lb.Backend) error {
	return d.maps.UpsertBackend(socklb.BackendID(id), socklb.Backend{Addr: b.Addr, Port: b.Port, Proto: lbProto(b.Protocol)})
}

func (d socketLB) DeleteBackend(id lb.BackendID) error {
	return d.maps.DeleteBackend(socklb.BackendID(id))
}

func (d socketLB) UpsertService(f lb.Frontend, info lb.ServiceInfo, backends []lb.BackendID) error {
	si := socklb.ServiceInfo{RevNATID: info.RevNatID}
	if info.AffinitySeconds > 0 {
		si.Flags |= socklb.FlagAffinity
		si.AffinityTimeout = time.Duration(info.AffinitySeconds) * time.Second
	}
	ids := make([]socklb.BackendID, len(backends))
	for i, id := range backends {
		ids[i] = socklb.BackendID(id)
	}
	return d.maps.UpsertService(frontend(f), si, ids)
}

func (d socketLB) DeleteService(f lb.Frontend) error {
	return d.maps.DeleteService(frontend(f))
}

func frontend(f lb.Frontend) socklb.Frontend {
	return socklb.Frontend{Addr: f.Addr, Port: f.Port, Proto: lbProto(f.Protocol)}
}

// restore reads what the maps hold, for the reconciler to adopt.
func restore(d socklb.Dump) (map[lb.BackendID]lb.Backend, map[lb.Frontend]lb.Programmed) {
	backends := map[lb.BackendID]lb.Backend{}
	for _, b := range d.Backends {
		backends[lb.BackendID(b.ID)] = lb.Backend{Addr: b.Backend.Addr, Port: b.Backend.Port, Protocol: modelProto(b.Backend.Proto)}
	}
	services := map[lb.Frontend]lb.Programmed{}
	for _, s := range d.Services {
		if s.Frontend.Scope != socklb.ScopeExternal {
			continue
		}
		f := lb.Frontend{Addr: s.Frontend.Addr, Port: s.Frontend.Port, Protocol: modelProto(s.Frontend.Proto)}
		p := lb.Programmed{Info: lb.ServiceInfo{RevNatID: s.Info.RevNATID}}
		if s.Info.Flags&socklb.FlagAffinity != 0 {
			p.Info.AffinitySeconds = uint32(s.Info.AffinityTimeout / time.Second)
		}
		for _, id := range s.Backends {
			p.Backends = append(p.Backends, lb.BackendID(id))
		}
		services[f] = p
	}
	return backends, services
}

// The socket load balancer keeps its own protocol type for the maps'
// numbers; the control plane uses mesh/model's. These are the only
// conversions between them (the policy datapath's are in mesh/datapath),
// and TestDatapathValuesAgree checks the numbers agree.

func lbProto(p model.Protocol) socklb.Proto { return socklb.Proto(p) }

func modelProto(p socklb.Proto) model.Protocol { return model.Protocol(p) }
