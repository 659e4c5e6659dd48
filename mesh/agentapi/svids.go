package agentapi

import "time"

// PathSVIDs lists the node's X.509-SVIDs and trust bundle (SVIDList),
// `membrane identity svids`.
const PathSVIDs = "/v1/identity/svids"

// SVIDList is the answer of PathSVIDs.
type SVIDList struct {
	Node string `json:"node"`
	// Enabled is false when the node keeps no SPIFFE identities.
	Enabled     bool        `json:"enabled"`
	TrustDomain string      `json:"trustDomain,omitempty"`
	SVIDs       []SVIDEntry `json:"svids"`
	Bundle      []BundleCA  `json:"bundle"`
	// Version counts the changes of SVIDs and bundle.
	Version uint64 `json:"version"`
}

// SVIDEntry is one X.509-SVID (never its key).
type SVIDEntry struct {
	SPIFFEID  string    `json:"spiffeID"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	// RenewAt is half the SVID's life.
	RenewAt time.Time `json:"renewAt"`
	// Issuer is the SHA-256 fingerprint of the signing CA's certificate
	// (the Fingerprint of one of the bundle's CAs).
	Issuer string `json:"issuer"`
}

// BundleCA is one CA certificate of the trust bundle.
type BundleCA struct {
	Fingerprint string    `json:"fingerprint"`
	NotAfter    time.Time `json:"notAfter"`
}
