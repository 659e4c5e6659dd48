// Package l2announce makes the addresses of LoadBalancer Services,
// Gateways and Ingresses reachable on the underlay (L2 announcement): per address a
// coordination.k8s.io Lease elects one node among those whose agents run;
// the holder puts the address (a /32, label "<interface>:mlb") on the
// interface holding its InternalIP, so the kernel answers ARP for it,
// sends a gratuitous ARP so neighbours update their caches at once, and
// forwards TCP connections to the address's ports to the Service (see
// [Forwarder]). Losing the Lease (the agent cannot renew it, e.g. its node
// is cut off) withdraws the address; another agent takes the Lease once
// it has expired.
//
// Timing: LeaseDuration 2.5 s, RenewDeadline 2 s, RetryPeriod 0.5 s. A
// dead holder is replaced within LeaseDuration + RetryPeriod (with
// client-go's jitter, ≤ 3.1 s) plus the time to add the address and
// announce it. The price: every holder renews twice a second, and an API
// server slower than 2 s to answer makes a holder step down.
package l2announce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/membrane-mesh/membrane/mesh/nldump"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Lease timing (see the package comment).
const (
	LeaseDuration = 2500 * time.Millisecond
	RenewDeadline = 2 * time.Second
	RetryPeriod   = 500 * time.Millisecond
)

// addressLabel marks the addresses this package manages (IFA_LABEL suffix).
const addressLabel = ":mlb"

// LeaseName is the Lease electing the announcer of a.
func LeaseName(a netip.Addr) string {
	return "membrane-lb-" + strings.ReplaceAll(a.String(), ".", "-")
}

// Target is what one announced address serves: the TCP ports of the
// Service and its ClusterIP, which connections are forwarded to.
type Target struct {
	ClusterIP netip.Addr
	Ports     []uint16 // TCP
	UDPPorts  []uint16
	// SourceRanges are the clients allowed (loadBalancerSourceRanges);
	// nil: every client.
	SourceRanges []netip.Prefix
}

// sourceRangesAnnotation is the legacy form of loadBalancerSourceRanges,
// read when the field is empty (as kube-proxy does).
const sourceRangesAnnotation = "service.beta.kubernetes.io/load-balancer-source-ranges"

