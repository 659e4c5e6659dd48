package l2announce

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// The forwarder admits the clients of its source ranges, read for each
// connection: others get a reset, and a change applies to the next
// connection. On loopback: the "ClusterIP" is 127.0.0.2, the announced
// address 127.0.0.1.
func TestForwarderSourceRanges(t *testing.T) {
	backend, err := net.Listen("tcp4", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	port := uint16(backend.Addr().(*net.TCPAddr).Port)
	ranges := &atomic.Pointer[[]netip.Prefix]{}
	only10 := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	ranges.Store(&only10)
	f := &Forwarder{Log: slog.New(slog.DiscardHandler), Addr: netip.MustParseAddr("127.0.0.1"),
		Target: Target{ClusterIP: netip.MustParseAddr("127.0.0.2"), Ports: []uint16{port}}, Ranges: ranges}
	ctx := t.Context()
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Wait) // after ctx ends
	echoes := func() error {
		c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(f.Addr, port).String(), time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		if line != "ping\n" {
			t.Errorf("echo %q", line)
		}
		return nil
	}
	if err := echoes(); err == nil {
		t.Error("a client outside 10.0.0.0/8 got through")
	} else {
		t.Logf("outside the ranges: %v", err)
	}
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	ranges.Store(&loopback)
	if err := echoes(); err != nil {
		t.Errorf("a client of 127.0.0.0/8 with the ranges changed: %v", err)
	}
	var all []netip.Prefix
	ranges.Store(&all)
	if err := echoes(); err != nil {
		t.Errorf("no ranges: %v", err)
	}
}

// UDP: each client's datagrams reach the backend and its replies come
// back; a client outside the source ranges gets nothing.
func TestForwarderUDP(t *testing.T) {
	backend, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.2:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := backend.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			backend.WriteToUDPAddrPort(append([]byte("echo "), buf[:n]...), from)
		}
	}()
	port := uint16(backend.LocalAddr().(*net.UDPAddr).Port)
	ranges := &atomic.Pointer[[]netip.Prefix]{}
	var all []netip.Prefix
	ranges.Store(&all)
	f := &Forwarder{Log: slog.New(slog.DiscardHandler), Addr: netip.MustParseAddr("127.0.0.1"),
		Target: Target{ClusterIP: netip.MustParseAddr("127.0.0.2"), UDPPorts: []uint16{port}}, Ranges: ranges}
	if err := f.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Wait)
	ask := func(msg string) (string, error) {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(f.Addr, port)))
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := c.Write([]byte(msg)); err != nil {
			return "", err
		}
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		return string(buf[:n]), err
	}
	for _, msg := range []string{"one", "two"} {
		if got, err := ask(msg); err != nil || got != "echo "+msg {
			t.Errorf("ask %q: %q, %v", msg, got, err)
		}
	}
	only10 := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	ranges.Store(&only10)
	if got, err := ask("three"); err == nil {
		t.Errorf("a client outside 10.0.0.0/8 got %q", got)
	}
}
