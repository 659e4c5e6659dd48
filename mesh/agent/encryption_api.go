package agent

import (
	"net/http"
	"time"

	"github.com/membrane-mesh/membrane/encryption/wireguard"
)

// Encryption API paths (read and driven by `membrane encryption`).
const (
	PathEncryption       = "/v1/encryption"
	PathEncryptionRotate = "/v1/encryption/rotate-key"
)

// EncryptionStatus is the answer of PathEncryption.
type EncryptionStatus struct {
	Node string `json:"node"`
	// Mode is "wireguard" or "disabled".
	Mode      string              `json:"mode"`
	WireGuard *wireguard.Status   `json:"wireguard,omitempty"`
	Skipped   []wireguard.Skipped `json:"skippedPeers"`
	// KeyCreated is when the current private key was stored.
	KeyCreated *time.Time `json:"keyCreated,omitempty"`
	Error      string     `json:"error,omitempty"`
}

// RotateResult is the answer of PathEncryptionRotate.
type RotateResult struct {
	Node                 string `json:"node"`
	PreviousFingerprint  string `json:"previousFingerprint"`
	PublicKeyFingerprint string `json:"publicKeyFingerprint"`
}

func (a *Agent) encryptionRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+PathEncryption, func(w http.ResponseWriter, _ *http.Request) {
		if a.enc == nil {
			writeJSON(w, EncryptionStatus{Node: a.cfg.NodeName, Mode: "disabled", Skipped: []wireguard.Skipped{}})
			return
		}
		writeJSON(w, a.enc.status())
	})
	mux.HandleFunc("POST "+PathEncryptionRotate, func(w http.ResponseWriter, r *http.Request) {
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
		writeJSON(w, RotateResult{Node: a.cfg.NodeName, PreviousFingerprint: old, PublicKeyFingerprint: cur})
	})
}
