package dnsproxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

const (
	// maxInFlight bounds the queries being handled at once; more are
	// dropped (and counted) until some finish.
	maxInFlight = 1024
	// tcpIdleTimeout closes a client's TCP connection that sends nothing.
	tcpIdleTimeout = 10 * time.Second
	// maxUDPSize is the largest datagram read.
	maxUDPSize = 65535
)

// Proxy is the transparent DNS proxy.
type Proxy struct {
	log      *slog.Logger
	c        Config
	policy   Policy
	observer Observer
	flows    func(Answer)
	metrics  *metrics

	ready    chan struct{}
	inFlight chan struct{} // semaphore
	bufs     sync.Pool     // *[]byte of maxUDPSize, for upstream reads
}

// New returns a proxy; Run starts it. A nil log discards; a nil Policy
// allows nothing; a nil Observer learns nothing; flows (may be nil) gets
// every Answer after the client got its response.
func New(log *slog.Logger, c Config, p Policy, o Observer, flows func(Answer)) *Proxy {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if c.DenyResponse == "" {
		c.DenyResponse = DenyRefused
	}
	if c.ForwardTimeout == 0 {
		c.ForwardTimeout = DefaultForwardTimeout
	}
	if flows == nil {
		flows = func(Answer) {}
	}
	return &Proxy{
		log: log, c: c, policy: p, observer: o, flows: flows,
		metrics:  newMetrics(),
		ready:    make(chan struct{}),
		inFlight: make(chan struct{}, maxInFlight),
		bufs:     sync.Pool{New: func() any { b := make([]byte, maxUDPSize); return &b }},
	}
}

// Collector returns the proxy's Prometheus metrics, for the agent's
// registry.
func (p *Proxy) Collector() prometheus.Collector { return p.metrics }

// Ready is closed once the listeners are bound.
func (p *Proxy) Ready() <-chan struct{} { return p.ready }

// Run listens on Config.ListenAddr:Port (UDP and TCP, transparent) and
// serves until ctx ends; it returns after every query being handled has
// finished. An error binding the listeners is returned at once. Run is
// called once per Proxy.
func (p *Proxy) Run(ctx context.Context) error {
	if err := p.c.Validate(); err != nil {
		return err
	}
	addr := netip.AddrPortFrom(p.c.ListenAddr, p.c.Port).String()
	lcUDP := net.ListenConfig{Control: control(transparent(), recvOrigDst(), reuseAddr())}
	pc, err := lcUDP.ListenPacket(ctx, "udp4", addr)
	if err != nil {
		return fmt.Errorf("listen on udp %s: %w", addr, err)
	}
	udp := pc.(*net.UDPConn)
	lcTCP := net.ListenConfig{Control: control(transparent(), reuseAddr())}
	ln, err := lcTCP.Listen(ctx, "tcp4", addr)
	if err != nil {
		_ = udp.Close()
		return fmt.Errorf("listen on tcp %s: %w", addr, err)
	}
	rp, err := newReplier()
	if err != nil {
		_, _ = udp.Close(), ln.Close()
		return err
	}
	defer rp.Close()
	p.log.Info("DNS proxy listening", "addr", addr, "deny_response", p.c.DenyResponse,
		"forward_timeout", p.c.ForwardTimeout, "mark", fmt.Sprintf("%#x", p.c.Mark))
	closeAll := func() { _ = udp.Close(); _ = ln.Close() }
	stop := context.AfterFunc(ctx, closeAll)
	defer stop()

	var wg sync.WaitGroup
	wg.Go(func() { p.serveUDP(ctx, &wg, udp, rp) })
	wg.Go(func() { p.serveTCP(ctx, &wg, ln) })
	close(p.ready)
	<-ctx.Done()
	closeAll()
	wg.Wait()
	p.log.Info("DNS proxy stopped", "addr", addr)
	return nil
}

// acquire takes a slot for one query; false means the proxy is full.
func (p *Proxy) acquire() bool {
	select {
	case p.inFlight <- struct{}{}:
		return true
	default:
		p.metrics.overload.Inc()
		return false
	}
}

func (p *Proxy) release() { <-p.inFlight }

