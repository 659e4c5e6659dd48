package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"math/big"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
	"github.com/membrane-mesh/membrane/mesh/l2announce"
)

// Setup shared by the Gateway, Ingress and LB IPAM tests.

// gatewayCluster starts a 2-node cluster of the test's own with the Gateway
// API (and, with ingress, the Ingress controller) enabled, and a kubectl
// for it.
func gatewayCluster(t *testing.T, prefix, podCIDR, serviceCIDR string, ingress bool) (*localcluster.State, *kube) {
	t.Helper()
	set := []string{"gatewayAPI.enabled=true"}
	if ingress {
		set = append(set, "ingressController.enabled=true")
	}
	s := ownCluster(t, localcluster.Options{
		Name: prefix + strconv.Itoa(os.Getpid()), Nodes: 2, PodCIDR: podCIDR, ServiceCIDR: serviceCIDR, HelmSet: set,
	})
	return s, &kube{t: t, kubeconfig: s.Layout().Kubeconfig(), kubectlPath: shared.toolsDir + "/bin/kubectl"}
}

// echoPod is the manifest of an echo-basic Pod (it answers with the request
// as it arrived, and its pod's name) on node, listening on 3000; labels is
// a flow mapping's content ("app: shop, version: v1").
func echoPod(ns, name, node, labels string) string {
	return fmt.Sprintf(`---
apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s, labels: {%s}}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 0
  containers:
  - name: echo
    image: gcr.io/k8s-staging-gateway-api/echo-basic:v1.4.1
    ports: [{name: http, containerPort: 3000}]
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
`, name, ns, labels, node)
}

// sleepPod is the manifest of a busybox Pod on node that does nothing (a
// client whose network namespace a test dials from); labels as echoPod's.
func sleepPod(ns, name, node, labels string) string {
	return fmt.Sprintf(`---
apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s, labels: {%s}}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 0
  containers:
  - {name: sleep, image: "busybox:1.36", command: [sleep, "3600"]}
`, name, ns, labels, node)
}

// echoService is the manifest of a Service of port 8080 (named http) to
// port 3000 of the pods selector (a flow mapping's content) selects.
func echoService(ns, name, selector string) string {
	return fmt.Sprintf(`---
apiVersion: v1
kind: Service
metadata: {name: %s, namespace: %s}
spec:
  selector: {%s}
  ports: [{name: http, port: 8080, targetPort: 3000}]
`, name, ns, selector)
}

// shopBackends is namespace ns with two echo backends, Services shop-v1
// and shop-v2, each with one pod of its name: shop-v1 on the first node,
// shop-v2 on the second.
func shopBackends(ns string, nodes []localcluster.NodeState) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n", ns)
	for i, v := range []string{"v1", "v2"} {
		b.WriteString(echoService(ns, "shop-"+v, "app: shop, version: "+v))
		b.WriteString(echoPod(ns, "shop-"+v, nodes[i].Name, "app: shop, version: "+v))
	}
	return b.String()
}

// tlsSecret is the manifest of a kubernetes.io/tls Secret.
func tlsSecret(ns, name string, certPEM, keyPEM []byte) string {
	return fmt.Sprintf(`---
apiVersion: v1
kind: Secret
metadata: {name: %s, namespace: %s}
type: kubernetes.io/tls
data: {tls.crt: %s, tls.key: %s}
`, name, ns, base64.StdEncoding.EncodeToString(certPEM), base64.StdEncoding.EncodeToString(keyPEM))
}

// tlsEchoPod is the manifest of an echo-basic pod name (label app: name) on
// node that serves HTTPS on port 8443 with the kubernetes.io/tls Secret
// secret, and of Service name in front of it (port 443, named https).
// With clientCA, the pod verifies the client certificates it is given
// against the Secret's ca.crt (and answers with them).
func tlsEchoPod(ns, name, node, secret string, clientCA ...bool) string {
	var env string
	if len(clientCA) > 0 && clientCA[0] {
		env = "\n    - {name: TLS_CLIENT_CACERTS, value: /etc/backend-tls/ca.crt}"
	}
	return fmt.Sprintf(`---
apiVersion: v1
kind: Pod
metadata: {name: %[2]s, namespace: %[1]s, labels: {app: %[2]s}}
spec:
  nodeName: %[3]s
  terminationGracePeriodSeconds: 0
  containers:
  - name: echo
    image: gcr.io/k8s-staging-gateway-api/echo-basic:v1.4.1
    ports: [{name: https, containerPort: 8443}]
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    - {name: TLS_SERVER_CERT, value: /etc/backend-tls/tls.crt}
    - {name: TLS_SERVER_PRIVKEY, value: /etc/backend-tls/tls.key}%[5]s
    volumeMounts: [{name: tls, mountPath: /etc/backend-tls}]
  volumes: [{name: tls, secret: {secretName: %[4]s}}]
---
apiVersion: v1
kind: Service
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  selector: {app: %[2]s}
  ports: [{name: https, port: 443, targetPort: 8443}]
`, ns, name, node, secret, env)
}

