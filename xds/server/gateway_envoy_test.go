package server

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/membrane-mesh/membrane/e2e/testenv"
	"github.com/membrane-mesh/membrane/gateway/ir"
	gwtranslate "github.com/membrane-mesh/membrane/gateway/translate"
	"github.com/membrane-mesh/membrane/xds/translate"
)

func selfSigned(t testing.TB, host string) (chain, key []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
}

// inlineCertificates returns res's listeners with the certificates they
// name (SDS) inline.
func inlineCertificates(t *testing.T, res gwtranslate.Resources) []*listenerv3.Listener {
	t.Helper()
	byName := map[string]*tlsv3.TlsCertificate{}
	for _, sec := range res.Secrets {
		byName[sec.GetName()] = sec.GetTlsCertificate()
	}
	var out []*listenerv3.Listener
	for _, l := range res.Listeners {
		l = proto.Clone(l).(*listenerv3.Listener)
		for _, fc := range l.GetFilterChains() {
			tc := fc.GetTransportSocket().GetTypedConfig()
			if tc == nil {
				continue
			}
			var ctx tlsv3.DownstreamTlsContext
			if err := tc.UnmarshalTo(&ctx); err != nil {
				t.Fatal(err)
			}
			common := ctx.GetCommonTlsContext()
			for _, sds := range common.GetTlsCertificateSdsSecretConfigs() {
				common.TlsCertificates = append(common.TlsCertificates, byName[sds.GetName()])
			}
			common.TlsCertificateSdsSecretConfigs = nil
			if err := tc.MarshalFrom(&ctx); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, l)
	}
	return out
}

