package wireguard

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// fakeClient is a wgctrl client over an in-memory device: it applies a
// configuration the way the kernel and wireguard-go do.
type fakeClient struct {
	dev     wgtypes.Device
	configs []wgtypes.Config
}

func (c *fakeClient) Device(name string) (*wgtypes.Device, error) {
	if name != c.dev.Name {
		return nil, fmt.Errorf("device %s: %w", name, errors.ErrUnsupported)
	}
	d := c.dev
	d.Peers = slices.Clone(c.dev.Peers)
	return &d, nil
}

func (c *fakeClient) ConfigureDevice(name string, cfg wgtypes.Config) error {
	c.configs = append(c.configs, cfg)
	if cfg.PrivateKey != nil {
		c.dev.PrivateKey = *cfg.PrivateKey
		c.dev.PublicKey = cfg.PrivateKey.PublicKey()
	}
	if cfg.ListenPort != nil {
		c.dev.ListenPort = *cfg.ListenPort
	}
	for _, pc := range cfg.Peers {
		i := slices.IndexFunc(c.dev.Peers, func(p wgtypes.Peer) bool { return p.PublicKey == pc.PublicKey })
		if pc.Remove {
			if i >= 0 {
				c.dev.Peers = slices.Delete(c.dev.Peers, i, i+1)
			}
			continue
		}
		if i < 0 {
			if pc.UpdateOnly {
				continue
			}
			c.dev.Peers = append(c.dev.Peers, wgtypes.Peer{PublicKey: pc.PublicKey})
			i = len(c.dev.Peers) - 1
		}
		p := &c.dev.Peers[i]
		if pc.Endpoint != nil {
			p.Endpoint = pc.Endpoint
		}
		if pc.PersistentKeepaliveInterval != nil {
			p.PersistentKeepaliveInterval = *pc.PersistentKeepaliveInterval
		}
		if pc.ReplaceAllowedIPs {
			p.AllowedIPs = nil
		}
		p.AllowedIPs = append(p.AllowedIPs, pc.AllowedIPs...)
	}
	return nil
}

func (c *fakeClient) Close() error { return nil }

type fakeRouter struct {
	routes []netip.Prefix
	syncs  int
}

func (r *fakeRouter) Sync(p []netip.Prefix) (bool, error) {
	r.syncs++
	p = slices.Clone(p)
	sortPrefixes(p)
	changed := !slices.Equal(p, r.routes)
	r.routes = p
	return changed, nil
}

func (r *fakeRouter) Remove() error { r.routes = nil; return nil }

func peer(node string, k PrivateKey, ip string, cidrs ...string) Peer {
	return Peer{Node: node, PublicKey: k.Public(), Endpoint: netip.AddrPortFrom(netip.MustParseAddr(ip), ListenPort), AllowedIPs: pfx(cidrs...)}
}

