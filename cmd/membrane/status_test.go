package main

import (
	"bytes"
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
