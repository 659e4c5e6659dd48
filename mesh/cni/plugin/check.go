package plugin

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/membrane-mesh/membrane/mesh/cni/ipam"
	"github.com/membrane-mesh/membrane/mesh/cni/netconf"
	"github.com/membrane-mesh/membrane/mesh/cni/veth"
)

// Check verifies that the pod is attached as Add left it: the IPAM file is
// held by this container, the prevResult (when the runtime sends one) names
// the same IP and sandbox, and the veth pair, addresses, routes and neighbor
// entry are in place.
func (p *Plugin) Check(ctx context.Context, args *skel.CmdArgs) (err error) {
	cfg, err := p.config("CHECK", netconf.Parse, args.StdinData)
	if err != nil {
		return err
	}
	log, done := p.commandLogger(cfg, "CHECK", args)
	defer done()
	defer func() {
		if err != nil {
			log.Error("check failed", "error", err)
		}
	}()

	podNS, err := openNetNS(args.Netns)
	if err != nil {
		return err
	}
	defer podNS.Close()
	alloc, err := ipam.New(cfg.DataDir, cfg.Prefix)
	if err != nil {
		return cniError(types.ErrInvalidNetworkConfig, "ipam", err)
	}
	ip, ok, err := alloc.Lookup(ctx, ipam.Owner{ContainerID: args.ContainerID, IfName: args.IfName})
	if err != nil {
		return cniError(types.ErrIOFailure, "look up IP", err)
	}
	if !ok {
		return types.NewError(types.ErrUnknownContainer,
			fmt.Sprintf("no IP in %s is allocated to container %s interface %s (data dir %s)",
				cfg.Prefix, args.ContainerID, args.IfName, cfg.DataDir), "")
	}
	if err := checkPrevResult(cfg, args, ip); err != nil {
		return err
	}
	err = veth.Verify(ctx, veth.Config{
		HostIfName: veth.HostIfName(args.ContainerID, args.IfName),
		PodIfName:  args.IfName,
		PodNS:      podNS,
		IP:         ip,
		MTU:        cfg.MTU,
	})
	if err != nil {
		return cniError(types.ErrInternal, "check "+ip.String(), err)
	}
	log.Info("pod attachment ok", "ip", ip)
	return nil
}

// checkPrevResult compares the runtime's cached result with the allocation.
func checkPrevResult(cfg netconf.Config, args *skel.CmdArgs, ip netip.Addr) error {
	if cfg.RawPrevResult == nil {
		return nil
	}
	if err := version.ParsePrevResult(&cfg.NetConf); err != nil {
		return cniError(types.ErrDecodingFailure, "parse prevResult", err)
	}
	prev, err := current.NewResultFromResult(cfg.PrevResult)
	if err != nil {
		return cniError(types.ErrDecodingFailure, "convert prevResult", err)
	}
	found := false
	for _, c := range prev.IPs {
		if a, ok := netip.AddrFromSlice(c.Address.IP.To4()); ok && a == ip {
			found = true
		}
	}
	if !found {
		return types.NewError(types.ErrInternal,
			fmt.Sprintf("prevResult does not contain the allocated IP %s", ip), "")
	}
	for _, itf := range prev.Interfaces {
		if itf.Name == args.IfName && itf.Sandbox != "" && itf.Sandbox != args.Netns {
			return types.NewError(types.ErrInternal,
				fmt.Sprintf("prevResult puts %s in netns %s, not %s", args.IfName, itf.Sandbox, args.Netns), "")
		}
	}
	return nil
}
