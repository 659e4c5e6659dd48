// Package spiffe is Membrane's built-in SPIFFE certificate authority: workload
// SPIFFE IDs, the CA's keys and their rotation, issuing X.509-SVIDs for
// certificate signing requests, and the authorization of node agents that ask
// for them.
package spiffe

import (
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultTrustDomain is the trust domain when none is configured.
const DefaultTrustDomain = "cluster.local"

// WorkloadID is the SPIFFE ID of the pods of a service account:
// spiffe://<trust domain>/ns/<namespace>/sa/<service account>.
func WorkloadID(td spiffeid.TrustDomain, namespace, serviceAccount string) (spiffeid.ID, error) {
	if serviceAccount == "" {
		serviceAccount = "default"
	}
	id, err := spiffeid.FromSegments(td, "ns", namespace, "sa", serviceAccount)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("spiffe id of %s/%s: %w", namespace, serviceAccount, err)
	}
	return id, nil
}

// ParseWorkloadID returns the namespace and service account of a workload
// SPIFFE ID of trust domain td.
func ParseWorkloadID(td spiffeid.TrustDomain, id spiffeid.ID) (namespace, serviceAccount string, err error) {
	if id.TrustDomain() != td {
		return "", "", fmt.Errorf("spiffe id %s: trust domain is not %s", id, td)
	}
	segs := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(segs) != 4 || segs[0] != "ns" || segs[2] != "sa" || segs[1] == "" || segs[3] == "" {
		return "", "", fmt.Errorf("spiffe id %s: path is not /ns/<namespace>/sa/<service account>", id)
	}
	return segs[1], segs[3], nil
}

// CAServerID is the SPIFFE ID the CA's signing endpoint presents. It is no
// workload's (ParseWorkloadID refuses it), so no agent can obtain it.
func CAServerID(td spiffeid.TrustDomain) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "membrane", "ca")
}
