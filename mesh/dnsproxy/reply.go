package dnsproxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// replier sends UDP answers to clients from the address and port of the
// server they asked, through a raw socket that writes whole IPv4 packets
// (IPPROTO_RAW: send only, the IP header is ours), as Cilium's DNS proxy
// does. No socket is bound to the server's address, so none can take the
// client's next query from the TPROXY rule, nor steal the packets of a DNS
// server that really listens on that address of the node (a node-local
// cache).
type replier struct {
	fd int
}

func newReplier() (*replier, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("open a raw socket for UDP answers: %w", err)
	}
	return &replier{fd: fd}, nil
}

func (r *replier) Close() error { return unix.Close(r.fd) }

const (
	ipv4HeaderLen = 20
	udpHeaderLen  = 8
)

// errTooBig says the packet does not fit the route's MTU (raw packets are
// not fragmented).
var errTooBig = errors.New("answer larger than the path MTU")

// send writes payload as a UDP datagram from src to dst.
func (r *replier) send(src, dst netip.AddrPort, payload []byte) error {
	if !src.Addr().Is4() || !dst.Addr().Is4() {
		return fmt.Errorf("answer from %s to %s: only IPv4", src, dst)
	}
	n := ipv4HeaderLen + udpHeaderLen + len(payload)
	if n > 0xFFFF {
		return fmt.Errorf("answer of %d bytes: %w", len(payload), errTooBig)
	}
	pkt := make([]byte, n)
	s, d := src.Addr().As4(), dst.Addr().As4()
	// IPv4 header; the kernel fills in the ID and the checksum.
	pkt[0] = 0x45 // version 4, 5 words
	binary.BigEndian.PutUint16(pkt[2:], uint16(n))
	pkt[8] = 64 // TTL
	pkt[9] = unix.IPPROTO_UDP
	copy(pkt[12:16], s[:])
	copy(pkt[16:20], d[:])
	// UDP header.
	udp := pkt[ipv4HeaderLen:]
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(udpHeaderLen+len(payload)))
	copy(udp[udpHeaderLen:], payload)
	binary.BigEndian.PutUint16(udp[6:], udpChecksum(s, d, udp))

	err := unix.Sendto(r.fd, pkt, unix.MSG_DONTWAIT, &unix.SockaddrInet4{Addr: d})
	if errors.Is(err, unix.EMSGSIZE) {
		return fmt.Errorf("answer of %d bytes to %s: %w", len(payload), dst, errTooBig)
	}
	if err != nil {
		return fmt.Errorf("send the answer to %s from %s: %w", dst, src, err)
	}
	return nil
}

// udpChecksum is the UDP checksum of segment (its checksum field zero)
// with the IPv4 pseudo-header.
func udpChecksum(src, dst [4]byte, segment []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for len(b) >= 2 {
			sum += uint32(binary.BigEndian.Uint16(b))
			b = b[2:]
		}
		if len(b) == 1 {
			sum += uint32(b[0]) << 8
		}
	}
	add(src[:])
	add(dst[:])
	sum += unix.IPPROTO_UDP + uint32(len(segment))
	add(segment)
	for sum>>16 != 0 {
		sum = sum&0xFFFF + sum>>16
	}
	c := ^uint16(sum)
	if c == 0 {
		return 0xFFFF // 0 means "no checksum" in UDP over IPv4
	}
	return c
}
