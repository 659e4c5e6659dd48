package tproxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// dnsVIP is owned by nobody: the pod asks it, the stand-in marks the
// packets for the extra listener.
const dnsVIP = "10.99.0.77:53"

// markDNSForProxy is markForProxy for UDP and TCP to dnsVIP with mark:
//
//	iif veth0 ip daddr 10.99.0.77 meta l4proto udp udp dport 53 meta mark set <mark>
//	iif veth0 ip daddr 10.99.0.77 meta l4proto tcp tcp dport 53 meta mark set <mark>
func markDNSForProxy(mark uint32) error {
	l, err := netlink.LinkByName(nodeVeth)
	if err != nil {
		return err
	}
	conn, err := nftables.New()
	if err != nil {
		return err
	}
	tbl := conn.AddTable(&nftables.Table{Name: "test_datapath_udp", Family: nftables.TableFamilyIPv4})
	ch := conn.AddChain(&nftables.Chain{
		Name: "prerouting", Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw,
	})
	vip := netip.MustParseAddrPort(dnsVIP)
	addr := vip.Addr().As4()
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		conn.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIF, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(uint32(l.Attrs().Index))},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr[:]},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(vip.Port())},
			&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(mark)},
			&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
		}})
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("add the UDP datapath stand-in: %w", err)
	}
	return nil
}

func setTransparentOrigDst(network, address string, c syscall.RawConn) error {
	if err := setTransparent(network, address, c); err != nil {
		return err
	}
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_RECVORIGDSTADDR, 1)
	}); err != nil {
		return err
	}
	return serr
}

// origDst reads IP_ORIGDSTADDR from a datagram's control messages.
func origDst(oob []byte) (netip.AddrPort, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.AddrPort{}, err
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_IP && m.Header.Type == unix.IP_ORIGDSTADDR && len(m.Data) >= 8 {
			port := binary.BigEndian.Uint16(m.Data[2:4])
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte(m.Data[4:8])), port), nil
		}
	}
	return netip.AddrPort{}, errors.New("no IP_ORIGDSTADDR")
}

// TestDeliveryExtraUDP: a pod's UDP datagram to an address nobody owns,
// marked for an extra listener, reaches that transparent UDP listener with
// its original destination (and nothing arrives before Install).
func TestDeliveryExtraUDP(t *testing.T) {
	requireRoot(t)
	requireKernel(t)
	const port = 10053
	c := NewConfig(15001)
	c.Extra = []Listener{{Port: port, ToProxyMark: port<<16 | DefaultLocalMark, TCP: true, UDP: true}}
	node, pod := topology(t)
	vip := netip.MustParseAddrPort(dnsVIP)
	ctx := t.Context()

	var proxy *net.UDPConn
	in(t, node, func() error {
		lc := net.ListenConfig{Control: setTransparentOrigDst}
		pc, err := lc.ListenPacket(ctx, "udp4", netip.AddrPortFrom(c.ListenAddr, port).String())
		if err != nil {
			return fmt.Errorf("transparent UDP listener: %w", err)
		}
		proxy = pc.(*net.UDPConn)
		return nil
	})
	t.Cleanup(func() { _ = proxy.Close() })
	in(t, node, func() error { return markDNSForProxy(c.Extra[0].ToProxyMark) })

	var client *net.UDPConn
	in(t, pod, func() error {
		var err error
		client, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(vip))
		return err
	})
	t.Cleanup(func() { _ = client.Close() })
	buf, oob := make([]byte, 64), make([]byte, 128)
	if _, err := client.Write([]byte("early")); err != nil {
		t.Fatal(err)
	}
	_ = proxy.SetReadDeadline(time.Now().Add(failWait))
	if n, _, _, from, err := proxy.ReadMsgUDPAddrPort(buf, oob); !isTimeout(err) {
		t.Fatalf("before Install the listener got %q from %s (%v), want nothing", buf[:n], from, err)
	}

	in(t, node, func() error { return Install(ctx, testLogger(t), c) })
	if _, err := client.Write([]byte("question")); err != nil {
		t.Fatal(err)
	}
	_ = proxy.SetReadDeadline(time.Now().Add(okWait))
	n, oobn, _, from, err := proxy.ReadMsgUDPAddrPort(buf, oob)
	if err != nil {
		t.Fatalf("the DNS listener got nothing: %v", err)
	}
	if string(buf[:n]) != "question" || from.Addr().String() != podAddr {
		t.Errorf("got %q from %s, want %q from the pod %s", buf[:n], from, "question", podAddr)
	}
	if dst, err := origDst(oob[:oobn]); err != nil || dst != vip {
		t.Errorf("original destination %s (%v), want %s", dst, err, vip)
	}
}
