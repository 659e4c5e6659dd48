package e2e

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
	"github.com/membrane-mesh/membrane/encryption/wireguard"
	"github.com/membrane-mesh/membrane/mesh/agentapi"
	"github.com/membrane-mesh/membrane/mesh/clustermesh"
)

// TestClusterMeshEncryption connects two clusters that both run WireGuard:
// each node peers with the other cluster's nodes, a global Service request
// from east to west's backend crosses the underlay only inside WireGuard;
// with west's encryption off east reports west's node as unencrypted and the
// traffic is plaintext (the capture's control), encrypted again once west is
// back on; disconnect removes the peers with the remote backends.
func TestClusterMeshEncryption(t *testing.T) {
	_ = cluster(t) // root and -short checks; the mesh uses clusters of its own
	pid := strconv.Itoa(os.Getpid())
	start := time.Now()
	es := ownCluster(t, localcluster.Options{Name: "e2e-wge-" + pid, Nodes: 1, PodCIDR: "10.1.0.0/16", ServiceCIDR: localcluster.DefaultServiceCIDR,
		ClusterID: 1, Encryption: localcluster.EncryptionWireGuard})
	ws := ownCluster(t, localcluster.Options{Name: "e2e-wgw-" + pid, Nodes: 1, PodCIDR: "10.2.0.0/16", ServiceCIDR: localcluster.DefaultServiceCIDR,
		ClusterID: 2, Encryption: localcluster.EncryptionWireGuard})
	t.Logf("clusters %s and %s (1 node each, WireGuard) up in %s", es.Name, ws.Name, time.Since(start).Round(time.Second))
	if err := localcluster.Link(es.Name, ws.Name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := localcluster.Unlink(es.Name, ws.Name); err != nil {
			t.Errorf("unlink: %v", err)
		}
	})
	kubectl := filepath.Join(shared.toolsDir, "bin", "kubectl")
	east := &meshCluster{name: es.Name, k: &kube{t: t, kubeconfig: es.Layout().Kubeconfig(), kubectlPath: kubectl}}
	west := &meshCluster{name: ws.Name, k: &kube{t: t, kubeconfig: ws.Layout().Kubeconfig(), kubectlPath: kubectl}}
	east.k.membrane("clustermesh", "connect", "--destination-kubeconfig", west.k.kubeconfig)
	for _, m := range []*meshCluster{east, west} {
		m.k.must(strings.NewReplacer("CLUSTER", m.name, "ANNOTATION", clustermesh.AnnotationGlobal).Replace(meshApp), "apply", "-f", "-")
	}
	for _, m := range []*meshCluster{east, west} {
		m.k.must("", "-n", "demo", "rollout", "status", "deployment/echo", "--timeout=120s")
		m.k.must("", "-n", "demo", "wait", "--for=condition=Ready", "pod/client", "--timeout=120s")
		m.client = m.k.pods("demo", "app=client")[0]
		m.url = "http://" + strings.TrimSpace(m.k.must("", "-n", "demo", "get", "svc", "echo", "-o", "jsonpath={.spec.clusterIP}")) + ":5678/"
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, m := range []*meshCluster{east, west} {
				t.Logf("%s: clustermesh status:\n%s\nencryption status:\n%s", m.name,
					m.k.membrane("clustermesh", "status"), m.k.membrane("encryption", "status"))
			}
		}
	})
	// Only west's backend serves east's client.
	east.k.must("", "-n", "demo", "annotate", "svc", "echo", clustermesh.AnnotationAffinity+"=remote")
	waitRemoteBackends(t, east, west.name, true, 60*time.Second)

	eastNode, westNode := es.Nodes[0], ws.Nodes[0]
	remotePeer := west.name + "/" + westNode.Name
	eventually(t, 60*time.Second, "east's node peers with west's node", func() error {
		p, err := meshPeer(t, east, remotePeer)
		if err != nil {
			return err
		}
		if p == nil {
			return fmt.Errorf("no peer %s", remotePeer)
		}
		if p.Endpoint != fmt.Sprintf("%s:%d", westNode.IP, wireguard.ListenPort) || !strings.Contains(strings.Join(p.AllowedIPs, ","), "10.2.") {
			return fmt.Errorf("peer %s: endpoint %s, allowed IPs %v", remotePeer, p.Endpoint, p.AllowedIPs)
		}
		return nil
	})
	eventually(t, 60*time.Second, "west's node peers with east's node", func() error {
		p, err := meshPeer(t, west, east.name+"/"+eastNode.Name)
		if err != nil {
			return err
		}
		if p == nil {
			return fmt.Errorf("no peer %s/%s", east.name, eastNode.Name)
		}
		return nil
	})
	eventually(t, 30*time.Second, "requests from east reach west's backend", func() error {
		if c := requests(t, east, 5); c[west.name] != 5 {
			return fmt.Errorf("%v", c)
		}
		return nil
	})

	// capture records east's node's underlay during 20 requests to west's
	// backend and counts the response body in plaintext and the packets
	// inside and outside WireGuard.
	capture := func(step string) (plain, tunnel, pods, app int, summary string) {
		var counts map[string]int
		pcap, summary := captureUnderlay(t, es, eastNode.Name, func() { counts = requests(t, east, 20) })
		if counts[west.name] != 20 {
			t.Errorf("%s: 20 requests from %s during the capture: %v, want all from %s", step, east.name, counts, west.name)
		}
		count := func(filter string) int {
			file := filepath.Join(t.TempDir(), "count.pcap")
			if err := os.WriteFile(file, pcap, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("tcpdump", "-nn", "-r", file, filter).Output()
			if err != nil {
				t.Fatalf("tcpdump -r %s: %v", filter, err)
			}
			return strings.Count(string(out), "\n")
		}
		plain = bytes.Count(pcap, []byte(west.name+"\n"))
		tunnel = count(fmt.Sprintf("host %s and host %s and udp port %d", eastNode.IP, westNode.IP, wireguard.ListenPort))
		pods = count("net 10.1.0.0/16 or net 10.2.0.0/16")
		app = count("tcp port 5678")
		t.Logf("%s: capture on %s eth0 during 20 requests to %s's backend: %d bytes, %d WireGuard packets %s<->%s, %d with pod addresses, %d of port 5678, plaintext response %d times",
			step, eastNode.Name, west.name, len(pcap), tunnel, eastNode.IP, westNode.IP, pods, app, plain)
		return plain, tunnel, pods, app, summary
	}
	encrypted := func(step string) {
		t.Helper()
		plain, tunnel, pods, app, summary := capture(step)
		if plain != 0 || tunnel == 0 || pods != 0 || app != 0 {
			t.Fatalf("%s: want the requests inside WireGuard only, got the above\n%s", step, summary)
		}
	}

	// The underlay of east's node carries the request and the response only
	// inside WireGuard: no pod address, no port 5678, no response body.
	encrypted("both encrypted")

	// Mixed: west turns encryption off. East drops the peer, reports the
	// node as unencrypted, and serves over the underlay in plaintext (the
	// capture's control).
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := localcluster.SetEncryption(t.Context(), log, shared.toolsDir, ws.Name, ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "east reports west's node as unencrypted", func() error {
		st, err := meshEncryption(t, east)
		if err != nil {
			return err
		}
		if p := peerOf(st, remotePeer); p != nil {
			return fmt.Errorf("peer %s still configured", remotePeer)
		}
		for _, s := range st[0].Skipped {
			if s.Node == remotePeer && strings.Contains(s.Reason, "no WireGuard key") {
				t.Logf("mixed: %s reports %s: %s", eastNode.Name, s.Node, s.Reason)
				return nil
			}
		}
		return fmt.Errorf("skipped peers %v", st[0].Skipped)
	})
	eventually(t, 60*time.Second, "requests from east reach west's backend unencrypted", func() error {
		if c := requests(t, east, 5); c[west.name] != 5 {
			return fmt.Errorf("%v", c)
		}
		return nil
	})
	if plain, _, _, _, summary := capture("west unencrypted"); plain == 0 {
		t.Fatalf("west unencrypted: the capture should hold the plaintext response\n%s", summary)
	}

	// West encrypts again: the peer is back and the traffic inside it.
	if err := localcluster.SetEncryption(t.Context(), log, shared.toolsDir, ws.Name, localcluster.EncryptionWireGuard); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "east's node peers with west's node again", func() error {
		st, err := meshEncryption(t, east)
		if err != nil {
			return err
		}
		if peerOf(st, remotePeer) == nil {
			return fmt.Errorf("no peer %s", remotePeer)
		}
		return nil
	})
	eventually(t, 60*time.Second, "requests from east reach west's backend again", func() error {
		if c := requests(t, east, 5); c[west.name] != 5 {
			return fmt.Errorf("%v", c)
		}
		return nil
	})
	encrypted("both encrypted again")

	// Disconnect: the remote backends and the peers go on both sides.
	start = time.Now()
	east.k.membrane("clustermesh", "disconnect", "--destination-kubeconfig", west.k.kubeconfig)
	waitRemoteBackends(t, east, west.name, false, 30*time.Second)
	waitRemoteBackends(t, west, east.name, false, 30*time.Second)
	for _, c := range []struct {
		m    *meshCluster
		peer string
	}{{east, remotePeer}, {west, east.name + "/" + eastNode.Name}} {
		eventually(t, 30*time.Second, c.m.name+": peer "+c.peer+" removed", func() error {
			p, err := meshPeer(t, c.m, c.peer)
			if err != nil {
				return err
			}
			if p != nil {
				return fmt.Errorf("peer %s still configured", c.peer)
			}
			return nil
		})
	}
	t.Logf("disconnect: remote backends and WireGuard peers gone on both sides %s after disconnect", time.Since(start).Round(100*time.Millisecond))
	east.k.must("", "-n", "demo", "annotate", "svc", "echo", clustermesh.AnnotationAffinity+"-")
	if c := requests(t, east, 10); c[east.name] != 10 {
		t.Errorf("after disconnect: %v, want all from %s", c, east.name)
	}
}

