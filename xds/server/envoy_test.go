package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/membrane-mesh/membrane/e2e/testenv"
	"github.com/membrane-mesh/membrane/xds/translate"
)

// TestEnvoyAckNackRestart runs the pinned Envoy against the server: it
// accepts a configuration; rejects one whose path regex is over its RE2
// program-size limit (the NACK is reported, the accepted version stays in
// force); a restarted Envoy gets the accepted configuration back, not the
// rejected one; a fixed configuration is accepted again.
func TestEnvoyAckNackRestart(t *testing.T) {
	envoy := testenv.Tool(t, "envoy")
	testenv.RequireRoot(t, "the transparent listener needs CAP_NET_ADMIN")
	s, adsAddr := serveADS(t)

	node := func(path string) translate.Node {
		return translate.Node{ProxyPort: freePort(t), Ports: []translate.Port{{
			Direction: translate.Ingress, Endpoint: netip.MustParseAddr("10.0.0.5"), Port: 8080,
			Rules: []translate.Rule{{HTTP: []translate.HTTPRule{{Method: "GET", Path: path}}}},
		}}}
	}
	publish := func(n translate.Node) string {
		t.Helper()
		res, err := n.Resources()
		if err != nil {
			t.Fatal(err)
		}
		v, err := s.Publish(t.Context(), res)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	good := node("/api/v1/.*")
	v1 := publish(good)
	if again := publish(good); again != v1 {
		t.Fatalf("publishing equal resources gave version %s, then %s", v1, again)
	}

	inSync := func() error {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		return s.WaitInSync(ctx)
	}
	if err := inSync(); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("WaitInSync before Envoy connects: %v, want ErrNotConnected at once", err)
	}

	boot := bootstrapFile(t, adsAddr)
	stop := startEnvoy(t, envoy, boot)
	waitStatus(t, s, "connected", func(st Status) bool { return st.Connected })
	if err := inSync(); err != nil || s.Status().Acked != v1 {
		t.Fatalf("WaitInSync after Envoy connected: %v, acked %q; want v1 %q running", err, s.Status().Acked, v1)
	}

	// [a-z]{300} compiles to an RE2 program far over the limit of 100 that
	// Envoy enforces unless the bootstrap raises it.
	bad := node("/api/[a-z]{300}")
	bad.ProxyPort = good.ProxyPort
	v2 := publish(bad)
	if err := inSync(); err == nil || errors.Is(err, ErrNotConnected) || !strings.Contains(err.Error(), "rejected version "+v2) {
		t.Errorf("WaitInSync on a configuration Envoy refuses: %v, want its rejection", err)
	}
	waitStatus(t, s, "v2 rejected", func(st Status) bool { return st.Rejected != nil && st.Rejected.Version == v2 })
	st := s.Status()
	if st.Acked != v1 || st.InSync() {
		t.Errorf("after the NACK: acked %q (want %q), in sync %v", st.Acked, v1, st.InSync())
	}
	if !strings.Contains(st.Rejected.Error, "program size") {
		t.Errorf("rejection error %q does not name the regex's program size", st.Rejected.Error)
	}
	t.Logf("rejection: %s", st.Rejected.Error)

	// A restarted Envoy gets the configuration in force (it would reject
	// v2 and run nothing).
	stop()
	waitStatus(t, s, "disconnected", func(st Status) bool { return !st.Connected && st.Acked == "" })
	stop = startEnvoy(t, envoy, boot)
	waitStatus(t, s, "restarted envoy runs v1", func(st Status) bool { return st.Streams == 2 && st.Acked == v1 })
	if st := s.Status(); st.Rejected == nil || st.Rejected.Version != v2 {
		t.Errorf("the rejection of v2 is forgotten before a new version: %+v", st.Rejected)
	}

	fixed := node("/api/v2/.*")
	fixed.ProxyPort = good.ProxyPort
	v3 := publish(fixed)
	if err := inSync(); err != nil || s.Status().Acked != v3 {
		t.Errorf("WaitInSync after a fix: %v, acked %q; want v3 %q running", err, s.Status().Acked, v3)
	}
	waitStatus(t, s, "v3 accepted", func(st Status) bool { return st.Acked == v3 && st.Rejected == nil && st.InSync() })

	// Back to v1's rules: the version Envoy ran before, accepted again,
	// which Accepted counts (a stalled-proxy check cannot go by versions).
	before := s.Status().Accepted
	if back := publish(good); back != v1 {
		t.Fatalf("the rules of v1 again gave version %s, want %s", back, v1)
	}
	if err := inSync(); err != nil || s.Status().Acked != v1 {
		t.Errorf("WaitInSync back on v1: %v, acked %q", err, s.Status().Acked)
	}
	if got := s.Status().Accepted; got != before+1 {
		t.Errorf("Accepted went from %d to %d running v1 again, want +1", before, got)
	}
	stop()
}

