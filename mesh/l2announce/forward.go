package l2announce

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Forwarder serves an announced address: it accepts TCP connections to
// each port of the target on the address and connects them to the
// Service's ClusterIP and the same port, which the socket LB of the node
// translates to a backend; it relays each UDP client's datagrams the same
// way (forward_udp.go). Traffic arriving from the underlay has no socket
// the socket LB could translate; this is its path.
type Forwarder struct {
	Log    *slog.Logger
	Addr   netip.Addr
	Target Target
	// Ranges are the clients admitted, read for each connection or
	// datagram (nil, or pointing to nil: every client); others are reset
	// at once (TCP) or dropped (UDP).
	Ranges *atomic.Pointer[[]netip.Prefix]

	wg sync.WaitGroup
}

// Start listens on every port; the listeners close when ctx ends.
func (f *Forwarder) Start(ctx context.Context) error {
	var errs []error
	for _, p := range f.Target.Ports {
		lc := net.ListenConfig{}
		ln, err := lc.Listen(ctx, "tcp4", netip.AddrPortFrom(f.Addr, p).String())
		if err != nil {
			errs = append(errs, fmt.Errorf("listen on %s:%d: %w", f.Addr, p, err))
			continue
		}
		to := netip.AddrPortFrom(f.Target.ClusterIP, p).String()
		f.run(ctx, ln, func() { f.serve(ctx, ln, to) })
	}
	for _, p := range f.Target.UDPPorts {
		ln, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(f.Addr, p)))
		if err != nil {
			errs = append(errs, fmt.Errorf("listen on %s:%d/udp: %w", f.Addr, p, err))
			continue
		}
		to := netip.AddrPortFrom(f.Target.ClusterIP, p)
		f.run(ctx, ln, func() { f.serveUDP(ctx, ln, to) })
	}
	return errors.Join(errs...)
}

// run serves ln with serve until ctx ends, which closes ln.
func (f *Forwarder) run(ctx context.Context, ln io.Closer, serve func()) {
	f.wg.Add(2)
	go func() {
		defer f.wg.Done()
		<-ctx.Done()
		ln.Close()
	}()
	go func() {
		defer f.wg.Done()
		serve()
	}()
}

// Wait returns once every listener and connection has ended.
func (f *Forwarder) Wait() { f.wg.Wait() }

func (f *Forwarder) serve(ctx context.Context, ln net.Listener, to string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if !f.admits(c.RemoteAddr()) {
			f.Log.Debug("refused by the Service's loadBalancerSourceRanges", "client", c.RemoteAddr().String())
			c.(*net.TCPConn).SetLinger(0) // a reset, not a close
			c.Close()
			continue
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.pipe(ctx, c, to)
		}()
	}
}

// admits reports whether the client at a is in the source ranges.
func (f *Forwarder) admits(a net.Addr) bool {
	ap, err := netip.ParseAddrPort(a.String())
	return err == nil && f.admitsAddr(ap.Addr().Unmap())
}

// admitsAddr reports whether the client a is in the source ranges.
func (f *Forwarder) admitsAddr(a netip.Addr) bool {
	if f.Ranges == nil {
		return true
	}
	ranges := f.Ranges.Load()
	if ranges == nil || *ranges == nil {
		return true
	}
	for _, p := range *ranges {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (f *Forwarder) pipe(ctx context.Context, c net.Conn, to string) {
	defer c.Close()
	d := net.Dialer{Timeout: 5 * time.Second}
	up, err := d.DialContext(ctx, "tcp4", to)
	if err != nil {
		f.Log.Debug("forward connection", "to", to, "error", err)
		return
	}
	defer up.Close()
	stop := context.AfterFunc(ctx, func() { c.Close(); up.Close() })
	defer stop()
	done := make(chan struct{})
	go func() {
		io.Copy(up, c)
		up.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(c, up)
	c.(*net.TCPConn).CloseWrite()
	<-done
}
