package tproxy

import (
	"net/netip"
	"testing"
)

func TestNewConfigIsValid(t *testing.T) {
	c := NewConfig(15001)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.ToProxyMark != 0x3a990200 {
		t.Errorf("to-proxy mark %#x, want 0x3a990200", c.ToProxyMark)
	}
}

func TestValidate(t *testing.T) {
	for name, mutate := range map[string]func(*Config){
		"zero port":              func(c *Config) { c.Port = 0 },
		"no listen address":      func(c *Config) { c.ListenAddr = netip.Addr{} },
		"IPv6 listen address":    func(c *Config) { c.ListenAddr = netip.IPv6Loopback() },
		"zero mask":              func(c *Config) { c.MarkMask = 0 },
		"zero local mark":        func(c *Config) { c.LocalMark = 0 },
		"local mark out of mask": func(c *Config) { c.LocalMark = 0x1200 },
		"zero to-proxy mark":     func(c *Config) { c.ToProxyMark = 0 },
		"to-proxy is local":      func(c *Config) { c.ToProxyMark = c.LocalMark },
		"zero table":             func(c *Config) { c.Table = 0 },
		"main table":             func(c *Config) { c.Table = 254 },
		"local table":            func(c *Config) { c.Table = 255 },
		"zero priority":          func(c *Config) { c.RulePriority = 0 },
		"main rule priority":     func(c *Config) { c.RulePriority = 32766 },
		"further port zero":      func(c *Config) { c.MorePorts = []uint16{0} },
		"further port is port":   func(c *Config) { c.MorePorts = []uint16{15001} },
	} {
		t.Run(name, func(t *testing.T) {
			c := NewConfig(15001)
			mutate(&c)
			if err := c.Validate(); err == nil {
				t.Errorf("Validate(%+v) = nil, want an error", c)
			}
		})
	}
}
