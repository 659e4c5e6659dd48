package policy

import (
	"fmt"
	"math/bits"
)

// Policy map keys are LPM trie keys (see bpf/lib/policy.h): endpoint,
// direction and identity always match in full (64 bits), then protocol (8)
// and, after a padding byte, the destination port (16) may be cut short.
const (
	prefixFixed = 64               // L3 only: every protocol and port
	prefixProto = prefixFixed + 8  // a protocol, every port
	prefixPort  = prefixFixed + 16 // + p: ports matching the first p bits (1..16)
	l4Proto     = prefixProto - prefixFixed
)

// Flags of policy map values (POLICY_F_* in bpf/lib/policy.h).
const (
	flagAuth        = 1 << 0
	flagDerivedDeny = 1 << 1
	flagDerivedAuth = 1 << 2
	flagsDerived    = flagDerivedDeny | flagDerivedAuth
)

// portBlock is an aligned power-of-two block of ports: the ports whose first
// bits bits equal port's.
type portBlock struct {
	port uint16
	bits int // 1..16
}

// portBlocks covers lo..hi (lo >= 1) with the fewest aligned blocks (at most
// 30 for any range), the way a port range becomes LPM prefixes.
func portBlocks(lo, hi uint16) []portBlock {
	var out []portBlock
	for start := uint32(lo); start <= uint32(hi); {
		// The largest block aligned at start that ends within hi.
		size := uint32(1) << bits.TrailingZeros32(start|1<<16)
		for start+size-1 > uint32(hi) {
			size >>= 1
		}
		out = append(out, portBlock{port: uint16(start), bits: 16 - bits.TrailingZeros32(size)})
		start += size
	}
	return out
}

// validate checks k for endpoint id (0 in k means id).
func (k PolicyKey) validate(id EndpointID) error {
	switch {
	case id == 0:
		return fmt.Errorf("policy key %s: endpoint ID 0: %w", k, ErrInvalid)
	case k.EndpointID != 0 && k.EndpointID != id:
		return fmt.Errorf("policy key %s: of endpoint %d, not %d: %w", k, k.EndpointID, id, ErrInvalid)
	case !k.Direction.valid():
		return fmt.Errorf("policy key %s: unknown direction: %w", k, ErrInvalid)
	case k.Port == 0 && k.EndPort != 0:
		return fmt.Errorf("policy key %s: end port without a port: %w", k, ErrInvalid)
	case k.EndPort != 0 && k.EndPort < k.Port:
		return fmt.Errorf("policy key %s: end port below port: %w", k, ErrInvalid)
	}
	return nil
}

// mapKeys returns the map keys of k (validated) for endpoint id: per
// protocol (AnyProto with a port: TCP, UDP, SCTP), per port block.
func (k PolicyKey) mapKeys(id EndpointID) []policyPolicyKey {
	base := policyPolicyKey{
		EndpointId: uint16(id),
		Direction:  uint8(k.Direction),
		Identity:   uint32(k.RemoteIdentity),
	}
	if k.Proto == AnyProto && k.Port == 0 {
		base.Prefixlen = prefixFixed
		return []policyPolicyKey{base}
	}
	protos := []Proto{k.Proto}
	if k.Proto == AnyProto {
		protos = []Proto{TCP, UDP, SCTP}
	}
	var blocks []portBlock
	switch {
	case k.Port == 0:
	case k.EndPort <= k.Port:
		blocks = []portBlock{{port: k.Port, bits: 16}}
	default:
		blocks = portBlocks(k.Port, k.EndPort)
	}
	var out []policyPolicyKey
	for _, p := range protos {
		key := base
		key.Proto = uint8(p)
		if blocks == nil {
			key.Prefixlen = prefixProto
			out = append(out, key)
			continue
		}
		for _, b := range blocks {
			key.Prefixlen = uint32(prefixPort + b.bits)
			key.Dport = portToNet(b.port)
			out = append(out, key)
		}
	}
	return out
}

// value is e's own map value (validated), without the key-dependent l4 prefix.
func (e PolicyEntry) value() (policyPolicyEntry, error) {
	v := policyPolicyEntry{Verdict: uint8(e.Verdict)}
	switch e.Verdict {
	case Allow, Deny:
		if e.ProxyPort != 0 {
			return v, fmt.Errorf("policy entry %s: proxy port without redirect: %w", e, ErrInvalid)
		}
	case Redirect:
		if e.ProxyPort == 0 {
			return v, fmt.Errorf("policy entry %s: redirect without proxy port: %w", e, ErrInvalid)
		}
		v.ProxyPort = e.ProxyPort
	default:
		return v, fmt.Errorf("policy entry %s: unknown verdict: %w", e, ErrInvalid)
	}
	if e.AuthRequired {
		if e.Verdict == Deny {
			return v, fmt.Errorf("policy entry %s: deny cannot require authentication: %w", e, ErrInvalid)
		}
		v.Flags |= flagAuth
	}
	return v, nil
}

