package wireguard

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Client is the part of wgctrl's client the manager uses: it configures
// a kernel device over netlink and an embedded one over its UAPI socket.
type Client interface {
	Device(name string) (*wgtypes.Device, error)
	ConfigureDevice(name string, cfg wgtypes.Config) error
	Close() error
}

// Manager keeps one WireGuard device and its routes equal to a desired
// configuration.
type Manager struct {
	log     *slog.Logger
	device  string
	backend Backend
	client  Client
	router  Router
	closer  io.Closer // what stops the device with the manager (embedded), or nothing

	mu    sync.Mutex
	nodes map[wgtypes.Key]string // peer key → node name, of the last Reconfig
	key   PublicKey
}

// NewManager assembles a manager from its parts (Start does it for the
// real device; tests pass fakes).
func NewManager(log *slog.Logger, device string, backend Backend, client Client, router Router, closer io.Closer) *Manager {
	return &Manager{log: log, device: device, backend: backend, client: client, router: router, closer: closer, nodes: map[wgtypes.Key]string{}}
}

// Backend says which implementation runs the device.
func (m *Manager) Backend() Backend { return m.backend }

// Reconfig makes the device and its routes equal to cfg, writing only what
// differs. It returns ErrNoChanges when everything already matched.
func (m *Manager) Reconfig(cfg Config) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	have, err := m.client.Device(m.device)
	if err != nil {
		return fmt.Errorf("read WireGuard device %s: %w", m.device, err)
	}
	changed := false
	delta, err := Diff(cfg, have)
	switch {
	case errors.Is(err, ErrNoChanges):
	case err != nil:
		return err
	default:
		if err := m.client.ConfigureDevice(m.device, delta); err != nil {
			return fmt.Errorf("configure WireGuard device %s: %w", m.device, err)
		}
		changed = true
		m.log.Debug("WireGuard device configured", "privateKeyChanged", delta.PrivateKey != nil, "peerChanges", len(delta.Peers))
	}
	nodes := map[wgtypes.Key]string{}
	var prefixes []netip.Prefix
	for _, p := range cfg.Peers {
		nodes[p.PublicKey.wg()] = p.Node
		prefixes = append(prefixes, p.AllowedIPs...)
	}
	m.nodes = nodes
	m.key = cfg.PrivateKey.Public()
	routed, err := m.router.Sync(prefixes)
	if err != nil {
		return fmt.Errorf("tunnel routes: %w", err)
	}
	if !changed && !routed {
		return ErrNoChanges
	}
	return nil
}

// Status is what the device holds now.
type Status struct {
	Device               string       `json:"device"`
	Backend              Backend      `json:"backend"`
	ListenPort           int          `json:"listenPort"`
	PublicKeyFingerprint string       `json:"publicKeyFingerprint"`
	Peers                []PeerStatus `json:"peers"`
}

// PeerStatus is one peer of the device.
type PeerStatus struct {
	Node                 string    `json:"node"`
	PublicKeyFingerprint string    `json:"publicKeyFingerprint"`
	Endpoint             string    `json:"endpoint"`
	AllowedIPs           []string  `json:"allowedIPs"`
	LatestHandshake      time.Time `json:"latestHandshake,omitzero"`
	ReceiveBytes         int64     `json:"rxBytes"`
	TransmitBytes        int64     `json:"txBytes"`
}

// Status reads the device.
func (m *Manager) Status() (Status, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.client.Device(m.device)
	if err != nil {
		return Status{}, fmt.Errorf("read WireGuard device %s: %w", m.device, err)
	}
	st := Status{Device: m.device, Backend: m.backend, ListenPort: d.ListenPort, PublicKeyFingerprint: publicFromWG(d.PublicKey).Fingerprint(), Peers: []PeerStatus{}}
	for _, p := range d.Peers {
		ps := PeerStatus{
			Node:                 m.nodes[p.PublicKey],
			PublicKeyFingerprint: publicFromWG(p.PublicKey).Fingerprint(),
			LatestHandshake:      p.LastHandshakeTime,
			ReceiveBytes:         p.ReceiveBytes,
			TransmitBytes:        p.TransmitBytes,
			AllowedIPs:           []string{},
		}
		if p.Endpoint != nil {
			ps.Endpoint = p.Endpoint.String()
		}
		for _, a := range p.AllowedIPs {
			ps.AllowedIPs = append(ps.AllowedIPs, a.String())
		}
		st.Peers = append(st.Peers, ps)
	}
	sort.Slice(st.Peers, func(i, j int) bool { return st.Peers[i].Node < st.Peers[j].Node })
	return st, nil
}

// Close releases the client. An embedded device stops with it (the tunnel
// routes then fall to their blackholes); a kernel device stays up, so the
// next agent adopts it without a gap.
func (m *Manager) Close() error {
	var errs []error
	if m.closer != nil {
		errs = append(errs, m.closer.Close())
	}
	errs = append(errs, m.client.Close())
	return errors.Join(errs...)
}
