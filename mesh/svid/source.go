// Package svid defines how the node agent's workload identities (X.509-SVIDs
// and the trust bundle) are handed to their consumers: the Envoy SDS secrets,
// the SPIFFE Workload API and the agent API.
package svid

import (
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Snapshot is one consistent view of the identities a node holds. A Snapshot
// is immutable once returned: consumers must not modify the maps, SVIDs or the
// bundle.
type Snapshot struct {
	// SVIDs holds one current X.509-SVID (with its private key) per SPIFFE ID
	// of a service account that has a running pod on this node.
	SVIDs map[spiffeid.ID]*x509svid.SVID
	// Bundle is the trust bundle of the trust domain: every CA certificate
	// whose SVIDs may still be valid (the current CA and, during a rotation,
	// the previous ones).
	Bundle *x509bundle.Bundle
	// Version increases with every change of SVIDs or Bundle.
	Version uint64
}

// Source hands out the node's identities.
type Source interface {
	// Snapshot returns the current identities.
	Snapshot() Snapshot
	// Changed returns a channel that is closed at the next change (new,
	// renewed or dropped SVID, bundle change). Any number of consumers may
	// wait on it; take the channel before reading Snapshot so that no change
	// is missed:
	//
	//	for {
	//		ch := src.Changed()
	//		use(src.Snapshot())
	//		select { case <-ch: case <-ctx.Done(): return }
	//	}
	Changed() <-chan struct{}
}
