package wireguard

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
)

// Backend is the implementation behind the device.
type Backend string

// Backends. BackendAuto picks the kernel's when it has WireGuard.
const (
	BackendAuto     Backend = "auto"
	BackendKernel   Backend = "kernel"
	BackendEmbedded Backend = "embedded"
)

// ParseBackend parses a --wireguard-backend value.
func ParseBackend(s string) (Backend, error) {
	switch b := Backend(s); b {
	case BackendAuto, BackendKernel, BackendEmbedded:
		return b, nil
	}
	return "", fmt.Errorf("%q: must be auto, kernel or embedded", s)
}

// links is the part of a netlink handle that creates the kernel device.
type links interface {
	LinkByName(name string) (netlink.Link, error)
	LinkAdd(link netlink.Link) error
	LinkDel(link netlink.Link) error
	LinkSetMTU(link netlink.Link, mtu int) error
	LinkSetUp(link netlink.Link) error
}

// errNoKernelWireGuard means the kernel has no WireGuard link type.
var errNoKernelWireGuard = errors.New("the kernel has no WireGuard support (no wireguard link type)")

// ensureKernelDevice creates (or adopts, after an agent restart) the
// kernel WireGuard link name with mtu and sets it up.
func ensureKernelDevice(h links, name string, mtu int) error {
	link, err := h.LinkByName(name)
	if err == nil && link.Type() != "wireguard" {
		// Left by something else (e.g. an embedded device's TUN still
		// being torn down): replace it.
		if err := h.LinkDel(link); err != nil {
			return fmt.Errorf("delete %s of type %s: %w", name, link.Type(), err)
		}
		err = netlink.LinkNotFoundError{}
	}
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("find %s: %w", name, err)
		}
		wg := &netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}}
		if err := h.LinkAdd(wg); err != nil {
			if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("%w: %v", errNoKernelWireGuard, err)
			}
			return fmt.Errorf("add WireGuard link %s: %w", name, err)
		}
		if link, err = h.LinkByName(name); err != nil {
			return fmt.Errorf("find %s: %w", name, err)
		}
	}
	if link.Attrs().MTU != mtu {
		if err := h.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("set MTU of %s: %w", name, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

// embeddedDevice is wireguard-go running in this process on a TUN device
// of the current network namespace, configured like the kernel's: through
// its UAPI socket at the standard path, /var/run/wireguard/NAME.sock,
// which wgctrl finds.
type embeddedDevice struct {
	log  *slog.Logger
	dev  *device.Device
	uapi net.Listener
	wg   sync.WaitGroup
}

func startEmbedded(log *slog.Logger, h links, name string, mtu int) (*embeddedDevice, error) {
	if link, err := h.LinkByName(name); err == nil {
		// A TUN device cannot be adopted: its file descriptor belongs to
		// the process that made it, which is still alive (a device of a
		// dead process is gone). A kernel device from an earlier run with
		// another backend can go.
		if link.Type() != "wireguard" {
			return nil, fmt.Errorf("%s already exists (type %s): another WireGuard process owns it in this network namespace", name, link.Type())
		}
		if err := h.LinkDel(link); err != nil {
			return nil, fmt.Errorf("delete kernel device %s: %w", name, err)
		}
	}
	// The TUN device is made in the network namespace of the calling thread:
	// the agent's whole process runs in the node's namespace. CreateTUN
	// enables TSO/USO offloads (virtio-net headers) when the kernel has them.
	t, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("create TUN device %s: %w", name, err)
	}
	logger := &device.Logger{
		Verbosef: func(format string, args ...any) {
			log.Debug("wireguard-go", "detail", fmt.Sprintf(format, args...))
		},
		Errorf: func(format string, args ...any) {
			log.Warn("wireguard-go", "detail", fmt.Sprintf(format, args...))
		},
	}
	d := &embeddedDevice{log: log, dev: device.NewDevice(t, conn.NewDefaultBind(), logger)}
	f, err := ipc.UAPIOpen(name)
	if err != nil {
		d.dev.Close()
		return nil, fmt.Errorf("open UAPI socket of %s: %w", name, err)
	}
	d.uapi, err = ipc.UAPIListen(name, f)
	f.Close()
	if err != nil {
		d.dev.Close()
		return nil, fmt.Errorf("listen on UAPI socket of %s: %w", name, err)
	}
	d.wg.Add(1)
	go d.serveUAPI()
	link, err := h.LinkByName(name)
	if err == nil {
		err = h.LinkSetUp(link)
	}
	if err == nil {
		err = d.dev.Up()
	}
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("set %s up: %w", name, err)
	}
	return d, nil
}

func (d *embeddedDevice) serveUAPI() {
	defer d.wg.Done()
	for {
		c, err := d.uapi.Accept()
		if err != nil {
			return
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.dev.IpcHandle(c)
		}()
	}
}

// Close stops the device: the TUN link and the UAPI socket go with it.
func (d *embeddedDevice) Close() error {
	err := d.uapi.Close()
	d.dev.Close()
	d.wg.Wait()
	return err
}
