package agent

import (
	"net/http"

	"github.com/membrane-mesh/membrane/mesh/agentapi"
)

func (a *Agent) encryptionRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+agentapi.PathEncryption, func(w http.ResponseWriter, _ *http.Request) {
		if a.enc == nil {
			writeJSON(w, agentapi.EncryptionStatus{Node: a.cfg.NodeName, Mode: "disabled", Skipped: []agentapi.SkippedPeer{}})
			return
		}
		writeJSON(w, a.enc.status())
	})
	mux.HandleFunc("POST "+agentapi.PathEncryptionRotate, func(w http.ResponseWriter, r *http.Request) {
		if a.enc == nil {
			http.Error(w, "encryption is not enabled on node "+a.cfg.NodeName, http.StatusConflict)
			return
		}
		old, cur, err := a.enc.rotate(r.Context(), "api")
		if err != nil && cur == "" {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if err != nil {
			a.log.Warn("rotated WireGuard key not yet fully applied", "error", err)
		}
		writeJSON(w, agentapi.RotateResult{Node: a.cfg.NodeName, PreviousFingerprint: old, PublicKeyFingerprint: cur})
	})
}
