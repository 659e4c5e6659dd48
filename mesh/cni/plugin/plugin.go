// Package plugin implements the membrane-cni commands (ADD, DEL, CHECK,
// STATUS, GC) on top of netconf, ipam and veth, so that they can be tested
// without the binary. Host-side work happens in the calling thread's network
// namespace: the node's, for the plugin binary.
package plugin

import (
	"context"
	"log/slog"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/membrane-mesh/membrane/mesh/cni/ipam"
	"github.com/membrane-mesh/membrane/mesh/cni/netconf"
	"github.com/membrane-mesh/membrane/mesh/cni/veth"
)

// Options configure a Plugin. The zero value works.
type Options struct {
	// Logger receives logs when the network config has no logFile.
	// Default: discard.
	Logger *slog.Logger
	// Notifier returns the Notifier for a network config. Default NotifierFor.
	Notifier func(netconf.Config) (Notifier, error)
}

// Plugin runs CNI commands.
type Plugin struct {
	log      *slog.Logger
	notifier func(netconf.Config) (Notifier, error)
}

// New returns a Plugin.
func New(opts Options) *Plugin {
	p := &Plugin{log: opts.Logger, notifier: opts.Notifier}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.notifier == nil {
		p.notifier = NotifierFor
	}
	return p
}

// Add attaches the pod: allocates its IP, creates and configures the veth
// pair, tells the agent. On failure it releases and removes what it made. The
// result is in the config's CNI version.
func (p *Plugin) Add(ctx context.Context, args *skel.CmdArgs) (_ types.Result, err error) {
	cfg, err := p.config("ADD", netconf.Parse, args.StdinData)
	if err != nil {
		return nil, err
	}
	log, done := p.commandLogger(cfg, "ADD", args)
	defer done()
	start := time.Now()
	defer func() {
		if err != nil {
			log.Error("add failed", "error", err)
		}
	}()

	notifier, err := p.notifier(cfg)
	if err != nil {
		return nil, cniError(types.ErrInvalidNetworkConfig, "agent", err)
	}
	podNS, err := openNetNS(args.Netns)
	if err != nil {
		return nil, err
	}
	defer podNS.Close()
	alloc, err := ipam.New(cfg.DataDir, cfg.Prefix)
	if err != nil {
		return nil, cniError(types.ErrInvalidNetworkConfig, "ipam", err)
	}

	hostIf := veth.HostIfName(args.ContainerID, args.IfName)
	if removed, err := veth.RemoveAll(ctx, args.ContainerID, args.IfName); err != nil {
		return nil, cniError(types.ErrInternal, "remove stale host veth", err)
	} else if removed {
		log.Warn("removed stale host veth left by an earlier ADD", "hostIf", hostIf)
	}

	owner := ipam.Owner{ContainerID: args.ContainerID, IfName: args.IfName}
	ip, err := alloc.Allocate(ctx, owner)
	if err != nil {
		return nil, allocError(err)
	}
	defer func() {
		if err == nil {
			return
		}
		if _, rerr := alloc.Release(context.WithoutCancel(ctx), owner); rerr != nil {
			log.Error("release IP after failed add", "ip", ip, "error", rerr)
		}
	}()

	pair, err := veth.Setup(ctx, veth.Config{
		HostIfName: hostIf,
		PodIfName:  args.IfName,
		PodNS:      podNS,
		IP:         ip,
		MTU:        cfg.MTU,
	})
	if err != nil {
		return nil, cniError(types.ErrInternal, "set up veth", err)
	}
	defer func() {
		if err == nil {
			return
		}
		if _, rerr := veth.Remove(context.WithoutCancel(ctx), hostIf); rerr != nil {
			log.Error("remove veth after failed add", "hostIf", hostIf, "error", rerr)
		}
	}()

	podNamespace, podName := podRef(args.Args)
	ep := Endpoint{
		ContainerID: args.ContainerID, IfName: args.IfName, Netns: args.Netns,
		PodNamespace: podNamespace, PodName: podName, IP: ip,
		HostIfName: pair.Host.Name, HostIfIndex: pair.Host.Index,
		HostMAC: pair.Host.MAC, PodMAC: pair.Pod.MAC,
	}
	if err := notifier.EndpointAdded(ctx, ep); err != nil {
		return nil, cniError(types.ErrInternal, "tell agent about endpoint", err)
	}

	res, err := newResult(pair, args.Netns, cfg.MTU, ip).GetAsVersion(cfg.CNIVersion)
	if err != nil {
		return nil, cniError(types.ErrIncompatibleCNIVersion, "convert result", err)
	}
	log.Info("pod attached", "ip", ip, "hostIf", hostIf, "duration", time.Since(start))
	return res, nil
}

// Del detaches the pod: removes the host veth (and with it the pod side) and
// releases the IP. It succeeds when things are already gone, netns included,
// and needs only a decodable config: the PodCIDR is not consulted.
func (p *Plugin) Del(ctx context.Context, args *skel.CmdArgs) (err error) {
	cfg, err := p.config("DEL", netconf.Decode, args.StdinData)
	if err != nil {
		return err
	}
	log, done := p.commandLogger(cfg, "DEL", args)
	defer done()
	defer func() {
		if err != nil {
			log.Error("del failed", "error", err)
		}
	}()

	hostIf := veth.HostIfName(args.ContainerID, args.IfName)
	removed, err := veth.RemoveAll(ctx, args.ContainerID, args.IfName)
	if err != nil {
		return cniError(types.ErrInternal, "remove host veth", err)
	}
	store, err := ipam.NewStore(cfg.DataDir)
	if err != nil {
		return cniError(types.ErrInvalidNetworkConfig, "ipam", err)
	}
	released, err := store.Release(ctx, ipam.Owner{ContainerID: args.ContainerID, IfName: args.IfName})
	if err != nil {
		return cniError(types.ErrIOFailure, "release IP", err)
	}

	ep := Endpoint{ContainerID: args.ContainerID, IfName: args.IfName, Netns: args.Netns, HostIfName: hostIf}
	ep.PodNamespace, ep.PodName = podRef(args.Args)
	if len(released) > 0 {
		ep.IP = released[0]
	}
	if nerr := p.endpointDeleted(ctx, cfg, ep); nerr != nil {
		log.Warn("could not tell agent about deleted endpoint", "error", nerr)
	}
	log.Info("pod detached", "hostIf", hostIf, "vethRemoved", removed, "released", released)
	return nil
}

func (p *Plugin) endpointDeleted(ctx context.Context, cfg netconf.Config, ep Endpoint) error {
	n, err := p.notifier(cfg)
	if err != nil {
		return err
	}
	return n.EndpointDeleted(ctx, ep)
}
