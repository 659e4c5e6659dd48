package flow

import (
	"net/netip"
	"strings"

	"github.com/membrane-mesh/membrane/mesh/identity"
)

// Enricher resolves addresses to the endpoints owning them. The agent
// implements it from its pod cache and ipcache; it is called once per side
// of every flow, from the goroutine converting events, so it must be cheap
// and safe for concurrent use with the agent's updates.
type Enricher interface {
	// Endpoint describes the endpoint that owns ip: namespace, pod name,
	// labels, and optionally identity and entity. ok is false when the
	// address is unknown.
	Endpoint(ip netip.Addr) (ep Endpoint, ok bool)
}

// MapEnricher is an Enricher backed by a fixed map, for tests and tools.
type MapEnricher map[netip.Addr]Endpoint

// Endpoint implements Enricher.
func (m MapEnricher) Endpoint(ip netip.Addr) (Endpoint, bool) {
	ep, ok := m[ip.Unmap()]
	return ep, ok
}

// Resolve completes the endpoint at ip whose security identity the
// datapath reported: the enricher's details, the identity (the datapath's
// wins: it is the one policy used), and the reserved entity's name and
// label when the identity is a reserved one.
func Resolve(e Enricher, ip netip.Addr, id uint32) Endpoint {
	var ep Endpoint
	if e != nil && ip.IsValid() {
		if found, ok := e.Endpoint(ip); ok {
			ep = found
		}
	}
	if id != 0 {
		ep.Identity = id
	}
	if name := identity.Reserved(identity.ID(ep.Identity)); name != "" {
		if ep.Entity == "" {
			ep.Entity = name
		}
		if len(ep.Labels) == 0 {
			ep.Labels = []string{"reserved:" + name}
		}
	}
	return ep
}

// reservedIdentity returns the number of a reserved entity named name
// ("world" or "reserved:world").
func reservedIdentity(name string) (uint32, bool) {
	name = strings.TrimPrefix(name, "reserved:")
	for id := identity.Host; id <= identity.Ingress; id++ {
		if identity.Reserved(id) == name {
			return uint32(id), true
		}
	}
	return 0, false
}
