package plugin

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/membrane-mesh/membrane/mesh/cni/netconf"
)

// Endpoint is what the node agent learns about a pod interface.
type Endpoint struct {
	ContainerID  string
	IfName       string
	Netns        string
	PodNamespace string
	PodName      string
	IP           netip.Addr
	HostIfName   string
	HostIfIndex  int
	HostMAC      net.HardwareAddr
	PodMAC       net.HardwareAddr
}

// Notifier tells the node agent about endpoints. EndpointAdded runs at the
// end of a successful ADD, and its error fails the ADD (the pod would run
// without policy otherwise). EndpointDeleted runs during DEL, and its error is
// only logged: DEL must not fail, and the agent reconciles from the cluster
// anyway. On DEL the Endpoint carries only what is still known (IDs, netns,
// host interface name, the released IP).
type Notifier interface {
	EndpointAdded(ctx context.Context, ep Endpoint) error
	EndpointDeleted(ctx context.Context, ep Endpoint) error
}

// NopNotifier tells no one.
type NopNotifier struct{}

// EndpointAdded does nothing.
func (NopNotifier) EndpointAdded(context.Context, Endpoint) error { return nil }

// EndpointDeleted does nothing.
func (NopNotifier) EndpointDeleted(context.Context, Endpoint) error { return nil }

// NotifierFor returns the Notifier that cfg asks for: NopNotifier when
// agentSocket is empty. A client for the agent's socket does not exist yet,
// so a non-empty agentSocket is a configuration error rather than being
// silently ignored.
func NotifierFor(cfg netconf.Config) (Notifier, error) {
	if cfg.AgentSocket == "" {
		return NopNotifier{}, nil
	}
	return nil, fmt.Errorf("agentSocket %q: this build of membrane-cni cannot talk to the agent; leave agentSocket empty", cfg.AgentSocket)
}
