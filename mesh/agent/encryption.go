package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/membrane-mesh/membrane/encryption/wireguard"
	"github.com/membrane-mesh/membrane/mesh/agentapi"
	"github.com/membrane-mesh/membrane/mesh/k8s"
)

// encryption keeps this node's WireGuard device equal to the cluster: it
// owns the node's key (on disk, published on the Node), derives the peers
// from every Node, and rotates the key on request or on a period.
type encryption struct {
	log      *slog.Logger
	cfg      Config
	client   kubernetes.Interface
	nodes    corelisters.NodeLister
	synced   <-chan struct{} // closed once the shared informers are synced
	metrics  *encryptionMetrics
	skipped  func() // counts one skipped input (the agent's shared counter)
	keyFile  wireguard.KeyFile
	kick     chan struct{}
	started  chan struct{} // closed once the device is up
	recorder record.EventRecorder
	// remote lists the nodes of connected clusters (nil outside a mesh):
	// they are peers like the local nodes.
	remote func() []wireguard.Node

	mu         sync.Mutex
	key        wireguard.PrivateKey
	mgr        *wireguard.Manager
	badKeys    []wireguard.Skipped
	reported   map[string]string // node → bad annotation already warned about
	handshakes map[string]time.Time
	lastErr    error
}

func newEncryption(log *slog.Logger, cfg Config, client kubernetes.Interface, informers *k8s.Informers, m *encryptionMetrics, skipped func()) (*encryption, error) {
	e := &encryption{
		log: log, cfg: cfg, client: client, metrics: m, skipped: skipped,
		keyFile:    wireguard.NewKeyFile(cfg.StateDir),
		kick:       make(chan struct{}, 1),
		started:    make(chan struct{}),
		reported:   map[string]string{},
		handshakes: map[string]time.Time{},
	}
	inf := informers.Typed.Core().V1().Nodes()
	e.nodes = inf.Lister()
	e.synced = informers.Synced()
	if err := informers.Watch(inf.Informer(), cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { e.poke() },
		UpdateFunc: func(old, cur any) { e.onUpdate(old, cur) },
		DeleteFunc: func(any) { e.poke() },
	}); err != nil {
		return nil, fmt.Errorf("watch nodes: %w", err)
	}
	return e, nil
}

func (e *encryption) poke() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// onUpdate ignores the heartbeats that change nothing WireGuard uses.
func (e *encryption) onUpdate(old, cur any) {
	o, ok1 := old.(*corev1.Node)
	c, ok2 := cur.(*corev1.Node)
	if ok1 && ok2 {
		a, b := k8s.WireGuardNode(o), k8s.WireGuardNode(c)
		if a.Key == b.Key && a.IP == b.IP && fmt.Sprint(a.PodCIDRs) == fmt.Sprint(b.PodCIDRs) {
			return
		}
	}
	e.poke()
}

// run brings the device up and keeps it converged until ctx is done.
func (e *encryption) run(ctx context.Context) error {
	key, info, err := e.keyFile.LoadOrCreate()
	if err != nil {
		return err
	}
	if info.Tightened {
		e.log.Warn("WireGuard key file was readable by others; mode set to 0600", "path", e.keyFile.Path)
	}
	e.log.Info("WireGuard key ready", "created", info.Created, "path", e.keyFile.Path, "publicKey", key.Public().Fingerprint())
	backend, err := e.cfg.wireGuardBackend()
	if err != nil {
		return err
	}
	mgr, err := wireguard.Start(e.log, backend, e.cfg.UnderlayMTU())
	if err != nil {
		return err
	}
	defer func() {
		if err := mgr.Close(); err != nil {
			e.log.Warn("close WireGuard device", "error", err)
		}
	}()
	e.mu.Lock()
	e.key, e.mgr = key, mgr
	e.mu.Unlock()
	close(e.started)
	e.metrics.backend.WithLabelValues(string(mgr.Backend())).Set(1)

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: e.client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	e.recorder = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "membrane-agent", Host: e.cfg.NodeName})

	select {
	case <-e.synced:
	case <-ctx.Done():
		return nil
	}
	resync := time.NewTicker(30 * time.Second)
	defer resync.Stop()
	stats := time.NewTicker(5 * time.Second)
	defer stats.Stop()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	rotate := time.NewTimer(e.untilRotation())
	defer rotate.Stop()
	for {
		if err := e.reconcile(ctx); err != nil {
			e.log.Warn("WireGuard reconcile failed; retrying", "error", err)
			retry.Reset(time.Second)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-e.kick:
		case <-resync.C:
		case <-retry.C:
		case <-stats.C:
			e.observe()
			continue
		case <-rotate.C:
			if _, _, err := e.rotate(ctx, "period"); err != nil {
				e.log.Error("periodic WireGuard key rotation", "error", err)
			}
			rotate.Reset(e.untilRotation())
		}
	}
}

