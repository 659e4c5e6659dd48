package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/membrane-mesh/membrane/mesh/cni/netconf"
)

// cniFixture is an installer on temporary directories, with a Node lister
// the test fills.
type cniFixture struct {
	c               *cniInstaller
	nodes           cache.Indexer
	logs            *bytes.Buffer
	confDir, binDir string
	plugin          string
}

func newCNIFixture(t *testing.T) *cniFixture {
	t.Helper()
	root := t.TempDir()
	f := &cniFixture{
		nodes:   cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}),
		logs:    &bytes.Buffer{},
		confDir: filepath.Join(root, "etc/cni/net.d"),
		binDir:  filepath.Join(root, "opt/cni/bin"),
		plugin:  filepath.Join(root, "usr/bin/membrane-cni"),
	}
	if err := os.MkdirAll(filepath.Dir(f.plugin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.plugin, []byte("#!/bin/sh\n# membrane-cni v1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := Config{NodeName: "node1", APISocket: "/var/run/membrane/agent/api.sock", CNI: CNIConfig{
		ConfDir: f.confDir, BinDir: f.binDir, ConfName: DefaultCNIConfName, Plugin: f.plugin,
		DataDir: DefaultCNIDataDir, LogFile: DefaultCNILogFile,
	}}
	f.c = newCNIInstaller(slog.New(slog.NewTextHandler(f.logs, nil)), cfg, corelisters.NewNodeLister(f.nodes))
	return f
}

func (f *cniFixture) setNode(t *testing.T, podCIDR string, podCIDRs ...string) {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}, Spec: corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: podCIDRs}}
	if err := f.nodes.Update(n); err != nil {
		t.Fatal(err)
	}
}

func (f *cniFixture) confPath() string { return filepath.Join(f.confDir, DefaultCNIConfName) }

// conf parses the installed conflist's plugin entry as membrane-cni gets
// it from the runtime: with the network's name and version.
func (f *cniFixture) conf(t *testing.T) netconf.Config {
	t.Helper()
	raw, err := os.ReadFile(f.confPath())
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(raw, &list); err != nil || list.Name != "membrane" || len(list.Plugins) != 1 {
		t.Fatalf("conflist %v:\n%s", err, raw)
	}
	entry := list.Plugins[0]
	entry["name"], entry["cniVersion"] = list.Name, list.CNIVersion
	b, err := json.Marshal(entry)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := netconf.Parse(b)
	if err != nil {
		t.Fatalf("membrane-cni rejects the conflist: %v\n%s", err, raw)
	}
	return cfg
}

func TestCNIInstallWaitsForPodCIDR(t *testing.T) {
	f := newCNIFixture(t)
	if st := f.c.status(); st.Config != f.confPath() || st.Error == "" {
		t.Errorf("status before the first attempt: %+v", st)
	}
	// No Node yet, then a Node without a PodCIDR, then one with an IPv6
	// PodCIDR only: the plugin is in place, the conflist is not.
	for i, set := range []func(){func() {}, func() { f.setNode(t, "") }, func() { f.setNode(t, "fd00:10:244:1::/64", "fd00:10:244:1::/64") }} {
		set()
		if d := f.c.sync(); d != cniRetryInterval {
			t.Errorf("attempt %d: next in %s, want %s", i, d, cniRetryInterval)
		}
	}
	if _, err := os.Stat(f.confPath()); !os.IsNotExist(err) {
		t.Errorf("conflist before the node has a PodCIDR: %v", err)
	}
	if _, err := os.Stat(filepath.Join(f.binDir, "membrane-cni")); err != nil {
		t.Errorf("the plugin is not installed while waiting: %v", err)
	}
	if st := f.c.status(); !strings.Contains(st.Error, "waiting for the node's IPv4 PodCIDR") || st.PodCIDR != "" {
		t.Errorf("status while waiting: %+v", st)
	}
	if n := strings.Count(f.logs.String(), "waiting for the node's IPv4 PodCIDR"); n != 1 {
		t.Errorf("logged the wait %d times, want once:\n%s", n, f.logs)
	}

	f.setNode(t, "10.244.1.0/24", "fd00:10:244:1::/64", "10.244.1.0/24") // the first IPv4 one
	if d := f.c.sync(); d != cniRecheckInterval {
		t.Errorf("after writing: next in %s, want %s", d, cniRecheckInterval)
	}
	got := f.conf(t)
	if got.Prefix.String() != "10.244.1.0/24" || got.DataDir != DefaultCNIDataDir || got.LogFile != DefaultCNILogFile || got.AgentSocket != "/var/run/membrane/agent/api.sock" {
		t.Errorf("conflist: %+v", got)
	}
	if st := f.c.status(); st.PodCIDR != "10.244.1.0/24" || st.Error != "" {
		t.Errorf("status after writing: %+v", st)
	}
	if !strings.Contains(f.logs.String(), "msg=\"CNI config written\" path="+f.confPath()+" podCIDR=10.244.1.0/24") {
		t.Errorf("no Info line for the write:\n%s", f.logs)
	}
}

