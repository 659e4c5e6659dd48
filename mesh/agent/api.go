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
)

func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-a.ready:
			_, _ = w.Write([]byte("ok"))
		default:
			http.Error(w, "initial sync in progress", http.StatusServiceUnavailable)
		}
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
	a.encryptionRoutes(mux)
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
