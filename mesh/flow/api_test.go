package flow

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/mesh/model"

	"github.com/google/go-cmp/cmp"
)

// orderedFlows returns filterFlows in time order.
func orderedFlows() []Flow {
	var out []Flow
	for _, f := range filterFlows() {
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b Flow) int { return a.Time.Compare(b.Time) })
	return out
}

func testServer(t *testing.T, s *Store) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("GET "+Path, NewHandler(slog.New(slog.DiscardHandler), s))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// get requests the observe API and streams the answer to fn.
func get(ctx context.Context, srv *httptest.Server, req Request, fn func(Flow) error) error {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+Path+"?"+req.Values().Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := srv.Client().Do(hreq)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return errors.New(resp.Status + ": " + string(b))
	}
	if ct := resp.Header.Get("Content-Type"); ct != ContentType {
		return errors.New("content type " + ct)
	}
	return Stream(ctx, resp.Body, fn)
}

func TestAPILast(t *testing.T) {
	s := NewStore(16, nil)
	flows := orderedFlows()
	for _, f := range flows {
		s.Add(f)
	}
	srv := testServer(t, s)
	for _, tc := range []struct {
		name string
		req  Request
		want []Flow
	}{
		{"everything", Request{}, flows},
		{"last 2", Request{Last: 2}, flows[len(flows)-2:]},
		{"last 1 drop", Request{Last: 1, Filter: Filter{Type: []Type{TypeDrop}}}, flows[:1]},
		{"since", Request{Filter: Filter{Since: flows[4].Time}}, flows[4:]},
		{"nothing matches", Request{Filter: Filter{Namespace: []string{"nope"}}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []Flow
			if err := get(t.Context(), srv, tc.req, func(f Flow) error { got = append(got, f); return nil }); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmpAddr); diff != "" {
				t.Errorf("flows (-want +got):\n%s", diff)
			}
		})
	}
}

func subscribers(s *Store) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.subs)
}

func TestAPIFollow(t *testing.T) {
	s := NewStore(16, nil)
	flows := orderedFlows()
	s.Add(flows[0])
	s.Add(flows[1])
	srv := testServer(t, s)
	tcpOnly := Filter{Protocol: []string{"tcp"}}

	ctx, cancel := context.WithCancel(t.Context())
	got := make(chan Flow, 16)
	errc := make(chan error, 1)
	go func() {
		errc <- get(ctx, srv, Request{Follow: true, Last: 1, Filter: tcpOnly}, func(f Flow) error {
			got <- f
			return nil
		})
	}()
	next := func() Flow {
		t.Helper()
		select {
		case f := <-got:
			return f
		case err := <-errc:
			t.Fatalf("stream ended: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("no flow streamed")
		}
		return Flow{}
	}
	if f := next(); !cmp.Equal(f, flows[1], cmpAddr) {
		t.Errorf("backlog = %+v, want the last stored flow", f)
	}
	waitFor(t, func() bool { return subscribers(s) == 1 }, "the handler to follow")
	for _, f := range flows[2:] {
		s.Add(f)
	}
	for _, f := range flows[2:] { // UDP and ICMP are filtered out
		if !tcpOnly.Match(&f) {
			continue
		}
		if g := next(); !cmp.Equal(g, f, cmpAddr) {
			t.Errorf("followed %+v, want %+v", g, f)
		}
	}
	select {
	case f := <-got:
		t.Errorf("unexpected flow %+v", f)
	default:
	}

	// The client goes away: Stream returns, the handler unsubscribes.
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Stream after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Stream did not return after cancel")
	}
	waitFor(t, func() bool { return subscribers(s) == 0 }, "the handler to end")
}

// TestAPIFollowStoreClosed: the agent shutting down ends following streams
// cleanly (Stream returns nil at the end of the response).
func TestAPIFollowStoreClosed(t *testing.T) {
	s := NewStore(4, nil)
	srv := testServer(t, s)
	errc := make(chan error, 1)
	go func() { errc <- get(t.Context(), srv, Request{Follow: true}, func(Flow) error { return nil }) }()
	waitFor(t, func() bool { return subscribers(s) == 1 }, "the handler to follow")
	s.Close()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Stream = %v, want nil at the end of the stream", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stream did not end with the store")
	}
}

// gatedWriter is a ResponseWriter whose Writes block while the gate is
// closed, as a client that stopped reading.
type gatedWriter struct {
	header  http.Header
	entered chan struct{} // closed at the first blocked Write
	gate    chan struct{}
	once    sync.Once
	mu      sync.Mutex
	buf     strings.Builder
}