// SourceRanges are the client ranges a LoadBalancer Service admits
// (nil: all): spec.loadBalancerSourceRanges, else the annotation. A range
// that does not parse admits nobody until it is fixed (the error says
// which): a typo must not open the address to everyone.
func SourceRanges(s *corev1.Service) ([]netip.Prefix, error) {
	ranges, field := s.Spec.LoadBalancerSourceRanges, "spec.loadBalancerSourceRanges"
	if len(ranges) == 0 && s.Annotations[sourceRangesAnnotation] != "" {
		ranges, field = strings.Split(s.Annotations[sourceRangesAnnotation], ","), "annotation "+sourceRangesAnnotation
	}
	if len(ranges) == 0 {
		return nil, nil
	}
	out := []netip.Prefix{}
	for i, r := range ranges {
		p, err := netip.ParsePrefix(strings.TrimSpace(r))
		if err != nil || !p.Addr().Is4() {
			return []netip.Prefix{}, fmt.Errorf("service %s/%s: %s[%d]: %q is not an IPv4 CIDR; no client is admitted until it is fixed", s.Namespace, s.Name, field, i, r)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Wanted is the address → target of every LoadBalancer Service with an
// IPv4 ingress address; errs names the source ranges that do not parse.
func Wanted(svcs []*corev1.Service) (out map[netip.Addr]Target, errs []error) {
	out = map[netip.Addr]Target{}
	for _, s := range svcs {
		if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		cip, err := netip.ParseAddr(s.Spec.ClusterIP)
		if err != nil || !cip.Is4() {
			continue
		}
		var ports, udp []uint16
		for _, p := range s.Spec.Ports {
			switch p.Protocol {
			case corev1.ProtocolTCP, "":
				ports = append(ports, uint16(p.Port))
			case corev1.ProtocolUDP:
				udp = append(udp, uint16(p.Port))
			}
		}
		slices.Sort(ports)
		slices.Sort(udp)
		ranges, err := SourceRanges(s)
		if err != nil {
			errs = append(errs, err)
		}
		for _, in := range s.Status.LoadBalancer.Ingress {
			if a, err := netip.ParseAddr(in.IP); err == nil && a.Is4() {
				out[a] = Target{ClusterIP: cip, Ports: ports, UDPPorts: udp, SourceRanges: ranges}
			}
		}
	}
	return out, errs
}

// Announcer runs the elections of this node.
type Announcer struct {
	Log       *slog.Logger
	Client    kubernetes.Interface
	Namespace string // of the Leases
	Node      string
	NodeIP    func() netip.Addr
	Services  cache.Indexer
	Changed   <-chan struct{}

	mu      sync.Mutex
	running map[netip.Addr]*election
	// gateways: the addresses of Gateways and Ingresses (see
	// SetGatewayAddresses); gwChanged signals a new set.
	gwMu      sync.Mutex
	gateways  []netip.Addr
	gwChanged chan struct{}
}

// SetGatewayAddresses sets the Gateway and Ingress addresses to announce
// besides the Services' ones. Nothing is forwarded for them: every node's
// Envoy binds each of them (freebind), so the Lease holder only needs the
// address on its interface.
func (a *Announcer) SetGatewayAddresses(addrs []netip.Addr) {
	a.gwMu.Lock()
	a.gateways = slices.Clone(addrs)
	ch := a.gwChanged
	a.gwMu.Unlock()
	if ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// gatewayChanged returns the channel SetGatewayAddresses signals.
func (a *Announcer) gatewayChanged() chan struct{} {
	a.gwMu.Lock()
	defer a.gwMu.Unlock()
	if a.gwChanged == nil {
		a.gwChanged = make(chan struct{}, 1)
	}
	return a.gwChanged
}

type election struct {
	cancel context.CancelFunc
	done   chan struct{}
	target Target
	// ranges are the target's source ranges, changed without a new
	// election; the forwarder reads them for each connection.
	ranges *atomic.Pointer[[]netip.Prefix]
}

// Run keeps one election per wanted address until ctx ends, then
// releases the Leases it holds and withdraws its addresses.
func (a *Announcer) Run(ctx context.Context) {
	a.running = map[netip.Addr]*election{}
	gw := a.gatewayChanged()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		a.sync(ctx)
		select {
		case <-ctx.Done():
			a.mu.Lock()
			for _, e := range a.running {
				e.cancel()
				<-e.done
			}
			a.mu.Unlock()
			return
		case <-a.Changed:
		case <-gw:
		case <-tick.C:
		}
	}
}

func (a *Announcer) sync(ctx context.Context) {
	var svcs []*corev1.Service
	for _, o := range a.Services.List() {
		if s, ok := o.(*corev1.Service); ok {
			svcs = append(svcs, s)
		}
	}
	want, errs := Wanted(svcs)
	for _, err := range errs {
		a.Log.Warn("load-balancer source ranges", "error", err)
	}
	a.gwMu.Lock()
	for _, g := range a.gateways {
		if _, ok := want[g]; !ok && g.Is4() {
			want[g] = Target{}
		}
	}
	a.gwMu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	for addr, e := range a.running {
		t, ok := want[addr]
		if !ok || t.ClusterIP != e.target.ClusterIP || !slices.Equal(t.Ports, e.target.Ports) || !slices.Equal(t.UDPPorts, e.target.UDPPorts) {
			e.cancel()
			<-e.done
			delete(a.running, addr)
			continue
		}
		if !slices.Equal(t.SourceRanges, *e.ranges.Load()) || (t.SourceRanges == nil) != (*e.ranges.Load() == nil) {
			e.ranges.Store(&t.SourceRanges)
		}
	}
	for addr, t := range want {
		if _, ok := a.running[addr]; ok {
			continue
		}
		ectx, cancel := context.WithCancel(ctx)
		e := &election{cancel: cancel, done: make(chan struct{}), target: t, ranges: &atomic.Pointer[[]netip.Prefix]{}}
		e.ranges.Store(&t.SourceRanges)
		a.running[addr] = e
		go func() {
			defer close(e.done)
			a.elect(ectx, addr, t, e.ranges)
		}()
	}
}

// elect competes for addr's Lease until ctx ends, again after each loss.
func (a *Announcer) elect(ctx context.Context, addr netip.Addr, t Target, ranges *atomic.Pointer[[]netip.Prefix]) {
	log := a.Log.With("address", addr)
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: a.Namespace, Name: LeaseName(addr)},
		Client:     a.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: a.Node},
	}
	for ctx.Err() == nil {
		var fwd *Forwarder
		var lctx context.Context
		var lcancel context.CancelFunc
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: lock, LeaseDuration: LeaseDuration, RenewDeadline: RenewDeadline, RetryPeriod: RetryPeriod,
			ReleaseOnCancel: true, Name: LeaseName(addr),
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(context.Context) {
					start := time.Now()
					if err := Add(a.NodeIP(), addr); err != nil {
						log.Error("announce load-balancer address", "error", err)
						return
					}
					lctx, lcancel = context.WithCancel(ctx)
					fwd = &Forwarder{Log: log, Addr: addr, Target: t, Ranges: ranges}
					if err := fwd.Start(lctx); err != nil {
						log.Error("forward load-balancer address", "error", err)
					}
					if err := GratuitousARP(a.NodeIP(), addr); err != nil {
						log.Warn("gratuitous ARP", "error", err)
					}
					log.Info("load-balancer address announced", "took", time.Since(start))
				},
				OnStoppedLeading: func() {
					if lcancel != nil {
						lcancel()
						fwd.Wait()
					}
					if err := Remove(addr); err != nil {
						log.Error("withdraw load-balancer address", "error", err)
						return
					}
					log.Info("load-balancer address withdrawn")
				},
			},
		})
		if err != nil {
			log.Error("lease election", "error", err)
			return
		}
		le.Run(ctx)
	}
}

