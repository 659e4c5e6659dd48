package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/membrane-mesh/membrane/e2e/netns"
	"github.com/membrane-mesh/membrane/e2e/testenv"
	"github.com/membrane-mesh/membrane/mesh/tproxy"
)

// The tests that need the network run in a child process (this test
// binary re-executed) started in a network namespace of its own: every
// thread of it, so every socket the proxy opens, is in that "node"
// namespace, and the kernel removes it, with all the tests created in it,
// when the child exits, whatever happens. The pod and the DNS servers get
// namespaces held only by file descriptors, gone with the child too.
const childEnv = "MEMBRANE_DNSPROXY_TEST_NETNS"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "" && os.Geteuid() == 0 {
		code, err := runInNetns()
		if err == nil {
			os.Exit(code)
		}
		// The tests that need the namespace say why they cannot run.
		fmt.Fprintf(os.Stderr, "cannot run the tests in a network namespace of their own: %v\n", err)
	}
	os.Exit(m.Run())
}

// runInNetns re-executes the test binary, with the same arguments, in a new
// network namespace and returns its exit status; an error means it could
// not start.
func runInNetns() (int, error) {
	cmd := exec.Command(os.Args[0], os.Args[1:]...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	if err := cmd.Wait(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) && exit.ExitCode() >= 0 {
			return exit.ExitCode(), nil
		}
		return 2, nil // killed: its output says why
	}
	return 0, nil
}

// requireNetns ends the test unless it runs in the child's own namespace.
func requireNetns(tb testing.TB) {
	tb.Helper()
	testenv.RequireRoot(tb, "creates network namespaces, nftables rules and transparent sockets")
	if os.Getenv(childEnv) == "" {
		testenv.Missing(tb, "needs a network namespace of its own (clone with CLONE_NEWNET failed: see the first line of the output)")
	}
	var self, init unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &self); err != nil {
		tb.Fatal(err)
	}
	if err := unix.Stat("/proc/1/ns/net", &init); err == nil && self.Ino == init.Ino {
		tb.Fatal("refusing to run in the host's network namespace")
	}
}

// The topology: the node (this process's namespace, where the proxy runs),
// a pod and a server namespace, each joined to the node by a veth pair.
//
//	pod 10.53.0.2 ─ eth0 ══ pod0 10.53.0.1  node  10.53.1.1 srv0 ══ eth0 ─ server 10.53.1.2 (answers), 10.53.1.3 (never answers)
const (
	proxyPort  = 10053
	podIfName  = "pod0"
	srvIfName  = "srv0"
	nodePodNet = "10.53.0.1/24"
	nodeSrvNet = "10.53.1.1/24"
	podAddr    = "10.53.0.2"
	fromProxy  = 0x0A00 // the mark of forwarded queries
	// directPort is a port of the server the datapath stand-in does not
	// redirect: the benchmark's baseline.
	directPort = 5353
)

var (
	serverAddr = netip.MustParseAddrPort("10.53.1.2:53")
	silentAddr = netip.MustParseAddrPort("10.53.1.3:53")
)

// world is one test's topology with its DNS server.
type world struct {
	pod, server *os.File // the namespaces
	tproxy      tproxy.Config
	// asked counts the questions the server got, by name.
	mu    sync.Mutex
	asked map[string]int
}

func newWorld(t testing.TB) *world {
	t.Helper()
	requireNetns(t)
	w := &world{pod: newNS(t), server: newNS(t), tproxy: tproxy.NewConfig(proxyPort), asked: map[string]int{}}
	must(t, setLinkUp("lo"))
	must(t, os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644))
	w.veth(t, podIfName, w.pod, nodePodNet, podAddr+"/24")
	w.veth(t, srvIfName, w.server, nodeSrvNet, serverAddr.Addr().String()+"/24", silentAddr.Addr().String()+"/24")

	ctx := context.Background()
	if err := tproxy.Install(ctx, nil, w.tproxy); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EOPNOTSUPP) {
			testenv.Missing(t, fmt.Sprintf("kernel lacks nftables tproxy or socket support: %v", err))
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tproxy.Remove(ctx, w.tproxy); err != nil {
			t.Errorf("remove tproxy plumbing: %v", err)
		}
	})
	must(t, w.datapathStandIn(t))
	w.serve(t)
	w.blackHole(t)
	return w
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// newNS returns a new network namespace with lo up, held by the returned
// file only (closed when the test ends, which destroys the namespace).
func newNS(t testing.TB) *os.File {
	t.Helper()
	var f *os.File
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		f, err = os.Open("/proc/thread-self/ns/net")
		if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); serr != nil {
			errc <- errors.Join(err, fmt.Errorf("return to the node namespace: %w", serr))
			return // the thread stays locked and dies with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	must(t, <-errc)
	t.Cleanup(func() { _ = f.Close() })
	in(t, f, func() error { return setLinkUp("lo") })
	return f
}

