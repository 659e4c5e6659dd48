package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
)

// lbMap reads a node agent's pinned socket-LB service map (membrane_svc4 of
// bpf/socklb) read-only, by direct key lookups: a Dump of 10,000 services
// takes tens of milliseconds, a lookup microseconds.
//
// Key (struct lb4_key, 12 bytes): IPv4 address and port in network order,
// protocol, scope, backend slot (host order), 2 bytes padding. Value of slot 0
// (struct lb4_service, 12 bytes): 4 bytes, then the backend count (host order).
type lbMap struct{ m *ebpf.Map }

const (
	lbMapName     = "membrane_svc4"
	lbKeySize     = 12
	lbValueSize   = 12
	protoTCP      = 6
	benchPortHTTP = 8080
)

func openLBMap(pinDir string) (*lbMap, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, lbMapName), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("open the socket-LB service map: %w", err)
	}
	if m.KeySize() != lbKeySize || m.ValueSize() != lbValueSize {
		m.Close()
		return nil, fmt.Errorf("socket-LB service map %s: key/value size %d/%d, the bench knows %d/%d: update lbmap_test.go with bpf/socklb",
			lbMapName, m.KeySize(), m.ValueSize(), lbKeySize, lbValueSize)
	}
	return &lbMap{m: m}, nil
}

func serviceKey(vip netip.Addr, port uint16) [lbKeySize]byte {
	var k [lbKeySize]byte
	a := vip.As4()
	copy(k[0:4], a[:])
	binary.BigEndian.PutUint16(k[4:6], port)
	k[6] = protoTCP
	// scope 0 (what the datapath looks up), slot 0 (the service entry).
	return k
}

// backends returns the backend count of the TCP frontend vip:port, and
// whether it exists.
func (l *lbMap) backends(vip netip.Addr, port uint16) (int, bool, error) {
	k := serviceKey(vip, port)
	var v [lbValueSize]byte
	if err := l.m.Lookup(k, &v); errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0, false, nil
	} else if err != nil {
		return 0, false, fmt.Errorf("look up %s:%d: %w", vip, port, err)
	}
	return int(binary.NativeEndian.Uint16(v[4:6])), true, nil
}

// countServices counts TCP frontends on port with exactly `backends` backends.
func (l *lbMap) countServices(port uint16, backends int) (int, error) {
	var k [lbKeySize]byte
	var v [lbValueSize]byte
	n := 0
	it := l.m.Iterate()
	for it.Next(&k, &v) {
		slot := binary.NativeEndian.Uint16(k[8:10])
		if slot == 0 && k[6] == protoTCP && binary.BigEndian.Uint16(k[4:6]) == port && int(binary.NativeEndian.Uint16(v[4:6])) == backends {
			n++
		}
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("iterate %s: %w", lbMapName, err)
	}
	return n, nil
}

// wait polls (every 100 µs) until vip:port has `backends` backends.
func (l *lbMap) wait(ctx context.Context, vip netip.Addr, port uint16, backends int) (time.Time, error) {
	for {
		n, ok, err := l.backends(vip, port)
		if err != nil {
			return time.Time{}, err
		}
		if ok && n == backends {
			return time.Now(), nil
		}
		if ctx.Err() != nil {
			return time.Time{}, fmt.Errorf("frontend %s:%d with %d backends not in %s: %w", vip, port, backends, lbMapName, ctx.Err())
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func (l *lbMap) Close() error { return l.m.Close() }
