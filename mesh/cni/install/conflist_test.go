package install

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"sigs.k8s.io/yaml"

	"github.com/membrane-mesh/membrane/mesh/cni/netconf"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// goldenInput is a case's Options.
type goldenInput struct {
	PodCIDR     netip.Prefix `json:"podCIDR"`
	DataDir     string       `json:"dataDir"`
	LogFile     string       `json:"logFile"`
	AgentSocket string       `json:"agentSocket"`
	MTU         int          `json:"mtu"`
}

// TestConflistGolden renders testdata/<case>.in.yaml and compares the
// result with <case>.conflist (go test ./mesh/cni/install -update rewrites
// them). Every rendering is a conflist the CNI library loads, and its
// plugin entry, as the runtime hands it to the plugin, is one that
// membrane-cni accepts with the same fields.
func TestConflistGolden(t *testing.T) {
	ins, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil || len(ins) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, in := range ins {
		name := strings.TrimSuffix(filepath.Base(in), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			var input goldenInput
			if err := yaml.UnmarshalStrict(raw, &input); err != nil {
				t.Fatalf("parse %s: %v", in, err)
			}
			opts := Options(input)
			got, err := Conflist(opts)
			if err != nil {
				t.Fatalf("Conflist: %v", err)
			}
			out := filepath.Join("testdata", name+".conflist")
			if *update {
				if err := os.WriteFile(out, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(out)
			if err != nil {
				t.Fatalf("read golden (run with -update to create it): %v", err)
			}
			if string(got) != string(want) {
				t.Errorf("Conflist differs from %s:\ngot:\n%s\nwant:\n%s", out, got, want)
			}
			checkPluginAccepts(t, got, opts)
		})
	}
}

// checkPluginAccepts loads conf as a runtime does and parses its plugin
// entry as membrane-cni does.
func checkPluginAccepts(t *testing.T, conf []byte, o Options) {
	t.Helper()
	list, err := libcni.NetworkConfFromBytes(conf)
	if err != nil {
		t.Fatalf("the CNI library rejects the conflist: %v", err)
	}
	if list.Name != Network || list.CNIVersion != CNIVersion || len(list.Plugins) != 1 {
		t.Fatalf("conflist %q version %q with %d plugins", list.Name, list.CNIVersion, len(list.Plugins))
	}
	p, err := libcni.InjectConf(list.Plugins[0], map[string]any{"name": list.Name, "cniVersion": list.CNIVersion})
	if err != nil {
		t.Fatal(err)
	}
	if p.Network.Type != PluginType {
		t.Errorf("plugin type %q, want %q", p.Network.Type, PluginType)
	}
	cfg, err := netconf.Parse(p.Bytes)
	if err != nil {
		t.Fatalf("membrane-cni rejects its entry: %v\n%s", err, p.Bytes)
	}
	mtu := o.MTU
	if mtu == 0 {
		mtu = netconf.DefaultMTU
	}
	if cfg.Prefix != o.PodCIDR.Masked() || cfg.DataDir != o.DataDir || cfg.LogFile != o.LogFile || cfg.AgentSocket != o.AgentSocket || cfg.MTU != mtu {
		t.Errorf("membrane-cni reads %+v, want the fields of %+v", cfg, o)
	}
}

func TestConflistRejects(t *testing.T) {
	good := Options{PodCIDR: netip.MustParsePrefix("10.244.1.0/24"), DataDir: "/var/lib/membrane/cni",
		LogFile: "/var/run/membrane/cni.log", AgentSocket: "/var/run/membrane/agent/api.sock"}
	for _, c := range []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"no PodCIDR", func(o *Options) { o.PodCIDR = netip.Prefix{} }, "podCIDR: missing"},
		{"IPv6 PodCIDR", func(o *Options) { o.PodCIDR = netip.MustParsePrefix("fd00:10:244::/64") }, "podCIDR fd00:10:244::/64: not IPv4"},
		{"IPv4-mapped PodCIDR", func(o *Options) { o.PodCIDR = netip.MustParsePrefix("::ffff:10.244.1.0/120") }, "not IPv4"},
		{"PodCIDR too small", func(o *Options) { o.PodCIDR = netip.MustParsePrefix("10.244.1.0/31") }, "podCIDR 10.244.1.0/31: too small"},
		{"no data dir", func(o *Options) { o.DataDir = "" }, `dataDir "": must be an absolute path`},
		{"relative data dir", func(o *Options) { o.DataDir = "var/lib/cni" }, `dataDir "var/lib/cni": must be an absolute path`},
		{"relative log file", func(o *Options) { o.LogFile = "cni.log" }, `logFile "cni.log": must be an absolute path`},
		{"relative agent socket", func(o *Options) { o.AgentSocket = "api.sock" }, `agentSocket "api.sock": must be an absolute path`},
		{"MTU too small", func(o *Options) { o.MTU = 67 }, "mtu 67: want 68 to 65535"},
		{"MTU too large", func(o *Options) { o.MTU = 65536 }, "mtu 65536: want 68 to 65535"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := good
			c.edit(&o)
			b, err := Conflist(o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Conflist(%+v) = %q, %v; want an error containing %q", o, b, err, c.want)
			}
		})
	}
	if _, err := Conflist(good); err != nil {
		t.Fatalf("Conflist(%+v): %v", good, err)
	}
}
