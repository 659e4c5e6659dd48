package agent

import (
	"github.com/membrane-mesh/membrane/mesh/agentapi"
	"github.com/membrane-mesh/membrane/mesh/flow"

	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

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
	mux.HandleFunc("GET "+agentapi.PathServices, func(w http.ResponseWriter, _ *http.Request) {
		list := agentapi.ServiceList{Node: a.cfg.NodeName, Services: []agentapi.ServiceEntry{}}
		for _, e := range a.lb.Snapshot() {
			id, _ := a.lb.RevNatID(e.Frontend)
			list.Services = append(list.Services, agentapi.ServiceEntry{ID: id, Entry: e})
		}
		writeJSON(w, list)
	})
	mux.HandleFunc("GET "+agentapi.PathBPFLB, func(w http.ResponseWriter, _ *http.Request) {
		d, err := a.dp.Dump()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, agentapi.BPFLBList{Node: a.cfg.NodeName, Dump: lbDump(d)})
	})
	mux.HandleFunc("GET "+agentapi.PathEndpoints, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, agentapi.EndpointList{Node: a.cfg.NodeName, Endpoints: a.eps.endpointList()})
	})
	mux.HandleFunc("GET "+agentapi.PathEndpoints+"/{namespace}/{pod}/policy", func(w http.ResponseWriter, r *http.Request) {
		p, ok := a.eps.policyOf(r.PathValue("namespace"), r.PathValue("pod"))
		if !ok {
			http.Error(w, "no ready endpoint "+r.PathValue("namespace")+"/"+r.PathValue("pod")+" on node "+a.cfg.NodeName, http.StatusNotFound)
			return
		}
		p.Node = a.cfg.NodeName
		writeJSON(w, p)
	})
	mux.HandleFunc("GET "+agentapi.PathBPFPolicy, func(w http.ResponseWriter, _ *http.Request) {
		d, err := a.eps.dp.Dump()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, agentapi.BPFPolicyList{Node: a.cfg.NodeName, Dump: policyDump(d)})
	})
	a.encryptionRoutes(mux)
	a.statusRoutes(mux)
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
