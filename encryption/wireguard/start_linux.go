package wireguard

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
)

// Start creates (or adopts) the device in the current network namespace
// with the chosen backend: the kernel's when asked or, with BackendAuto,
// when the kernel has WireGuard; otherwise the embedded one. Its MTU is
// underlayMTU less Overhead.
func Start(log *slog.Logger, backend Backend, underlayMTU int) (*Manager, error) {
	mtu := underlayMTU - Overhead
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	chosen, closer, err := startDevice(log, h, backend, DeviceName, mtu)
	if err != nil {
		return nil, err
	}
	client, err := wgctrl.New()
	if err != nil {
		if closer != nil {
			closer.Close()
		}
		return nil, fmt.Errorf("wgctrl: %w", err)
	}
	router, err := newNetlinkRouter(DeviceName)
	if err != nil {
		if closer != nil {
			closer.Close()
		}
		client.Close()
		return nil, err
	}
	m := NewManager(log, DeviceName, chosen, client, router, closerFunc(func() error {
		router.Close()
		if closer != nil {
			return closer.Close()
		}
		return nil
	}))
	log.Info("WireGuard device ready", "device", DeviceName, "backend", chosen, "mtu", mtu, "port", ListenPort)
	return m, nil
}

// startDevice brings the device up with the chosen backend; the closer
// stops an embedded device.
func startDevice(log *slog.Logger, h links, backend Backend, name string, mtu int) (Backend, *embeddedDevice, error) {
	if backend == BackendKernel || backend == BackendAuto {
		err := ensureKernelDevice(h, name, mtu)
		if err == nil {
			return BackendKernel, nil, nil
		}
		if backend == BackendKernel || !errors.Is(err, errNoKernelWireGuard) {
			return "", nil, err
		}
		log.Info("kernel has no WireGuard: using the embedded device", "reason", err)
	}
	d, err := startEmbedded(log, h, name, mtu)
	if err != nil {
		return "", nil, err
	}
	return BackendEmbedded, d, nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// Remove undoes everything Start and Reconfig made in the current network
// namespace — the policy rule, the routing table, the device — for an
// agent that runs with encryption off. Nothing there is an error.
func Remove() error {
	return remove(slog.New(slog.DiscardHandler))
}

func remove(log *slog.Logger) error {
	router, err := newNetlinkRouter(DeviceName)
	if err != nil {
		return err
	}
	defer router.Close()
	errs := []error{router.remove(log)}
	if link, err := router.h.LinkByName(DeviceName); err == nil {
		// Ours: a kernel device or the embedded one's TUN by our name.
		// Anything else by that name is left alone.
		switch link.Type() {
		case "wireguard", "tuntap":
			if err := router.h.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("delete %s: %w", DeviceName, err))
			} else if err == nil {
				log.Info("deleted WireGuard device", "device", DeviceName, "type", link.Type())
			}
		default:
			log.Warn("left an interface by the WireGuard device's name that is not a WireGuard device", "device", DeviceName, "type", link.Type())
		}
	}
	return errors.Join(errs...)
}