func TestManagerReconfig(t *testing.T) {
	self, a, b := mustKey(t), mustKey(t), mustKey(t)
	client := &fakeClient{dev: wgtypes.Device{Name: DeviceName}}
	router := &fakeRouter{}
	m := NewManager(slog.New(slog.DiscardHandler), DeviceName, BackendKernel, client, router, nil)
	cfg := Config{PrivateKey: self, ListenPort: ListenPort, Peers: []Peer{
		peer("n2", a, "198.18.1.12", "10.244.1.0/24"),
		peer("n3", b, "198.18.1.13", "10.244.2.0/24"),
	}}
	if err := m.Reconfig(cfg); err != nil {
		t.Fatal(err)
	}
	if len(client.dev.Peers) != 2 || client.dev.ListenPort != ListenPort || client.dev.PrivateKey != self.wg() {
		t.Fatalf("device after first reconfig: %+v", client.dev)
	}
	if len(router.routes) != 2 {
		t.Fatalf("routes %v", router.routes)
	}

	// Same config: nothing written.
	n := len(client.configs)
	if err := m.Reconfig(cfg); !errors.Is(err, ErrNoChanges) {
		t.Fatalf("same config: %v, want ErrNoChanges", err)
	}
	if len(client.configs) != n {
		t.Fatal("same config was written to the device")
	}

	// A new PodCIDR on n3: one update-only peer change, nothing else.
	cfg.Peers[1] = peer("n3", b, "198.18.1.13", "10.244.2.0/24", "10.244.9.0/24")
	if err := m.Reconfig(cfg); err != nil {
		t.Fatal(err)
	}
	last := client.configs[len(client.configs)-1]
	if len(last.Peers) != 1 || !last.Peers[0].UpdateOnly || last.Peers[0].PublicKey != b.Public().wg() || last.PrivateKey != nil || last.ListenPort != nil {
		t.Fatalf("PodCIDR change wrote %+v", last)
	}
	if len(router.routes) != 3 {
		t.Fatalf("routes %v", router.routes)
	}

	// n2 rotates its key: its old peer is removed before the new one is added.
	a2 := mustKey(t)
	cfg.Peers[0] = peer("n2", a2, "198.18.1.12", "10.244.1.0/24")
	if err := m.Reconfig(cfg); err != nil {
		t.Fatal(err)
	}
	last = client.configs[len(client.configs)-1]
	if len(last.Peers) != 2 || !last.Peers[0].Remove || last.Peers[0].PublicKey != a.Public().wg() || last.Peers[1].PublicKey != a2.Public().wg() || last.Peers[1].Remove {
		t.Fatalf("key change wrote %+v", last)
	}

	// This node rotates: only the private key is written.
	self2 := mustKey(t)
	cfg.PrivateKey = self2
	if err := m.Reconfig(cfg); err != nil {
		t.Fatal(err)
	}
	last = client.configs[len(client.configs)-1]
	if last.PrivateKey == nil || *last.PrivateKey != self2.wg() || len(last.Peers) != 0 {
		t.Fatalf("own rotation wrote %+v", last)
	}

	// n3 leaves; a stale peer added behind our back is removed too.
	client.dev.Peers = append(client.dev.Peers, wgtypes.Peer{PublicKey: mustKey(t).Public().wg()})
	cfg.Peers = cfg.Peers[:1]
	if err := m.Reconfig(cfg); err != nil {
		t.Fatal(err)
	}
	if len(client.dev.Peers) != 1 || client.dev.Peers[0].PublicKey != a2.Public().wg() || len(router.routes) != 1 {
		t.Fatalf("after removal: peers %+v routes %v", client.dev.Peers, router.routes)
	}
	if err := m.Reconfig(cfg); !errors.Is(err, ErrNoChanges) {
		t.Fatalf("converged config: %v, want ErrNoChanges", err)
	}

	st, err := m.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Backend != BackendKernel || len(st.Peers) != 1 || st.Peers[0].Node != "n2" || st.Peers[0].Endpoint != "198.18.1.12:51871" ||
		st.Peers[0].PublicKeyFingerprint != a2.Public().Fingerprint() || st.PublicKeyFingerprint != self2.Public().Fingerprint() {
		t.Fatalf("status %+v", st)
	}
}

func TestDiffRoutesOnlyChange(t *testing.T) {
	// A device that matches while the routes were lost (e.g. flushed by
	// hand): Reconfig still repairs the routes and reports a change.
	self, a := mustKey(t), mustKey(t)
	client := &fakeClient{dev: wgtypes.Device{Name: DeviceName}}
	router := &fakeRouter{}
	m := NewManager(slog.New(slog.DiscardHandler), DeviceName, BackendEmbedded, client, router, nil)
	cfg := Config{PrivateKey: self, ListenPort: ListenPort, Peers: []Peer{peer("n2", a, "198.18.1.12", "10.244.1.0/24")}}
	if err := m.Reconfig(cfg); err != nil {
		t.Fatal(err)
	}
	router.routes = nil
	if err := m.Reconfig(cfg); err != nil {
		t.Fatalf("lost routes: %v, want a change", err)
	}
	if len(router.routes) != 1 {
		t.Fatal("routes not repaired")
	}
}