func TestCNIInstallKeepsConfig(t *testing.T) {
	f := newCNIFixture(t)
	f.setNode(t, "10.244.1.0/24")
	f.c.sync()
	written := func() int { return strings.Count(f.logs.String(), "CNI config written") }
	if written() != 1 {
		t.Fatalf("first sync: %d writes logged:\n%s", written(), f.logs)
	}
	f.c.sync()
	if written() != 1 {
		t.Errorf("unchanged: written again:\n%s", f.logs)
	}

	// Removed, edited: written again.
	if err := os.Remove(f.confPath()); err != nil {
		t.Fatal(err)
	}
	f.c.sync()
	if written() != 2 {
		t.Errorf("after a removal: %d writes", written())
	}
	if err := os.WriteFile(f.confPath(), []byte(`{"cniVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	f.c.sync()
	if written() != 3 || f.conf(t).Prefix.String() != "10.244.1.0/24" {
		t.Errorf("after an edit: %d writes", written())
	}

	// A new PodCIDR.
	f.setNode(t, "10.244.7.0/24", "10.244.7.0/24")
	f.c.sync()
	if got := f.conf(t).Prefix.String(); got != "10.244.7.0/24" || written() != 4 {
		t.Errorf("after a PodCIDR change: conflist has %s, %d writes", got, written())
	}
	if st := f.c.status(); st.PodCIDR != "10.244.7.0/24" {
		t.Errorf("status: %+v", st)
	}

	// A removed plugin comes back with the next attempt.
	if err := os.Remove(filepath.Join(f.binDir, "membrane-cni")); err != nil {
		t.Fatal(err)
	}
	f.c.sync()
	if got, err := os.ReadFile(filepath.Join(f.binDir, "membrane-cni")); err != nil || string(got) != "#!/bin/sh\n# membrane-cni v1\n" {
		t.Errorf("plugin after a removal: %q, %v", got, err)
	}
	if n := strings.Count(f.logs.String(), "CNI plugin installed"); n != 2 {
		t.Errorf("logged %d plugin installs, want 2:\n%s", n, f.logs)
	}
	if strings.Contains(f.logs.String(), "level=ERROR") {
		t.Errorf("errors logged:\n%s", f.logs)
	}
}

func TestCNIInstallErrorsAreRetried(t *testing.T) {
	f := newCNIFixture(t)
	f.setNode(t, "10.244.1.0/24")
	// The configuration directory cannot be created: a file is in the way.
	if err := os.MkdirAll(filepath.Dir(f.confDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.confDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if d := f.c.sync(); d != cniRetryInterval {
			t.Errorf("failed attempt: next in %s, want %s", d, cniRetryInterval)
		}
	}
	st := f.c.status()
	if !strings.Contains(st.Error, "write the CNI config") || st.PodCIDR != "" {
		t.Errorf("status after failures: %+v", st)
	}
	if n := strings.Count(f.logs.String(), "level=ERROR"); n != 1 {
		t.Errorf("logged %d errors for the same failure, want 1:\n%s", n, f.logs)
	}
	if err := os.Remove(f.confDir); err != nil {
		t.Fatal(err)
	}
	if d := f.c.sync(); d != cniRecheckInterval {
		t.Errorf("after the fix: next in %s", d)
	}
	if st := f.c.status(); st.Error != "" || st.PodCIDR != "10.244.1.0/24" {
		t.Errorf("status after the fix: %+v", st)
	}

	// Without the plugin binary, no conflist: the runtime would find a
	// network whose plugin is missing.
	g := newCNIFixture(t)
	g.setNode(t, "10.244.1.0/24")
	if err := os.Remove(g.plugin); err != nil {
		t.Fatal(err)
	}
	g.c.sync()
	if _, err := os.Stat(g.confPath()); !os.IsNotExist(err) {
		t.Errorf("conflist without the plugin: %v", err)
	}
	if st := g.c.status(); !strings.Contains(st.Error, "--cni-plugin") {
		t.Errorf("status without the plugin: %+v", st)
	}
}

func TestCNIInstallRun(t *testing.T) {
	f := newCNIFixture(t)
	f.setNode(t, "10.244.1.0/24")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.c.run(ctx)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for f.c.status().PodCIDR == "" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if f.conf(t).Prefix.String() != "10.244.1.0/24" {
		t.Error("run did not write the conflist")
	}
}

// The pods' MTU is the underlay's, less WireGuard's overhead with
// encryption on; the conflist carries it.
func TestPodMTU(t *testing.T) {
	for _, c := range []struct {
		mtu        int
		encryption bool
		want       int
	}{
		{0, false, 1500}, {0, true, 1420}, {9000, false, 9000}, {9000, true, 8920}, {1460, true, 1380},
	} {
		cfg := Config{MTU: c.mtu, EnableEncryption: c.encryption}
		if got := cfg.PodMTU(); got != c.want {
			t.Errorf("--mtu %d, encryption %v: pod MTU %d, want %d", c.mtu, c.encryption, got, c.want)
		}
	}
	f := newCNIFixture(t)
	f.c.mtu = Config{MTU: 9000, EnableEncryption: true}.PodMTU()
	f.setNode(t, "10.244.1.0/24")
	f.c.sync()
	if got := f.conf(t).MTU; got != 8920 {
		t.Errorf("conflist MTU %d, want 8920", got)
	}
}

func TestCNIConfig(t *testing.T) {
	base := Config{NodeName: "n1", BPFPinDir: "/sys/fs/bpf/m", CgroupPath: "/sys/fs/cgroup", APIAddr: ":9890",
		APISocket: "/var/run/membrane/agent/api.sock", CNI: CNIConfig{
			ConfDir: "/etc/cni/net.d", BinDir: "/opt/cni/bin", ConfName: DefaultCNIConfName,
			Plugin: "/usr/bin/membrane-cni", DataDir: DefaultCNIDataDir, LogFile: DefaultCNILogFile,
		}}
	if err := base.Validate(); err != nil {
		t.Fatalf("valid: %v", err)
	}
	for _, c := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"relative conf dir", func(c *Config) { c.CNI.ConfDir = "etc/cni/net.d" }, "--cni-conf-dir"},
		{"relative bin dir", func(c *Config) { c.CNI.BinDir = "opt/cni/bin" }, "--cni-bin-dir"},
		{"conf name with a directory", func(c *Config) { c.CNI.ConfName = "x/05-membrane.conflist" }, "--cni-conf-name"},
		{"conf name not a conflist", func(c *Config) { c.CNI.ConfName = "05-membrane.conf" }, "--cni-conf-name"},
		{"no plugin", func(c *Config) { c.CNI.Plugin = "" }, "--cni-plugin"},
		{"plugin of another name", func(c *Config) { c.CNI.Plugin = "/usr/bin/membrane-cni-v2" }, "--cni-plugin"},
		{"relative data dir", func(c *Config) { c.CNI.DataDir = "cni" }, "--cni-data-dir"},
		{"relative log file", func(c *Config) { c.CNI.LogFile = "cni.log" }, "--cni-log-file"},
		{"no API socket", func(c *Config) { c.APISocket = "" }, "--cni-conf-dir: needs --api-socket (membrane-cni reports each new pod"},
		{"MTU too small", func(c *Config) { c.MTU = 1279 }, "--mtu 1279: want 1280 to 65535"},
		{"MTU too large", func(c *Config) { c.MTU = 65536 }, "--mtu 65536: want 1280 to 65535"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := base
			c.edit(&cfg)
			if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Validate = %v, want an error containing %q", err, c.want)
			}
		})
	}
	// No conf dir: nothing is installed and nothing else is checked.
	off := base
	off.APISocket, off.CNI = "", CNIConfig{BinDir: "relative", ConfName: "bad"}
	if err := off.Validate(); err != nil {
		t.Errorf("without --cni-conf-dir: %v", err)
	}
	// No bin dir: the plugin is installed some other way.
	noBin := base
	noBin.CNI.BinDir, noBin.CNI.Plugin = "", ""
	if err := noBin.Validate(); err != nil {
		t.Errorf("without --cni-bin-dir: %v", err)
	}
}

// A Node registered again may come back with another PodCIDR: an ADD of an
// address outside it is refused and the conflist written again at once;
// only this node's PodCIDR changes (not its heartbeats) ask for that.
func TestCNIStalePodCIDR(t *testing.T) {
	f := newCNIFixture(t)
	f.setNode(t, "10.244.1.0/24")
	if err := f.c.checkAddr(netip.MustParseAddr("10.244.1.7")); err != nil {
		t.Fatalf("an address of the PodCIDR: %v", err)
	}
	f.setNode(t, "10.244.3.0/24")
	err := f.c.checkAddr(netip.MustParseAddr("10.244.1.8"))
	if err == nil || !strings.Contains(err.Error(), "outside the node's PodCIDR 10.244.3.0/24") {
		t.Fatalf("an address of the earlier PodCIDR: %v", err)
	}
	select {
	case <-f.c.kick:
	default:
		t.Error("a refused address did not ask for the conflist again")
	}

	h := f.c.nodeEvents()
	node := func(name, cidr string, beat int64) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, ResourceVersion: strconv.FormatInt(beat, 10)}, Spec: corev1.NodeSpec{PodCIDR: cidr}}
	}
	h.OnUpdate(node("node1", "10.244.3.0/24", 1), node("node1", "10.244.3.0/24", 2))
	h.OnUpdate(node("node2", "10.244.4.0/24", 1), node("node2", "10.244.5.0/24", 2))
	select {
	case <-f.c.kick:
		t.Error("a heartbeat or another node's change asked for the conflist")
	default:
	}
	h.OnUpdate(node("node1", "10.244.3.0/24", 2), node("node1", "10.244.4.0/24", 3))
	select {
	case <-f.c.kick:
	default:
		t.Error("this node's new PodCIDR did not ask for the conflist")
	}
}

// With --cni-exclusive the other configurations are set aside once the
// conflist is written and whenever one appears; without it they stay.
// Cleanup renames them back.
func TestCNIInstallExclusive(t *testing.T) {
	for _, exclusive := range []bool{true, false} {
		t.Run("exclusive="+strconv.FormatBool(exclusive), func(t *testing.T) {
			f := newCNIFixture(t)
			f.c.cfg.Exclusive = exclusive
			other := filepath.Join(f.confDir, "00-other.conflist")
			if err := os.MkdirAll(f.confDir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(other, []byte(`{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"bridge"}]}`), 0o644); err != nil {
				t.Fatal(err)
			}
			// Not before Membrane's own configuration is there.
			f.c.sync()
			if _, err := os.Stat(other); err != nil {
				t.Fatalf("set aside before the conflist was written: %v", err)
			}
			f.setNode(t, "10.244.1.0/24")
			if d := f.c.sync(); d != cniRecheckInterval {
				t.Errorf("next in %s, want %s (status %+v)", d, cniRecheckInterval, f.c.status())
			}
			_, errOther := os.Stat(other)
			_, errAside := os.Stat(other + ".membrane_bak")
			if exclusive != (errOther != nil && errAside == nil) {
				t.Errorf("exclusive %v: 00-other.conflist %v, set aside %v", exclusive, errOther, errAside)
			}
			if exclusive && !strings.Contains(f.logs.String(), "another CNI config set aside") {
				t.Errorf("no log line for the rename:\n%s", f.logs)
			}
			// One that appears later goes the same way at the next attempt.
			later := filepath.Join(f.confDir, "01-later.conf")
			if err := os.WriteFile(later, []byte(`{}`), 0o644); err != nil {
				t.Fatal(err)
			}
			f.c.sync()
			if _, err := os.Stat(later); exclusive != os.IsNotExist(err) {
				t.Errorf("exclusive %v: 01-later.conf after a sync: %v", exclusive, err)
			}

			if err := removeCNIConfig(slog.New(slog.NewTextHandler(f.logs, nil)), f.c.cfg); err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{other, later} {
				if _, err := os.Stat(p); err != nil {
					t.Errorf("after cleanup: %v", err)
				}
			}
			if _, err := os.Stat(f.confPath()); !os.IsNotExist(err) {
				t.Errorf("Membrane's conflist after cleanup: %v", err)
			}
		})
	}
}
