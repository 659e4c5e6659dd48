package translate

import (
	"fmt"
	"net/netip"
	"strconv"

	xdscorev3 "github.com/cncf/xds/go/xds/core/v3"
	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	networkinputsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/matching/common_inputs/network/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Names of the matcher extensions.
const (
	destinationPortInput = "envoy.matching.inputs.destination_port"
	destinationIPInput   = "envoy.matching.inputs.destination_ip"
	sourceIPInput        = "envoy.matching.inputs.source_ip"
	ipTrieMatcher        = "envoy.matching.custom_matchers.trie_matcher"
	chainAction          = "chain"
)

// chainMatcher is the listener's filter chain matcher: it selects a
// connection's chain by destination port, then destination address (the
// ingress groups' endpoints), then source address (the egress groups'
// endpoints): the chain of both when both match, else the one that does.
// A connection that matches none is closed. Because the chains carry no
// match of their own, a pod joining or leaving a group changes only this
// matcher, and Envoy drains no connection for it.
func chainMatcher(cs []chain) (*xdsmatcherv3.Matcher, error) {
	type portChains struct {
		ingress  []chain            // ingress only
		egress   []chain            // egress only
		combined map[*group][]chain // by ingress group
	}
	byPort := map[uint16]*portChains{}
	var ports []uint16
	for _, c := range cs {
		pc, ok := byPort[c.port]
		if !ok {
			pc = &portChains{combined: map[*group][]chain{}}
			byPort[c.port] = pc
			ports = append(ports, c.port)
		}
		switch {
		case c.egress != nil && c.ingress != nil:
			pc.combined[c.ingress] = append(pc.combined[c.ingress], c)
		case c.ingress != nil:
			pc.ingress = append(pc.ingress, c)
		default:
			pc.egress = append(pc.egress, c)
		}
	}
	byPortMap := map[string]*xdsmatcherv3.Matcher_OnMatch{}
	for _, port := range ports {
		pc := byPort[port]
		// The egress chains by source, for a destination no ingress
		// chain has.
		var bySource *xdsmatcherv3.Matcher
		if len(pc.egress) > 0 {
			m, err := ipMatcher(sourceIPInput, &networkinputsv3.SourceIPInput{}, pc.egress, func(c chain) []netip.Addr { return c.egress.endpoints }, nil)
			if err != nil {
				return nil, err
			}
			bySource = m
		}
		if len(pc.ingress) == 0 {
			byPortMap[strconv.Itoa(int(port))] = nested(bySource)
			continue
		}
		var onNoMatch *xdsmatcherv3.Matcher_OnMatch
		if bySource != nil {
			onNoMatch = nested(bySource)
		}
		byDest, err := ipMatcherOnMatch(destinationIPInput, &networkinputsv3.DestinationIPInput{}, pc.ingress,
			func(c chain) []netip.Addr { return c.ingress.endpoints },
			func(c chain) (*xdsmatcherv3.Matcher_OnMatch, error) {
				own, err := action(c)
				both := pc.combined[c.ingress]
				if err != nil || len(both) == 0 {
					return own, err
				}
				// A source with egress rules of its own: the chain of
				// both; any other: the ingress chain.
				m, err := ipMatcher(sourceIPInput, &networkinputsv3.SourceIPInput{}, both, func(c chain) []netip.Addr { return c.egress.endpoints }, own)
				if err != nil {
					return nil, err
				}
				return nested(m), nil
			}, onNoMatch)
		if err != nil {
			return nil, err
		}
		byPortMap[strconv.Itoa(int(port))] = nested(byDest)
	}
	input, err := typedConfig(destinationPortInput, &networkinputsv3.DestinationPortInput{})
	if err != nil {
		return nil, err
	}
	return &xdsmatcherv3.Matcher{MatcherType: &xdsmatcherv3.Matcher_MatcherTree_{MatcherTree: &xdsmatcherv3.Matcher_MatcherTree{
		Input: input,
		TreeType: &xdsmatcherv3.Matcher_MatcherTree_ExactMatchMap{ExactMatchMap: &xdsmatcherv3.Matcher_MatcherTree_MatchMap{
			Map: byPortMap,
		}},
	}}}, nil
}

// ipMatcher selects, by the address input gives, the chain of cs whose
// addresses hold it, or onNoMatch.
func ipMatcher(inputName string, input proto.Message, cs []chain, addrs func(chain) []netip.Addr, onNoMatch *xdsmatcherv3.Matcher_OnMatch) (*xdsmatcherv3.Matcher, error) {
	return ipMatcherOnMatch(inputName, input, cs, addrs, action, onNoMatch)
}

// ipMatcherOnMatch is ipMatcher with what a match of each chain does.
func ipMatcherOnMatch(inputName string, input proto.Message, cs []chain, addrs func(chain) []netip.Addr,
	onMatch func(chain) (*xdsmatcherv3.Matcher_OnMatch, error), onNoMatch *xdsmatcherv3.Matcher_OnMatch) (*xdsmatcherv3.Matcher, error) {
	trie := &xdsmatcherv3.IPMatcher{}
	for _, c := range cs {
		om, err := onMatch(c)
		if err != nil {
			return nil, err
		}
		rm := &xdsmatcherv3.IPMatcher_IPRangeMatcher{OnMatch: om}
		for _, a := range addrs(c) {
			rm.Ranges = append(rm.Ranges, &xdscorev3.CidrRange{AddressPrefix: a.String(), PrefixLen: wrapperspb.UInt32(uint32(a.BitLen()))})
		}
		trie.RangeMatchers = append(trie.RangeMatchers, rm)
	}
	in, err := typedConfig(inputName, input)
	if err != nil {
		return nil, err
	}
	custom, err := typedConfig(ipTrieMatcher, trie)
	if err != nil {
		return nil, err
	}
	return &xdsmatcherv3.Matcher{
		MatcherType: &xdsmatcherv3.Matcher_MatcherTree_{MatcherTree: &xdsmatcherv3.Matcher_MatcherTree{
			Input:    in,
			TreeType: &xdsmatcherv3.Matcher_MatcherTree_CustomMatch{CustomMatch: custom},
		}},
		OnNoMatch: onNoMatch,
	}, nil
}

// action selects c's filter chain (the action is its name).
func action(c chain) (*xdsmatcherv3.Matcher_OnMatch, error) {
	a, err := typedConfig(chainAction, wrapperspb.String(c.name()))
	if err != nil {
		return nil, err
	}
	return &xdsmatcherv3.Matcher_OnMatch{OnMatch: &xdsmatcherv3.Matcher_OnMatch_Action{Action: a}}, nil
}

func nested(m *xdsmatcherv3.Matcher) *xdsmatcherv3.Matcher_OnMatch {
	return &xdsmatcherv3.Matcher_OnMatch{OnMatch: &xdsmatcherv3.Matcher_OnMatch_Matcher{Matcher: m}}
}

func typedConfig(name string, m proto.Message) (*xdscorev3.TypedExtensionConfig, error) {
	a, err := marshalAny(m)
	if err != nil {
		return nil, err
	}
	return &xdscorev3.TypedExtensionConfig{Name: name, TypedConfig: a}, nil
}

// SelectChain is the name of the filter chain l's matcher (as chainMatcher
// builds it) selects for a connection from src to dst:port, or "" when
// the connection matches none (Envoy closes it).
func SelectChain(l *listenerv3.Listener, src, dst netip.Addr, port uint16) (string, error) {
	values := map[string]string{
		destinationPortInput: strconv.Itoa(int(port)),
		destinationIPInput:   dst.Unmap().String(),
		sourceIPInput:        src.Unmap().String(),
	}
	return selectIn(l.GetFilterChainMatcher(), values)
}

func selectIn(m *xdsmatcherv3.Matcher, values map[string]string) (string, error) {
	if m == nil {
		return "", nil
	}
	tree := m.GetMatcherTree()
	if tree == nil {
		return "", fmt.Errorf("matcher without a tree: %v", m)
	}
	v, ok := values[tree.GetInput().GetName()]
	if !ok {
		return "", fmt.Errorf("unknown matcher input %q", tree.GetInput().GetName())
	}
	var found *xdsmatcherv3.Matcher_OnMatch
	switch t := tree.GetTreeType().(type) {
	case *xdsmatcherv3.Matcher_MatcherTree_ExactMatchMap:
		found = t.ExactMatchMap.GetMap()[v]
	case *xdsmatcherv3.Matcher_MatcherTree_CustomMatch:
		var trie xdsmatcherv3.IPMatcher
		if err := t.CustomMatch.GetTypedConfig().UnmarshalTo(&trie); err != nil {
			return "", fmt.Errorf("ip matcher: %w", err)
		}
		addr, err := netip.ParseAddr(v)
		if err != nil {
			return "", err
		}
		best := -1
		for _, rm := range trie.GetRangeMatchers() {
			for _, r := range rm.GetRanges() {
				p, err := netip.ParsePrefix(fmt.Sprintf("%s/%d", r.GetAddressPrefix(), r.GetPrefixLen().GetValue()))
				if err != nil {
					return "", err
				}
				if p.Contains(addr) && p.Bits() > best {
					best, found = p.Bits(), rm.GetOnMatch()
				}
			}
		}
	default:
		return "", fmt.Errorf("unknown matcher tree type %T", t)
	}
	if found != nil {
		name, err := onMatch(found, values)
		if err != nil || name != "" {
			return name, err
		}
	}
	if m.GetOnNoMatch() == nil {
		return "", nil
	}
	return onMatch(m.GetOnNoMatch(), values)
}

func onMatch(om *xdsmatcherv3.Matcher_OnMatch, values map[string]string) (string, error) {
	if nested := om.GetMatcher(); nested != nil {
		return selectIn(nested, values)
	}
	var name wrapperspb.StringValue
	if err := om.GetAction().GetTypedConfig().UnmarshalTo(&name); err != nil {
		return "", fmt.Errorf("action: %w", err)
	}
	return name.GetValue(), nil
}