// ownEntries is one endpoint's map entries with their own values (no
// derived flags).
type ownEntries map[policyPolicyKey]policyPolicyEntry

// set stores v under k with k's l4 prefix.
func (o ownEntries) set(k policyPolicyKey, v policyPolicyEntry) {
	v.L4Prefix = uint8(k.Prefixlen - prefixFixed)
	o[k] = v
}

// merge adds v under k, combining with an entry another rule put there:
// deny wins; a redirect beats an allow; authentication is required if either
// requires it. Two redirects to different proxy ports conflict.
func (o ownEntries) merge(k policyPolicyKey, v policyPolicyEntry) error {
	cur, ok := o[k]
	if !ok {
		o.set(k, v)
		return nil
	}
	switch {
	case cur.Verdict == uint8(Deny):
		return nil
	case v.Verdict == uint8(Deny):
		o.set(k, v)
		return nil
	case cur.Verdict == uint8(Redirect) && v.Verdict == uint8(Redirect) && cur.ProxyPort != v.ProxyPort:
		return fmt.Errorf("%s: redirects to proxy ports %d and %d: %w", keyString(k), cur.ProxyPort, v.ProxyPort, ErrInvalid)
	case v.Verdict == uint8(Redirect):
		cur.Verdict, cur.ProxyPort = v.Verdict, v.ProxyPort
	}
	cur.Flags |= v.Flags & flagAuth
	o.set(k, cur)
	return nil
}

// effective returns the values the datapath needs: every entry lying inside
// a deny entry of the same (endpoint, direction, identity) gets
// flagDerivedDeny, inside an authentication-requiring one flagDerivedAuth.
// Then the longest match of a lookup denies whenever any matching entry does.
func (o ownEntries) effective() map[policyPolicyKey]policyPolicyEntry {
	type group struct {
		dir      uint8
		identity uint32
	}
	// Only groups holding a deny or auth entry can derive anything.
	covering := map[group]bool{}
	for k, v := range o {
		if v.Verdict == uint8(Deny) || v.Flags&flagAuth != 0 {
			covering[group{k.Direction, k.Identity}] = true
		}
	}
	out := make(map[policyPolicyKey]policyPolicyEntry, len(o))
	var buf [17]policyPolicyKey
	for k, v := range o {
		v.Flags &^= flagsDerived
		if covering[group{k.Direction, k.Identity}] {
			for _, a := range ancestors(k, buf[:0]) {
				av, ok := o[a]
				if !ok {
					continue
				}
				if av.Verdict == uint8(Deny) {
					v.Flags |= flagDerivedDeny
				}
				if av.Flags&flagAuth != 0 {
					v.Flags |= flagDerivedAuth
				}
			}
		}
		out[k] = v
	}
	return out
}

// ancestors appends to out the keys that would cover k: shorter prefixes of
// the same endpoint, direction and identity (at most 17).
func ancestors(k policyPolicyKey, out []policyPolicyKey) []policyPolicyKey {
	l4 := int(k.Prefixlen) - prefixFixed
	if l4 <= 0 {
		return out
	}
	a := k
	a.Prefixlen, a.Proto, a.Dport = prefixFixed, 0, 0
	out = append(out, a)
	if l4 <= l4Proto {
		return out
	}
	a = k
	a.Prefixlen, a.Dport = prefixProto, 0
	out = append(out, a)
	port := netToPort(k.Dport)
	for b := 1; b < int(k.Prefixlen)-prefixPort; b++ {
		a = k
		a.Prefixlen = uint32(prefixPort + b)
		a.Dport = portToNet(port &^ (0xffff >> b))
		out = append(out, a)
	}
	return out
}

// ownOf strips the derived flags of a map value.
func ownOf(v policyPolicyEntry) policyPolicyEntry {
	v.Flags &^= flagsDerived
	return v
}

// keyFromMap is the PolicyKey a map key stands for (a port block as a range).
func keyFromMap(k policyPolicyKey) PolicyKey {
	pk := PolicyKey{
		EndpointID:     EndpointID(k.EndpointId),
		Direction:      Direction(k.Direction),
		RemoteIdentity: Identity(k.Identity),
		Proto:          Proto(k.Proto),
	}
	if b := int(k.Prefixlen) - prefixPort; b > 0 && b <= 16 {
		pk.Port = netToPort(k.Dport)
		if b < 16 {
			pk.EndPort = pk.Port + uint16(1<<(16-b)-1)
		}
	}
	return pk
}

func entryFromMap(v policyPolicyEntry) PolicyEntry {
	return PolicyEntry{
		Verdict:      Verdict(v.Verdict),
		ProxyPort:    v.ProxyPort,
		AuthRequired: v.Flags&flagAuth != 0,
	}
}

func keyString(k policyPolicyKey) string { return keyFromMap(k).String() }