// Add puts addr (/32, label "<interface>:mlb") on the interface holding
// nodeIP.
func Add(nodeIP, addr netip.Addr) error {
	link, err := linkWith(nodeIP)
	if err != nil {
		return err
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(addr.AsSlice()), Mask: net.CIDRMask(32, 32)}, Label: label(link)}
	if err := netlink.AddrReplace(link, a); err != nil {
		return fmt.Errorf("add load-balancer address %s to %s: %w", addr, link.Attrs().Name, err)
	}
	return nil
}

func label(l netlink.Link) string {
	s := l.Attrs().Name + addressLabel
	if len(s) > 15 {
		return ""
	}
	return s
}

// Remove withdraws addr (when this package put it there) from every
// interface; addr == zero withdraws every such address (cleanup).
func Remove(addr netip.Addr) error {
	addrs, err := nldump.Retry(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	var errs []error
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP.To4())
		if !strings.HasSuffix(a.Label, addressLabel) || (addr.IsValid() && ip != addr) {
			continue
		}
		link, err := netlink.LinkByIndex(a.LinkIndex)
		if err != nil {
			errs = append(errs, fmt.Errorf("find the interface of %s: %w", ip, err))
			continue
		}
		if err := netlink.AddrDel(link, &a); err != nil {
			errs = append(errs, fmt.Errorf("remove load-balancer address %s from %s: %w", ip, link.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

func linkWith(ip netip.Addr) (netlink.Link, error) {
	if !ip.IsValid() {
		return nil, errors.New("the node has no IPv4 InternalIP: no interface to announce on")
	}
	addrs, err := nldump.Retry(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP.To4()); ok && got == ip {
			l, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("find the interface of %s: %w", ip, err)
			}
			return l, nil
		}
	}
	return nil, fmt.Errorf("no interface has the node address %s", ip)
}
