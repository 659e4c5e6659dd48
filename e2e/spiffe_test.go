package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
	"github.com/membrane-mesh/membrane/encryption/spiffe"
	"github.com/membrane-mesh/membrane/mesh/agentapi"
)

const spiffeNS = "spiffe"

// spiffePods: service account alpha has a pod on the first node only, beta
// on the second only; both pods can reach their node's Workload API.
func spiffePods(n1, n2 string) string {
	curl := `---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: ` + spiffeNS + `}
spec:
  nodeName: ` + n2 + `
  terminationGracePeriodSeconds: 1
  containers:
  - name: curl
    image: curlimages/curl:8.5.0
    command: ["/bin/sh", "-c", "sleep 3600"]
`
	return "apiVersion: v1\nkind: Namespace\nmetadata: {name: " + spiffeNS + "}\n" + svidPod(spiffeNS, "a", "alpha", n1, "") + svidPod(spiffeNS, "b", "beta", n2, "") + curl
}

// svidPod is service account sa and its pod name on node, which can reach
// its node's Workload API; labels, when set, are the pod's labels in
// flow style ("{app: x}").
func svidPod(ns, name, sa, node, labels string) string {
	meta := "{name: " + name + ", namespace: " + ns + "}"
	if labels != "" {
		meta = "{name: " + name + ", namespace: " + ns + ", labels: " + labels + "}"
	}
	return `---
apiVersion: v1
kind: ServiceAccount
metadata: {name: ` + sa + `, namespace: ` + ns + `}
---
apiVersion: v1
kind: Pod
metadata: ` + meta + `
spec:
  nodeName: ` + node + `
  serviceAccountName: ` + sa + `
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: membrane/membrane-agent:dev
    command: ["/bin/sh", "-c", "sleep 3600"]
    env:
    - {name: SPIFFE_ENDPOINT_SOCKET, value: "unix:///spiffe/agent.sock"}
    volumeMounts:
    - {name: spiffe, mountPath: /spiffe, readOnly: true}
  volumes:
  - name: spiffe
    hostPath: {path: /var/run/membrane/spiffe, type: DirectoryOrCreate}
`
}

// podSVIDWant is a pod and the SPIFFE ID it must get.
type podSVIDWant struct {
	pod string
	id  spiffeid.ID
}

// checkOwnSVIDs: each pod in namespace ns fetches exactly its own SVID,
// verified, over its node's Workload API (membrane identity fetch).
func checkOwnSVIDs(t *testing.T, k *kube, ns string, want ...podSVIDWant) {
	t.Helper()
	for _, c := range want {
		out := k.must("", "-n", ns, "exec", c.pod, "--", "membrane", "identity", "fetch", "--timeout=30s", "-o", "json")
		var rows []struct {
			SPIFFEID string `json:"spiffeID"`
			Verified bool   `json:"verified"`
		}
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("pod %s: %v: %s", c.pod, err, out)
		}
		if len(rows) != 1 || rows[0].SPIFFEID != c.id.String() || !rows[0].Verified {
			t.Fatalf("pod %s got %+v, want exactly its own %s, verified", c.pod, rows, c.id)
		}
		t.Logf("pod %s: %s", c.pod, strings.TrimSpace(out))
	}
}

