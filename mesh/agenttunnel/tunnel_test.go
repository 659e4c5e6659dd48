package agenttunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// serve runs a plain server with a tunnel listener of max tunnels, serving
// an API that echoes the client certificate's CN inside.
func serve(t *testing.T, cert tls.Certificate, max int) string {
	t.Helper()
	ln := NewListener(ServerConfig(cert), max)
	plain := http.NewServeMux()
	plain.Handle("GET "+Path, ln)
	outer := httptest.NewServer(plain)
	inner := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cn := "anonymous"
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			cn = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		_, _ = io.WriteString(w, r.Method+" "+r.URL.Path+" "+cn)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = inner.Serve(ln)
	}()
	t.Cleanup(func() {
		outer.Close()
		_ = inner.Close()
		<-done
	})
	return outer.URL + Path
}

// get opens a tunnel at url, pins pin and GETs path inside.
func get(ctx context.Context, url, pin string, clientCert *tls.Certificate, path string) (string, error) {
	var getCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	if clientCert != nil {
		getCert = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return clientCert, nil }
	}
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := Open(ctx, http.DefaultTransport, url)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(c, PinnedConfig(pin, getCert))
			if err := tc.HandshakeContext(ctx); err != nil {
				_ = c.Close()
				return nil, err
			}
			return tc, nil
		},
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://agent"+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestTunnel(t *testing.T) {
	cert, err := SelfSigned("node-1", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	client, err := SelfSigned("alice", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, cert, 4)
	pin := Fingerprint(cert.Certificate[0])

	t.Run("pinned certificate, client certificate seen inside", func(t *testing.T) {
		got, err := get(t.Context(), url, pin, &client, "/v1/flows")
		if err != nil {
			t.Fatal(err)
		}
		if want := "GET /v1/flows membrane-agent alice"; got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	})
	t.Run("other certificate refused", func(t *testing.T) {
		other, _ := SelfSigned("node-1", time.Now(), time.Hour)
		_, err := get(t.Context(), url, Fingerprint(other.Certificate[0]), nil, "/v1/flows")
		if !errors.Is(err, ErrCertMismatch) {
			t.Fatalf("got %v, want %v", err, ErrCertMismatch)
		}
	})
	t.Run("plain request answered 426", func(t *testing.T) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusUpgradeRequired || resp.Header.Get("Upgrade") != Protocol {
			t.Fatalf("got %s, Upgrade %q", resp.Status, resp.Header.Get("Upgrade"))
		}
	})
	t.Run("other protocol refused", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusUpgradeRequired {
			t.Fatalf("got %s", resp.Status)
		}
	})
}

func TestTunnelLimit(t *testing.T) {
	cert, err := SelfSigned("node-1", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, cert, 1)
	first, err := Open(t.Context(), http.DefaultTransport, url)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(t.Context(), http.DefaultTransport, url)
	var refused *RefusedError
	if !errors.As(err, &refused) || refused.Status != http.StatusServiceUnavailable || !strings.Contains(refused.Message, "too many") {
		t.Fatalf("second tunnel: got %v, want 503 too many open tunnels", err)
	}
	// Closing the first (its handshake fails) frees the slot.
	_ = first.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := Open(t.Context(), http.DefaultTransport, url)
		if err == nil {
			_ = c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not freed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
