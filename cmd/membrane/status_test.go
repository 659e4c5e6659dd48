package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/mesh/agentapi"
)

// A node whose agent could not write its CNI config says so below the
// table; one whose config is in place adds no line.
func TestPrintStatusCNI(t *testing.T) {
	var out bytes.Buffer
	g := &globals{stdout: &out, stderr: &out}
	list := []agentapi.NodeStatus{
		{Node: "node1", Ready: true, Encryption: "disabled", CNI: &agentapi.CNIStatus{Config: "/etc/cni/net.d/05-membrane.conflist", PodCIDR: "10.244.1.0/24"}},
		{Node: "node2", Ready: true, Encryption: "disabled", CNI: &agentapi.CNIStatus{Config: "/etc/cni/net.d/05-membrane.conflist", Error: "write the CNI config: read-only file system"}},
		{Node: "node3", Ready: true, Encryption: "disabled", CNI: &agentapi.CNIStatus{Config: "/etc/cni/net.d/05-membrane.conflist", PodCIDR: "10.244.3.0/24", Error: "install the CNI plugin into --cni-bin-dir: no space left on device"}},
		{Node: "node4", Ready: true, Encryption: "disabled"},
	}
	if err := printStatus(g, list, time.Now()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{
		"node2: CNI config /etc/cni/net.d/05-membrane.conflist not written: write the CNI config: read-only file system",
		"node3: CNI config /etc/cni/net.d/05-membrane.conflist (podCIDR 10.244.3.0/24): install the CNI plugin into --cni-bin-dir: no space left on device",
	}
	if len(lines) != 5+len(want) {
		t.Fatalf("status:\n%s", out.String())
	}
	for i, w := range want {
		if lines[5+i] != w {
			t.Errorf("line %d: %q, want %q", 5+i, lines[5+i], w)
		}
	}
}

// notReady names each node that keeps `status --wait` waiting, and why.
func TestNotReady(t *testing.T) {
	inSync := &agentapi.ProxyStatus{XDSStatus: agentapi.XDSStatus{Connected: true, Published: "v3", Acked: "v3"}}
	list := []agentapi.NodeStatus{
		{Node: "ok", Ready: true, Proxy: inSync},
		{Node: "no-l7", Ready: true},
		{Node: "syncing", Proxy: inSync},
		{Node: "no-envoy", Ready: true, Proxy: &agentapi.ProxyStatus{XDSStatus: agentapi.XDSStatus{Published: "v1"}}},
		{Node: "applying", Ready: true, Proxy: &agentapi.ProxyStatus{XDSStatus: agentapi.XDSStatus{Connected: true, Published: "v4", Acked: "v3"}}},
		{Node: "cni", Ready: true, CNI: &agentapi.CNIStatus{Config: "/etc/cni/net.d/05-membrane.conflist", Error: "read-only file system"}},
		{Node: "wg", Ready: true, WireGuard: &agentapi.WireGuardSummary{Error: "no device"}},
	}
	got := notReady([]string{"ok", "no-l7", "syncing", "no-envoy", "applying", "cni", "wg", "gone"}, list, errors.New("gone: 503"))
	want := []string{
		"syncing: agent syncing",
		"no-envoy: envoy not connected",
		"applying: envoy runs v3, not v4",
		"cni: CNI config /etc/cni/net.d/05-membrane.conflist not written: read-only file system",
		"wg: wireguard: no device",
		"gone: agent did not answer (gone: 503)",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("notReady:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := notReady([]string{"ok", "no-l7"}, list[:2], nil); len(got) != 0 {
		t.Errorf("ready nodes: %v", got)
	}
}
