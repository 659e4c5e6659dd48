package bench

import (
	"context"
	"net/netip"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
	"github.com/membrane-mesh/membrane/e2e/netns"
	"github.com/membrane-mesh/membrane/e2e/testenv"
)

// TestNFTWatch checks the benchmark's rule watch on rules shaped like
// kube-proxy's, in a fresh network namespace.
func TestNFTWatch(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped with -short: creates a network namespace")
	}
	testenv.RequireRoot(t, "creates a network namespace")
	for _, tool := range []string{"nsenter", "iptables", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(t, tool+" not installed: run `make tools`")
		}
	}
	ns := filepath.Join(t.TempDir(), "ns")
	if err := netns.Create(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Remove(ns) })
	in := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("nsenter", append([]string{"--net=" + ns, "--"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	vip := netip.MustParseAddr("10.96.7.9")
	other := netip.MustParseAddr("10.96.7.10")

	t.Run("iptables", func(t *testing.T) {
		w, err := watchKubeProxyRules(ns, "iptables")
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		in("iptables", "-t", "nat", "-N", "KUBE-SERVICES")
		in("iptables", "-t", "filter", "-N", "KUBE-SERVICES")
		// Same VIP in the wrong table, then another VIP, then the one.
		in("iptables", "-t", "filter", "-A", "KUBE-SERVICES", "-d", vip.String()+"/32", "-p", "tcp", "--dport", "8080", "-j", "REJECT")
		in("iptables", "-t", "nat", "-A", "KUBE-SERVICES", "-d", other.String()+"/32", "-p", "tcp", "-m", "comment", "--comment", "ns/b:http cluster IP", "-m", "tcp", "--dport", "8080", "-j", "RETURN")
		before := time.Now()
		in("iptables", "-t", "nat", "-A", "KUBE-SERVICES", "-d", vip.String()+"/32", "-p", "tcp", "-m", "comment", "--comment", "ns/a:http cluster IP", "-m", "tcp", "--dport", "8080", "-j", "RETURN")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		at, err := w.wait(ctx, vip)
		if err != nil {
			t.Fatal(err)
		}
		if at.Before(before) {
			t.Errorf("matched a rule announced before the VIP's (%s < %s)", at, before)
		}
		if r, err := rules(ctx, nodeIn(ns), "iptables"); err != nil || !hasVIP(r, "iptables", netip.AddrPortFrom(vip, 8080)) {
			t.Errorf("hasVIP: %v\n%s", err, r)
		} else if pos, total := servicesPosition(r, vip); pos != 2 || total != 2 {
			t.Errorf("servicesPosition = %d/%d, want 2/2\n%s", pos, total, r)
		} else if last, pos, total := lastServiceRule(r, 8080); last != vip || pos != 2 || total != 2 {
			t.Errorf("lastServiceRule = %s %d/%d, want %s 2/2\n%s", last, pos, total, vip, r)
		}
	})

	t.Run("nftables", func(t *testing.T) {
		w, err := watchKubeProxyRules(ns, "nftables")
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		in("nft", "add table ip kube-proxy")
		in("nft", "add chain ip kube-proxy svc")
		in("nft", "add map ip kube-proxy no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; }")
		in("nft", "add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }")
		in("nft", "add element ip kube-proxy no-endpoint-services { "+vip.String()+" . tcp . 8080 : drop }")
		before := time.Now()
		in("nft", "add element ip kube-proxy service-ips { "+vip.String()+" . tcp . 8080 : goto svc }")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		at, err := w.wait(ctx, vip)
		if err != nil {
			t.Fatal(err)
		}
		if at.Before(before) {
			t.Errorf("matched an element announced before the VIP's (%s < %s)", at, before)
		}
		if r, err := rules(ctx, nodeIn(ns), "nftables"); err != nil || !hasVIP(r, "nftables", netip.AddrPortFrom(vip, 8080)) {
			t.Errorf("hasVIP: %v\n%s", err, r)
		}
	})
}

func nodeIn(ns string) localcluster.NodeState { return localcluster.NodeState{Name: "test", Netns: ns} }
