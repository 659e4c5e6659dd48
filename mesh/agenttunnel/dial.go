package agenttunnel

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// ErrCertMismatch is returned when the agent's certificate is not the one
// its Node publishes.
var ErrCertMismatch = errors.New("agent API certificate does not match the fingerprint published on its Node")

// PinnedConfig is the client's TLS configuration inside the tunnel: TLS
// 1.3, and only the certificate whose fingerprint is pin is accepted
// (its chain and names are not checked: the pin is the trust). clientCert,
// when not nil, presents the client's certificate (tls.Config's
// GetClientCertificate).
func PinnedConfig(pin string, clientCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		NextProtos:           []string{"http/1.1"},
		InsecureSkipVerify:   true, // verified by VerifyConnection against the pin
		GetClientCertificate: clientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("agent presented no certificate")
			}
			if got := Fingerprint(cs.PeerCertificates[0].Raw); subtle.ConstantTimeCompare([]byte(got), []byte(strings.ToLower(pin))) != 1 {
				return fmt.Errorf("%w: got %s, want %s", ErrCertMismatch, got, pin)
			}
			return nil
		},
	}
}

// Open asks url (the agent's Path, directly or through a proxy such as the
// API server's node proxy) for a tunnel with rt, which must speak HTTP/1.1
// and add whatever credentials the proxy needs, and returns the switched
// connection. A refusal is an error with the status and the start of the
// body.
func Open(ctx context.Context, rt http.RoundTripper, url string) (net.Conn, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("tunnel request: %w", err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", Protocol)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("open tunnel: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, &RefusedError{Status: resp.StatusCode, Message: strings.TrimSpace(string(msg))}
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		_ = resp.Body.Close()
		return nil, errors.New("open tunnel: switched connection is not writable")
	}
	return &switchedConn{ReadWriteCloser: rwc}, nil
}

// RefusedError is a tunnel request answered with anything but 101.
type RefusedError struct {
	Status  int
	Message string
}

func (e *RefusedError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("tunnel refused: %d %s", e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("tunnel refused: %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// switchedConn is a switched HTTP connection as a net.Conn. Deadlines are
// not supported (the HTTP transport does not expose them): contexts bound
// its use, closing it.
type switchedConn struct {
	io.ReadWriteCloser
}

func (c *switchedConn) LocalAddr() net.Addr              { return tunnelAddr{} }
func (c *switchedConn) RemoteAddr() net.Addr             { return tunnelAddr{} }
func (c *switchedConn) SetDeadline(time.Time) error      { return nil }
func (c *switchedConn) SetReadDeadline(time.Time) error  { return nil }
func (c *switchedConn) SetWriteDeadline(time.Time) error { return nil }
