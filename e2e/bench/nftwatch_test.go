package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/membrane-mesh/membrane/e2e/netns"
)

// nftWatch timestamps nf_tables rule and set-element additions in one network
// namespace as the kernel announces them (the NFNLGRP_NFTABLES netlink group,
// what `nft monitor` reads): iptables-nft rules and kube-proxy's nftables
// elements both arrive there at the commit of their transaction. Unlike
// polling `iptables-save` (hundreds of milliseconds at 10,000 services, and
// CPU taken from kube-proxy), it sees the moment a rule appears.
type nftWatch struct {
	fd     int
	match  func(family uint8, msgType uint16, table, container string) bool
	mu     sync.Mutex
	events []nftEvent
	notify chan struct{}
	lost   bool // the socket overflowed: events may be missing
	done   chan struct{}
	closed chan struct{}
}

// nftEvent is one matching rule or element list, with when it was received.
type nftEvent struct {
	at      time.Time
	payload []byte // the rule's expressions or the element list
}

// watchKubeProxyRules watches the namespace at nsPath for the rules that make
// a ClusterIP reachable: in iptables mode the nat KUBE-SERVICES rule matching
// the VIP, in nftables mode the VIP's element of the service-ips map.
func watchKubeProxyRules(nsPath, mode string) (*nftWatch, error) {
	var match func(family uint8, msgType uint16, table, container string) bool
	switch mode {
	case "iptables":
		match = func(family uint8, t uint16, table, chain string) bool {
			return family == unix.NFPROTO_IPV4 && t == unix.NFT_MSG_NEWRULE && table == "nat" && chain == "KUBE-SERVICES"
		}
	case "nftables":
		match = func(family uint8, t uint16, table, set string) bool {
			return family == unix.NFPROTO_IPV4 && t == unix.NFT_MSG_NEWSETELEM && table == "kube-proxy" && set == "service-ips"
		}
	default:
		return nil, fmt.Errorf("watch rules: unknown mode %q", mode)
	}
	fd := -1
	err := netns.Do(nsPath, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("watch rules in %s: netlink socket: %w", nsPath, err)
	}
	// A kube-proxy sync at 10,000 services announces tens of thousands of
	// rules at once.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("watch rules: SO_RCVBUFFORCE: %w", err)
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("watch rules: SO_RCVTIMEO: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("watch rules: bind: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, unix.NFNLGRP_NFTABLES); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("watch rules: join NFNLGRP_NFTABLES: %w", err)
	}
	w := &nftWatch{fd: fd, match: match, notify: make(chan struct{}, 1), done: make(chan struct{}), closed: make(chan struct{})}
	go w.read()
	return w, nil
}

func (w *nftWatch) read() {
	defer close(w.closed)
	buf := make([]byte, 1<<20)
	for {
		select {
		case <-w.done:
			return
		default:
		}
		n, _, err := unix.Recvfrom(w.fd, buf, 0)
		at := time.Now()
		switch {
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ENOBUFS):
			w.mu.Lock()
			w.lost = true
			w.mu.Unlock()
			continue
		case err != nil:
			return
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			continue
		}
		var found []nftEvent
		for _, m := range msgs {
			if ev, ok := w.parse(m); ok {
				ev.at = at
				found = append(found, ev)
			}
		}
		if len(found) > 0 {
			w.mu.Lock()
			w.events = append(w.events, found...)
			w.mu.Unlock()
			select {
			case w.notify <- struct{}{}:
			default:
			}
		}
	}
}

// parse picks a NEWRULE or NEWSETELEM message the watch is about.
func (w *nftWatch) parse(m syscall.NetlinkMessage) (nftEvent, bool) {
	if m.Header.Type>>8 != unix.NFNL_SUBSYS_NFTABLES || len(m.Data) < 4 {
		return nftEvent{}, false
	}
	msgType := m.Header.Type & 0xff
	// nfgenmsg: family, version, resource id; then attributes.
	family := m.Data[0]
	var table, container string
	var payload []byte
	for attrs := m.Data[4:]; len(attrs) >= 4; {
		l := int(uint16(attrs[0]) | uint16(attrs[1])<<8)
		typ := (uint16(attrs[2]) | uint16(attrs[3])<<8) & 0x3fff // without NLA_F_NESTED, NLA_F_NET_BYTEORDER
		if l < 4 || l > len(attrs) {
			break
		}
		val := attrs[4:l]
		switch {
		case typ == 1: // NFTA_RULE_TABLE, NFTA_SET_ELEM_LIST_TABLE
			table = string(bytes.TrimRight(val, "\x00"))
		case typ == 2: // NFTA_RULE_CHAIN, NFTA_SET_ELEM_LIST_SET
			container = string(bytes.TrimRight(val, "\x00"))
		case msgType == unix.NFT_MSG_NEWRULE && typ == unix.NFTA_RULE_EXPRESSIONS,
			msgType == unix.NFT_MSG_NEWSETELEM && typ == unix.NFTA_SET_ELEM_LIST_ELEMENTS:
			payload = val
		}
		attrs = attrs[min((l+3)&^3, len(attrs)):]
	}
	if payload == nil || !w.match(family, msgType, table, container) {
		return nftEvent{}, false
	}
	return nftEvent{payload: bytes.Clone(payload)}, true
}

// wait returns when the first rule or element naming vip was announced.
func (w *nftWatch) wait(ctx context.Context, vip netip.Addr) (time.Time, error) {
	key := vip.As4()
	next := 0
	for {
		w.mu.Lock()
		for ; next < len(w.events); next++ {
			if bytes.Contains(w.events[next].payload, key[:]) {
				at := w.events[next].at
				w.mu.Unlock()
				return at, nil
			}
		}
		lost := w.lost
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			if lost {
				return time.Time{}, fmt.Errorf("rule for %s not seen (the netlink socket overflowed): %w", vip, ctx.Err())
			}
			return time.Time{}, fmt.Errorf("rule for %s not seen: %w", vip, ctx.Err())
		case <-w.closed:
			return time.Time{}, fmt.Errorf("rule for %s not seen: watch stopped", vip)
		case <-w.notify:
		}
	}
}

// Close stops the watch.
func (w *nftWatch) Close() error {
	close(w.done)
	<-w.closed
	return unix.Close(w.fd)
}
