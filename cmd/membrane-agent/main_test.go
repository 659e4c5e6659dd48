package main

import (
	"bytes"
	"strings"
	"testing"
)

// Bad cleanup flags are refused before anything is touched, naming the flag.
func TestCleanupFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"cleanup", "--bpf-pin-dir=relative"}, "--bpf-pin-dir"},
		{[]string{"cleanup", "--bpf-pin-dir=/sys/fs/bpf/membrane", "--state-dir=state"}, "--state-dir"},
		{[]string{"cleanup", "--cni-conf-dir=net.d"}, "--cni-conf-dir"},
		{[]string{"cleanup", "--cni-conf-dir=/etc/cni/net.d", "--cni-conf-name=membrane.conf"}, "--cni-conf-name"},
		{[]string{"cleanup", "--no-such-flag"}, "no-such-flag"},
		{[]string{"cleanup", "extra"}, "unexpected arguments"},
	} {
		var stderr bytes.Buffer
		err := run(t.Context(), append([]string{"membrane-agent"}, c.args...), &stderr)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error naming %s", c.args, err, c.want)
		}
	}
}

// The agent refuses --cni-conf-dir without --api-socket, before it reaches
// for the Kubernetes API.
func TestCNIFlags(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "") // never in-cluster: stop before the agent runs
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	var stderr bytes.Buffer
	err := run(t.Context(), []string{"membrane-agent", "--node-name=n1", "--cni-conf-dir=/etc/cni/net.d", "--cni-bin-dir=/opt/cni/bin"}, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--cni-conf-dir: needs --api-socket") {
		t.Errorf("--cni-conf-dir without --api-socket: %v", err)
	}
	err = run(t.Context(), []string{"membrane-agent", "--node-name=n1", "--cni-conf-dir=/etc/cni/net.d", "--cni-bin-dir=/opt/cni/bin", "--api-socket=/var/run/membrane/agent/api.sock"}, &stderr)
	if err == nil || !strings.Contains(err.Error(), "kubernetes client config") {
		t.Errorf("valid --cni-* flags: %v, want a stop at the Kubernetes client config", err)
	}
}