// backendTLSPolicy is the manifest of a BackendTLSPolicy named after the
// Service it targets: TLS with hostname, verified with the ca.crt of
// ConfigMap configMap.
func backendTLSPolicy(ns, service, configMap, hostname string) string {
	return fmt.Sprintf(`---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  targetRefs: [{group: "", kind: Service, name: %[2]s}]
  validation:
    caCertificateRefs: [{group: "", kind: ConfigMap, name: %[3]s}]
    hostname: %[4]s
`, ns, service, configMap, hostname)
}

// selfSigned is a certificate for host and its key, issued by a CA of its
// own (a client trusting the certificate itself verifies it).
func selfSigned(t *testing.T, host string) (certPEM, keyPEM []byte) {
	t.Helper()
	_, certPEM, keyPEM = newTestCA(t).issue(t, host)
	return certPEM, keyPEM
}

// testCA is a certificate authority of the test's own.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	PEM  []byte
}

func newTestCA(t *testing.T) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "membrane e2e CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{cert: cert, key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a certificate for hosts signed by the CA, for servers and
// clients (its common name the first host): its DER, and the certificate
// and its key, PEM.
func (ca testCA) issue(t *testing.T, hosts ...string) (der, certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: hosts[0]},
		DNSNames: hosts, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err = x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// waitGateway waits until the Gateway is Programmed with an address.
func waitGateway(t *testing.T, k *kube, ns, name string) gwv1.Gateway {
	t.Helper()
	var gw gwv1.Gateway
	eventually(t, gatewayTimeout, "Gateway "+ns+"/"+name+" Programmed with an address", func() error {
		gw = gwv1.Gateway{}
		if err := getJSON(k, &gw, "-n", ns, "get", "gateway", name); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(gw.Status.Conditions, "Programmed") || len(gw.Status.Addresses) == 0 {
			return fmt.Errorf("status %+v", gw.Status)
		}
		return nil
	})
	return gw
}

// waitIngressAddress waits until the Ingress has its address in
// status.loadBalancer.ingress.
func waitIngressAddress(t *testing.T, k *kube, ns, name string) netip.Addr {
	t.Helper()
	var a netip.Addr
	eventually(t, gatewayTimeout, "Ingress "+ns+"/"+name+" status.loadBalancer.ingress", func() error {
		var ing networkingv1.Ingress
		if err := getJSON(k, &ing, "-n", ns, "get", "ingress", name); err != nil {
			return err
		}
		if len(ing.Status.LoadBalancer.Ingress) != 1 {
			return fmt.Errorf("status %+v", ing.Status)
		}
		var err error
		a, err = netip.ParseAddr(ing.Status.LoadBalancer.Ingress[0].IP)
		return err
	})
	return a
}

// announcer waits until exactly one node, the holder of the address's
// Lease, has the address, and returns that node.
func announcer(t *testing.T, k *kube, s *localcluster.State, addr netip.Addr) localcluster.NodeState {
	t.Helper()
	var owner localcluster.NodeState
	eventually(t, gatewayTimeout, "the holder of "+addr.String()+"'s Lease, alone, has the address", func() error {
		h, err := leaseHolder(t, k, addr)
		if err != nil {
			return err
		}
		var owners []string
		for _, n := range s.Nodes {
			if nodeHasAddress(t, n.Netns, addr) {
				owners = append(owners, n.Name)
				owner = n
			}
		}
		if len(owners) != 1 || owners[0] != h {
			return fmt.Errorf("address %s is on nodes %v, Lease held by %q: want on the holder alone", addr, owners, h)
		}
		return nil
	})
	return owner
}