// fakeLinks is a netlink handle whose kernel may lack WireGuard.
type fakeLinks struct {
	kernelWG bool
	links    map[string]netlink.Link
	ups      []string
}

func (f *fakeLinks) LinkByName(name string) (netlink.Link, error) {
	if l, ok := f.links[name]; ok {
		return l, nil
	}
	return nil, netlink.LinkNotFoundError{}
}

func (f *fakeLinks) LinkAdd(l netlink.Link) error {
	if l.Type() == "wireguard" && !f.kernelWG {
		return unix.EOPNOTSUPP
	}
	f.links[l.Attrs().Name] = l
	return nil
}

func (f *fakeLinks) LinkDel(l netlink.Link) error { delete(f.links, l.Attrs().Name); return nil }

func (f *fakeLinks) LinkSetMTU(l netlink.Link, mtu int) error { l.Attrs().MTU = mtu; return nil }

func (f *fakeLinks) LinkSetUp(l netlink.Link) error {
	f.ups = append(f.ups, l.Attrs().Name)
	return nil
}

// testMTU is the device MTU on a 1500-byte underlay.
const testMTU = 1500 - Overhead

func TestKernelDevice(t *testing.T) {
	h := &fakeLinks{kernelWG: true, links: map[string]netlink.Link{}}
	b, dev, err := startDevice(slog.New(slog.DiscardHandler), h, BackendAuto, DeviceName, testMTU)
	if err != nil || b != BackendKernel || dev != nil {
		t.Fatalf("auto with kernel WireGuard: %v %v", b, err)
	}
	l := h.links[DeviceName]
	if l == nil || l.Type() != "wireguard" || l.Attrs().MTU != testMTU || len(h.ups) != 1 {
		t.Fatalf("kernel link %+v ups %v", l, h.ups)
	}
	// An agent restart adopts the device, fixing its MTU.
	l.Attrs().MTU = 1500
	if b, _, err := startDevice(slog.New(slog.DiscardHandler), h, BackendKernel, DeviceName, testMTU); err != nil || b != BackendKernel || h.links[DeviceName] != l || l.Attrs().MTU != testMTU {
		t.Fatalf("adopt: %v %v", b, err)
	}
	// A leftover link of another type is replaced.
	h.links[DeviceName] = &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: DeviceName, MTU: 1500}}
	if _, _, err := startDevice(slog.New(slog.DiscardHandler), h, BackendKernel, DeviceName, testMTU); err != nil || h.links[DeviceName].Type() != "wireguard" {
		t.Fatalf("replace: %v", err)
	}
	// Kernel asked for, kernel without WireGuard: a clear error, no fallback.
	h = &fakeLinks{links: map[string]netlink.Link{}}
	if _, _, err := startDevice(slog.New(slog.DiscardHandler), h, BackendKernel, DeviceName, testMTU); !errors.Is(err, errNoKernelWireGuard) {
		t.Fatalf("kernel without WireGuard: %v", err)
	}
}

func TestKernelDeviceWithFakeClient(t *testing.T) {
	// The kernel path end to end behind the Client interface: the same
	// manager code configures it.
	h := &fakeLinks{kernelWG: true, links: map[string]netlink.Link{}}
	b, _, err := startDevice(slog.New(slog.DiscardHandler), h, BackendAuto, DeviceName, testMTU)
	if err != nil {
		t.Fatal(err)
	}
	client := &fakeClient{dev: wgtypes.Device{Name: DeviceName, Type: wgtypes.LinuxKernel}}
	m := NewManager(slog.New(slog.DiscardHandler), DeviceName, b, client, &fakeRouter{}, io.NopCloser(nil))
	self, a := mustKey(t), mustKey(t)
	if err := m.Reconfig(Config{PrivateKey: self, ListenPort: ListenPort, Peers: []Peer{peer("n2", a, "198.18.1.12", "10.244.1.0/24")}}); err != nil {
		t.Fatal(err)
	}
	st, _ := m.Status()
	if st.Backend != BackendKernel || len(st.Peers) != 1 {
		t.Fatalf("%+v", st)
	}
}
