package node

import (
	"context"
	"errors"
	"time"

	"k8s.io/client-go/discovery"
)

// AwaitTLSRoutes polls discovery every interval and returns an error once
// TLSRoutes are served; nil when ctx ends. A process whose watches lack
// TLSRoutes (the experimental Gateway API CRDs were installed, or not yet
// established, when it started) runs it and exits on the error, so that its
// restart watches them.
func AwaitTLSRoutes(ctx context.Context, disco discovery.DiscoveryInterface, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if served(disco, gatewayResource("v1alpha2", "tlsroutes")) {
				return errors.New("the API server serves TLSRoutes now, which it did not at start: restarting to watch them")
			}
		}
	}
}
