package agent

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"net/http"
	"sort"

	"github.com/membrane-mesh/membrane/mesh/agentapi"
)

// identityRoutes serves the node's SVIDs (never their keys).
func (a *Agent) identityRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+agentapi.PathSVIDs, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, a.svidList())
	})
}

func (a *Agent) svidList() agentapi.SVIDList {
	l := agentapi.SVIDList{Node: a.cfg.NodeName, SVIDs: []agentapi.SVIDEntry{}, Bundle: []agentapi.BundleCA{}}
	if a.ids == nil {
		return l
	}
	l.Enabled, l.TrustDomain = true, a.ids.td.Name()
	snap := a.ids.mgr.Snapshot()
	l.Version = snap.Version
	for id, s := range snap.SVIDs {
		leaf := s.Certificates[0]
		e := agentapi.SVIDEntry{
			SPIFFEID: id.String(), Serial: leaf.SerialNumber.Text(16),
			NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter,
			RenewAt: leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2),
		}
		if snap.Bundle != nil {
			for _, ca := range snap.Bundle.X509Authorities() {
				if leaf.CheckSignatureFrom(ca) == nil {
					e.Issuer = fingerprint(ca)
				}
			}
		}
		l.SVIDs = append(l.SVIDs, e)
	}
	sort.Slice(l.SVIDs, func(i, j int) bool { return l.SVIDs[i].SPIFFEID < l.SVIDs[j].SPIFFEID })
	if snap.Bundle != nil {
		for _, ca := range snap.Bundle.X509Authorities() {
			l.Bundle = append(l.Bundle, agentapi.BundleCA{Fingerprint: fingerprint(ca), NotAfter: ca.NotAfter})
		}
	}
	return l
}

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}