// TestEnvoyRejectsOneGatewayListener: Envoy applies the listeners of a
// response it does not name in its NACK, so only the listener it names is
// refused and taken back; the others serve their new version. A refused
// listener published unchanged is not sent again (no NACK again) while the
// other listeners change; a new listener Envoy refuses is left out alone;
// fixing it clears the rejection.
func TestEnvoyRejectsOneGatewayListener(t *testing.T) {
	envoy := testenv.Tool(t, "envoy")
	s, adsAddr := serveADS(t)
	httpPort, httpsPort, newPort := freePort(t), freePort(t), freePort(t)
	chain, key := selfSigned(t, "a.example")
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(chain)
	_, otherKey := selfSigned(t, "a.example") // does not match chain
	loopback := netip.MustParseAddr("127.0.0.1")
	https := func(name string, port uint16, k []byte) ir.Listener {
		return ir.Listener{Name: name, Address: loopback, Port: port, Protocol: ir.HTTPS,
			Servers: []ir.Server{{Name: name, SNI: []string{"a.example"}, Certificates: []ir.Certificate{{Name: "ns/s", Chain: chain, Key: k}},
				VirtualHosts: []ir.VirtualHost{{Name: "a", Domains: []string{"*"},
					Routes: []ir.Route{{Name: "ns/r/rule/0/match/0", Match: ir.Match{PathType: ir.PathPrefix, Path: "/"}, DirectResponse: 200}}}}}}}
	}
	model := func(path string, k []byte, extra ...ir.Listener) ir.IR {
		return ir.IR{Listeners: append([]ir.Listener{
			{Name: "ns/gw/http", Address: loopback, Port: httpPort, Protocol: ir.HTTP,
				Servers: []ir.Server{{Name: "ns/gw/http", VirtualHosts: []ir.VirtualHost{{Name: "a", Domains: []string{"*"},
					Routes: []ir.Route{{Name: "ns/r/rule/0/match/0", Match: ir.Match{PathType: ir.PathExact, Path: path}, DirectResponse: 200}}}}}}},
			https("ns/gw/https", httpsPort, k),
		}, extra...)}
	}
	publish := func(m ir.IR) string {
		t.Helper()
		res, err := gwtranslate.Render(m)
		if err != nil {
			t.Fatal(err)
		}
		// The certificates inline, so that Envoy refuses the listener of
		// a bad one (over SDS it would refuse the secret).
		v, err := s.Publish(t.Context(), translate.Resources{Listeners: inlineCertificates(t, res), Routes: res.Routes, Clusters: res.Clusters})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	serves := func(path string) {
		t.Helper()
		url := fmt.Sprintf("http://127.0.0.1:%d%s", httpPort, path)
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := client.Get(url)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					t.Logf("%s served after %v", path, time.Since(deadline.Add(-10*time.Second)))
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s: %v %v, want 200 within 10s", url, resp, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	const listenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"

	v1 := publish(model("/a", key))
	stop := startEnvoy(t, envoy, bootstrapFile(t, adsAddr))
	waitStatus(t, s, "v1 accepted", func(st Status) bool { return st.Acked == v1 })
	serves("/a")

	// One response: the HTTP listener changed, the HTTPS one broken.
	v2 := publish(model("/b", otherKey))
	waitStatus(t, s, "v2 rejected", func(st Status) bool { return st.Rejected != nil && st.Rejected.Version == v2 })
	st := s.Status()
	if len(st.Refused) != 1 || st.Refused[0].Name != "gateway/ns/gw/https" || st.Refused[0].TypeURL != listenerType ||
		!strings.Contains(st.Refused[0].Error, "KEY_VALUES_MISMATCH") || strings.Contains(st.Refused[0].Error, "gateway/ns/gw/https") {
		t.Fatalf("refused %+v, want the HTTPS listener alone with its error", st.Refused)
	}
	t.Logf("refused: %+v", st.Refused[0])
	serves("/b")
	waitStatus(t, s, "the rest of v2 in force", func(st Status) bool { return st.Acked != "" && st.Acked != v1 })
	at := st.Refused[0].At

	// The broken listener unchanged, the other one changed again: served
	// without another NACK.
	v3 := publish(model("/c", otherKey))
	serves("/c")
	st = s.Status()
	if st.Rejected == nil || st.Rejected.Version != v3 || len(st.Refused) != 1 || !st.Refused[0].At.Equal(at) {
		t.Errorf("after publishing the refused listener unchanged: rejected %+v, refused %+v; want the refusal of v2 kept", st.Rejected, st.Refused)
	}

	// Envoy restarts, and the other listener changes before it
	// acknowledges: the refused listener stays at the accepted version
	// (the old certificate is served).
	stop()
	waitStatus(t, s, "disconnected", func(st Status) bool { return !st.Connected })
	v3 = publish(model("/c2", otherKey))
	stop = startEnvoy(t, envoy, bootstrapFile(t, adsAddr))
	serves("/c2")
	secure := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{
		ServerName: "a.example", RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	resp, err := secure.Get(fmt.Sprintf("https://127.0.0.1:%d/", httpsPort))
	if err != nil {
		t.Fatalf("HTTPS after the restart: %v", err)
	}
	resp.Body.Close()
	if st := s.Status(); st.Rejected == nil || st.Rejected.Version != v3 || len(st.Refused) != 1 {
		t.Errorf("after the restart: rejected %+v, refused %+v; want the refusal kept", st.Rejected, st.Refused)
	}

	// A new listener Envoy refuses: left out, the rest served.
	v4 := publish(model("/d", otherKey, https("ns/gw2/https", newPort, otherKey)))
	waitStatus(t, s, "v4's new listener rejected", func(st Status) bool { return st.Rejected != nil && st.Rejected.Version == v4 && len(st.Refused) == 2 })
	serves("/d")

	// Published again unchanged while the other listener changes: still
	// left out (its route configuration with it), the change served.
	v4 = publish(model("/d2", otherKey, https("ns/gw2/https", newPort, otherKey)))
	serves("/d2")
	if st := s.Status(); st.Rejected == nil || st.Rejected.Version != v4 || len(st.Refused) != 2 {
		t.Errorf("after publishing the refused new listener unchanged: rejected %+v, refused %+v; want both refusals kept", st.Rejected, st.Refused)
	}

	// Fixed: accepted whole.
	v5 := publish(model("/e", key, https("ns/gw2/https", newPort, key)))
	waitStatus(t, s, "v5 accepted", func(st Status) bool { return st.Acked == v5 && st.Rejected == nil && st.InSync() })
	serves("/e")
}

// TestEnvoyRotatesGatewayCertificate: a gateway listener's certificate
// comes over SDS, so a rotated certificate reaches new connections without
// a listener update: a connection open before the rotation keeps going
// (Envoy, told to drain at once, would close it had its filter chain
// changed). A certificate Envoy refuses is reported as that secret, and
// the one before it stays served.
func TestEnvoyRotatesGatewayCertificate(t *testing.T) {
	envoy := testenv.Tool(t, "envoy")
	s, adsAddr := serveADS(t)
	port := freePort(t)
	chain1, key1 := selfSigned(t, "a.example")
	chain2, key2 := selfSigned(t, "a.example")
	_, otherKey := selfSigned(t, "a.example")
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(chain1)
	roots.AppendCertsFromPEM(chain2)
	publish := func(chain, key []byte) string {
		t.Helper()
		res, err := gwtranslate.Render(ir.IR{Listeners: []ir.Listener{{Name: "ns/gw/443", Address: netip.MustParseAddr("127.0.0.1"), Port: port, Protocol: ir.HTTPS,
			Servers: []ir.Server{{Name: "ns/gw/https", SNI: []string{"a.example"}, Certificates: []ir.Certificate{{Name: "ns/s", Chain: chain, Key: key}},
				VirtualHosts: []ir.VirtualHost{{Name: "a", Domains: []string{"*"},
					Routes: []ir.Route{{Name: "ns/r/rule/0/match/0", Match: ir.Match{PathType: ir.PathPrefix, Path: "/"}, DirectResponse: 200}}}}}}}}})
		if err != nil {
			t.Fatal(err)
		}
		v, err := s.Publish(t.Context(), translate.Resources{Listeners: res.Listeners, Routes: res.Routes, Clusters: res.Clusters, Secrets: res.Secrets})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	url := fmt.Sprintf("https://127.0.0.1:%d/", port)
	newClient := func() *http.Client {
		return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 1,
			TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "a.example"}}}
	}
	// get returns the served certificate and whether the request went over
	// a connection used before.
	get := func(c *http.Client) (cert []byte, reused bool, err error) {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return nil, false, err
		}
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}))
		resp, err := c.Do(req)
		if err != nil {
			return nil, false, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Close {
			return nil, reused, fmt.Errorf("status %d, connection close %v", resp.StatusCode, resp.Close)
		}
		return resp.TLS.PeerCertificates[0].Raw, reused, nil
	}
	leaf := func(chain []byte) []byte {
		b, _ := pem.Decode(chain)
		return b.Bytes
	}
	servesNew := func(what string, want []byte) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			cert, _, err := get(newClient())
			if err == nil && bytes.Equal(cert, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: a new connection got %v, want the certificate within 10s", what, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	v1 := publish(chain1, key1)
	runEnvoy(t, envoy, bootstrapFile(t, adsAddr), "--drain-time-s", "1", "--drain-strategy", "immediate")
	waitStatus(t, s, "v1 accepted", func(st Status) bool { return st.Acked == v1 })
	servesNew("before the rotation", leaf(chain1))
	open := newClient()
	if cert, _, err := get(open); err != nil || !bytes.Equal(cert, leaf(chain1)) {
		t.Fatalf("GET %s: %v, want the first certificate", url, err)
	}

	v2 := publish(chain2, key2)
	waitStatus(t, s, "the rotation accepted", func(st Status) bool { return st.Acked == v2 })
	servesNew("after the rotation", leaf(chain2))
	time.Sleep(1500 * time.Millisecond) // past the drain time
	for i := range 3 {
		cert, reused, err := get(open)
		if err != nil || !reused || !bytes.Equal(cert, leaf(chain1)) {
			t.Fatalf("request %d over the connection opened before the rotation: reused %v, %v; want it kept, with the first certificate", i, reused, err)
		}
	}

	v3 := publish(chain2, otherKey)
	waitStatus(t, s, "the mismatched key refused", func(st Status) bool { return st.Rejected != nil && st.Rejected.Version == v3 })
	st := s.Status()
	if len(st.Refused) != 1 || st.Refused[0].TypeURL != "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret" ||
		st.Refused[0].Name != gwtranslate.CertificatePrefix+"ns/s" {
		t.Fatalf("refused %+v, want the certificate's secret alone", st.Refused)
	}
	t.Logf("refused: %s %s: %s", st.Refused[0].TypeURL, st.Refused[0].Name, st.Refused[0].Error)
	servesNew("after the refused certificate", leaf(chain2))
}

