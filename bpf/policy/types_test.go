package policy

import (
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
	"unsafe"
)

func TestPortBlocks(t *testing.T) {
	check := func(lo, hi uint16) {
		t.Helper()
		blocks := portBlocks(lo, hi)
		next := uint32(lo)
		for _, b := range blocks {
			size := uint32(1) << (16 - b.bits)
			if uint32(b.port) != next || uint32(b.port)%size != 0 {
				t.Fatalf("%d-%d: block %+v not aligned or not contiguous (want start %d)", lo, hi, b, next)
			}
			next += size
		}
		if next != uint32(hi)+1 {
			t.Fatalf("%d-%d: blocks %+v end at %d", lo, hi, blocks, next-1)
		}
		if len(blocks) > 30 {
			t.Fatalf("%d-%d: %d blocks", lo, hi, len(blocks))
		}
	}
	check(1, 65535)
	check(80, 80)
	check(8000, 8999)
	check(65535, 65535)
	check(1024, 2047)
	for range 2000 {
		lo := uint16(rand.IntN(65535) + 1)
		hi := lo + uint16(rand.IntN(65536-int(lo)))
		check(lo, hi)
	}
	if n := len(portBlocks(1, 65535)); n != 16 {
		t.Errorf("1-65535: %d blocks, want 16", n)
	}
	if got := portBlocks(1024, 2047); len(got) != 1 || got[0].bits != 6 {
		t.Errorf("1024-2047: %+v, want one /6 block", got)
	}
}

func TestKeyRoundTrip(t *testing.T) {
	for _, k := range []PolicyKey{
		{EndpointID: 3, Direction: Egress, RemoteIdentity: 77},
		{EndpointID: 3, Direction: Ingress, RemoteIdentity: 0, Proto: UDP},
		{EndpointID: 3, Proto: TCP, Port: 443},
		{EndpointID: 3, Proto: TCP, Port: 1024, EndPort: 2047},
		{EndpointID: 3, Proto: ICMP, Port: 8},
	} {
		if err := k.validate(k.EndpointID); err != nil {
			t.Fatal(err)
		}
		mk := k.mapKeys(k.EndpointID)
		if len(mk) != 1 {
			t.Fatalf("%s: %d map keys", k, len(mk))
		}
		if got := keyFromMap(mk[0]); got != k {
			t.Errorf("round trip %s -> %+v -> %s", k, mk[0], got)
		}
	}
	// The port is in network order: its first byte holds the high bits.
	mk := PolicyKey{EndpointID: 1, Proto: TCP, Port: 0x1f90}.mapKeys(1)[0]
	if b := (*[2]byte)(unsafe.Pointer(&mk.Dport)); b[0] != 0x1f || b[1] != 0x90 || mk.Prefixlen != 96 {
		t.Errorf("port bytes %x, prefixlen %d", *b, mk.Prefixlen)
	}
	if n := len((PolicyKey{Proto: AnyProto, Port: 53}).mapKeys(1)); n != 3 {
		t.Errorf("any protocol with a port: %d keys, want TCP, UDP, SCTP", n)
	}
}

func TestAncestors(t *testing.T) {
	k := PolicyKey{EndpointID: 1, RemoteIdentity: 9, Proto: TCP, Port: 8080}.mapKeys(1)[0]
	anc := ancestors(k, nil)
	if len(anc) != 17 {
		t.Fatalf("%d ancestors of a full key, want 17", len(anc))
	}
	for i, a := range anc {
		if a.Prefixlen >= k.Prefixlen || (i > 0 && a.Prefixlen <= anc[i-1].Prefixlen) {
			t.Errorf("ancestor %d: prefixlen %d", i, a.Prefixlen)
		}
	}
	// The /13 block of 8080 is 8080-8087.
	r := keyFromMap(anc[len(anc)-3])
	if r.Port != 8080 || r.EndPort != 8087 {
		t.Errorf("ancestor %s", r)
	}
	if len(ancestors(PolicyKey{EndpointID: 1}.mapKeys(1)[0], nil)) != 0 {
		t.Error("an L3 key has ancestors")
	}
}

