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
