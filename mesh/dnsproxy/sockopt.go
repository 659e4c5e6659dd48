package dnsproxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// control returns a net.ListenConfig / net.Dialer Control that sets the
// given integer socket options, naming the one that fails.
func control(opts ...sockopt) func(string, string, syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			for _, o := range opts {
				if err := unix.SetsockoptInt(int(fd), o.level, o.name, o.value); err != nil {
					serr = fmt.Errorf("set %s: %w", o.what, err)
					return
				}
			}
		})
		return errors.Join(err, serr)
	}
}

type sockopt struct {
	what               string
	level, name, value int
}

func transparent() sockopt { return sockopt{"IP_TRANSPARENT", unix.SOL_IP, unix.IP_TRANSPARENT, 1} }
func recvOrigDst() sockopt {
	return sockopt{"IP_RECVORIGDSTADDR", unix.SOL_IP, unix.IP_RECVORIGDSTADDR, 1}
}
func reuseAddr() sockopt { return sockopt{"SO_REUSEADDR", unix.SOL_SOCKET, unix.SO_REUSEADDR, 1} }

func mark(m uint32) sockopt {
	return sockopt{"SO_MARK", unix.SOL_SOCKET, unix.SO_MARK, int(m)}
}

// origDst finds the original destination in the control messages of a
// datagram received with IP_RECVORIGDSTADDR.
func origDst(oob []byte) (netip.AddrPort, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("parse control messages: %w", err)
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_IP || m.Header.Type != unix.IP_ORIGDSTADDR || len(m.Data) < unix.SizeofSockaddrInet4 {
			continue
		}
		// struct sockaddr_in: family (host order), port and address (network order).
		port := binary.BigEndian.Uint16(m.Data[2:4])
		addr := netip.AddrFrom4([4]byte(m.Data[4:8]))
		return netip.AddrPortFrom(addr, port), nil
	}
	return netip.AddrPort{}, errors.New("no IP_ORIGDSTADDR control message")
}