func (w *gatedWriter) Header() http.Header { return w.header }
func (w *gatedWriter) WriteHeader(int)     {}
func (w *gatedWriter) Flush()              {}
func (w *gatedWriter) Write(b []byte) (int, error) {
	select {
	case <-w.gate:
	default:
		w.once.Do(func() { close(w.entered) })
		<-w.gate
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(b)
}

func TestAPIFollowLostEvents(t *testing.T) {
	s := NewStore(4, nil)
	h := NewHandler(slog.New(slog.DiscardHandler), s)
	w := &gatedWriter{header: http.Header{}, entered: make(chan struct{}), gate: make(chan struct{})}
	ctx, cancel := context.WithCancel(t.Context())
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, Path+"?follow=true", nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(w, req)
	}()
	waitFor(t, func() bool { return subscribers(s) == 1 }, "the handler to follow")
	s.Add(seqFlow(0))
	<-w.entered // the handler is stuck writing flow 0
	const more = DefaultFollowBuffer + 100
	for i := 1; i <= more; i++ {
		s.Add(seqFlow(i))
	}
	close(w.gate)
	waitFor(t, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return strings.Count(w.buf.String(), "\n") == 1+1+DefaultFollowBuffer
	}, "the buffered flows")
	cancel()
	<-done

	var got []int
	var lost []uint64
	err := StreamWithLost(t.Context(), strings.NewReader(w.buf.String()),
		func(f Flow) error { got = append(got, int(f.Bytes)); return nil },
		func(l LostEvents) error { lost = append(lost, l.Count); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1+DefaultFollowBuffer || got[0] != 0 || got[len(got)-1] != DefaultFollowBuffer {
		t.Errorf("got %d flows (%v ... %v), want 0..%d", len(got), got[:2], got[len(got)-1], DefaultFollowBuffer)
	}
	if !slices.Equal(lost, []uint64{more - DefaultFollowBuffer}) {
		t.Errorf("lost notices %v, want [%d]", lost, more-DefaultFollowBuffer)
	}
	// Stream skips the notices.
	n := 0
	if err := Stream(t.Context(), strings.NewReader(w.buf.String()), func(Flow) error { n++; return nil }); err != nil || n != len(got) {
		t.Errorf("Stream: %d flows, %v", n, err)
	}
}

func TestAPIErrors(t *testing.T) {
	srv := testServer(t, NewStore(4, nil))
	resp, err := srv.Client().Get(srv.URL + Path + "?" + url.Values{"verdict": {"MAYBE"}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var status struct {
		Kind, Status, Message, Reason string
		Code                          int
	}
	if err := json.NewDecoder(resp.Body).Decode(&status); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadRequest || status.Kind != "Status" || status.Code != 400 || status.Reason != "BadRequest" ||
		!strings.Contains(status.Message, `parameter verdict: "MAYBE": want one of`) {
		t.Errorf("bad verdict: %s %+v", resp.Status, status)
	}

	h := NewHandler(slog.New(slog.DiscardHandler), NewStore(4, nil))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, Path, nil))
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != http.MethodGet {
		t.Errorf("POST: %d, Allow %q", rec.Code, rec.Header().Get("Allow"))
	}
}

func TestStream(t *testing.T) {
	t.Run("ends with ctx on a blocked reader", func(t *testing.T) {
		r, w := io.Pipe()
		defer w.Close()
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() { errc <- Stream(ctx, r, func(Flow) error { return nil }) }()
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Stream = %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Stream blocked after cancel")
		}
	})
	t.Run("malformed", func(t *testing.T) {
		err := Stream(t.Context(), strings.NewReader(`{"time":"2025-11-21T16:40:01Z"}`+"\n"+`{"verdict":`), func(Flow) error { return nil })
		if err == nil || !strings.Contains(err.Error(), "read flow stream") {
			t.Errorf("Stream = %v, want a decoding error", err)
		}
	})
	t.Run("fn error", func(t *testing.T) {
		stop := errors.New("stop")
		err := Stream(t.Context(), strings.NewReader("{}\n{}\n"), func(Flow) error { return stop })
		if !errors.Is(err, stop) {
			t.Errorf("Stream = %v, want fn's error", err)
		}
	})
}

// TestFlowJSON: a flow survives JSON, and the JSON has the documented shape.
func TestFlowJSON(t *testing.T) {
	for _, f := range orderedFlows() {
		b, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		var back Flow
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if diff := cmp.Diff(f, back, cmpAddr); diff != "" {
			t.Errorf("JSON round trip (-want +got):\n%s", diff)
		}
	}
	b, _ := json.Marshal(Flow{L4: L4{Protocol: TCP, TCPFlags: model.SYN | model.ACK}})
	if !strings.Contains(string(b), `"tcpFlags":["SYN","ACK"]`) {
		t.Errorf("TCP flags as %s", b)
	}
	if err := json.Unmarshal([]byte(`{"l4":{"tcpFlags":["SYN","NOPE"]}}`), new(Flow)); err == nil {
		t.Error("unknown TCP flag accepted")
	}
}
