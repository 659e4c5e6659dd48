package plugin

import (
	"context"
	"encoding/json"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/membrane-mesh/membrane/mesh/cni/ipam"
	"github.com/membrane-mesh/membrane/mesh/cni/netconf"
	"github.com/membrane-mesh/membrane/mesh/cni/veth"
)

// Status reports whether the plugin can serve ADD: the config is valid and
// the IPAM data dir is usable. An exhausted range is not "unavailable": it
// clears when pods go away, and ADD says so itself.
func (p *Plugin) Status(ctx context.Context, args *skel.CmdArgs) error {
	cfg, err := p.config("STATUS", netconf.Parse, args.StdinData)
	if err != nil {
		return err
	}
	log, done := p.commandLogger(cfg, "STATUS", args)
	defer done()
	if _, err := p.notifier(cfg); err != nil {
		return cniError(types.ErrInvalidNetworkConfig, "agent", err)
	}
	alloc, err := ipam.New(cfg.DataDir, cfg.Prefix)
	if err != nil {
		return cniError(types.ErrInvalidNetworkConfig, "ipam", err)
	}
	if _, err := alloc.List(ctx); err != nil {
		log.Error("data dir not usable", "dataDir", cfg.DataDir, "error", err)
		return cniError(types.ErrPluginNotAvailable, "ipam data dir "+cfg.DataDir, err)
	}
	return nil
}

// GC releases the IPs, and removes the host veths, of every attachment not in
// the runtime's cni.dev/valid-attachments. Without that key it does nothing.
func (p *Plugin) GC(ctx context.Context, args *skel.CmdArgs) (err error) {
	cfg, err := p.config("GC", netconf.Decode, args.StdinData)
	if err != nil {
		return err
	}
	log, done := p.commandLogger(cfg, "GC", args)
	defer done()
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(args.StdinData, &raw); err != nil {
		return cniError(types.ErrDecodingFailure, "decode network config", err)
	}
	if _, ok := raw["cni.dev/valid-attachments"]; !ok {
		log.Warn("GC without cni.dev/valid-attachments, nothing to do")
		return nil
	}
	valid := make(map[ipam.Owner]bool, len(cfg.ValidAttachments))
	for _, a := range cfg.ValidAttachments {
		valid[ipam.Owner{ContainerID: a.ContainerID, IfName: a.IfName}] = true
	}
	store, err := ipam.NewStore(cfg.DataDir)
	if err != nil {
		return cniError(types.ErrInvalidNetworkConfig, "ipam", err)
	}
	freed, err := store.Prune(ctx, func(o ipam.Owner) bool { return valid[o] })
	if err != nil {
		return cniError(types.ErrIOFailure, "release stale IPs", err)
	}
	for _, al := range freed {
		removed := false
		if al.Owner.ContainerID != "" {
			if removed, err = veth.RemoveAll(ctx, al.Owner.ContainerID, al.Owner.IfName); err != nil {
				return cniError(types.ErrInternal, "remove stale host veth", err)
			}
		}
		log.Info("released stale attachment", "ip", al.IP, "containerID", al.Owner.ContainerID,
			"ifname", al.Owner.IfName, "vethRemoved", removed)
	}
	return nil
}