// TestEnvoyMovesGatewayAddress: an address moves from one Gateway's
// listener to another's in one change (the first one gets a new address,
// the second one takes its old one), as when the address assignment of
// Gateways or Ingresses created together settles. Envoy refuses a
// listener whose address another one it runs still holds; the refused
// listener is sent again once that one has let go of the address, so both
// are served.
func TestEnvoyMovesGatewayAddress(t *testing.T) {
	envoy := testenv.Tool(t, "envoy")
	s, adsAddr := serveADS(t)
	port := freePort(t)
	first, second := netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")
	listener := func(gateway string, addr netip.Addr) ir.Listener {
		name := fmt.Sprintf("ns/%s/%d", gateway, port)
		return ir.Listener{Name: name, Address: addr, Port: port, Protocol: ir.HTTP,
			Servers: []ir.Server{{Name: name, VirtualHosts: []ir.VirtualHost{{Name: gateway, Domains: []string{"*"},
				Routes: []ir.Route{{Name: "ns/" + gateway + "/rule/0/match/0", Match: ir.Match{PathType: ir.PathPrefix, Path: "/" + gateway}, DirectResponse: 200}}}}}}}
	}
	publish := func(ls ...ir.Listener) string {
		t.Helper()
		res, err := gwtranslate.Render(ir.IR{Listeners: ls})
		if err != nil {
			t.Fatal(err)
		}
		v, err := s.Publish(t.Context(), translate.Resources{Listeners: res.Listeners, Routes: res.Routes, Clusters: res.Clusters})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	serves := func(addr netip.Addr, gateway string) {
		t.Helper()
		url := fmt.Sprintf("http://%s/%s", netip.AddrPortFrom(addr, port), gateway)
		start := time.Now()
		for {
			resp, err := client.Get(url)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					t.Logf("%s served after %v", url, time.Since(start))
					return
				}
			}
			if time.Since(start) > 10*time.Second {
				t.Fatalf("GET %s: %v %v, want 200 within 10s; status %+v", url, resp, err, s.Status())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	v1 := publish(listener("a", first))
	startEnvoy(t, envoy, bootstrapFile(t, adsAddr))
	waitStatus(t, s, "v1 accepted", func(st Status) bool { return st.Acked == v1 })
	serves(first, "a")

	v2 := publish(listener("a", second), listener("b", first))
	serves(second, "a")
	serves(first, "b")
	waitStatus(t, s, "v2 accepted whole", func(st Status) bool { return st.Acked == v2 && st.Rejected == nil && st.InSync() })

	// And back, the other way round.
	v3 := publish(listener("a", first), listener("b", second))
	serves(first, "a")
	serves(second, "b")
	waitStatus(t, s, "v3 accepted whole", func(st Status) bool { return st.Acked == v3 && st.Rejected == nil && st.InSync() })
}

// TestEnvoyRetriesListenerAddress: a gateway listener whose address
// another socket of the node holds is refused; it is sent again, unchanged,
// after 1 s, 2 s, ...: once the socket is gone it is served, and the
// refusal is gone from the status. The refusal is reported once meanwhile
// (its time stays).
func TestEnvoyRetriesListenerAddress(t *testing.T) {
	envoy := testenv.Tool(t, "envoy")
	s, adsAddr := serveADS(t)
	addr := netip.MustParseAddr("127.0.0.4")
	other, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	port := uint16(other.Addr().(*net.TCPAddr).Port)
	name := fmt.Sprintf("ns/gw/%d", port)
	res, err := gwtranslate.Render(ir.IR{Listeners: []ir.Listener{{Name: name, Address: addr, Port: port, Protocol: ir.HTTP,
		Servers: []ir.Server{{Name: name, VirtualHosts: []ir.VirtualHost{{Name: "a", Domains: []string{"*"},
			Routes: []ir.Route{{Name: "ns/r/rule/0/match/0", Match: ir.Match{PathType: ir.PathPrefix, Path: "/"}, DirectResponse: 200}}}}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Publish(t.Context(), translate.Resources{Listeners: res.Listeners, Routes: res.Routes, Clusters: res.Clusters})
	if err != nil {
		t.Fatal(err)
	}
	startEnvoy(t, envoy, bootstrapFile(t, adsAddr))
	waitStatus(t, s, "refused", func(st Status) bool { return st.Rejected != nil && st.Rejected.Version == v })
	first := s.Status().Refused
	if len(first) != 1 || first[0].Name != "gateway/"+name || !addressRefusal(first[0].Error) {
		t.Fatalf("refused %+v, want the listener, for its address", first)
	}
	t.Logf("refused: %s", first[0].Error)
	// Refused again on the first retry: still one refusal, of the first time.
	waitStatus(t, s, "refused again", func(st Status) bool { return len(st.Refused) == 1 && st.Refused[0].tries >= 2 })
	if st := s.Status(); !st.Refused[0].At.Equal(first[0].At) || st.Rejected == nil {
		t.Errorf("after the first retry: rejected %+v, refused %+v; want the first refusal", st.Rejected, st.Refused)
	}
	other.Close()
	closed := time.Now()
	waitStatus(t, s, "accepted", func(st Status) bool { return st.Acked == v && st.Rejected == nil && len(st.Refused) == 0 })
	t.Logf("accepted %v after the socket closed", time.Since(closed).Round(time.Millisecond))
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Get(fmt.Sprintf("http://%s/", netip.AddrPortFrom(addr, port)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET: %d, want 200", resp.StatusCode)
	}
}
