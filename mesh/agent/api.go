package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	bpfpolicy "github.com/membrane-mesh/membrane/bpf/policy"
	"github.com/membrane-mesh/membrane/mesh/agentapi"
	"github.com/membrane-mesh/membrane/mesh/agentauth"
	"github.com/membrane-mesh/membrane/mesh/agenttunnel"
	"github.com/membrane-mesh/membrane/mesh/flow"
)

// maxTunnels bounds the agent API's open tunnels (each one request at a
// time; `membrane observe --follow` holds one per node). A tunnel that
// sends no request, or whose request is refused, closes within seconds.
const maxTunnels = 512

// selfSignedValidity is how long the self-signed serving certificate is
// valid; clients pin it, a restart makes a new one.
const selfSignedValidity = 365 * 24 * time.Hour

// apiServer is what the agent serves: on --api-addr, in plaintext, only
// /healthz, /metrics and the tunnel; the API inside the tunnels' TLS, to
// users the cluster authenticates and allows nodes/proxy on this node; and,
// with --api-socket, the API to root on the node.
type apiServer struct {
	ln      net.Listener
	plain   *http.Server
	tunnels *agenttunnel.Listener
	api     *http.Server
	// local serves the API on --api-socket; nil without one.
	local   *http.Server
	localLn net.Listener
	// fingerprint is the serving certificate's, published on the Node.
	fingerprint string
}

// listenAPI prepares the serving certificate, the client CA and the
// listener.
func (a *Agent) listenAPI(ctx context.Context) (*apiServer, error) {
	cert, err := a.apiCertificate()
	if err != nil {
		return nil, err
	}
	ca, err := a.apiClientCA(ctx)
	if err != nil {
		return nil, err
	}
	auth := agentauth.New(agentauth.Options{Node: a.cfg.NodeName, ClientCA: ca, Client: a.client})
	s := &apiServer{
		tunnels:     agenttunnel.NewListener(agenttunnel.ServerConfig(cert), maxTunnels),
		fingerprint: agenttunnel.Fingerprint(cert.Certificate[0]),
	}
	s.api = &http.Server{
		Handler:           auth.Handler(a.log.With("component", "api"), a.handler()),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       30 * time.Second,
	}
	s.api.RegisterOnShutdown(a.flows.Close) // ends open `membrane observe --follow` streams
	s.plain = &http.Server{Handler: a.plainHandler(s.tunnels), ReadHeaderTimeout: 5 * time.Second}
	if a.cfg.APISocket != "" {
		if s.localLn, err = listenRootOnly(a.cfg.APISocket); err != nil {
			return nil, fmt.Errorf("--api-socket: %w", err)
		}
		s.local = &http.Server{Handler: a.localHandler(), ReadHeaderTimeout: 10 * time.Second}
		s.local.RegisterOnShutdown(a.flows.Close)
	}
	if s.ln, err = net.Listen("tcp", a.cfg.APIAddr); err != nil {
		if s.localLn != nil {
			_ = s.localLn.Close()
		}
		return nil, fmt.Errorf("listen on --api-addr %s: %w", a.cfg.APIAddr, err)
	}
	return s, nil
}

