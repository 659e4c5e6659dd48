package agent

import (
	"fmt"
	"net/http"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/membrane-mesh/membrane/mesh/agentapi"
)

// serveProfile writes a pprof profile of the agent (agentapi.PathDebugProfile):
// a CPU profile over the seconds asked for, or a snapshot of the heap,
// the allocations or the goroutines. One CPU profile at a time: the Go
// runtime has one profiler.
func serveProfile(w http.ResponseWriter, r *http.Request) {
	kind := r.URL.Query().Get("kind")
	if kind == "" {
		kind = "cpu"
	}
	if !slices.Contains(agentapi.ProfileKinds(), kind) {
		http.Error(w, fmt.Sprintf("kind %q: want one of %s", kind, strings.Join(agentapi.ProfileKinds(), ", ")), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if kind != "cpu" {
		if err := pprof.Lookup(kind).WriteTo(w, 0); err != nil {
			http.Error(w, fmt.Sprintf("write the %s profile: %v", kind, err), http.StatusInternalServerError)
		}
		return
	}
	seconds := agentapi.DefaultProfileSeconds
	if v := r.URL.Query().Get("seconds"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > agentapi.MaxProfileSeconds {
			http.Error(w, fmt.Sprintf("seconds %q: want 1 to %d", v, agentapi.MaxProfileSeconds), http.StatusBadRequest)
			return
		}
		seconds = n
	}
	if err := pprof.StartCPUProfile(w); err != nil {
		http.Error(w, fmt.Sprintf("start the CPU profile: %v", err), http.StatusConflict)
		return
	}
	t := time.NewTimer(time.Duration(seconds) * time.Second)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
	pprof.StopCPUProfile()
}