// meshPeer is m's node's WireGuard peer of that name (nil if none).
func meshPeer(t *testing.T, m *meshCluster, name string) (*agentapi.PeerStatus, error) {
	t.Helper()
	st, err := meshEncryption(t, m)
	if err != nil {
		return nil, err
	}
	return peerOf(st, name), nil
}

// peerOf is the peer of that name of any node (nil if none).
func peerOf(list []agentapi.EncryptionStatus, name string) *agentapi.PeerStatus {
	for _, st := range list {
		if st.WireGuard == nil {
			continue
		}
		for _, p := range st.WireGuard.Peers {
			if p.Node == name {
				return &p
			}
		}
	}
	return nil
}

// meshEncryption is the encryption status of every node of m, each with
// its WireGuard device.
func meshEncryption(t *testing.T, m *meshCluster) ([]agentapi.EncryptionStatus, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(shared.binDir, "membrane"), "--kubeconfig", m.k.kubeconfig, "encryption", "status", "-o", "json")
	cmd.Stderr = &stderr
	raw, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("membrane encryption status: %v: %s", err, stderr.String())
	}
	var list []agentapi.EncryptionStatus
	mustJSON(t, string(raw), &list)
	if len(list) == 0 {
		return nil, fmt.Errorf("no node answered")
	}
	for _, st := range list {
		if st.WireGuard == nil {
			return nil, fmt.Errorf("node %s: no WireGuard device (%s)", st.Node, st.Error)
		}
	}
	return list, nil
}