func (p *Proxy) serveUDP(ctx context.Context, wg *sync.WaitGroup, conn *net.UDPConn, rp *replier) {
	buf := make([]byte, maxUDPSize)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofSockaddrInet4))
	for {
		n, oobn, _, src, err := conn.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			p.log.Warn("read DNS query", "proto", UDP, "err", err)
			continue
		}
		dst, err := origDst(oob[:oobn])
		if err != nil {
			p.log.Debug("DNS query without original destination", "src", src, "err", err)
			continue
		}
		if !p.acquire() {
			continue
		}
		query := append([]byte(nil), buf[:n]...)
		wg.Go(func() {
			defer p.release()
			start := time.Now()
			reply, a := p.handle(ctx, Request{Source: unmap(src), Server: dst, Protocol: UDP}, query)
			if reply != nil {
				truncated, err := p.replyUDP(rp, a.Server, a.Source, reply)
				switch {
				case err != nil:
					p.log.Debug("send DNS answer", "proto", UDP, "client", a.Source, "server", a.Server, "err", err)
					a.Verdict, a.Reason, a.RCode = Error, fmt.Sprintf("send the answer: %v", err), NoResponse
				case truncated:
					a.Reason = "answer too big for the path: sent truncated"
				}
			}
			p.finish(a, start)
		})
	}
}

// replyUDP sends reply to client from server's address. An answer too
// big for the path goes as a truncated answer (TC set, no records), which
// makes the client ask again over TCP.
func (p *Proxy) replyUDP(rp *replier, server, client netip.AddrPort, reply []byte) (truncated bool, err error) {
	err = rp.send(server, client, reply)
	if !errors.Is(err, errTooBig) {
		return false, err
	}
	var m dns.Msg
	if uerr := m.Unpack(reply); uerr != nil {
		return false, err
	}
	m.Answer, m.Ns, m.Extra, m.Truncated = nil, nil, nil, true
	tc, perr := m.Pack()
	if perr != nil {
		return false, errors.Join(err, perr)
	}
	return true, rp.send(server, client, tc)
}

func (p *Proxy) serveTCP(ctx context.Context, wg *sync.WaitGroup, ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			p.log.Warn("accept DNS connection", "err", err)
			// E.g. out of file descriptors: do not spin.
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		wg.Go(func() { p.serveTCPConn(ctx, c) })
	}
}

// serveTCPConn answers the queries of one client connection in order.
func (p *Proxy) serveTCPConn(ctx context.Context, c net.Conn) {
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	defer c.Close()
	src := unmap(c.RemoteAddr().(*net.TCPAddr).AddrPort())
	dst := unmap(c.LocalAddr().(*net.TCPAddr).AddrPort())
	for {
		if err := c.SetReadDeadline(time.Now().Add(tcpIdleTimeout)); err != nil {
			return
		}
		query, err := readTCPMsg(c)
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				p.log.Debug("read DNS query", "proto", TCP, "client", src, "err", err)
			}
			return
		}
		if !p.acquire() {
			return
		}
		start := time.Now()
		reply, a := p.handle(ctx, Request{Source: src, Server: dst, Protocol: TCP}, query)
		if reply != nil {
			if err := writeTCPMsg(c, reply, time.Now().Add(p.c.ForwardTimeout)); err != nil {
				a.Verdict, a.Reason, a.RCode = Error, fmt.Sprintf("send the answer: %v", err), NoResponse
			}
		}
		p.release()
		p.finish(a, start)
	}
}

// readTCPMsg reads one length-prefixed DNS message.
func readTCPMsg(r io.Reader) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint16(l[:])
	if n == 0 {
		return nil, errors.New("empty message")
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, fmt.Errorf("read a message of %d bytes: %w", n, err)
	}
	return msg, nil
}

// writeTCPMsg writes one length-prefixed DNS message.
func writeTCPMsg(c net.Conn, msg []byte, deadline time.Time) error {
	if len(msg) > 0xFFFF {
		return fmt.Errorf("message of %d bytes is too long for TCP", len(msg))
	}
	if err := c.SetWriteDeadline(deadline); err != nil {
		return err
	}
	out := make([]byte, 2+len(msg))
	binary.BigEndian.PutUint16(out, uint16(len(msg)))
	copy(out[2:], msg)
	_, err := c.Write(out)
	return err
}

// finish counts a and hands it to flows.
func (p *Proxy) finish(a Answer, start time.Time) {
	a.Duration = time.Since(start)
	p.metrics.observe(a)
	p.flows(a)
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
