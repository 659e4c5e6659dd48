package netconf

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParseDefaults(t *testing.T) {
	cfg, err := Parse([]byte(`{"cniVersion":"1.0.0","name":"membrane","type":"membrane-cni","podCIDR":"10.244.1.7/24"}`))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if cfg.DataDir != DefaultDataDir || cfg.MTU != DefaultMTU || cfg.LogFile != "" || cfg.AgentSocket != "" {
		t.Errorf("defaults = %+v", cfg)
	}
	if cfg.Prefix.String() != "10.244.1.0/24" {
		t.Errorf("Prefix = %s, want 10.244.1.0/24", cfg.Prefix)
	}
	if cfg.Name != "membrane" || cfg.CNIVersion != "1.0.0" {
		t.Errorf("standard fields = %q %q", cfg.Name, cfg.CNIVersion)
	}
}

func TestParseAllFields(t *testing.T) {
	cfg, err := Parse([]byte(`{"cniVersion":"1.0.0","name":"m","type":"membrane-cni","podCIDR":"10.244.1.0/24",
		"dataDir":"/tmp/x","mtu":1400,"logFile":"/tmp/log","agentSocket":"/run/membrane/agent.sock"}`))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if cfg.DataDir != "/tmp/x" || cfg.MTU != 1400 || cfg.LogFile != "/tmp/log" || cfg.AgentSocket != "/run/membrane/agent.sock" {
		t.Errorf("fields = %+v", cfg)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, conf string
		code       uint
		msg        string
	}{
		{"malformed", `{"name":`, types.ErrDecodingFailure, "decode network config"},
		{"wrong type", `{"name":"m","podCIDR":42}`, types.ErrDecodingFailure, "decode network config"},
		{"missing podCIDR", `{"name":"m"}`, types.ErrInvalidNetworkConfig, "podCIDR is required"},
		{"invalid podCIDR", `{"name":"m","podCIDR":"10.244.1.0/33"}`, types.ErrInvalidNetworkConfig, "not a valid CIDR"},
		{"not a CIDR", `{"name":"m","podCIDR":"banana"}`, types.ErrInvalidNetworkConfig, "not a valid CIDR"},
		{"IPv6", `{"name":"m","podCIDR":"fd00:10:244::/64"}`, types.ErrInvalidNetworkConfig, "IPv6 is not supported yet"},
		{"too small", `{"name":"m","podCIDR":"10.244.1.0/31"}`, types.ErrInvalidNetworkConfig, "too small"},
		{"bad mtu", `{"name":"m","podCIDR":"10.244.1.0/24","mtu":20}`, types.ErrInvalidNetworkConfig, "mtu 20 out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.conf))
			var cniErr *types.Error
			if !errors.As(err, &cniErr) {
				t.Fatalf("Parse = %v, want *types.Error", err)
			}
			if cniErr.Code != tt.code || !strings.Contains(cniErr.Msg, tt.msg) {
				t.Errorf("Parse = code %d %q, want code %d containing %q", cniErr.Code, cniErr.Msg, tt.code, tt.msg)
			}
		})
	}
}

func TestDecodeSkipsValidation(t *testing.T) {
	cfg, err := Decode([]byte(`{"name":"m","podCIDR":"fd00::/64"}`))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if cfg.DataDir != DefaultDataDir {
		t.Errorf("DataDir = %q, want default", cfg.DataDir)
	}
}
