package l2announce

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
)

// UDP relay limits: a client's flow ends after udpIdle without a datagram
// either way (conntrack's UDP timeout is of the same order); at most
// udpMaxFlows clients per address and port are relayed at once, later
// ones are dropped until one ends.
const (
	udpIdle     = 60 * time.Second
	udpMaxFlows = 4096
	udpMaxSize  = 64 << 10
)

// serveUDP relays the datagrams of each client of ln to the ClusterIP
// port to (a connected socket of its own, which the socket LB translates
// to one backend) and the replies back, until ctx ends.
func (f *Forwarder) serveUDP(ctx context.Context, ln *net.UDPConn, to netip.AddrPort) {
	var mu sync.Mutex
	flows := map[netip.AddrPort]*net.UDPConn{}
	buf := make([]byte, udpMaxSize)
	for {
		n, client, err := ln.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				f.Log.Debug("read UDP", "error", err)
				continue
			}
			return
		}
		client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
		if !f.admitsAddr(client.Addr()) {
			continue // dropped: UDP has no reset
		}
		mu.Lock()
		up, ok := flows[client]
		if !ok && len(flows) < udpMaxFlows {
			up, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(to))
			if err != nil {
				mu.Unlock()
				f.Log.Debug("relay UDP", "to", to, "error", err)
				continue
			}
			flows[client] = up
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.replies(ctx, ln, up, client)
				mu.Lock()
				delete(flows, client)
				mu.Unlock()
			}()
		}
		mu.Unlock()
		if up == nil {
			continue // too many flows
		}
		up.SetReadDeadline(time.Now().Add(udpIdle))
		if _, err := up.Write(buf[:n]); err != nil {
			f.Log.Debug("relay UDP", "to", to, "error", err)
		}
	}
}

// replies copies the backend's datagrams on up to the client through ln,
// until the flow idles out or ctx ends; it closes up.
func (f *Forwarder) replies(ctx context.Context, ln, up *net.UDPConn, client netip.AddrPort) {
	defer up.Close()
	stop := context.AfterFunc(ctx, func() { up.Close() })
	defer stop()
	buf := make([]byte, udpMaxSize)
	for {
		up.SetReadDeadline(time.Now().Add(udpIdle))
		n, err := up.Read(buf)
		if err != nil {
			return // idle, closed, or the backend refused (ICMP)
		}
		if _, err := ln.WriteToUDPAddrPort(buf[:n], client); err != nil {
			f.Log.Debug("relay UDP reply", "client", client, "error", err)
		}
	}
}
