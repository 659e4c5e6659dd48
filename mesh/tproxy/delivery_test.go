package tproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The topology: a "node" namespace (where Install runs and the proxy
// listens) and a "pod" namespace, joined by a veth pair. The pod has /32
// addresses and a default route via the node, as pods do.
const (
	nodeVeth   = "veth0" // in the node
	podVeth    = "eth0"  // in the pod
	nodeCIDR   = "10.99.0.1/24"
	podAddr    = "10.99.0.2"      // the client
	serverAddr = "10.99.0.3:9000" // a server in the pod
	// vipAddr is owned by nobody: the pod connects to it and the datapath
	// stand-in marks the connection for the proxy.
	vipAddr = "10.99.0.77:8080"
	// upstreamAddr is owned by nobody: the proxy's transparent upstream
	// socket binds it, as Envoy's original_src binds the pod's address.
	upstreamAddr = "10.99.0.50"
)

const (
	failWait = time.Second     // how long a connection that must fail gets
	okWait   = 5 * time.Second // bound on everything that must succeed
)

// topology builds the two namespaces and returns their paths.
func topology(t *testing.T) (node, pod string) {
	t.Helper()
	node, pod = newNetns(t, "node"), newNetns(t, "pod")
	podNS, err := vnetns.GetFromPath(pod)
	if err != nil {
		t.Fatal(err)
	}
	defer podNS.Close()
	in(t, node, func() error {
		la := netlink.NewLinkAttrs()
		la.Name = nodeVeth
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: podVeth, PeerNamespace: netlink.NsFd(podNS)}); err != nil {
			return fmt.Errorf("add veth: %w", err)
		}
		l, err := netlink.LinkByName(nodeVeth)
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: netIPNet(nodeCIDR)}); err != nil {
			return fmt.Errorf("node address: %w", err)
		}
		return netlink.LinkSetUp(l)
	})
	in(t, pod, func() error {
		l, err := netlink.LinkByName(podVeth)
		if err != nil {
			return err
		}
		for _, a := range []string{podAddr, netip.MustParseAddrPort(serverAddr).Addr().String()} {
			if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: netIPNet(a + "/32")}); err != nil {
				return fmt.Errorf("pod address %s: %w", a, err)
			}
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		gw := netIPNet(nodeCIDR).IP
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Scope: netlink.SCOPE_LINK, Dst: &net.IPNet{IP: gw, Mask: net.CIDRMask(32, 32)}}); err != nil {
			return fmt.Errorf("pod route to the node: %w", err)
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: defaultDst(), Gw: gw}); err != nil {
			return fmt.Errorf("pod default route: %w", err)
		}
		return nil
	})
	return node, pod
}

// markForProxy stands in for the eBPF datapath: in its own table, at
// priority raw, it marks the pod's packets to vip with the to-proxy mark:
//
//	iif veth0 ip daddr 10.99.0.77 meta l4proto tcp tcp dport 8080 meta mark set ToProxyMark
func markForProxy(c Config) error {
	l, err := netlink.LinkByName(nodeVeth)
	if err != nil {
		return err
	}
	conn, err := nftables.New()
	if err != nil {
		return err
	}
	tbl := conn.AddTable(&nftables.Table{Name: "test_datapath", Family: nftables.TableFamilyIPv4})
	ch := conn.AddChain(&nftables.Chain{
		Name: "prerouting", Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw,
	})
	vip := netip.MustParseAddrPort(vipAddr)
	addr := vip.Addr().As4()
	conn.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIF, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(uint32(l.Attrs().Index))},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr[:]},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(vip.Port())},
		&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(c.ToProxyMark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}})
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("add the datapath stand-in: %w", err)
	}
	return nil
}

// echoServer serves echo on addr in namespace ns until the test ends.
func echoServer(t *testing.T, ns string, addr netip.AddrPort) {
	t.Helper()
	var ln net.Listener
	in(t, ns, func() (err error) {
		ln, err = net.Listen("tcp4", addr.String())
		return err
	})
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(okWait))
				_, _ = io.Copy(c, c)
			})
		}
	})
}

// dialPod connects from the pod to vip.
func dialPod(t *testing.T, pod string, timeout time.Duration) (net.Conn, error) {
	t.Helper()
	var c net.Conn
	var err error
	in(t, pod, func() error {
		d := net.Dialer{Timeout: timeout}
		c, err = d.DialContext(t.Context(), "tcp4", vipAddr)
		return nil
	})
	if c != nil {
		t.Cleanup(func() { _ = c.Close() })
	}
	return c, err
}

// dialUpstream connects, like Envoy with original_src, from a node socket
// with IP_TRANSPARENT bound to upstreamSrc to the server in the pod.
func dialUpstream(t *testing.T, node string, timeout time.Duration) (net.Conn, error) {
	t.Helper()
	var c net.Conn
	var err error
	in(t, node, func() error {
		d := net.Dialer{
			Timeout:   timeout,
			LocalAddr: &net.TCPAddr{IP: net.ParseIP(upstreamAddr)},
			Control:   setTransparent,
		}
		c, err = d.DialContext(t.Context(), "tcp4", serverAddr)
		return nil
	})
	if c != nil {
		t.Cleanup(func() { _ = c.Close() })
	}
	return c, err
}

