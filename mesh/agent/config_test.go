package agent

import (
	"strings"
	"testing"
)

func TestFlowBufferSizeConfig(t *testing.T) {
	base := Config{NodeName: "n1", BPFPinDir: "/sys/fs/bpf/m", CgroupPath: "/sys/fs/cgroup", APIAddr: ":9890"}
	for _, n := range []int{0, 1, 4096, MaxFlowBufferSize} {
		c := base
		c.FlowBufferSize = n
		if err := c.Validate(); err != nil {
			t.Errorf("%d: %v", n, err)
		}
	}
	for _, n := range []int{-1, MaxFlowBufferSize + 1} {
		c := base
		c.FlowBufferSize = n
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--flow-buffer-size") {
			t.Errorf("%d: want an error naming --flow-buffer-size, got %v", n, err)
		}
	}
}

func TestGatewaySecretsNamespaceConfig(t *testing.T) {
	base := Config{NodeName: "n1", BPFPinDir: "/sys/fs/bpf/m", CgroupPath: "/sys/fs/cgroup", APIAddr: ":9890", ProxyPort: 15001, XDSAddr: "127.0.0.1:9891", GatewayAPI: true}
	for ns, ok := range map[string]bool{"membrane-secrets": true, "gw": true, "": false, "Upper": false, "a.b": false} {
		c := base
		c.GatewaySecretsNamespace = ns
		err := c.Validate()
		if ok != (err == nil) || (err != nil && !strings.Contains(err.Error(), "--gateway-secrets-namespace")) {
			t.Errorf("%q: %v, want valid %v", ns, err, ok)
		}
	}
	c := base
	c.GatewayAPI = false // not read without the Gateway API
	if err := c.Validate(); err != nil {
		t.Errorf("no Gateway API, no namespace: %v", err)
	}
}
