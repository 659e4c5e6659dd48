package agent

import (
	"github.com/membrane-mesh/membrane/mesh/flow"

	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// API paths the CLI reads (through the API server's node proxy).
const (
	PathServices = "/v1/services"
	PathBPFLB    = "/v1/bpf/lb"
	// PathEndpoints lists the local endpoints (EndpointList).
	PathEndpoints = "/v1/endpoints"
	// PathBPFPolicy dumps the policy datapath's maps (BPFPolicyList).
	PathBPFPolicy = "/v1/bpf/policy"
)

// EndpointPolicyPath is where a local pod's resolved policy is served
// (PolicyEntry).
func EndpointPolicyPath(namespace, pod string) string {
	return PathEndpoints + "/" + namespace + "/" + pod + "/policy"
}

func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.isReady() {
			http.Error(w, "initial sync in progress", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	mux.Handle("GET "+flow.Path, flow.NewHandler(a.log.With("component", "observe"), a.flows))
	mux.HandleFunc("GET "+PathServices, func(w http.ResponseWriter, _ *http.Request) {
		list := ServiceList{Node: a.cfg.NodeName, Services: []ServiceEntry{}}
		for _, e := range a.lb.Snapshot() {
			id, _ := a.lb.RevNatID(e.Frontend)
			list.Services = append(list.Services, ServiceEntry{ID: id, Entry: e})
		}
		writeJSON(w, list)
	})
	mux.HandleFunc("GET "+PathBPFLB, func(w http.ResponseWriter, _ *http.Request) {
		d, err := a.dp.Dump()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, BPFLBList{Node: a.cfg.NodeName, Dump: d})
	})
	mux.HandleFunc("GET "+PathEndpoints, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, EndpointList{Node: a.cfg.NodeName, Endpoints: a.eps.endpointList()})
	})
	mux.HandleFunc("GET "+PathEndpoints+"/{namespace}/{pod}/policy", func(w http.ResponseWriter, r *http.Request) {
		p, ok := a.eps.policyOf(r.PathValue("namespace"), r.PathValue("pod"))
		if !ok {
			http.Error(w, "no ready endpoint "+r.PathValue("namespace")+"/"+r.PathValue("pod")+" on node "+a.cfg.NodeName, http.StatusNotFound)
			return
		}
		p.Node = a.cfg.NodeName
		writeJSON(w, p)
	})
	mux.HandleFunc("GET "+PathBPFPolicy, func(w http.ResponseWriter, _ *http.Request) {
		d, err := a.eps.dp.Dump()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, BPFPolicyList{Node: a.cfg.NodeName, Dump: d})
	})
	a.encryptionRoutes(mux)
	a.statusRoutes(mux)
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
