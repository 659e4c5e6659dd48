package policy

import (
	"encoding/binary"
	"net/netip"
)

// pkt describes a test frame; frame() builds Ethernet + IPv4 + L4 by hand.
type pkt struct {
	src, dst     netip.Addr
	proto        Proto
	sport, dport uint16
	flags        TCPFlags
	icmpType     uint8
	icmpCode     uint8
	icmpID       uint16
	ipID         uint16
	fragOffset   uint16 // in 8-byte units
	moreFrags    bool
	payload      []byte
	quoted       []byte // ICMP errors: the quoted IP header and 8 bytes
	truncateL4   bool   // cut the frame right after the IPv4 header
}

var (
	podMAC  = []byte{0x02, 0, 0, 0, 0, 1}
	hostMAC = []byte{0x02, 0, 0, 0, 0, 2}
)

func tcpPkt(src, dst string, sport, dport uint16, flags TCPFlags) pkt {
	return pkt{src: netip.MustParseAddr(src), dst: netip.MustParseAddr(dst), proto: TCP, sport: sport, dport: dport, flags: flags}
}

func udpPkt(src, dst string, sport, dport uint16) pkt {
	return pkt{src: netip.MustParseAddr(src), dst: netip.MustParseAddr(dst), proto: UDP, sport: sport, dport: dport}
}

func icmpPkt(src, dst string, typ, code uint8, id uint16) pkt {
	return pkt{src: netip.MustParseAddr(src), dst: netip.MustParseAddr(dst), proto: ICMP, icmpType: typ, icmpCode: code, icmpID: id}
}

// reverse is the reply direction of p (addresses and ports swapped).
func (p pkt) reverse(flags TCPFlags) pkt {
	r := p
	r.src, r.dst, r.sport, r.dport, r.flags = p.dst, p.src, p.dport, p.sport, flags
	return r
}

func (p pkt) l4() []byte {
	var l4 []byte
	switch p.proto {
	case TCP:
		l4 = make([]byte, 20)
		binary.BigEndian.PutUint16(l4[0:], p.sport)
		binary.BigEndian.PutUint16(l4[2:], p.dport)
		binary.BigEndian.PutUint32(l4[4:], 1000)
		l4[12] = 5 << 4
		l4[13] = uint8(p.flags)
		binary.BigEndian.PutUint16(l4[14:], 65535)
	case UDP, SCTP:
		l4 = make([]byte, 8)
		binary.BigEndian.PutUint16(l4[0:], p.sport)
		binary.BigEndian.PutUint16(l4[2:], p.dport)
		binary.BigEndian.PutUint16(l4[4:], uint16(8+len(p.payload)))
	case ICMP:
		l4 = make([]byte, 8)
		l4[0], l4[1] = p.icmpType, p.icmpCode
		binary.BigEndian.PutUint16(l4[4:], p.icmpID)
		l4 = append(l4, p.quoted...)
	}
	return append(l4, p.payload...)
}

// ipv4 is the IPv4 packet (header with checksum, then L4).
func (p pkt) ipv4() []byte {
	l4 := p.l4()
	if p.fragOffset > 0 {
		l4 = p.payload // a later fragment carries no L4 header
	}
	if p.truncateL4 {
		l4 = nil
	}
	ip := make([]byte, 20, 20+len(l4))
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
	binary.BigEndian.PutUint16(ip[4:], p.ipID)
	frag := p.fragOffset
	if p.moreFrags {
		frag |= 0x2000
	}
	binary.BigEndian.PutUint16(ip[6:], frag)
	ip[8] = 64
	ip[9] = uint8(p.proto)
	s, d := p.src.As4(), p.dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	return append(ip, l4...)
}

// frame is the Ethernet frame of p.
func (p pkt) frame() []byte {
	return ethFrame(0x0800, p.ipv4())
}

func ethFrame(etherType uint16, payload []byte) []byte {
	f := make([]byte, 14, 14+len(payload))
	copy(f[0:], hostMAC)
	copy(f[6:], podMAC)
	binary.BigEndian.PutUint16(f[12:], etherType)
	f = append(f, payload...)
	for len(f) < 60 { // Ethernet minimum, as on the wire
		f = append(f, 0)
	}
	return f
}

// quote is what an ICMP error about p carries: its IP header and 8 bytes.
func (p pkt) quote() []byte {
	ip := p.ipv4()
	return ip[:28]
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