// dialIn dials from the network namespace at path (a node's).
func dialIn(path string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			// Never unlocked: the thread ends with this goroutine and never
			// runs anything else in the node's namespace.
			goruntime.LockOSThread()
			ns, err := netns.GetFromPath(path)
			if err != nil {
				ch <- result{err: err}
				return
			}
			defer ns.Close()
			if err := netns.Set(ns); err != nil {
				ch <- result{err: err}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// caClient talks to the CA's signing endpoint from a node.
type caClient struct {
	addr string
	node localcluster.NodeState
}

// sign asks for an SVID for id with token ("" sends none) and returns the
// HTTP status, the answer's text and, on success, the SVID, checked against
// bundle. bundle also verifies the server: its certificate must be the CA's
// SPIFFE ID.
func (c *caClient) sign(t *testing.T, token string, id spiffeid.ID, bundle *x509bundle.Bundle) (int, string, *x509svid.SVID) {
	t.Helper()
	r, err := c.try(t, token, id, bundle)
	if err != nil {
		t.Fatal(err)
	}
	return r.code, r.msg, r.svid
}

type signResult struct {
	code int
	msg  string
	svid *x509svid.SVID
}

// try is sign that returns transport errors.
func (c *caClient) try(t *testing.T, token string, id spiffeid.ID, bundle *x509bundle.Bundle) (signResult, error) {
	t.Helper()
	tlsCfg := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(spiffe.CAServerID(bundle.TrustDomain())))
	hc := &http.Client{
		Timeout:   20 * time.Second,
		Transport: &http.Transport{TLSClientConfig: tlsCfg, DialContext: dialIn(c.node.Netns), DisableKeepAlives: true},
	}
	key, csr, err := spiffe.NewCSR(id)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(spiffe.SignRequest{CSR: csr})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "https://"+c.addr+spiffe.SignPath, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return signResult{}, fmt.Errorf("CA %s: %w", c.addr, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return signResult{code: resp.StatusCode, msg: strings.TrimSpace(string(raw))}, nil
	}
	var sr spiffe.SignResponse
	if err := json.Unmarshal(raw, &sr); err != nil {
		t.Fatal(err)
	}
	chain, _, err := spiffe.ParseSignResponse(bundle.TrustDomain(), sr)
	if err != nil {
		t.Fatal(err)
	}
	s, err := spiffe.NewSVID(chain, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(s.Certificates, bundle); err != nil {
		t.Fatalf("issued SVID does not verify with the published bundle: %v", err)
	}
	return signResult{code: resp.StatusCode, svid: s}, nil
}

// TestSPIFFEIdentities: with authentication.mutual.enabled the operator's CA
// issues SVIDs only to node agents, and only for service accounts with a
// pod on the agent's node; agents keep the SVIDs of their pods and serve
// each pod its own over the SPIFFE Workload API.
func TestSPIFFEIdentities(t *testing.T) {
	cluster(t) // skips like every end-to-end test
	start := time.Now()
	s := ownCluster(t, localcluster.Options{
		Name: "e2e-sp-" + strconv.Itoa(os.Getpid()), Nodes: 2, PodCIDR: "10.241.0.0/16", ServiceCIDR: "10.91.0.0/16",
		HelmSet: []string{"authentication.mutual.enabled=true", "authentication.mutual.ca.propagation=5s", "authentication.mutual.svidTTL=2m"},
	})
	t.Logf("cluster up in %s", time.Since(start).Round(time.Second))
	k := &kube{t: t, kubeconfig: s.Layout().Kubeconfig(), kubectlPath: filepath.Join(shared.toolsDir, "bin", "kubectl")}
	n1, n2 := s.Nodes[0], s.Nodes[1]
	k.must(spiffePods(n1.Name, n2.Name), "apply", "-f", "-")
	k.must("", "-n", spiffeNS, "wait", "--for=condition=Ready", "pod/a", "pod/b", "pod/c", "--timeout=120s")

	td := spiffeid.RequireTrustDomainFromString(spiffe.DefaultTrustDomain)
	alpha := spiffeid.RequireFromString("spiffe://cluster.local/ns/spiffe/sa/alpha")
	beta := spiffeid.RequireFromString("spiffe://cluster.local/ns/spiffe/sa/beta")
	const sys = "kube-system"

	var bundle *x509bundle.Bundle
	eventually(t, 60*time.Second, "the CA publishes its trust bundle", func() error {
		out, err := k.run(t.Context(), "", "-n", sys, "get", "configmap", "membrane-spiffe-bundle", "-o", "jsonpath={.data.bundle\\.crt}")
		if err != nil {
			return err
		}
		bundle, err = x509bundle.Parse(td, []byte(out))
		return err
	})
	var caAddr string
	eventually(t, 60*time.Second, "the CA's endpoints are ready", func() error {
		var l discoveryv1.EndpointSliceList
		out, err := k.run(t.Context(), "", "-n", sys, "get", "endpointslices", "-l", "kubernetes.io/service-name=membrane-spiffe-ca", "-o", "json")
		if err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			return err
		}
		for _, sl := range l.Items {
			for _, e := range sl.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready && len(e.Addresses) > 0 && len(sl.Ports) > 0 {
					caAddr = net.JoinHostPort(e.Addresses[0], strconv.Itoa(int(*sl.Ports[0].Port)))
					return nil
				}
			}
		}
		return fmt.Errorf("no ready endpoint")
	})
	ca := &caClient{addr: caAddr, node: n1}
	eventually(t, 60*time.Second, "the CA answers", func() error {
		if _, err := ca.try(t, "", spiffeid.RequireFromString("spiffe://cluster.local/ns/spiffe/sa/alpha"), bundle); err != nil {
			return err
		}
		return nil
	})
	agentPod := func(node string) string {
		for _, p := range k.pods(sys, "k8s-app=membrane-agent") {
			if p.Spec.NodeName == node && p.Status.Phase == corev1.PodRunning {
				return p.Name
			}
		}
		t.Fatalf("no running agent on %s", node)
		return ""
	}
	token := func(ns, sa string, args ...string) string {
		return strings.TrimSpace(k.must("", append([]string{"-n", ns, "create", "token", sa, "--duration=10m"}, args...)...))
	}

	t.Run("the CA refuses clients that are no node agent", func(t *testing.T) {
		// From a pod: the port is open to every pod; it answers none.
		for what, auth := range map[string]string{
			"a pod without credentials":    "",
			"a pod with its own API token": `-H "Authorization: Bearer $(cat /var/run/secrets/kubernetes.io/serviceaccount/token)"`,
		} {
			out := k.must("", "-n", spiffeNS, "exec", "c", "--", "sh", "-c",
				`curl -sk -m 10 -o /dev/null -w '%{http_code}' -X POST -d '{}' `+auth+` https://`+caAddr+spiffe.SignPath)
			if out != "401" {
				t.Errorf("%s: HTTP %q, want 401", what, out)
			} else {
				t.Logf("%s: refused (401)", what)
			}
		}
		for _, c := range []struct{ what, token string }{
			{"no credentials", ""},
			{"a pod's token for the CA", token(spiffeNS, "alpha", "--audience=membrane-ca", "--bound-object-kind=Pod", "--bound-object-name=a")},
			{"the agent's token for the API server", token(sys, "membrane-agent", "--bound-object-kind=Pod", "--bound-object-name="+agentPod(n1.Name))},
			{"the agent's token bound to no pod", token(sys, "membrane-agent", "--audience=membrane-ca")},
		} {
			code, msg, _ := ca.sign(t, c.token, alpha, bundle)
			if code != http.StatusUnauthorized {
				t.Errorf("%s: status %d (%s), want 401", c.what, code, msg)
			} else {
				t.Logf("%s: refused: %s", c.what, msg)
			}
		}
	})

	t.Run("an agent is refused a service account with no pod on its node", func(t *testing.T) {
		agent1 := token(sys, "membrane-agent", "--audience=membrane-ca", "--bound-object-kind=Pod", "--bound-object-name="+agentPod(n1.Name))
		agent2 := token(sys, "membrane-agent", "--audience=membrane-ca", "--bound-object-kind=Pod", "--bound-object-name="+agentPod(n2.Name))
		for _, c := range []struct {
			what  string
			token string
			id    spiffeid.ID
		}{
			{"agent of " + n1.Name + " for beta", agent1, beta},
			{"agent of " + n2.Name + " for alpha", agent2, alpha},
			{"agent of " + n1.Name + " for the CA's own ID", agent1, spiffe.CAServerID(td)},
			{"agent of " + n1.Name + " for a service account with no pods", agent1, spiffeid.RequireFromString("spiffe://cluster.local/ns/spiffe/sa/nobody")},
			// The operators run on the nodes' network: host-network pods
			// have no identity of their own.
			{"agent of " + n1.Name + " for the service account of host-network pods", agent1, spiffeid.RequireFromString("spiffe://cluster.local/ns/kube-system/sa/membrane-operator")},
		} {
			code, msg, _ := ca.sign(t, c.token, c.id, bundle)
			if code != http.StatusForbidden {
				t.Errorf("%s: status %d (%s), want 403", c.what, code, msg)
			} else {
				t.Logf("%s: refused: %s", c.what, msg)
			}
		}
		for _, c := range []struct {
			token string
			id    spiffeid.ID
		}{{agent1, alpha}, {agent2, beta}} {
			code, msg, s := ca.sign(t, c.token, c.id, bundle)
			if code != http.StatusOK || s.ID != c.id {
				t.Fatalf("for %s: status %d (%s)", c.id, code, msg)
			}
			if ttl := time.Until(s.Certificates[0].NotAfter); ttl > 2*time.Minute || ttl < 90*time.Second {
				t.Errorf("SVID for %s lives %s, want 2m (authentication.mutual.svidTTL)", c.id, ttl)
			}
		}
	})

	svids := func(node string) agentapi.SVIDList {
		var lists []agentapi.SVIDList
		if err := json.Unmarshal([]byte(k.membrane("identity", "svids", "--node", node, "-o", "json")), &lists); err != nil || len(lists) != 1 {
			t.Fatalf("membrane identity svids --node %s: %v (%d lists)", node, err, len(lists))
		}
		return lists[0]
	}
	ids := func(l agentapi.SVIDList) []string {
		var out []string
		for _, s := range l.SVIDs {
			out = append(out, s.SPIFFEID)
		}
		return out
	}
	t.Run("agents keep the SVIDs of their pods' service accounts", func(t *testing.T) {
		for _, c := range []struct {
			node      string
			have, not spiffeid.ID
		}{{n1.Name, alpha, beta}, {n2.Name, beta, alpha}} {
			eventually(t, 60*time.Second, c.node+" holds "+c.have.String(), func() error {
				l := svids(c.node)
				got := ids(l)
				if !slices.Contains(got, c.have.String()) {
					return fmt.Errorf("%s holds %v", c.node, got)
				}
				if slices.Contains(got, c.not.String()) {
					t.Fatalf("%s holds %s, whose pods run elsewhere", c.node, c.not)
				}
				if len(l.Bundle) == 0 {
					return fmt.Errorf("%s has no trust bundle", c.node)
				}
				return nil
			})
		}
		t.Logf("membrane identity svids:\n%s", k.membrane("identity", "svids"))
	})

	t.Run("agents renew SVIDs at half their life", func(t *testing.T) {
		first := svids(n1.Name)
		var serial string
		for _, s := range first.SVIDs {
			if s.SPIFFEID == alpha.String() {
				serial = s.Serial
			}
		}
		start := time.Now()
		eventually(t, 100*time.Second, "alpha's SVID renewed", func() error {
			for _, s := range svids(n1.Name).SVIDs {
				if s.SPIFFEID == alpha.String() && s.Serial != serial {
					if time.Until(s.NotAfter) < 90*time.Second {
						return fmt.Errorf("renewed SVID expires in %s", time.Until(s.NotAfter))
					}
					return nil
				}
			}
			return fmt.Errorf("serial %s unchanged", serial)
		})
		t.Logf("renewed after %s", time.Since(start).Round(time.Second))
	})

	t.Run("a pod fetches its own SVID over the Workload API", func(t *testing.T) {
		checkOwnSVIDs(t, k, spiffeNS, podSVIDWant{"a", alpha}, podSVIDWant{"b", beta})
		// A process on the node that is no pod's gets nothing.
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		sock := filepath.Join(s.Layout().NodeRunDir(n1.Name), "membrane", "spiffe", "agent.sock")
		out, err := runMembrane(ctx, "identity", "fetch", "--timeout=5s", "--socket=unix://"+sock)
		if err == nil {
			t.Fatalf("a process of no pod got: %s", out)
		}
		t.Logf("a process of no pod: refused: %v: %s", err, strings.TrimSpace(out))
	})

	t.Run("CA rotation: the new CA is trusted before it signs, the old one while its SVIDs live", func(t *testing.T) {
		before := len(bundle.X509Authorities())
		k.must("", "-n", sys, "annotate", "secret", "membrane-spiffe-ca", "--overwrite", spiffe.AnnotationRotate+"="+strconv.FormatInt(time.Now().UnixNano(), 10))
		for _, node := range []string{n1.Name, n2.Name} {
			eventually(t, 60*time.Second, node+" trusts the new CA", func() error {
				if n := len(svids(node).Bundle); n != before+1 {
					return fmt.Errorf("%d CAs in the bundle, want %d", n, before+1)
				}
				return nil
			})
		}
		// A new request after propagation is signed by the new CA, which
		// every agent already trusts; the old CA stays in the bundle.
		agent1 := token(sys, "membrane-agent", "--audience=membrane-ca", "--bound-object-kind=Pod", "--bound-object-name="+agentPod(n1.Name))
		var rotated *x509bundle.Bundle
		eventually(t, 60*time.Second, "SVIDs signed by the new CA", func() error {
			out := k.must("", "-n", sys, "get", "configmap", "membrane-spiffe-bundle", "-o", "jsonpath={.data.bundle\\.crt}")
			b, err := x509bundle.Parse(td, []byte(out))
			if err != nil {
				return err
			}
			code, msg, sv := ca.sign(t, agent1, alpha, b)
			if code != http.StatusOK {
				return fmt.Errorf("status %d: %s", code, msg)
			}
			if _, _, err := x509svid.Verify(sv.Certificates, bundle); err == nil {
				return fmt.Errorf("still signed by the old CA")
			}
			rotated = b
			return nil
		})
		if n := len(rotated.X509Authorities()); n != before+1 {
			t.Fatalf("bundle after rotation has %d CAs, want %d (old and new)", n, before+1)
		}
		bundle = rotated
	})

	t.Run("an SVID goes with the last pod of its service account", func(t *testing.T) {
		k.must("", "-n", spiffeNS, "delete", "pod", "a", "--wait=true", "--timeout=60s")
		eventually(t, 60*time.Second, n1.Name+" drops alpha's SVID", func() error {
			if got := ids(svids(n1.Name)); slices.Contains(got, alpha.String()) {
				return fmt.Errorf("%s still holds %v", n1.Name, got)
			}
			return nil
		})
		agent1 := token(sys, "membrane-agent", "--audience=membrane-ca", "--bound-object-kind=Pod", "--bound-object-name="+agentPod(n1.Name))
		if code, msg, _ := ca.sign(t, agent1, alpha, bundle); code != http.StatusForbidden {
			t.Fatalf("alpha after its last pod went: status %d (%s), want 403", code, msg)
		}
	})
}

// runMembrane runs the CLI on the machine (no cluster needed).
func runMembrane(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(shared.binDir, "membrane"), args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
