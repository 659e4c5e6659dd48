// Package agenttunnel is how the node agent's API is reached: a client
// (through the API server's node proxy) asks the agent's plain listener to
// switch protocols on Path, then speaks TLS to the agent over that
// connection. The agent serves its API only inside that TLS, where every
// request is authenticated and authorized (package agentauth).
//
// The agent's serving certificate is pinned: the agent publishes its SHA-256
// fingerprint on its Node (CertAnnotation) and clients accept exactly that
// certificate.
//
// The package has no dependencies beyond the standard library, so the CLI
// can use it.
package agenttunnel

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

const (
	// Path is where the agent's plain listener opens tunnels.
	Path = "/v1/tunnel"
	// Protocol is the Upgrade token a tunnel request carries.
	Protocol = "membrane-agent-api/1"
	// CertAnnotation holds, on each Node, the SHA-256 fingerprint (hex) of
	// its agent's API serving certificate.
	CertAnnotation = "network.membrane.io/agent-api-cert-sha256"
)

// Fingerprint is the value of CertAnnotation for a DER certificate.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// IsRequest reports whether r asks for a tunnel.
func IsRequest(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && strings.EqualFold(strings.TrimSpace(r.Header.Get("Upgrade")), Protocol)
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// ErrClosed is returned by Accept once the listener is closed.
var ErrClosed = errors.New("agent tunnel listener closed")

// Listener is the agent's side: mounted as the handler of Path on the plain
// listener, it switches each tunnel request to TLS (config) and hands the
// TLS connection to whoever Accepts (an http.Server serving the API).
// At most max tunnels are open at once; more are answered 503.
type Listener struct {
	config *tls.Config
	slots  chan struct{}
	conns  chan net.Conn
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup // handshakes in progress
	// handshakeTimeout bounds the TLS handshake of a new tunnel.
	handshakeTimeout time.Duration
}

// NewListener returns a listener that serves TLS with config inside the
// tunnels. config should require TLS 1.3 and request client certificates.
func NewListener(config *tls.Config, max int) *Listener {
	return &Listener{
		config: config, slots: make(chan struct{}, max),
		conns: make(chan net.Conn), done: make(chan struct{}),
		handshakeTimeout: 10 * time.Second,
	}
}

// ServeHTTP answers a tunnel request with 101 Switching Protocols and
// queues the connection for Accept. Anything else gets 400 (or 426 when the
// Upgrade is missing).
func (l *Listener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !IsRequest(r) {
		w.Header().Set("Upgrade", Protocol)
		w.Header().Set("Connection", "Upgrade")
		http.Error(w, "this endpoint only opens tunnels: Connection: Upgrade, Upgrade: "+Protocol, http.StatusUpgradeRequired)
		return
	}
	select {
	case <-l.done:
		http.Error(w, "agent API shutting down", http.StatusServiceUnavailable)
		return
	case l.slots <- struct{}{}:
	default:
		http.Error(w, "too many open tunnels", http.StatusServiceUnavailable)
		return
	}
	rc := http.NewResponseController(w)
	conn, brw, err := rc.Hijack()
	if err != nil {
		<-l.slots
		http.Error(w, "cannot switch protocols: "+err.Error(), http.StatusInternalServerError)
		return
	}
	_ = conn.SetDeadline(time.Now().Add(l.handshakeTimeout))
	if _, err := brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + Protocol + "\r\n\r\n"); err == nil {
		err = brw.Flush()
	}
	if err != nil {
		_ = conn.Close()
		<-l.slots
		return
	}
	c := &slotConn{Conn: &bufferedConn{Conn: conn, r: brw.Reader}, release: func() { <-l.slots }}
	tc := tls.Server(c, l.config)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.handshake(tc)
	}()
}

// handshake completes the TLS handshake before Accept sees the connection,
// so a client that never speaks cannot hold up the API server's accept loop.
func (l *Listener) handshake(tc *tls.Conn) {
	if err := tc.Handshake(); err != nil {
		_ = tc.Close()
		return
	}
	_ = tc.SetDeadline(time.Time{})
	select {
	case l.conns <- tc:
	case <-l.done:
		_ = tc.Close()
	}
}

// Accept returns the next tunnel's TLS connection, handshake done.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, ErrClosed
	}
}

// Close stops Accept and waits for handshakes in progress (each bounded by
// a deadline); open tunnels stay until their server closes them.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.done) })
	l.wg.Wait()
	return nil
}

// Addr is a placeholder: tunnels arrive over the plain listener.
func (l *Listener) Addr() net.Addr { return tunnelAddr{} }

type tunnelAddr struct{}

func (tunnelAddr) Network() string { return "tunnel" }
func (tunnelAddr) String() string  { return Protocol }

// bufferedConn reads what the plain server already buffered first.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) {
	if c.r != nil && c.r.Buffered() > 0 {
		return c.r.Read(p)
	}
	return c.Conn.Read(p)
}

// slotConn gives its tunnel slot back once, when closed.
type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
