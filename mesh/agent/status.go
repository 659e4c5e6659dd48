package agent

import (
	"net/http"

	"github.com/membrane-mesh/membrane/mesh/agentapi"
)

func (a *Agent) status() agentapi.NodeStatus {
	st := agentapi.NodeStatus{Node: a.cfg.NodeName, Ready: a.isReady(), Endpoints: map[string]int{}, Encryption: "disabled"}
	if a.lb != nil {
		st.Services = len(a.lb.Snapshot())
	}
	if a.eps != nil {
		for _, e := range a.eps.endpointList() {
			st.Endpoints[e.State]++
		}
	}
	if a.proxy != nil {
		st.Proxy = &agentapi.ProxyStatus{Port: a.cfg.ProxyPort, XDSStatus: xdsStatus(a.proxy.xds.Status())}
	}
	if a.enc != nil {
		st.Encryption = a.cfg.EncryptionType
		es := a.enc.status()
		sum := &agentapi.WireGuardSummary{Error: es.Error}
		if wg := es.WireGuard; wg != nil {
			sum.Backend, sum.PublicKeyFingerprint, sum.Peers = wg.Backend, wg.PublicKeyFingerprint, len(wg.Peers)
		}
		st.WireGuard = sum
	}
	if a.cni != nil {
		cni := a.cni.status()
		st.CNI = &cni
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
	mux.HandleFunc("GET "+agentapi.PathStatus, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, a.status())
	})
}
