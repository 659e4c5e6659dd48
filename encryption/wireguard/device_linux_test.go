package wireguard

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func TestTUNGSOMaxSegs(t *testing.T) {
	for _, mtu := range []int{1280, 1420, 1440, 8920, 65000} {
		n := tunGSOMaxSegs(mtu)
		// n encrypted segments fit one UDP GSO datagram (IPv4 and IPv6),
		// n+1 do not (unless a single one is all there is).
		if n*(mtu+wgOverhead) > 65507 || (n > 1 && (n+1)*(mtu+wgOverhead) <= 65507) || n < 1 {
			t.Errorf("MTU %d: %d segments", mtu, n)
		}
	}
	if n := tunGSOMaxSegs(MTU); n != 45 {
		t.Errorf("default MTU %d: %d segments, want 45", MTU, n)
	}
}

// TestEmbeddedDeviceGSOCap starts the embedded device in a network
// namespace of its own and reads the cap back from the kernel.
func TestEmbeddedDeviceGSOCap(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespace, TUN device)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no TUN: %v", err)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		errc <- func() error {
			ns, err := netns.New()
			if err != nil {
				return fmt.Errorf("new netns: %w", err)
			}
			defer ns.Close()
			h, err := netlink.NewHandleAt(ns)
			if err != nil {
				return err
			}
			defer h.Close()
			name := fmt.Sprintf("mbwgt%d", os.Getpid()%100000)
			d, err := startEmbedded(slog.New(slog.DiscardHandler), h, name, MTU)
			if err != nil {
				return err
			}
			defer d.Close()
			link, err := h.LinkByName(name)
			if err != nil {
				return err
			}
			if got := link.Attrs().GSOMaxSegs; got != uint32(tunGSOMaxSegs(MTU)) {
				return fmt.Errorf("gso_max_segs of %s: %d, want %d", name, got, tunGSOMaxSegs(MTU))
			}
			if link.Attrs().OperState == netlink.OperDown {
				return fmt.Errorf("%s is down", name)
			}
			return nil
		}()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
