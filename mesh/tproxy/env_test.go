package tproxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/membrane-mesh/membrane/e2e/netns"
	"github.com/membrane-mesh/membrane/e2e/testenv"
)

// requireRoot skips (fails in CI) unless the test runs as root.
func requireRoot(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t, "creates network namespaces, nftables tables and ip rules")
}

// newNetns creates a network namespace with lo up, pinned in a temp dir
// and removed when the test ends, failed or not.
func newNetns(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := netns.Create(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.Remove(path); err != nil {
			t.Errorf("remove netns %s: %v", name, err)
		}
	})
	in(t, path, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("find lo: %w", err)
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return fmt.Errorf("set lo up: %w", err)
		}
		return nil
	})
	return path
}

// in runs fn on a thread in the namespace at path; fn must not hand work
// to other goroutines that expect to be in it.
func in(t *testing.T, path string, fn func() error) {
	t.Helper()
	if err := netns.Do(path, fn); err != nil {
		t.Fatal(err)
	}
}

// requireKernel skips (fails in CI) if the kernel lacks policy routing,
// nft_socket or nft_tproxy, probing each in a scratch namespace. Any other
// failure fails the test.
func requireKernel(t *testing.T) {
	t.Helper()
	scratch := newNetns(t, "probe")
	missing := func(err error) bool {
		return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EAFNOSUPPORT)
	}
	probes := []struct {
		feature string
		run     func() error
	}{
		{"policy routing (CONFIG_IP_MULTIPLE_TABLES)", func() error {
			r := netlink.NewRule()
			r.Family, r.Priority, r.Mark, r.Table = unix.AF_INET, 100, 1, 100
			return netlink.RuleAdd(r)
		}},
		{"nft socket expression (CONFIG_NFT_SOCKET)", func() error {
			return probeNFT(&expr.Socket{Key: expr.SocketKeyTransparent, Register: 1})
		}},
		{"nft tproxy expression (CONFIG_NFT_TPROXY)", func() error {
			return probeNFT(
				&expr.Immediate{Register: 1, Data: []byte{127, 0, 0, 1}},
				&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(1)},
				&expr.TProxy{Family: unix.NFPROTO_IPV4, TableFamily: unix.NFPROTO_IPV4, RegAddr: 1, RegPort: 2},
			)
		}},
	}
	for _, p := range probes {
		var err error
		in(t, scratch, func() error { err = p.run(); return nil })
		switch {
		case err == nil:
		case missing(err):
			testenv.Missing(t, fmt.Sprintf("kernel lacks %s: %v", p.feature, err))
		default:
			t.Fatalf("probe %s: %v", p.feature, err)
		}
	}
}

// probeNFT adds a prerouting chain with one rule made of exprs to a
// throwaway table.
func probeNFT(exprs ...expr.Any) error {
	conn, err := nftables.New()
	if err != nil {
		return err
	}
	tbl := conn.AddTable(&nftables.Table{Name: "probe", Family: nftables.TableFamilyIPv4})
	ch := conn.AddChain(&nftables.Chain{
		Name: "probe", Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle,
	})
	conn.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: exprs})
	return conn.Flush()
}

// setTransparent is a net.ListenConfig / net.Dialer Control that sets
// IP_TRANSPARENT, as Envoy does on its transparent listener and on its
// original_src upstream sockets.
func setTransparent(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set IP_TRANSPARENT: %w", serr)
	}
	return nil
}

// netIPNet parses a CIDR literal into the form netlink wants.
func netIPNet(cidr string) *net.IPNet {
	ip, n, err := net.ParseCIDR(cidr)
	if err != nil {
		panic(err)
	}
	n.IP = ip.To4()
	return n
}

func defaultDst() *net.IPNet { return netIPNet("0.0.0.0/0") }

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}