// TestEnvoyRejectsOneRoute: a NACK is about the resources Envoy refused,
// and only those are taken back. A change that adds a pod port (listener
// and route configuration) and breaks another port's rules: the broken
// route configuration is rejected and named, taken back to the version
// Envoy runs, while the new port stays in force; a restarted Envoy gets
// exactly that; publishing that same configuration is in sync at once. A
// rejected new route configuration has no version to go back to: the
// configuration returns to the last one Envoy ran whole.
func TestEnvoyRejectsOneRoute(t *testing.T) {
	envoy := testenv.Tool(t, "envoy")
	testenv.RequireRoot(t, "the transparent listener needs CAP_NET_ADMIN")
	s, adsAddr := serveADS(t)
	proxyPort := freePort(t)
	port := func(ip, path string) translate.Port {
		return translate.Port{Direction: translate.Ingress, Endpoint: netip.MustParseAddr(ip), Port: 8080,
			Rules: []translate.Rule{{HTTP: []translate.HTTPRule{{Method: "GET", Path: path}}}}}
	}
	publish := func(ports ...translate.Port) string {
		t.Helper()
		res, err := translate.Node{ProxyPort: proxyPort, Ports: ports}.Resources()
		if err != nil {
			t.Fatal(err)
		}
		v, err := s.Publish(t.Context(), res)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	a, b, c := port("10.0.0.5", "/a/.*"), port("10.0.0.6", "/b/.*"), port("10.0.0.7", "/c/.*")
	v1 := publish(a, b)
	boot := bootstrapFile(t, adsAddr)
	stop := startEnvoy(t, envoy, boot)
	waitStatus(t, s, "v1 accepted", func(st Status) bool { return st.Acked == v1 })

	v2 := publish(a, port("10.0.0.6", "/b/[a-z]{300}"), c)
	waitStatus(t, s, "v2 rejected, the rest in force", func(st Status) bool {
		return st.Rejected != nil && st.Rejected.Version == v2 && st.Acked != "" && st.Acked != v1
	})
	st := s.Status()
	if want := []string{"ingress/10.0.0.6:8080"}; !slices.Equal(st.Rejected.Resources, want) ||
		st.Rejected.TypeURL != "type.googleapis.com/envoy.config.route.v3.RouteConfiguration" {
		t.Errorf("rejected %s %v, want the route configuration %v", st.Rejected.TypeURL, st.Rejected.Resources, want)
	}
	inForce := st.Acked

	stop()
	waitStatus(t, s, "disconnected", func(st Status) bool { return !st.Connected && st.Acked == "" })
	stop = startEnvoy(t, envoy, boot)
	waitStatus(t, s, "restarted envoy runs what was in force", func(st Status) bool { return st.Streams == 2 && st.Acked == inForce })

	// v2 with b as before is what is in force: same version, in sync.
	v3 := publish(a, b, c)
	if v3 != inForce {
		t.Errorf("publishing v2 with b taken back gave version %s, want the one in force %s", v3, inForce)
	}
	waitStatus(t, s, "in sync", func(st Status) bool { return st.InSync() && st.Rejected == nil })

	// A new port whose rules Envoy rejects: no version of its route
	// configuration to take back to, so the whole configuration goes
	// back to v3 (its listener without the new chain).
	v4 := publish(a, b, c, port("10.0.0.8", "/d/[a-z]{300}"))
	waitStatus(t, s, "v4 rejected, v3 in force", func(st Status) bool {
		return st.Rejected != nil && st.Rejected.Version == v4 && st.Acked == v3
	})
	if st := s.Status(); !slices.Equal(st.Rejected.Resources, []string{"ingress/10.0.0.8:8080"}) {
		t.Errorf("rejected %v, want the new route configuration", st.Rejected.Resources)
	}
	stop()
}

// TestEnvoyAcrossServerRestart: an Envoy that keeps running while its
// server restarts (the agent's pod is replaced) reconnects to the new server,
// which publishes the same configuration; the version the Envoy reports on
// its new stream counts as accepted, without waiting for a change.
func TestEnvoyAcrossServerRestart(t *testing.T) {
	envoy := testenv.Tool(t, "envoy")
	testenv.RequireRoot(t, "the transparent listener needs CAP_NET_ADMIN")
	rules := []translate.Port{{
		Direction: translate.Ingress, Endpoint: netip.MustParseAddr("10.0.0.5"), Port: 8080,
		Rules: []translate.Rule{{HTTP: []translate.HTTPRule{{Method: "GET", Path: "/api/v1/.*"}}}},
	}}
	for name, ports := range map[string][]translate.Port{"no HTTP rules": nil, "HTTP rules": rules} {
		for _, envoyFirst := range []bool{false, true} {
			name := name + map[bool]string{false: ", published first", true: ", Envoy reconnected first"}[envoyFirst]
			t.Run(name, func(t *testing.T) {
				res, err := translate.Node{ProxyPort: freePort(t), Ports: ports}.Resources()
				if err != nil {
					t.Fatal(err)
				}
				s1, addr, stop1 := serveADSAt(t, "127.0.0.1:0")
				v1, err := s1.Publish(t.Context(), res)
				if err != nil {
					t.Fatal(err)
				}
				stopEnvoy := startEnvoy(t, envoy, bootstrapFile(t, addr))
				defer stopEnvoy()
				waitStatus(t, s1, "v1 accepted", func(st Status) bool { return st.Acked == v1 })
				stop1()

				s2, _, _ := serveADSAt(t, addr)
				if envoyFirst {
					waitStatus(t, s2, "Envoy reconnected", func(st Status) bool { return st.Connected })
				}
				if v, err := s2.Publish(t.Context(), res); err != nil || v != v1 {
					t.Fatalf("the new server publishes %q, %v; want %q", v, err, v1)
				}
				waitStatus(t, s2, "the running Envoy's v1 accepted by the new server", func(st Status) bool {
					return st.Connected && st.Acked == v1 && st.InSync()
				})
			})
		}
	}
}

// serveADS starts a server for node "node-a" on a free loopback port,
// stopped when the test ends; it returns the server and its address.
func serveADS(tb testing.TB) (*Server, string) {
	tb.Helper()
	s, addr, _ := serveADSAt(tb, "127.0.0.1:0")
	return s, addr
}

// serveADSAt is serveADS on addr; stop (also run when the test ends)
// stops it before.
func serveADSAt(tb testing.TB, addr string) (s *Server, bound string, stop func()) {
	tb.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s = New(log, "node-a")
	tb.Cleanup(s.Close)
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	g := grpc.NewServer()
	s.Register(g)
	done := make(chan error, 1)
	go func() { done <- g.Serve(lis) }()
	var stopped bool
	stop = func() {
		if !stopped {
			stopped = true
			g.Stop()
			<-done
		}
	}
	tb.Cleanup(stop)
	return s, lis.Addr().String(), stop
}

func waitStatus(t testing.TB, s *Server, what string, ok func(Status) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok(s.Status()) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s; status %+v", what, s.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// bootstrapFile is the node bootstrap's shape: ADS to the server, nothing
// else but an admin on a free loopback port; extra lines are appended.
func bootstrapFile(t testing.TB, ads string, extra ...string) string {
	t.Helper()
	host, port, err := net.SplitHostPort(ads)
	if err != nil {
		t.Fatal(err)
	}
	b := fmt.Sprintf(`node: {id: node-a, cluster: membrane-envoy}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
dynamic_resources:
  ads_config:
    api_type: DELTA_GRPC
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services: [{envoy_grpc: {cluster_name: membrane-agent}}]
  cds_config: {ads: {}, resource_api_version: V3}
  lds_config: {ads: {}, resource_api_version: V3}
static_resources:
  clusters:
  - name: membrane-agent
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: membrane-agent
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]
`, host, port) + strings.Join(extra, "\n")
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, []byte(b), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// startEnvoy runs Envoy until the returned stop (or the test's end) kills it.
func startEnvoy(t testing.TB, envoy, boot string) (stop func()) {
	t.Helper()
	_, stop = runEnvoy(t, envoy, boot)
	return stop
}

// runEnvoy is startEnvoy with more command-line arguments, that also
// returns Envoy's process.
func runEnvoy(t testing.TB, envoy, boot string, args ...string) (proc *os.Process, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, envoy, append([]string{"-c", boot, "--disable-hot-restart", "--log-level", "warn"}, args...)...)
	logf, err := os.Create(filepath.Join(t.TempDir(), "envoy.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		<-exited
		if t.Failed() {
			if b, err := os.ReadFile(logf.Name()); err == nil {
				t.Logf("envoy log:\n%s", b)
			}
		}
		_ = logf.Close()
	}
	t.Cleanup(stop)
	return cmd.Process, stop
}

func freePort(t testing.TB) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}
