package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

func TestRunAgainstHTTPServer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("hello\n"))
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().(*net.TCPAddr).AddrPort()

	for _, closeMode := range []string{"rst", "fin"} {
		var out bytes.Buffer
		args := []string{"crr", "-targets", addr.String() + "," + addr.String(), "-duration", "200ms", "-warmup", "50ms", "-close", closeMode, "-concurrency", "2"}
		if err := run(context.Background(), args, &out); err != nil {
			t.Fatal(err)
		}
		var res Result
		if err := json.Unmarshal(out.Bytes(), &res); err != nil {
			t.Fatalf("decode %q: %v", out.String(), err)
		}
		if res.Conns == 0 || res.Errors != 0 || res.Rate <= 0 || res.P50Micros <= 0 || res.P99Micros < res.P50Micros {
			t.Errorf("-close=%s: %+v", closeMode, res)
		}
	}
}

// TestRequestResponse: -rr sends every request of a loop over one
// connection per target.
func TestRequestResponse(t *testing.T) {
	var mu sync.Mutex
	remotes := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		remotes[r.RemoteAddr]++
		mu.Unlock()
		_, _ = w.Write([]byte("hello\n"))
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().(*net.TCPAddr).AddrPort()
	var out bytes.Buffer
	args := []string{"crr", "-rr", "-targets", addr.String(), "-duration", "200ms", "-warmup", "50ms", "-concurrency", "2"}
	if err := run(context.Background(), args, &out); err != nil {
		t.Fatal(err)
	}
	var res Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("decode %q: %v", out.String(), err)
	}
	if res.Conns < 10 || res.Errors != 0 {
		t.Errorf("%+v", res)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(remotes) != 2 {
		t.Errorf("requests came over %d connections, want 2 (one per loop): %v", len(remotes), remotes)
	}
}

func TestComplete(t *testing.T) {
	for in, want := range map[string]bool{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel":             false,
		"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello":           true,
		"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":                true,
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n":                    false,
		"HTTP/1.1 200 OK\r\nX-A: b\r\nContent-Length:  2 \r\n\r\nok!": true,
	} {
		got, err := complete([]byte(in))
		if err != nil || got != want {
			t.Errorf("complete(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 200 OK\r\n\r\n"} {
		if _, err := complete([]byte(in)); err == nil {
			t.Errorf("complete(%q): no error", in)
		}
	}
}