// roundTrip sends msg on a, expects it on b, and sends it back.
func roundTrip(a, b net.Conn, msg string) error {
	deadline := time.Now().Add(okWait)
	if err := errors.Join(a.SetDeadline(deadline), b.SetDeadline(deadline)); err != nil {
		return err
	}
	if _, err := io.WriteString(a, msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(b, buf); err != nil {
		return fmt.Errorf("read on the other side: %w", err)
	}
	if _, err := b.Write(buf); err != nil {
		return fmt.Errorf("write back: %w", err)
	}
	if _, err := io.ReadFull(a, buf); err != nil {
		return fmt.Errorf("read the echo: %w", err)
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// TestDelivery drives real TCP through the plumbing: a pod's connection to
// an address nobody owns, marked by the datapath stand-in, reaches the
// transparent listener with its original destination; and the reply to a
// transparent upstream socket bound to an address that is not local
// reaches that socket. Both fail before Install and after Remove.
func TestDelivery(t *testing.T) {
	requireRoot(t)
	requireKernel(t)
	c := NewConfig(15001)
	node, pod := topology(t)
	vip := netip.MustParseAddrPort(vipAddr)
	upstreamSrc := netip.MustParseAddr(upstreamAddr)
	ctx := t.Context()

	var proxy *net.TCPListener
	in(t, node, func() error {
		lc := net.ListenConfig{Control: setTransparent}
		ln, err := lc.Listen(ctx, "tcp4", netip.AddrPortFrom(c.ListenAddr, c.Port).String())
		if err != nil {
			return fmt.Errorf("transparent listener: %w", err)
		}
		proxy = ln.(*net.TCPListener)
		return nil
	})
	t.Cleanup(func() { _ = proxy.Close() })
	accept := func(wait time.Duration) (net.Conn, error) {
		if err := proxy.SetDeadline(time.Now().Add(wait)); err != nil {
			return nil, err
		}
		conn, err := proxy.Accept()
		if conn != nil {
			t.Cleanup(func() { _ = conn.Close() })
		}
		return conn, err
	}
	echoServer(t, pod, netip.MustParseAddrPort(serverAddr))
	in(t, node, func() error { return markForProxy(c) })

	// expectNoDelivery checks both paths fail, so that the test can fail.
	expectNoDelivery := func(when string) {
		t.Helper()
		if conn, err := dialPod(t, pod, failWait); err == nil {
			t.Errorf("%s: the pod connected to %s (local %s)", when, vip, conn.LocalAddr())
		} else {
			t.Logf("%s: pod -> %s: %v (as expected)", when, vip, err)
		}
		if conn, err := accept(100 * time.Millisecond); !isTimeout(err) {
			t.Errorf("%s: the proxy accepted %v, %v; want nothing", when, conn, err)
		}
		conn, err := dialUpstream(t, node, failWait)
		switch {
		case err == nil:
			t.Errorf("%s: the upstream socket connected from %s", when, conn.LocalAddr())
		case !isTimeout(err):
			t.Errorf("%s: upstream dial: %v, want a timeout (the reply must be lost)", when, err)
		default:
			t.Logf("%s: upstream from %s: %v (as expected)", when, upstreamSrc, err)
		}
	}

	expectNoDelivery("before Install")
	if t.Failed() {
		t.FailNow()
	}

	in(t, node, func() error { return Install(ctx, testLogger(t), c) })

	t.Run("to proxy", func(t *testing.T) {
		client, err := dialPod(t, pod, okWait)
		if err != nil {
			t.Fatalf("pod -> %s: %v", vip, err)
		}
		conn, err := accept(okWait)
		if err != nil {
			t.Fatalf("the proxy accepted nothing: %v", err)
		}
		local, remote := conn.LocalAddr().(*net.TCPAddr).AddrPort(), conn.RemoteAddr().(*net.TCPAddr).AddrPort()
		if local != vip {
			t.Errorf("accepted connection's local address %s, want the original destination %s", local, vip)
		}
		if want := client.LocalAddr().(*net.TCPAddr).AddrPort(); remote != want || remote.Addr().String() != podAddr {
			t.Errorf("accepted connection's remote address %s, want the pod's %s", remote, want)
		}
		if err := roundTrip(client, conn, "hello proxy"); err != nil {
			t.Error(err)
		}
	})

	t.Run("return to transparent upstream socket", func(t *testing.T) {
		conn, err := dialUpstream(t, node, okWait)
		if err != nil {
			t.Fatalf("upstream from %s: %v", upstreamSrc, err)
		}
		if got := conn.LocalAddr().(*net.TCPAddr).AddrPort().Addr(); got != upstreamSrc {
			t.Errorf("upstream socket's local address %s, want %s", got, upstreamSrc)
		}
		// The echo server's copy is the other side.
		if err := echo(conn, "hello upstream"); err != nil {
			t.Error(err)
		}
	})

	in(t, node, func() error { return Remove(ctx, c) })
	expectNoDelivery("after Remove")
}

// echo sends msg on c and expects it back.
func echo(c net.Conn, msg string) error {
	if err := c.SetDeadline(time.Now().Add(okWait)); err != nil {
		return err
	}
	if _, err := io.WriteString(c, msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("read the echo: %w", err)
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return nil
}
