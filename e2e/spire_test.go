package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
	"github.com/membrane-mesh/membrane/mesh/agentapi"
)

// TestSPIREIdentities: with --identity-provider spire a SPIRE server and
// per-node SPIRE agents (k8s_psat) issue the workload SVIDs: the operator
// registers one entry per service account and node with pods, each
// Membrane agent fetches exactly its pods' SVIDs through the SPIRE agent's
// Delegated Identity API, and pods get their own over the Workload API.
func TestSPIREIdentities(t *testing.T) {
	cluster(t) // skips like every end-to-end test
	start := time.Now()
	s := ownCluster(t, localcluster.Options{
		Name: "e2e-spr-" + strconv.Itoa(os.Getpid()), Nodes: 2, PodCIDR: "10.243.0.0/16", ServiceCIDR: "10.93.0.0/16",
		IdentityProvider: localcluster.IdentitySPIRE,
		HelmSet:          []string{"authentication.mutual.svidTTL=2m"},
	})
	t.Logf("cluster up in %s", time.Since(start).Round(time.Second))
	k := &kube{t: t, kubeconfig: s.Layout().Kubeconfig(), kubectlPath: filepath.Join(shared.toolsDir, "bin", "kubectl")}
	n1, n2 := s.Nodes[0], s.Nodes[1]
	k.must(spiffePods(n1.Name, n2.Name), "apply", "-f", "-")
	k.must("", "-n", spiffeNS, "wait", "--for=condition=Ready", "pod/a", "pod/b", "pod/c", "--timeout=120s")

	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	alpha := spiffeid.RequireFromString("spiffe://cluster.local/ns/spiffe/sa/alpha")
	beta := spiffeid.RequireFromString("spiffe://cluster.local/ns/spiffe/sa/beta")
	const sys = "kube-system"

	// SPIRE's trust bundle, as its k8sbundle notifier publishes it.
	spireCAs := map[string]bool{}
	eventually(t, 90*time.Second, "the SPIRE server publishes its trust bundle", func() error {
		out, err := k.run(t.Context(), "", "-n", sys, "get", "configmap", "spire-bundle", "-o", "jsonpath={.data.bundle\\.crt}")
		if err != nil {
			return err
		}
		b, err := x509bundle.Parse(td, []byte(out))
		if err != nil {
			return err
		}
		for _, c := range b.X509Authorities() {
			sum := sha256.Sum256(c.Raw)
			spireCAs[hex.EncodeToString(sum[:])] = true
		}
		return nil
	})
	// The local nodes fill a ConfigMap volume when the pod starts (a
	// kubelet refreshes it): the SPIRE agents that started before the
	// bundle was published start again to read it.
	k.must("", "-n", sys, "delete", "pod", "-l", "k8s-app=spire-agent", "--wait=true", "--timeout=60s")
	spire := func(args ...string) (string, error) { return spireServer(t.Context(), k, args...) }
	svids := func(node string) agentapi.SVIDList { return nodeSVIDs(t, k, node) }

	t.Run("the operator registers one entry per service account and node", func(t *testing.T) {
		for _, c := range []struct {
			id   spiffeid.ID
			node string
		}{{alpha, n1.Name}, {beta, n2.Name}} {
			eventually(t, 60*time.Second, "entry of "+c.id.String(), func() error {
				out, err := spire("entry", "show", "-spiffeID", c.id.String())
				if err != nil {
					return fmt.Errorf("%v: %s", err, out)
				}
				if strings.Count(out, "Entry ID") != 1 || !strings.Contains(out, "spiffe://cluster.local/membrane/node/"+c.node) ||
					!strings.Contains(out, "k8s:sa:"+strings.TrimPrefix(c.id.Path(), "/ns/spiffe/sa/")) {
					return fmt.Errorf("want one entry parented to %s's alias: %s", c.node, out)
				}
				return nil
			})
		}
		out, _ := spire("agent", "list")
		t.Logf("spire-server agent list:\n%s", out)
	})

	t.Run("agents hold exactly their pods' SVIDs, issued by SPIRE", func(t *testing.T) {
		for _, c := range []struct {
			node      string
			have, not spiffeid.ID
		}{{n1.Name, alpha, beta}, {n2.Name, beta, alpha}} {
			eventually(t, 90*time.Second, c.node+" holds "+c.have.String(), func() error {
				l := svids(c.node)
				var got []string
				for _, s := range l.SVIDs {
					got = append(got, s.SPIFFEID)
					if !spireCAs[s.Issuer] {
						return fmt.Errorf("%s's SVID %s is issued by %.12s, not a CA of SPIRE's bundle", c.node, s.SPIFFEID, s.Issuer)
					}
				}
				if slices.Contains(got, c.not.String()) {
					t.Fatalf("%s holds %s, whose pods run elsewhere", c.node, c.not)
				}
				if !slices.Contains(got, c.have.String()) {
					return fmt.Errorf("%s holds %v", c.node, got)
				}
				for _, ca := range l.Bundle {
					if !spireCAs[ca.Fingerprint] {
						return fmt.Errorf("%s trusts %.12s, not in SPIRE's bundle", c.node, ca.Fingerprint)
					}
				}
				return nil
			})
		}
		t.Logf("membrane identity svids:\n%s", k.membrane("identity", "svids"))
	})

	t.Run("a pod fetches its own SVID over the Workload API", func(t *testing.T) {
		checkOwnSVIDs(t, k, spiffeNS, podSVIDWant{"a", alpha}, podSVIDWant{"b", beta})
	})

	t.Run("the entry and the SVID go with the last pod", func(t *testing.T) {
		k.must("", "-n", spiffeNS, "delete", "pod", "b", "--wait=true", "--timeout=60s")
		eventually(t, 60*time.Second, "beta's entry removed", func() error {
			out, err := spire("entry", "show", "-spiffeID", beta.String())
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			if strings.Contains(out, "Entry ID") {
				return fmt.Errorf("still registered: %s", out)
			}
			return nil
		})
		eventually(t, 60*time.Second, n2.Name+" drops beta", func() error {
			for _, s := range svids(n2.Name).SVIDs {
				if s.SPIFFEID == beta.String() {
					return fmt.Errorf("%s still holds %s", n2.Name, beta)
				}
			}
			return nil
		})
	})
}