// untilRotation is the time left before the key reaches the rotation
// period (by its file's age, so a restart does not postpone it).
func (e *encryption) untilRotation() time.Duration {
	if e.cfg.KeyRotationPeriod <= 0 {
		return time.Duration(1<<63 - 1)
	}
	st, err := os.Stat(e.keyFile.Path)
	if err != nil {
		return e.cfg.KeyRotationPeriod
	}
	return max(time.Until(st.ModTime().Add(e.cfg.KeyRotationPeriod)), time.Second)
}

// reconcile publishes the key and makes the device equal to the nodes.
func (e *encryption) reconcile(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	start := time.Now()
	err := e.reconcileLocked(ctx)
	e.lastErr = err
	e.metrics.reconcileSeconds.Observe(time.Since(start).Seconds())
	return err
}

func (e *encryption) reconcileLocked(ctx context.Context) error {
	pub := e.key.Public()
	list, err := e.nodes.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	nodes := make([]wireguard.Node, 0, len(list))
	var self *corev1.Node
	byName := map[string]*corev1.Node{}
	for _, n := range list {
		nodes = append(nodes, k8s.WireGuardNode(n))
		byName[n.Name] = n
		if n.Name == e.cfg.NodeName {
			self = n
		}
	}
	var remote []wireguard.Node
	if e.remote != nil {
		remote = e.remote()
	}
	peers, bad := meshPeers(e.cfg.NodeName, pub, nodes, remote)
	err = e.mgr.Reconfig(wireguard.Config{PrivateKey: e.key, ListenPort: wireguard.ListenPort, Peers: peers})
	switch {
	case errors.Is(err, wireguard.ErrNoChanges):
		e.metrics.reconfigs.WithLabelValues("unchanged").Inc()
	case err != nil:
		e.metrics.reconfigs.WithLabelValues("error").Inc()
		return err
	default:
		e.metrics.reconfigs.WithLabelValues("changed").Inc()
		e.log.Info("WireGuard peers configured", "peers", len(peers), "skipped", len(bad))
	}
	e.metrics.peers.Set(float64(len(peers)))
	e.metrics.skippedPeers.Set(float64(len(bad)))
	e.report(bad, byName)
	// Publish after the device holds the key: peers that see it can
	// handshake at once. A Node not (yet) registered is published when it is.
	if self != nil && self.Annotations[wireguard.AnnotationPublicKey] != pub.Encode() {
		if err := e.publish(ctx, pub.Encode()); err != nil {
			return err
		}
		e.log.Info("WireGuard public key published", "publicKey", pub.Fingerprint())
	}
	return nil
}

// unencryptedRemote is the reason given for a remote cluster's node that
// publishes no WireGuard key: its cluster runs without encryption, and pod
// traffic between the two crosses the underlay in plaintext, as it does
// to a local node without a key.
const unencryptedRemote = "remote cluster node publishes no WireGuard key (encryption off in its cluster): pod traffic to it crosses the underlay unencrypted"

// meshPeers derives the peers from the local nodes and those of connected
// clusters in one pass of wireguard.Peers, which checks keys, endpoints and
// PodCIDRs of both alike. The local cluster always wins a clash: a remote
// node that claims a local node's PodCIDR or key is skipped first (whatever
// the names' order), so a remote cluster can never draw local pod traffic
// into its tunnel. Each remote node that publishes no key is reported: pod
// traffic to it is not encrypted.
func meshPeers(self string, pub wireguard.PublicKey, local, remote []wireguard.Node) ([]wireguard.Peer, []wireguard.Skipped) {
	var cidrs []netip.Prefix
	keys := map[string]string{}
	for _, n := range local {
		cidrs = append(cidrs, n.PodCIDRs...)
		if n.Key != "" {
			keys[n.Key] = n.Name
		}
	}
	all := slices.Clone(local)
	var bad []wireguard.Skipped
remote:
	for _, n := range remote {
		if n.Key == "" {
			bad = append(bad, wireguard.Skipped{Node: n.Name, Reason: unencryptedRemote})
			continue
		}
		if other, ok := keys[n.Key]; ok {
			bad = append(bad, wireguard.Skipped{Node: n.Name, Reason: "public key already used by local node " + other})
			continue
		}
		for _, c := range n.PodCIDRs {
			for _, l := range cidrs {
				if c.Overlaps(l) {
					bad = append(bad, wireguard.Skipped{Node: n.Name, Reason: fmt.Sprintf("PodCIDR %s overlaps %s of this cluster", c.Masked(), l.Masked())})
					continue remote
				}
			}
		}
		all = append(all, n)
	}
	peers, skipped := wireguard.Peers(self, pub, all, wireguard.ListenPort)
	return peers, append(skipped, bad...)
}