// TestEventLayout keeps decodeEvent in step with struct flow_event.
func TestEventLayout(t *testing.T) {
	var ev policyFlowEvent
	if unsafe.Sizeof(ev) != eventSize {
		t.Fatalf("struct flow_event is %d bytes, decodeEvent reads %d", unsafe.Sizeof(ev), eventSize)
	}
	for name, want := range map[string]uintptr{
		"TimeNs": 0, "Ifindex": 8, "SrcIdentity": 12, "DstIdentity": 16, "Saddr": 20, "Daddr": 24,
		"Len": 28, "Sport": 32, "Dport": 34, "EndpointId": 36, "ProxyPort": 38, "Direction": 40,
		"Verdict": 41, "DropReason": 42, "Proto": 43, "TcpFlags": 44, "CtState": 45, "Match": 46,
		"IcmpType": 47, "IcmpCode": 48,
	} {
		f, ok := reflect.TypeOf(ev).FieldByName(name)
		if !ok || f.Offset != want {
			t.Errorf("flow_event.%s at %d, decodeEvent reads %d", name, f.Offset, want)
		}
	}
	raw := make([]byte, eventSize)
	raw[20], raw[21], raw[22], raw[23] = 10, 1, 2, 3
	raw[32], raw[33] = 0x1f, 0x90
	raw[41] = byte(Dropped)
	raw[42] = byte(DropPolicyDenyList)
	ev2, err := decodeEvent(raw, func(uint64) time.Time { return time.Time{} })
	if err != nil {
		t.Fatal(err)
	}
	if ev2.Src.String() != "10.1.2.3:8080" || ev2.Verdict != Dropped || ev2.DropReason.String() != "Policy denied by denylist" {
		t.Errorf("decoded %+v", ev2)
	}
	if _, err := decodeEvent(raw[:10], nil); err == nil {
		t.Error("short event decoded")
	}
}

// TestEnums keeps the Go names in step with the C enums.
func TestEnums(t *testing.T) {
	if policyPolCounterPOL_CNT_MAX != 12 {
		t.Errorf("pol_counter has %d values: update Counters and Maps.Counters", policyPolCounterPOL_CNT_MAX)
	}
	for _, r := range []DropReason{DropInvalidSourceIP, DropPolicyDenied, DropInvalidPacket, DropCTInvalidHeader,
		DropCTUnknownProto, DropUnsupportedL3, DropWriteError, DropCTMapInsertionFailed, DropFragmentationNotSupported,
		DropNATNoMapping, DropFragmentNotFound, DropPolicyDenyList, DropAuthRequired, DropPolicyInit} {
		if _, ok := dropReasons[r]; !ok || r < dropMin {
			t.Errorf("drop reason %d has no name", r)
		}
	}
	for r, want := range map[DropReason]string{
		133: "Policy denied", 181: "Policy denied by denylist", 189: "Authentication required",
		167: "No mapping for NAT masquerade", 137: "CT: Unknown L4 protocol",
	} {
		if r.String() != want {
			t.Errorf("reason %d: %q, want %q", r, r, want)
		}
	}
	if IdentityKubeAPIServer != Identity(policyReservedIdentityID_KUBE_APISERVER) || IdentityWorld.String() != "reserved:world" {
		t.Error("reserved identities differ from the C enum")
	}
	if Egress != Direction(policyTrafficDirectionDIR_EGRESS) || TraceAll != TraceMode(policyTraceModeTRACE_ALL) {
		t.Error("enums differ from C")
	}
	if (SYN | ACK).String() != "SYN|ACK" {
		t.Errorf("flags %q", SYN|ACK)
	}
}

func TestWallClock(t *testing.T) {
	c := newWallClock()
	mono, err := monotonicNow()
	if err != nil {
		t.Fatal(err)
	}
	now := c.wall(uint64(mono))
	if d := time.Since(now); d < -10*time.Millisecond || d > 100*time.Millisecond {
		t.Errorf("a stamp taken now converts to %s ago", d)
	}
	if d := now.Sub(c.wall(uint64(mono - 2e9))); d != 2*time.Second {
		t.Errorf("a stamp 2s older converts to %s earlier", d)
	}
	if got := (wallClock{at: now, mono: -1}).wall(uint64(mono)); !got.Equal(now) {
		t.Errorf("without the monotonic clock: %s, want the reading time %s", got, now)
	}
}