// leaseHolder is the holder of the L2 announcement Lease of addr.
func leaseHolder(t *testing.T, k *kube, addr netip.Addr) (string, error) {
	out, err := k.run(t.Context(), "", "-n", "kube-system", "get", "lease", l2announce.LeaseName(addr), "-o", "jsonpath={.spec.holderIdentity}")
	return strings.TrimSpace(out), err
}

// cutOffAndWait cuts node off the underlay (its link in the root namespace
// down; up again at cleanup) and returns the time until a GET of url from
// the host answers 200 again (each try bounded by 500 ms, 100 ms apart);
// the test fails when none does within 30 s.
func cutOffAndWait(t *testing.T, node localcluster.NodeState, url string) time.Duration {
	t.Helper()
	link, err := netlink.LinkByName(node.Link)
	if err != nil {
		t.Fatalf("link of %s: %v", node.Name, err)
	}
	t.Cleanup(func() { _ = netlink.LinkSetUp(link) })
	cut := time.Now()
	if err := netlink.LinkSetDown(link); err != nil {
		t.Fatalf("cut %s off the underlay: %v", node.Name, err)
	}
	t.Logf("node %s cut off the underlay", node.Name)
	for {
		if time.Since(cut) > 30*time.Second {
			t.Fatalf("no answer from %s within 30 s of cutting off %s", url, node.Name)
		}
		if code, err := statusOf(url, "", 500*time.Millisecond); err == nil && code == 200 {
			return time.Since(cut)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkAgentSecretAccess checks that the agents' service account may not
// read Secrets cluster-wide (nor the source Secret ns/name), only in the
// secrets namespace, and that the copy of ns/name there holds certPEM and
// keyPEM and nothing else. The API server's authorizer answers (kubectl
// auth can-i, and a real list impersonating the account).
func checkAgentSecretAccess(t *testing.T, k *kube, ns, name string, certPEM, keyPEM []byte) {
	t.Helper()
	const secretsNS = "membrane-secrets"
	agent := "--as=system:serviceaccount:kube-system:membrane-agent"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"list", "secrets", "--all-namespaces"}, "no"},
		{[]string{"watch", "secrets", "--all-namespaces"}, "no"},
		{[]string{"get", "secret/" + name, "-n", ns}, "no"},
		{[]string{"list", "secrets", "-n", ns}, "no"},
		{[]string{"list", "configmaps", "-n", ns}, "no"},
		{[]string{"list", "secrets", "-n", secretsNS}, "yes"},
		{[]string{"watch", "configmaps", "-n", secretsNS}, "yes"},
	} {
		// can-i exits 1 for "no": the answer is what it prints.
		out, _ := k.run(t.Context(), "", append([]string{"auth", "can-i", agent}, c.args...)...)
		if got := strings.TrimSpace(out); got != c.want {
			t.Errorf("membrane-agent can-i %s: %q, want %q", strings.Join(c.args, " "), got, c.want)
		}
	}
	if out, err := k.run(t.Context(), "", agent, "get", "secrets", "--all-namespaces"); err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Errorf("membrane-agent lists the cluster's Secrets: %v\n%s", err, out)
	}
	var copies corev1.SecretList
	if err := getJSON(k, &copies, agent, "-n", secretsNS, "get", "secrets"); err != nil {
		t.Fatalf("membrane-agent lists the copies: %v", err)
	}
	copyName := ns + "." + name
	var found bool
	for _, s := range copies.Items {
		if s.Name != copyName {
			continue
		}
		found = true
		if len(s.Data) != 2 || !bytes.Equal(s.Data["tls.crt"], certPEM) || !bytes.Equal(s.Data["tls.key"], keyPEM) {
			t.Errorf("copy %s/%s: keys %v; want tls.crt and tls.key equal to %s/%s's", secretsNS, copyName, slices.Sorted(maps.Keys(s.Data)), ns, name)
		}
		if s.Labels["gateway.membrane.io/source-namespace"] != ns || s.Annotations["gateway.membrane.io/source-name"] != name {
			t.Errorf("copy %s/%s: labels %v annotations %v, want its source %s/%s", secretsNS, copyName, s.Labels, s.Annotations, ns, name)
		}
	}
	if !found {
		t.Errorf("no copy %s/%s among %d Secrets", secretsNS, copyName, len(copies.Items))
	}
}

// statusOf GETs url with the Host header host (if any) within d, on a
// connection of its own, and returns the status.
func statusOf(url, host string, d time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	if host != "" {
		req.Host = host
	}
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}