// in runs fn on a thread in ns; sockets fn opens stay in ns.
func in(t testing.TB, ns *os.File, fn func() error) {
	t.Helper()
	must(t, netns.Do(fmt.Sprintf("/proc/self/fd/%d", ns.Fd()), fn))
}

func setLinkUp(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	return netlink.LinkSetUp(l)
}

// veth joins the node (nodeName, nodeCIDR) to ns (eth0 with addrs and a
// default route via the node).
func (w *world) veth(t testing.TB, nodeName string, ns *os.File, nodeCIDR string, addrs ...string) {
	t.Helper()
	la := netlink.NewLinkAttrs()
	la.Name = nodeName
	must(t, netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns.Fd()))}))
	t.Cleanup(func() { _ = netlink.LinkDel(&netlink.Veth{LinkAttrs: la}) })
	l, err := netlink.LinkByName(nodeName)
	must(t, err)
	nodeAddr, err := netlink.ParseAddr(nodeCIDR)
	must(t, err)
	must(t, netlink.AddrAdd(l, nodeAddr))
	must(t, netlink.LinkSetUp(l))
	in(t, ns, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		for _, a := range addrs {
			addr, err := netlink.ParseAddr(a)
			if err != nil {
				return err
			}
			if err := netlink.AddrAdd(l, addr); err != nil {
				return fmt.Errorf("address %s: %w", a, err)
			}
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, Gw: nodeAddr.IP})
	})
}

// datapathStandIn installs, in its own nftables table, what the eBPF
// datapath and the node's tproxy plumbing do for DNS that the tproxy
// package (TCP only) does not:
//
//	prerouting (raw):    iif pod0 meta l4proto {udp, tcp} th dport 53 meta mark set ToProxyMark
//	prerouting (mangle): meta mark ToProxyMark meta l4proto udp tproxy ip to ListenAddr:Port meta mark set LocalMark
//	output:              meta l4proto {udp, tcp} th dport 53 meta mark != 0x0A00 drop
//
// The last one makes a forwarded query without the from-proxy mark fail.
func (w *world) datapathStandIn(t testing.TB) error {
	l, err := netlink.LinkByName(podIfName)
	if err != nil {
		return err
	}
	conn, err := nftables.New()
	if err != nil {
		return err
	}
	tbl := conn.AddTable(&nftables.Table{Name: "dnsproxy_test", Family: nftables.TableFamilyIPv4})
	raw := conn.AddChain(&nftables.Chain{Name: "datapath", Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw})
	mangle := conn.AddChain(&nftables.Chain{Name: "tproxy_udp", Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle})
	out := conn.AddChain(&nftables.Chain{Name: "output", Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter})
	l4 := func(proto byte) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		}
	}
	dport53 := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(53)},
	}
	setMark := func(m uint32) []expr.Any {
		return []expr.Any{
			&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(m)},
			&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
		}
	}
	cat := func(parts ...[]expr.Any) []expr.Any {
		var out []expr.Any
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		iif := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIF, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(uint32(l.Attrs().Index))},
		}
		conn.AddRule(&nftables.Rule{Table: tbl, Chain: raw, Exprs: cat(iif, l4(proto), dport53, setMark(w.tproxy.ToProxyMark))})
		conn.AddRule(&nftables.Rule{Table: tbl, Chain: out, Exprs: cat(l4(proto), dport53, []expr.Any{
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(fromProxy)},
			&expr.Verdict{Kind: expr.VerdictDrop},
		})})
	}
	addr := w.tproxy.ListenAddr.As4()
	conn.AddRule(&nftables.Rule{Table: tbl, Chain: mangle, Exprs: cat([]expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(w.tproxy.ToProxyMark)},
	}, l4(unix.IPPROTO_UDP), []expr.Any{
		&expr.Immediate{Register: 1, Data: addr[:]},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(w.tproxy.Port)},
		&expr.TProxy{Family: unix.NFPROTO_IPV4, TableFamily: unix.NFPROTO_IPV4, RegAddr: 1, RegPort: 2},
	}, setMark(w.tproxy.LocalMark))})
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("add the datapath stand-in: %w", err)
	}
	t.Cleanup(func() {
		conn.DelTable(tbl)
		if err := conn.Flush(); err != nil {
			t.Errorf("delete the datapath stand-in: %v", err)
		}
	})
	return nil
}