// report warns once per node and bad value: a log line, the skipped-input
// metric and a Warning Event on that Node.
func (e *encryption) report(bad []wireguard.Skipped, nodes map[string]*corev1.Node) {
	seen := map[string]bool{}
	for _, s := range bad {
		seen[s.Node] = true
		sig := s.Key + "\x00" + s.Reason
		if e.reported[s.Node] == sig {
			continue
		}
		e.reported[s.Node] = sig
		e.skipped()
		e.log.Warn("skipped WireGuard peer", "peer", s.Node, "reason", s.Reason)
		if n := nodes[s.Node]; n != nil && e.recorder != nil {
			ref := &corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: n.Name, UID: types.UID(n.Name)}
			e.recorder.Eventf(ref, corev1.EventTypeWarning, "InvalidWireGuardPeer", "membrane-agent on %s skipped this node as a WireGuard peer: %s", e.cfg.NodeName, s.Reason)
		}
	}
	for n := range e.reported {
		if !seen[n] {
			delete(e.reported, n)
		}
	}
	e.badKeys = bad
}

func (e *encryption) publish(ctx context.Context, value string) error {
	var v any
	if value != "" {
		v = value
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{wireguard.AnnotationPublicKey: v}}})
	if err != nil {
		return err
	}
	_, err = e.client.CoreV1().Nodes().Patch(ctx, e.cfg.NodeName, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "membrane-agent"})
	if err != nil {
		return fmt.Errorf("publish WireGuard public key on node %s: %w", e.cfg.NodeName, err)
	}
	return nil
}

// rotate replaces the node's key: stored first (a crash then restarts
// with the new key), then put on the device and published; peers pick it
// up from the annotation. It returns the old and new fingerprints.
func (e *encryption) rotate(ctx context.Context, why string) (string, string, error) {
	select {
	case <-e.started:
	default:
		return "", "", errors.New("WireGuard device not started yet")
	}
	k, err := wireguard.GeneratePrivateKey()
	if err != nil {
		return "", "", err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.keyFile.Store(k); err != nil {
		return "", "", err
	}
	old := e.key.Public().Fingerprint()
	e.key = k
	e.metrics.rotations.WithLabelValues(why).Inc()
	e.log.Info("WireGuard key rotated", "trigger", why, "previous", old, "publicKey", k.Public().Fingerprint())
	err = e.reconcileLocked(ctx)
	e.lastErr = err
	if err != nil {
		// The loop retries; the new key is on disk and on the device.
		e.poke()
		return old, k.Public().Fingerprint(), fmt.Errorf("key rotated, not yet fully applied: %w", err)
	}
	return old, k.Public().Fingerprint(), nil
}

// observe samples the device for the handshake and transfer metrics.
func (e *encryption) observe() {
	e.mu.Lock()
	defer e.mu.Unlock()
	st, err := e.mgr.Status()
	if err != nil {
		return
	}
	var rx, tx int64
	for _, p := range st.Peers {
		rx += p.ReceiveBytes
		tx += p.TransmitBytes
		if p.LatestHandshake.IsZero() {
			continue
		}
		id := p.Node + "/" + p.PublicKeyFingerprint
		if last, ok := e.handshakes[id]; !ok || p.LatestHandshake.After(last) {
			e.metrics.handshakes.Inc()
			e.handshakes[id] = p.LatestHandshake
		}
	}
	e.metrics.bytes.WithLabelValues("rx").Set(float64(rx))
	e.metrics.bytes.WithLabelValues("tx").Set(float64(tx))
}

// status is the answer of PathEncryption.
func (e *encryption) status() agentapi.EncryptionStatus {
	out := agentapi.EncryptionStatus{Node: e.cfg.NodeName, Mode: EncryptionWireGuard, Skipped: []agentapi.SkippedPeer{}}
	select {
	case <-e.started:
	default:
		out.Error = "WireGuard device not started yet"
		return out
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	st, err := e.mgr.Status()
	if err != nil {
		out.Error = err.Error()
		return out
	}
	out.WireGuard = wireGuardStatus(st)
	out.Skipped = append(out.Skipped, skippedPeers(e.badKeys)...)
	if e.lastErr != nil {
		out.Error = e.lastErr.Error()
	}
	if fi, err := os.Stat(e.keyFile.Path); err == nil {
		t := fi.ModTime().UTC()
		out.KeyCreated = &t
	}
	return out
}

// disableEncryption undoes encryption on this node for an agent that runs
// without it: device, rule and routes go, and the Node stops publishing a
// key, so peers send to this node's pods over the underlay again. The key
// file stays: turning encryption back on reuses it.
func disableEncryption(ctx context.Context, log *slog.Logger, client kubernetes.Interface, node string) {
	if err := wireguard.Remove(); err != nil {
		log.Warn("remove WireGuard device and routes", "error", err)
	}
	e := &encryption{cfg: Config{NodeName: node}, client: client}
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		n, err := client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err == nil {
			if _, has := n.Annotations[wireguard.AnnotationPublicKey]; !has {
				return
			}
			if err = e.publish(ctx, ""); err == nil {
				log.Info("encryption off: WireGuard public key withdrawn from the node")
				return
			}
		}
		if err != nil && !apierrors.IsNotFound(err) {
			log.Warn("withdraw WireGuard public key", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
