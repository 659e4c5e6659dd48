package agent

import (
	"net/http"

	"github.com/membrane-mesh/membrane/xds/server"
)

// PathStatus is the node's summary (NodeStatus), `membrane status`.
const PathStatus = "/v1/status"

// NodeStatus summarizes one node's agent.
type NodeStatus struct {
	Node string `json:"node"`
	// Ready: the initial sync of Services and policy is programmed.
	Ready    bool `json:"ready"`
	Services int  `json:"services"`
	// Endpoints counts the local endpoints by state (ready, …).
	Endpoints map[string]int `json:"endpoints"`
	// Proxy is the node's L7 proxy; nil when L7 policy is disabled.
	Proxy *ProxyStatus `json:"proxy,omitempty"`
	// Encryption is "wireguard" or "disabled".
	Encryption string `json:"encryption"`
	// WireGuard sums up the device when encryption is on.
	WireGuard *WireGuardSummary `json:"wireguard,omitempty"`
}

// WireGuardSummary is the node's WireGuard device in brief (`membrane
// encryption status` has the peers).
type WireGuardSummary struct {
	Backend              string `json:"backend"`
	PublicKeyFingerprint string `json:"publicKeyFingerprint"`
	Peers                int    `json:"peers"`
	Error                string `json:"error,omitempty"`
}

// ProxyStatus is the node Envoy's view: its transparent listener port and
// what it made of the configurations the agent published.
type ProxyStatus struct {
	Port uint16 `json:"port"`
	server.Status
}

func (a *Agent) status() NodeStatus {
	st := NodeStatus{Node: a.cfg.NodeName, Ready: a.isReady(), Endpoints: map[string]int{}, Encryption: "disabled"}
	if a.lb != nil {
		st.Services = len(a.lb.Snapshot())
	}
	if a.eps != nil {
		for _, e := range a.eps.endpointList() {
			st.Endpoints[e.State]++
		}
	}
	if a.proxy != nil {
		st.Proxy = &ProxyStatus{Port: a.cfg.ProxyPort, Status: a.proxy.xds.Status()}
	}
	if a.enc != nil {
		st.Encryption = a.cfg.EncryptionType
		es := a.enc.status()
		sum := &WireGuardSummary{Error: es.Error}
		if wg := es.WireGuard; wg != nil {
			sum.Backend, sum.PublicKeyFingerprint, sum.Peers = string(wg.Backend), wg.PublicKeyFingerprint, len(wg.Peers)
		}
		st.WireGuard = sum
	}
	return st
}

// isReady reports whether the initial syncs are programmed.
func (a *Agent) isReady() bool {
	for _, c := range []chan struct{}{a.ready, a.policyReady} {
		select {
		case <-c:
		default:
			return false
		}
	}
	return true
}

func (a *Agent) statusRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+PathStatus, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, a.status())
	})
}
