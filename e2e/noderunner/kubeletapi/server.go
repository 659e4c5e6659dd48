// Package kubeletapi serves the part of the kubelet's API that the API server
// proxies to for `kubectl logs` and `kubectl exec`, over TLS with verified
// client certificates (the API server's --kubelet-client-certificate).
package kubeletapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// ErrNotFound marks a Pods error about a pod or container the node does not
// have; the API answers 404 for it.
var ErrNotFound = errors.New("not found")

// Pods is what the API needs from the node's pods.
type Pods interface {
	// LogPath returns the CRI-format log file of a container of a pod
	// (container "" = the pod's only container), or with previous that of
	// its last terminated instance. done is closed, or nil, once no
	// instance writes the file any more: a follow request ends there.
	LogPath(namespace, pod, container string, previous bool) (path string, done <-chan struct{}, err error)
	// Exec runs argv in a container of a pod and returns its exit status;
	// stdin, stdout and stderr may be nil. Cancelling ctx must end it.
	Exec(ctx context.Context, namespace, pod, container string, argv []string, stdin io.Reader, stdout, stderr io.Writer, tty bool) (int, error)
}

// Server serves the kubelet API over TLS.
type Server struct {
	logger  *slog.Logger
	addr    string
	tls     *tls.Config
	handler http.Handler
}

// shutdownTimeout bounds how long Run waits for requests after ctx is done.
const shutdownTimeout = 10 * time.Second

// NewServer returns a server for addr that presents cert and requires client
// certificates signed by clientCAs.
func NewServer(logger *slog.Logger, addr string, cert tls.Certificate, clientCAs *x509.CertPool, pods Pods) *Server {
	return &Server{
		logger: logger,
		addr:   addr,
		tls: &tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    clientCAs,
			MinVersion:   tls.VersionTLS12,
			// exec upgrades the connection (SPDY, WebSocket): HTTP/1.1 only.
			NextProtos: []string{"http/1.1"},
		},
		handler: NewHandler(logger, pods),
	}
}

// Run listens on the server's address and serves until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("kubelet API: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx is done; it closes ln. Requests see ctx's
// cancellation, so streams (follow, exec) end with it.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	var handlers sync.WaitGroup
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Tracked here: hijacked exec connections escape Shutdown.
			handlers.Add(1)
			defer handlers.Done()
			s.handler.ServeHTTP(w, r)
		}),
		TLSConfig:         s.tls,
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ReadHeaderTimeout: 30 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug),
	}
	s.logger.Info("serving kubelet API", "addr", ln.Addr().String())
	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(ln, "", "") }()
	var err error
	select {
	case err = <-served:
		err = fmt.Errorf("kubelet API: %w", err)
	case <-ctx.Done():
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		defer cancel()
		if serr := srv.Shutdown(shutdownCtx); serr != nil {
			_ = srv.Close()
		}
		<-served
	}
	finished := make(chan struct{})
	go func() { handlers.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(shutdownTimeout):
		s.logger.Warn("kubelet API requests still running after shutdown")
	}
	return err
}

// NewHandler returns the kubelet API's routes:
//
//	GET      /healthz
//	GET      /containerLogs/{namespace}/{pod}/{container}
//	GET|POST /exec/{namespace}/{pod}[/{uid}]/{container}
func NewHandler(logger *slog.Logger, pods Pods) http.Handler {
	h := &handler{logger: logger, pods: pods}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok")
	})
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", h.containerLogs)
	for _, pattern := range []string{
		"/exec/{namespace}/{pod}/{container}",
		"/exec/{namespace}/{pod}/{uid}/{container}",
	} {
		mux.HandleFunc("GET "+pattern, h.exec)
		mux.HandleFunc("POST "+pattern, h.exec)
	}
	return mux
}

type handler struct {
	logger *slog.Logger
	pods   Pods
}

// writeError answers with err's text: 404 for ErrNotFound, else status.
func writeError(w http.ResponseWriter, err error, status int) {
	if errors.Is(err, ErrNotFound) {
		status = http.StatusNotFound
	}
	http.Error(w, err.Error(), status)
}
