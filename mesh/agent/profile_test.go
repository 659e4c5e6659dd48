package agent

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/membrane-mesh/membrane/mesh/agentapi"
)

func getProfile(t *testing.T, query string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	serveProfile(w, httptest.NewRequest(http.MethodGet, agentapi.PathDebugProfile+query, nil))
	return w
}

// spin keeps a CPU busy until ctx is done (a function a CPU profile of the
// test must show).
func spin(ctx context.Context) (n uint64) {
	for ctx.Err() == nil {
		for i := range 100000 {
			n += uint64(i) * n
		}
	}
	return n
}

// TestServeProfile: a CPU profile over the seconds asked for shows where
// the CPU went; the snapshots are pprof profiles of their kind.
func TestServeProfile(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { spin(ctx) })
	start := time.Now()
	w := getProfile(t, "?kind=cpu&seconds=1")
	cancel()
	wg.Wait()
	if w.Code != http.StatusOK {
		t.Fatalf("cpu: %d %s", w.Code, w.Body)
	}
	if took := time.Since(start); took < time.Second {
		t.Errorf("a 1 s CPU profile took %s", took)
	}
	p, err := profile.Parse(bytes.NewReader(w.Body.Bytes()))
	if err != nil {
		t.Fatalf("cpu: %v", err)
	}
	var spun bool
	for _, s := range p.Sample {
		for _, loc := range s.Location {
			for _, l := range loc.Line {
				spun = spun || strings.HasSuffix(l.Function.Name, "agent.spin")
			}
		}
	}
	if p.PeriodType == nil || p.PeriodType.Type != "cpu" || !spun {
		t.Errorf("cpu profile: period %v, %d samples, the busy function in them: %v", p.PeriodType, len(p.Sample), spun)
	}
	for _, kind := range []string{"heap", "allocs", "goroutine"} {
		w := getProfile(t, "?kind="+kind)
		if w.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", kind, w.Code, w.Body)
		}
		p, err := profile.Parse(bytes.NewReader(w.Body.Bytes()))
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		var types []string
		for _, st := range p.SampleType {
			types = append(types, st.Type)
		}
		want := map[string]string{"heap": "inuse_space", "allocs": "alloc_space", "goroutine": "goroutine"}[kind]
		if !slices.Contains(types, want) {
			t.Errorf("%s profile: sample types %v, want %s", kind, types, want)
		}
	}
}

// TestServeProfileRefuses: an unknown kind, seconds out of range and a
// second CPU profile while one runs are refused with a message naming the
// field.
func TestServeProfileRefuses(t *testing.T) {
	for q, want := range map[string]string{
		"?kind=block":           `kind "block"`,
		"?kind=cpu&seconds=0":   `seconds "0"`,
		"?kind=cpu&seconds=61":  `seconds "61"`,
		"?kind=cpu&seconds=one": `seconds "one"`,
	} {
		if w := getProfile(t, q); w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), want) {
			t.Errorf("%s: %d %q, want 400 naming %s", q, w.Code, w.Body, want)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		getProfile(t, "?seconds=2")
	}()
	time.Sleep(300 * time.Millisecond)
	if w := getProfile(t, "?seconds=1"); w.Code != http.StatusConflict {
		t.Errorf("a second CPU profile: %d %q, want 409", w.Code, w.Body)
	}
	<-done
}