// listenRootOnly listens on a unix socket at path that only this user
// (root) can reach: its directory is 0700 and owned by us, the socket 0600.
func listenRootOnly(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return nil, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !fi.IsDir() || !ok || int(st.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("%s: not a directory owned by uid %d", dir, os.Geteuid())
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("chmod %s: %w", dir, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
}

func (a *Agent) apiCertificate() (tls.Certificate, error) {
	if a.cfg.APITLSCert != "" {
		cert, err := tls.LoadX509KeyPair(a.cfg.APITLSCert, a.cfg.APITLSKey)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("--api-tls-cert %s, --api-tls-key %s: %w", a.cfg.APITLSCert, a.cfg.APITLSKey, err)
		}
		return cert, nil
	}
	return agenttunnel.SelfSigned(a.cfg.NodeName, time.Now(), selfSignedValidity)
}

func (a *Agent) apiClientCA(ctx context.Context) (*x509.CertPool, error) {
	if a.cfg.APIClientCA != "" {
		pool, err := agentauth.LoadClientCA(a.cfg.APIClientCA)
		if err != nil {
			return nil, fmt.Errorf("--api-client-ca: %w", err)
		}
		return pool, nil
	}
	pool, err := agentauth.ClusterClientCA(ctx, a.client)
	if err != nil {
		return nil, fmt.Errorf("--api-client-ca not set: %w", err)
	}
	if pool == nil {
		a.log.Warn("agent API accepts bearer tokens only: the cluster publishes no client CA and --api-client-ca is not set")
	}
	return pool, nil
}

// run serves until ctx ends, then shuts both servers down.
func (s *apiServer) run(ctx context.Context) error {
	errc := make(chan error, 3)
	var wg sync.WaitGroup
	if s.local != nil {
		wg.Go(func() {
			if err := s.local.Serve(s.localLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("agent API socket: %w", err)
			}
		})
	}
	wg.Go(func() {
		if err := s.plain.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("agent API listener: %w", err)
		}
	})
	wg.Go(func() {
		if err := s.api.Serve(s.tunnels); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("agent API: %w", err)
		}
	})
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	shutdown, done := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer done()
	_ = s.plain.Shutdown(shutdown)
	_ = s.api.Shutdown(shutdown)
	if s.local != nil {
		_ = s.local.Shutdown(shutdown)
	}
	wg.Wait()
	return err
}

// publishAPICertificate puts the serving certificate's fingerprint on the
// Node, retrying until it is there or ctx ends; /healthz fails until then.
func (a *Agent) publishAPICertificate(ctx context.Context, fingerprint string) {
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{agenttunnel.CertAnnotation: fingerprint}}})
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		_, err := a.client.CoreV1().Nodes().Patch(ctx, a.cfg.NodeName, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "membrane-agent"})
		if err == nil {
			a.apiPublished.Store(true)
			a.log.Info("agent API certificate published", "fingerprint", fingerprint)
			return
		}
		a.log.Warn("publish agent API certificate on the node", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// plainHandler is all that is served without TLS: probes, Prometheus and
// the tunnel.
func (a *Agent) plainHandler(tunnels http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	mux.Handle("GET "+agenttunnel.Path, tunnels)
	return mux
}

func (a *Agent) healthz(w http.ResponseWriter, _ *http.Request) {
	switch {
	case !a.isReady():
		http.Error(w, "initial sync in progress", http.StatusServiceUnavailable)
	case !a.apiPublished.Load():
		http.Error(w, "agent API certificate not yet published on the node", http.StatusServiceUnavailable)
	default:
		_, _ = w.Write([]byte("ok"))
	}
}

// localHandler is the API on the root-only socket: the API, and the CNI
// plugin's announcements of new interfaces.
func (a *Agent) localHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+agentapi.PathCNIEndpoints, a.cniEndpointAdded)
	mux.Handle("/", a.handler())
	return mux
}

// handler is the agent API, served inside the tunnels (and on the socket).
func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", a.healthz)
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
	mux.HandleFunc("GET "+agentapi.PathFQDNCache, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, a.fqdnCache())
	})
	mux.HandleFunc("GET "+agentapi.PathBPFPolicy, func(w http.ResponseWriter, _ *http.Request) {
		d, err := a.eps.dp.Dump()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, agentapi.BPFPolicyList{Node: a.cfg.NodeName, Dump: policyDump(d)})
	})
	mux.HandleFunc("GET "+agentapi.PathBPFPolicy+"/ipcache/{addr}", func(w http.ResponseWriter, r *http.Request) {
		addr, err := netip.ParseAddr(r.PathValue("addr"))
		if err != nil {
			http.Error(w, fmt.Sprintf("address %q: %v", r.PathValue("addr"), err), http.StatusBadRequest)
			return
		}
		id, found, err := a.eps.dp.LookupIPCache(addr)
		switch {
		case errors.Is(err, bpfpolicy.ErrInvalid):
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, agentapi.IPCacheLookup{Node: a.cfg.NodeName, Addr: addr, Identity: uint32(id), Found: found})
	})
	mux.HandleFunc("GET "+agentapi.PathDebugProfile, serveProfile)
	a.encryptionRoutes(mux)
	a.identityRoutes(mux)
	a.statusRoutes(mux)
	a.clusterMeshRoutes(mux)
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
