package l2announce

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// GratuitousARP broadcasts an ARP request for addr from addr on the
// interface holding nodeIP: neighbours holding an entry for addr point it
// at this interface's MAC address.
func GratuitousARP(nodeIP, addr netip.Addr) error {
	link, err := linkWith(nodeIP)
	if err != nil {
		return err
	}
	mac := link.Attrs().HardwareAddr
	if len(mac) != 6 {
		return fmt.Errorf("interface %s has no Ethernet address", link.Attrs().Name)
	}
	proto := htons(unix.ETH_P_ARP)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(proto))
	if err != nil {
		return fmt.Errorf("open packet socket: %w", err)
	}
	defer unix.Close(fd)
	ip := addr.As4()
	pkt := make([]byte, 0, 28)
	pkt = binary.BigEndian.AppendUint16(pkt, 1)      // hardware: Ethernet
	pkt = binary.BigEndian.AppendUint16(pkt, 0x0800) // protocol: IPv4
	pkt = append(pkt, 6, 4)
	pkt = binary.BigEndian.AppendUint16(pkt, 1) // request
	pkt = append(pkt, mac...)
	pkt = append(pkt, ip[:]...)
	pkt = append(pkt, 0, 0, 0, 0, 0, 0)
	pkt = append(pkt, ip[:]...)
	to := &unix.SockaddrLinklayer{Protocol: proto, Ifindex: link.Attrs().Index, Halen: 6, Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	if err := unix.Sendto(fd, pkt, 0, to); err != nil {
		return fmt.Errorf("send gratuitous ARP for %s on %s: %w", addr, link.Attrs().Name, err)
	}
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
