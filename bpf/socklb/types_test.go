package socklb

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestByteOrder(t *testing.T) {
	fe := Frontend{Addr: netip.MustParseAddr("10.96.7.7"), Port: 0x1f90, Proto: TCP}
	k, err := fe.serviceKey(3)
	if err != nil {
		t.Fatal(err)
	}
	// The kernel compares the key's bytes: they must be in network order.
	var raw [4]byte
	for i := range raw {
		raw[i] = byte(k.Address >> (8 * i)) // little-endian memory layout
	}
	if raw != [4]byte{10, 96, 7, 7} {
		t.Errorf("address bytes %v", raw)
	}
	if lo, hi := byte(k.Dport), byte(k.Dport>>8); lo != 0x1f || hi != 0x90 {
		t.Errorf("port bytes %#x %#x, want 0x1f 0x90", lo, hi)
	}
	if got := frontendFromKey(k); got != fe {
		t.Errorf("round trip %v, want %v", got, fe)
	}
	mapped := fe
	mapped.Addr = netip.MustParseAddr("::ffff:10.96.7.7")
	if k2, err := mapped.serviceKey(3); err != nil || k2 != k {
		t.Errorf("IPv4-mapped address: %v, %v", k2, err)
	}
}

func TestValidation(t *testing.T) {
	v4 := netip.MustParseAddr("10.0.0.1")
	for name, err := range map[string]error{
		"v6 frontend": func() error {
			_, err := Frontend{Addr: netip.MustParseAddr("fd00::1"), Port: 1, Proto: TCP}.serviceKey(0)
			return err
		}(),
		"port 0":       func() error { _, err := Frontend{Addr: v4, Proto: TCP}.serviceKey(0); return err }(),
		"SCTP":         func() error { _, err := Frontend{Addr: v4, Port: 1, Proto: 132}.serviceKey(0); return err }(),
		"rev-NAT 0":    func() error { _, err := ServiceInfo{}.entry(1); return err }(),
		"unknown flag": func() error { _, err := ServiceInfo{RevNATID: 1, Flags: 0x80}.entry(1); return err }(),
		"no timeout":   func() error { _, err := ServiceInfo{RevNATID: 1, Flags: FlagAffinity}.entry(1); return err }(),
		"huge timeout": func() error {
			_, err := ServiceInfo{RevNATID: 1, Flags: FlagAffinity, AffinityTimeout: 1 << 62}.entry(1)
			return err
		}(),
		"v6 backend": func() error {
			_, err := Backend{Addr: netip.MustParseAddr("fd00::1"), Port: 1, Proto: UDP}.value()
			return err
		}(),
		"backend proto": func() error { _, err := Backend{Addr: v4, Port: 1}.value(); return err }(),
	} {
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	e, err := ServiceInfo{RevNATID: 7, Flags: FlagAffinity, AffinityTimeout: 1500 * time.Millisecond}.entry(2)
	if err != nil {
		t.Fatal(err)
	}
	if e.BackendId != 2 || e.Count != 2 || e.RevNatId != 7 {
		t.Errorf("entry %+v: want timeout rounded up to 2s, count 2, rev-NAT 7", e)
	}
	if got := infoFromEntry(e); got.AffinityTimeout != 2*time.Second {
		t.Errorf("timeout read back as %s", got.AffinityTimeout)
	}
}

// TestCounterEnum keeps Counters in step with enum lb_counter.
func TestCounterEnum(t *testing.T) {
	if socklbLbCounterLB_CNT_MAX != 8 {
		t.Errorf("lb_counter has %d values: update Counters and Maps.Counters", socklbLbCounterLB_CNT_MAX)
	}
}
