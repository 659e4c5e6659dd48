package operator

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func spirePod(ns, name, sa, node string, phase corev1.PodPhase, hostNet bool) corev1.Pod {
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.PodSpec{ServiceAccountName: sa, NodeName: node, HostNetwork: hostNet},
		Status:     corev1.PodStatus{Phase: phase},
	}
}

func entryStrings(es []*types.Entry) map[string]bool {
	out := map[string]bool{}
	for _, e := range es {
		out[entryKey(e)] = true
	}
	return out
}

func TestDesiredEntries(t *testing.T) {
	cfg := SPIREConfig{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), Cluster: "c1",
		AgentNamespace: "kube-system", AgentServiceAccount: "membrane-agent"}
	pods := []corev1.Pod{
		spirePod("default", "a1", "frontend", "n1", corev1.PodRunning, false),
		spirePod("default", "a2", "frontend", "n1", corev1.PodRunning, false), // same SA, same node: one entry
		spirePod("default", "b", "backend", "n2", corev1.PodRunning, false),
		spirePod("default", "c", "", "n2", corev1.PodPending, false),       // default SA
		spirePod("default", "d", "done", "n1", corev1.PodSucceeded, false), // terminated: none
		spirePod("default", "e", "hostnet", "n1", corev1.PodRunning, true), // host network: none
		spirePod("default", "f", "unscheduled", "", corev1.PodPending, false),
		spirePod("kube-system", "agent-n1", "membrane-agent", "n1", corev1.PodRunning, true),
	}
	got := DesiredEntries(cfg, pods)
	want := []*types.Entry{
		{SpiffeId: &types.SPIFFEID{TrustDomain: "example.org", Path: "/membrane/node/n1"}, ParentId: &types.SPIFFEID{TrustDomain: "example.org", Path: "/spire/server"},
			Selectors: []*types.Selector{{Type: "k8s_psat", Value: "cluster:c1"}, {Type: "k8s_psat", Value: "agent_node_name:n1"}}},
		{SpiffeId: &types.SPIFFEID{TrustDomain: "example.org", Path: "/membrane/node/n2"}, ParentId: &types.SPIFFEID{TrustDomain: "example.org", Path: "/spire/server"},
			Selectors: []*types.Selector{{Type: "k8s_psat", Value: "agent_node_name:n2"}, {Type: "k8s_psat", Value: "cluster:c1"}}},
		{SpiffeId: &types.SPIFFEID{TrustDomain: "example.org", Path: "/ns/default/sa/frontend"}, ParentId: &types.SPIFFEID{TrustDomain: "example.org", Path: "/membrane/node/n1"},
			Selectors: []*types.Selector{{Type: "k8s", Value: "ns:default"}, {Type: "k8s", Value: "sa:frontend"}}},
		{SpiffeId: &types.SPIFFEID{TrustDomain: "example.org", Path: "/ns/default/sa/backend"}, ParentId: &types.SPIFFEID{TrustDomain: "example.org", Path: "/membrane/node/n2"},
			Selectors: []*types.Selector{{Type: "k8s", Value: "ns:default"}, {Type: "k8s", Value: "sa:backend"}}},
		{SpiffeId: &types.SPIFFEID{TrustDomain: "example.org", Path: "/ns/default/sa/default"}, ParentId: &types.SPIFFEID{TrustDomain: "example.org", Path: "/membrane/node/n2"},
			Selectors: []*types.Selector{{Type: "k8s", Value: "ns:default"}, {Type: "k8s", Value: "sa:default"}}},
		{SpiffeId: &types.SPIFFEID{TrustDomain: "example.org", Path: "/membrane/agent"}, ParentId: &types.SPIFFEID{TrustDomain: "example.org", Path: "/membrane/node/n1"},
			Selectors: []*types.Selector{{Type: "k8s", Value: "ns:kube-system"}, {Type: "k8s", Value: "sa:membrane-agent"}}},
	}
	g, w := entryStrings(got), entryStrings(want)
	if len(got) != len(want) {
		t.Errorf("got %d entries, want %d: %v", len(got), len(want), g)
	}
	for k := range w {
		if !g[k] {
			t.Errorf("missing entry %s", k)
		}
	}
	for k := range g {
		if !w[k] {
			t.Errorf("unexpected entry %s", k)
		}
	}
	for _, e := range got {
		if e.Hint != SPIREEntryHint {
			t.Errorf("entry %s: hint %q, want %q", entryKey(e), e.Hint, SPIREEntryHint)
		}
	}
}

func TestDiffEntries(t *testing.T) {
	e := func(id, path, parent string, hint string) *types.Entry {
		return &types.Entry{Id: id, Hint: hint, SpiffeId: &types.SPIFFEID{TrustDomain: "td", Path: path}, ParentId: &types.SPIFFEID{TrustDomain: "td", Path: parent},
			Selectors: []*types.Selector{{Type: "k8s", Value: "sa:x"}}}
	}
	have := []*types.Entry{
		e("1", "/ns/a/sa/x", "/membrane/node/n1", SPIREEntryHint), // kept
		e("2", "/ns/a/sa/x", "/membrane/node/n1", SPIREEntryHint), // duplicate: deleted
		e("3", "/ns/a/sa/y", "/membrane/node/n1", SPIREEntryHint), // no pod left: deleted
		e("4", "/ns/a/sa/z", "/membrane/node/n1", ""),             // not ours: kept
	}
	want := []*types.Entry{
		e("", "/ns/a/sa/x", "/membrane/node/n1", SPIREEntryHint),
		e("", "/ns/a/sa/x", "/membrane/node/n2", SPIREEntryHint), // new
	}
	create, del := DiffEntries(have, want)
	if len(create) != 1 || create[0].ParentId.Path != "/membrane/node/n2" {
		t.Errorf("create = %v, want the n2 entry only", create)
	}
	if len(del) != 2 || del[0] != "2" || del[1] != "3" {
		t.Errorf("delete = %v, want [2 3]", del)
	}
}
