package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	membranechart "github.com/membrane-mesh/membrane/charts/membrane"
	"github.com/membrane-mesh/membrane/e2e/netns"
)

// TestL7RevokedConnection: a policy change that takes a client's access
// to an L7-policed port away also ends the connections the client opened
// through the node proxy before it (where later packets no longer meet the
// datapath's policy: the node's stack hands them to the proxy's socket).
// A request on such a connection no longer reaches the server: the
// datapath drops the proxy's packets to the server on the client's behalf
// (its open upstream connection is checked again). Its filter chain gone,
// the node Envoy closes every such connection within the chart's
// envoy.drainSeconds; a new connection is dropped.
func TestL7RevokedConnection(t *testing.T) {
	k := cluster(t)
	const ns = "l7revoke"
	nodes := shared.cluster.Nodes
	drain := chartDrainTime(t)
	k.must(fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n", ns)+
		echoPod(ns, "server", nodes[1].Name, "app: server")+sleepPod(ns, "client", nodes[0].Name, "app: client"), "apply", "-f", "-")
	t.Cleanup(func() { k.must("", "delete", "namespace", ns, "--wait=false") })
	k.must("", "-n", ns, "wait", "--for=condition=Ready", "pod/server", "pod/client", "--timeout=90s")
	server, client := getPod(t, k, ns, "server"), getPod(t, k, ns, "client")
	dest := net.JoinHostPort(server.Status.PodIP, "3000")
	clientNS := filepath.Join(shared.cluster.Layout().RunDir(), "netns", client.Spec.NodeName, string(client.UID))
	dial := func() (*keptConn, error) { return dialKept(clientNS, dest) }
	policy := func(peer, rules string) string {
		return `apiVersion: membrane.io/v1alpha1
kind: MembraneNetworkPolicy
metadata: {name: server, namespace: ` + ns + `}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: ` + peer + `}}]
    toPorts: [{ports: [{port: "3000", protocol: TCP}]` + rules + `}]
`
	}

	// GET /allowed passes the proxy, GET /denied gets its 403, on one
	// connection.
	k.must(policy("client", `, rules: {http: [{method: GET, path: "/allowed"}]}`), "apply", "-f", "-")
	var used, idle *keptConn
	eventually(t, policyTimeout, "two connections through the proxy", func() error {
		for _, c := range []**keptConn{&used, &idle} {
			if *c != nil {
				(*c).c.Close()
			}
			var err error
			if *c, err = dial(); err != nil {
				return err
			}
			for path, want := range map[string]int{"/allowed": 200, "/denied": 403} {
				resp, err := (*c).get(path)
				if err != nil {
					return fmt.Errorf("GET %s: %w", path, err)
				}
				if resp.StatusCode != want {
					return fmt.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
				}
			}
		}
		return nil
	})
	t.Cleanup(func() { used.c.Close(); idle.c.Close() })

	// Only another app may come in now, at L3/L4: the client's chain goes.
	k.must(policy("other", ""), "apply", "-f", "-")
	revoked := time.Now()
	eventually(t, policyTimeout, "a new connection dropped", func() error {
		c, err := dial()
		if err != nil {
			return nil
		}
		defer c.c.Close()
		if resp, err := c.get("/allowed"); err == nil {
			return fmt.Errorf("a new connection got %d", resp.StatusCode)
		}
		return nil
	})

	// The connection in use: its next request does not reach the server
	// (Envoy's answer, if any comes before the drain closes the connection,
	// is its own: a 504 when the route times out).
	switch resp, err := used.get("/allowed"); {
	case err == nil && resp.StatusCode == 200:
		t.Errorf("a request on a connection opened before the revocation got 200")
	case err == nil:
		t.Logf("a request on the connection in use after the revocation: %d", resp.StatusCode)
	default:
		t.Logf("a request on the connection in use after the revocation: %v", err)
	}
	// Both are closed within the drain time.
	for _, c := range []struct {
		name string
		conn *keptConn
	}{{"idle", idle}, {"in use", used}} {
		err := c.conn.closed(time.Until(revoked.Add(drain + 10*time.Second)))
		if err != nil {
			t.Errorf("the connection %s opened before the revocation: %v", c.name, err)
			continue
		}
		t.Logf("the connection %s closed %s after the policy write (envoy.drainSeconds %s)",
			c.name, time.Since(revoked).Round(100*time.Millisecond), drain)
	}
}

// keptConn is a kept-alive HTTP/1.1 connection.
type keptConn struct {
	c net.Conn
	r *bufio.Reader
}

// dialKept opens a keptConn to dest from the network namespace nsPath.
func dialKept(nsPath, dest string) (*keptConn, error) {
	var c net.Conn
	err := netns.Do(nsPath, func() error {
		var err error
		c, err = net.DialTimeout("tcp", dest, 3*time.Second)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &keptConn{c: c, r: bufio.NewReader(c)}, nil
}

// get makes one request and reads its answer whole.
func (k *keptConn) get(path string) (*http.Response, error) {
	k.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(k.c, "GET "+path+" HTTP/1.1\r\nHost: server\r\n\r\n"); err != nil {
		return nil, fmt.Errorf("write: %w", err)
	}
	resp, err := http.ReadResponse(k.r, nil)
	if err != nil {
		return nil, fmt.Errorf("read the answer: %w", err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, err
}

// closed waits up to d for the peer to close the connection (end of
// stream or reset), reading past what it still sends, and fails if it
// stays open.
func (k *keptConn) closed(d time.Duration) error {
	k.c.SetDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, k.r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("still open after %s", d.Round(time.Second))
	}
	return nil
}

// chartDrainTime is the chart's default envoy.drainSeconds, which the
// local cluster's node Envoys run with.
func chartDrainTime(t *testing.T) time.Duration {
	t.Helper()
	raw, err := membranechart.Chart.ReadFile("values.yaml")
	if err != nil {
		t.Fatalf("read the chart's values: %v", err)
	}
	var v struct {
		Envoy struct {
			DrainSeconds int `json:"drainSeconds"`
		} `json:"envoy"`
	}
	if err := yaml.Unmarshal(raw, &v); err != nil || v.Envoy.DrainSeconds <= 0 {
		t.Fatalf("envoy.drainSeconds of the chart's values: %d, %v", v.Envoy.DrainSeconds, err)
	}
	return time.Duration(v.Envoy.DrainSeconds) * time.Second
}
