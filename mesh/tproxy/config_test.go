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
		"extra zero port":        func(c *Config) { c.Extra = []Listener{{ToProxyMark: 0x27150200, UDP: true}} },
		"extra no protocol":      func(c *Config) { c.Extra = []Listener{{Port: 10005, ToProxyMark: 0x27150200}} },
		"extra same mark":        func(c *Config) { c.Extra = []Listener{{Port: 10005, ToProxyMark: c.ToProxyMark, UDP: true}} },
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

func TestValidateExtraOnly(t *testing.T) {
	c := NewConfig(15001)
	c.Port, c.ToProxyMark = 0, 0
	c.Extra = []Listener{{Port: 10053, ToProxyMark: 10053<<16 | DefaultLocalMark, TCP: true, UDP: true}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := len(ruleExprs(c)); got != 4 {
		t.Errorf("%d rules, want 4 (return to proxy, unmarked, DNS over TCP and UDP)", got)
	}
}