// The server's zone.
var (
	apiIPs = []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11")}
	webIP  = netip.MustParseAddr("192.0.2.20")
)

// bigRecords is the number of A records of big.example.com: more than a
// 1500-byte MTU holds.
const bigRecords = 120

func (w *world) handler(rw dns.ResponseWriter, q *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(q)
	name := strings.ToLower(q.Question[0].Name)
	w.mu.Lock()
	w.asked[name]++
	w.mu.Unlock()
	rr := func(s string) dns.RR {
		r, err := dns.NewRR(s)
		if err != nil {
			panic(err)
		}
		return r
	}
	switch {
	case name == "api.example.com." && q.Question[0].Qtype == dns.TypeA:
		m.Answer = append(m.Answer, rr("api.example.com. 60 IN A 192.0.2.10"), rr("api.example.com. 300 IN A 192.0.2.11"))
	case name == "www.example.com." && q.Question[0].Qtype == dns.TypeA:
		// The chain out of order, and a record of another name.
		m.Answer = append(m.Answer, rr("web.example.net. 120 IN A 192.0.2.20"), rr("www.example.com. 30 IN CNAME web.example.net."),
			rr("other.example.net. 5 IN A 192.0.2.99"))
	case name == "big.example.com." && q.Question[0].Qtype == dns.TypeA:
		for i := range bigRecords {
			m.Answer = append(m.Answer, rr(fmt.Sprintf("big.example.com. 60 IN A 198.51.100.%d", i+1)))
		}
	case name == "denied.example.org.":
		m.Answer = append(m.Answer, rr("denied.example.org. 60 IN A 192.0.2.66"))
	case strings.HasSuffix(name, "example.com."):
		// Empty answer (NODATA).
	default:
		m.Rcode = dns.RcodeNameError
	}
	_ = rw.WriteMsg(m)
}

func (w *world) timesAsked(name string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.asked[name]
}

// serve runs the DNS server on serverAddr (UDP and TCP) and, for the
// benchmark's baseline, on directPort.
func (w *world) serve(t testing.TB) {
	for _, port := range []uint16{serverAddr.Port(), directPort} {
		addr := netip.AddrPortFrom(serverAddr.Addr(), port).String()
		var pc net.PacketConn
		var ln net.Listener
		in(t, w.server, func() (err error) {
			if pc, err = net.ListenPacket("udp4", addr); err != nil {
				return err
			}
			ln, err = net.Listen("tcp4", addr)
			return err
		})
		for _, s := range []*dns.Server{{PacketConn: pc, Handler: dns.HandlerFunc(w.handler)}, {Listener: ln, Handler: dns.HandlerFunc(w.handler)}} {
			done := make(chan struct{})
			go func() { defer close(done); _ = s.ActivateAndServe() }()
			t.Cleanup(func() {
				_ = s.Shutdown()
				<-done
			})
		}
	}
}

// blackHole reads queries on silentAddr (UDP and TCP) and never answers.
func (w *world) blackHole(t testing.TB) {
	var pc net.PacketConn
	var ln net.Listener
	in(t, w.server, func() (err error) {
		if pc, err = net.ListenPacket("udp4", silentAddr.String()); err != nil {
			return err
		}
		ln, err = net.Listen("tcp4", silentAddr.String())
		return err
	})
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = pc.Close()
		_ = ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		buf := make([]byte, 512)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	})
	wg.Go(func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				_ = c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // held open, never answered
		}
	})
}

// podSocket opens a UDP socket in the pod, unconnected, so that the test
// sees the source address of what comes back.
func (w *world) podSocket(t testing.TB) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	in(t, w.pod, func() (err error) {
		c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(podAddr)})
		return err
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// podDial opens a TCP connection from the pod.
func (w *world) podDial(t testing.TB, to netip.AddrPort) net.Conn {
	t.Helper()
	var c net.Conn
	in(t, w.pod, func() (err error) {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err = d.Dial("tcp4", to.String())
		return err
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}
