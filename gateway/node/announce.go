package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/membrane-mesh/membrane/gateway/ir"
	"github.com/membrane-mesh/membrane/mesh/nldump"
)

// Addresses returns the addresses of the model's listeners, sorted and
// without repeats: the Gateway and Ingress addresses the L2 announcer
// (mesh/l2announce) elects a holder for, by a Lease per address.
func Addresses(model ir.IR) []netip.Addr {
	var out []netip.Addr
	for _, l := range model.Listeners {
		if l.Address.IsValid() && !slices.Contains(out, l.Address) {
			out = append(out, l.Address)
		}
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}

// addressLabel marked the addresses of the former per-node gateway
// announcer (IFA_LABEL "<interface>:mgw"); Cleanup still removes them.
const addressLabel = ":mgw"

// Cleanup removes every address labelled "<interface>:mgw", which agents
// of earlier versions put on the node's interface to announce Gateway
// addresses.
func Cleanup(log *slog.Logger) error {
	addrs, err := nldump.Retry(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	var errs []error
	for _, a := range addrs {
		if len(a.Label) <= len(addressLabel) || a.Label[len(a.Label)-len(addressLabel):] != addressLabel {
			continue
		}
		link, err := netlink.LinkByIndex(a.LinkIndex)
		if err != nil {
			errs = append(errs, fmt.Errorf("find the interface of %s: %w", a.IP, err))
			continue
		}
		if err := netlink.AddrDel(link, &a); err != nil {
			errs = append(errs, fmt.Errorf("remove gateway address %s from %s: %w", a.IP, link.Attrs().Name, err))
			continue
		}
		log.Info("gateway address removed", "address", a.IP.String(), "interface", link.Attrs().Name)
	}
	return errors.Join(errs...)
}
