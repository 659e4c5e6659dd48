package node

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"

	"github.com/membrane-mesh/membrane/gateway/translate"
)

// Resources of the experimental route kinds (see experimental).
const (
	tlsRoutesResource = "tlsroutes"
	tcpRoutesResource = "tcproutes"
	udpRoutesResource = "udproutes"
)

// experimental is an experimental route kind's resource.
func experimental(resource string) schema.GroupVersionResource {
	return gatewayResource("v1alpha2", resource)
}

// ServedKinds are the experimental route kinds the API server serves now.
func ServedKinds(disco discovery.DiscoveryInterface) translate.ExperimentalKinds {
	return translate.ExperimentalKinds{
		TLSRoute: served(disco, experimental(tlsRoutesResource)),
		TCPRoute: served(disco, experimental(tcpRoutesResource)),
		UDPRoute: served(disco, experimental(udpRoutesResource)),
	}
}

// AwaitKinds polls discovery every interval and returns an error once the
// API server serves an experimental route kind that have lacks; nil when
// ctx ends. A process whose watches lack a kind (its CRD was installed,
// or not yet established, when the process started) runs it and exits on
// the error, so that its restart watches the kind.
func AwaitKinds(ctx context.Context, disco discovery.DiscoveryInterface, have translate.ExperimentalKinds, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			now := ServedKinds(disco)
			for _, k := range []struct {
				resource  string
				had, have bool
			}{
				{tlsRoutesResource, have.TLSRoute, now.TLSRoute},
				{tcpRoutesResource, have.TCPRoute, now.TCPRoute},
				{udpRoutesResource, have.UDPRoute, now.UDPRoute},
			} {
				if k.have && !k.had {
					return fmt.Errorf("the API server serves %s now, which it did not at start: restarting to watch them", k.resource)
				}
			}
		}
	}
}
