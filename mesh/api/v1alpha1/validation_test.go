package v1alpha1

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func labels(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

func from(sel ...metav1.LabelSelector) IngressRule {
	return IngressRule{IngressCommonRule: IngressCommonRule{FromEndpoints: sel}}
}

// ingressPorts is an ingress rule from any peer to these ports.
func ingressPorts(l7 *L7Rules, ports ...PortProtocol) IngressRule {
	return IngressRule{ToPorts: []PortRule{{Ports: ports, Rules: l7}}}
}

func egressPorts(l7 *L7Rules, ports ...PortProtocol) EgressRule {
	return EgressRule{ToPorts: []PortRule{{Ports: ports, Rules: l7}}}
}

func tcp(port string) PortProtocol { return PortProtocol{Port: port, Protocol: ProtoTCP} }

func httpRules(h ...PortRuleHTTP) *L7Rules { return &L7Rules{HTTP: h} }

func dnsRules(s ...FQDNSelector) *L7Rules { return &L7Rules{DNS: s} }

// errorKeys renders errors as "Type path", e.g. "Invalid spec.egress[0].toCIDR[0]".
func errorKeys(errs field.ErrorList) []string {
	var keys []string
	for _, e := range errs {
		keys = append(keys, strings.TrimPrefix(string(e.Type), "FieldValue")+" "+e.Field)
	}
	slices.Sort(keys)
	return keys
}

func TestRuleValidate(t *testing.T) {
	const p0 = "spec.ingress[0].toPorts[0].ports[0]"
	const e0 = "spec.egress[0].toPorts[0].ports[0]"
	for _, tc := range []struct {
		name string
		rule Rule // EndpointSelector defaults to app=web when nil and noSelector is false
		// noSelector leaves EndpointSelector nil.
		noSelector bool
		want       []string
	}{
		// Empty rules and selectors.
		{name: "empty endpointSelector selects all", rule: Rule{EndpointSelector: &metav1.LabelSelector{}}},
		{name: "missing endpointSelector", noSelector: true, want: []string{"Required spec.endpointSelector"}},
		{name: "rule without sections has no effect", rule: Rule{Description: "nothing"}},
		{name: "empty ingress rule is default deny", rule: Rule{Ingress: []IngressRule{{}}}},
		{name: "empty egress and deny rules", rule: Rule{Egress: []EgressRule{{}}, IngressDeny: []IngressDenyRule{{}}, EgressDeny: []EgressDenyRule{{}}}},
		{name: "empty fromEndpoints selector", rule: Rule{Ingress: []IngressRule{from(metav1.LabelSelector{})}}},

		// Label selectors.
		{name: "k8s and any source prefixes", rule: Rule{
			EndpointSelector: labels("any:org", "alliance"),
			Ingress:          []IngressRule{from(*labels("k8s:io.kubernetes.pod.namespace", "kube-system", "k8s:k8s-app", "kube-dns"))},
		}},
		{name: "namespace label keys", rule: Rule{Ingress: []IngressRule{from(*labels(
			"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name", "prod",
			"io.cilium.k8s.policy.serviceaccount", "default"))}}},
		{name: "reserved source", rule: Rule{Ingress: []IngressRule{from(*labels("reserved:host", ""))}},
			want: []string{"Invalid spec.ingress[0].fromEndpoints[0].matchLabels[reserved:host]"}},
		{name: "bad label key", rule: Rule{EndpointSelector: labels("k8s:bad key", "x")},
			want: []string{"Invalid spec.endpointSelector.matchLabels"}},
		{name: "bad label value", rule: Rule{Egress: []EgressRule{{EgressCommonRule: EgressCommonRule{ToEndpoints: []metav1.LabelSelector{*labels("app", "no spaces")}}}}},
			want: []string{"Invalid spec.egress[0].toEndpoints[0].matchLabels"}},
		{name: "lower-case operator", rule: Rule{EndpointSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "k8s:env", Operator: "in", Values: []string{"prod"}}}}},
			want: []string{"Invalid spec.endpointSelector.matchExpressions[0].operator"}},
		{name: "In without values", rule: Rule{EndpointSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "env", Operator: metav1.LabelSelectorOpIn}}}},
			want: []string{"Required spec.endpointSelector.matchExpressions[0].values"}},
		{name: "unknown source in expression", rule: Rule{EndpointSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "cidr:10.0.0.0/8", Operator: metav1.LabelSelectorOpExists}}}},
			want: []string{"Invalid spec.endpointSelector.matchExpressions[0].key"}},

		// Entities.
		{name: "known entities", rule: Rule{Ingress: []IngressRule{{IngressCommonRule: IngressCommonRule{FromEntities: []Entity{
			EntityAll, EntityWorld, EntityCluster, EntityHost, EntityRemoteNode, EntityKubeAPIServer, EntityHealth, EntityInit, EntityUnmanaged}}}}}},
		{name: "unknown entity", rule: Rule{Egress: []EgressRule{{EgressCommonRule: EgressCommonRule{ToEntities: []Entity{EntityWorld, "moon"}}}}},
			want: []string{"NotSupported spec.egress[0].toEntities[1]"}},

		// CIDRs.
		{name: "CIDRs", rule: Rule{Egress: []EgressRule{{EgressCommonRule: EgressCommonRule{
			ToCIDR:    []CIDR{"20.1.1.1/32", "2001:db8::/32", "10.1.2.3/8"},
			ToCIDRSet: []CIDRRule{{CIDR: "10.0.0.0/8", ExceptCIDRs: []CIDR{"10.96.0.0/12", "10.0.0.0/8"}}, {CIDR: "::/0", ExceptCIDRs: []CIDR{"fd00::/8"}}},
		}}}}},
		{name: "bad CIDR", rule: Rule{Egress: []EgressRule{{EgressCommonRule: EgressCommonRule{ToCIDR: []CIDR{"10.0.0.0/33", "10.0.0.1"}}}}},
			want: []string{"Invalid spec.egress[0].toCIDR[0]", "Invalid spec.egress[0].toCIDR[1]"}},
		{name: "except outside cidr", rule: Rule{Ingress: []IngressRule{{IngressCommonRule: IngressCommonRule{FromCIDRSet: []CIDRRule{
			{CIDR: "10.0.0.0/8", ExceptCIDRs: []CIDR{"10.1.0.0/16", "192.168.0.0/16", "10.0.0.0/7", "::/0", "bad"}}}}}}},
			want: []string{
				"Invalid spec.ingress[0].fromCIDRSet[0].except[1]", "Invalid spec.ingress[0].fromCIDRSet[0].except[2]",
				"Invalid spec.ingress[0].fromCIDRSet[0].except[3]", "Invalid spec.ingress[0].fromCIDRSet[0].except[4]",
			}},
		{name: "bad cidr of a set", rule: Rule{EgressDeny: []EgressDenyRule{{EgressCommonRule: EgressCommonRule{ToCIDRSet: []CIDRRule{{CIDR: "10.0.0.0/40", ExceptCIDRs: []CIDR{"10.1.0.0/16"}}}}}}},
			want: []string{"Invalid spec.egressDeny[0].toCIDRSet[0].cidr"}},

		// Ports.
		{name: "ports", rule: Rule{Ingress: []IngressRule{ingressPorts(nil,
			tcp("80"), PortProtocol{Port: "0"}, PortProtocol{Port: "65535", Protocol: ProtoUDP}, PortProtocol{Port: "3868", Protocol: ProtoSCTP},
			PortProtocol{Port: "http", Protocol: ProtoAny}, PortProtocol{Port: "HTTP-Alt"}, PortProtocol{Port: "8000", EndPort: 8080}, PortProtocol{Port: "53", EndPort: 53})}}},
		{name: "port 70000", rule: Rule{Ingress: []IngressRule{ingressPorts(nil, tcp("70000"))}}, want: []string{"Invalid " + p0 + ".port"}},
		{name: "port missing", rule: Rule{Ingress: []IngressRule{ingressPorts(nil, PortProtocol{})}}, want: []string{"Required " + p0 + ".port"}},
		{name: "bad port names", rule: Rule{Ingress: []IngressRule{ingressPorts(nil, tcp("a--b"), tcp("port-name-too-long"), tcp("-http"))}},
			want: []string{"Invalid " + p0 + ".port", "Invalid spec.ingress[0].toPorts[0].ports[1].port", "Invalid spec.ingress[0].toPorts[0].ports[2].port"}},
		{name: "endPort below port", rule: Rule{Ingress: []IngressRule{ingressPorts(nil, PortProtocol{Port: "444", EndPort: 80})}},
			want: []string{"Invalid " + p0 + ".endPort"}},
		{name: "endPort with named port", rule: Rule{Ingress: []IngressRule{ingressPorts(nil, PortProtocol{Port: "http", EndPort: 80})}},
			want: []string{"Invalid " + p0 + ".endPort"}},
		{name: "endPort with port 0", rule: Rule{Ingress: []IngressRule{ingressPorts(nil, PortProtocol{Port: "0", EndPort: 80})}},
			want: []string{"Invalid " + p0 + ".endPort"}},
		{name: "endPort out of range", rule: Rule{Ingress: []IngressRule{ingressPorts(nil, PortProtocol{Port: "80", EndPort: 70000})}},
			want: []string{"Invalid " + p0 + ".endPort"}},
		{name: "unknown protocol", rule: Rule{Ingress: []IngressRule{ingressPorts(nil, PortProtocol{Port: "80", Protocol: "FOO"})}},
			want: []string{"NotSupported " + p0 + ".protocol"}},
		{name: "41 ports", rule: Rule{Ingress: []IngressRule{ingressPorts(nil, slices.Repeat([]PortProtocol{tcp("80")}, 41)...)}},
			want: []string{"TooMany spec.ingress[0].toPorts[0].ports"}},
		{name: "deny rule ports", rule: Rule{IngressDeny: []IngressDenyRule{{ToPorts: []PortDenyRule{{Ports: []PortProtocol{{Port: "99999"}}}}}}},
			want: []string{"Invalid spec.ingressDeny[0].toPorts[0].ports[0].port"}},

		// HTTP rules.
		{name: "http rules", rule: Rule{Ingress: []IngressRule{ingressPorts(httpRules(
			PortRuleHTTP{},
			PortRuleHTTP{Method: "GET|HEAD", Path: "/api/v[12]/.*", Host: `.*\.example\.com`},
			PortRuleHTTP{Headers: []string{"X-My-Header: true", "X-Present", "X-Cilium-Form yes", "X-Empty:"}},
			PortRuleHTTP{HeaderMatches: []HeaderMatch{{Name: "X-Token", Value: "secret"}, {Name: "User-Agent", Mismatch: MismatchReplace, Value: "membrane"}}},
		), tcp("80"))}}},
		{name: "bad regexes", rule: Rule{Ingress: []IngressRule{ingressPorts(httpRules(PortRuleHTTP{Method: "GET(", Path: "/a[", Host: `*.example.com`}), tcp("80"))}},
			want: []string{
				"Invalid spec.ingress[0].toPorts[0].rules.http[0].host",
				"Invalid spec.ingress[0].toPorts[0].rules.http[0].method",
				"Invalid spec.ingress[0].toPorts[0].rules.http[0].path",
			}},
		{name: "bad headers", rule: Rule{Egress: []EgressRule{egressPorts(httpRules(PortRuleHTTP{Headers: []string{": value", "X(bad): y", "X-A: a\nb", ""}}), tcp("80"))}},
			want: []string{
				"Invalid spec.egress[0].toPorts[0].rules.http[0].headers[0]", "Invalid spec.egress[0].toPorts[0].rules.http[0].headers[1]",
				"Invalid spec.egress[0].toPorts[0].rules.http[0].headers[2]", "Invalid spec.egress[0].toPorts[0].rules.http[0].headers[3]",
			}},
		{name: "bad header matches", rule: Rule{Egress: []EgressRule{egressPorts(httpRules(PortRuleHTTP{HeaderMatches: []HeaderMatch{
			{Name: ""}, {Name: "bad name"}, {Name: "X", Mismatch: "SHOUT"}, {Name: "X", Value: "a\rb"}}}), tcp("80"))}},
			want: []string{
				"Invalid spec.egress[0].toPorts[0].rules.http[0].headerMatches[0].name", "Invalid spec.egress[0].toPorts[0].rules.http[0].headerMatches[1].name",
				"Invalid spec.egress[0].toPorts[0].rules.http[0].headerMatches[3].value", "NotSupported spec.egress[0].toPorts[0].rules.http[0].headerMatches[2].mismatch",
			}},
		{name: "http needs TCP", rule: Rule{Ingress: []IngressRule{ingressPorts(httpRules(PortRuleHTTP{}), PortProtocol{Port: "80", Protocol: ProtoUDP}, PortProtocol{Port: "81"})}},
			want: []string{"Invalid " + p0 + ".protocol", "Invalid spec.ingress[0].toPorts[0].ports[1].protocol"}},
		{name: "L7 on port 0", rule: Rule{Ingress: []IngressRule{ingressPorts(httpRules(PortRuleHTTP{}), tcp("0"))}},
			want: []string{"Invalid " + p0 + ".port"}},
		{name: "L7 without ports", rule: Rule{Ingress: []IngressRule{ingressPorts(httpRules(PortRuleHTTP{}))}},
			want: []string{"Required spec.ingress[0].toPorts[0].ports"}},
		{name: "http port range", rule: Rule{Ingress: []IngressRule{ingressPorts(httpRules(PortRuleHTTP{}), PortProtocol{Port: "80", EndPort: 90, Protocol: ProtoTCP})}}},

		// DNS rules and FQDNs.
		{name: "dns and fqdns", rule: Rule{Egress: []EgressRule{
			egressPorts(dnsRules(FQDNSelector{MatchName: "cilium.io"}, FQDNSelector{MatchPattern: "*.cilium.io"}, FQDNSelector{MatchPattern: "*"}, FQDNSelector{MatchPattern: "**.cilium.io"}),
				PortProtocol{Port: "53", Protocol: ProtoAny}),
			{ToFQDNs: []FQDNSelector{{MatchName: "my-remote-service.com."}, {MatchPattern: "special*service.api.cilium.io"}, {MatchName: "_srv._tcp.example.com"}}},
		}}},
		{name: "dns on ingress", rule: Rule{Ingress: []IngressRule{ingressPorts(dnsRules(FQDNSelector{MatchPattern: "*"}), PortProtocol{Port: "53"})}},
			want: []string{"Forbidden spec.ingress[0].toPorts[0].rules.dns"}},
		{name: "dns with http", rule: Rule{Egress: []EgressRule{egressPorts(&L7Rules{HTTP: []PortRuleHTTP{{}}, DNS: []FQDNSelector{{MatchPattern: "*"}}}, tcp("53"))}},
			want: []string{"Forbidden spec.egress[0].toPorts[0].rules.dns"}},
		{name: "dns port range", rule: Rule{Egress: []EgressRule{egressPorts(dnsRules(FQDNSelector{MatchPattern: "*"}), PortProtocol{Port: "53", EndPort: 54})}},
			want: []string{"Invalid " + e0 + ".endPort"}},
		{name: "dns on SCTP", rule: Rule{Egress: []EgressRule{egressPorts(dnsRules(FQDNSelector{MatchPattern: "*"}), PortProtocol{Port: "53", Protocol: ProtoSCTP})}},
			want: []string{"Invalid " + e0 + ".protocol"}},
		{name: "bad fqdn selectors", rule: Rule{Egress: []EgressRule{{ToFQDNs: []FQDNSelector{
			{}, {MatchName: "a.com", MatchPattern: "*.a.com"}, {MatchName: "*.a.com"}, {MatchPattern: "a..b"}, {MatchName: ".a.com"}, {MatchName: strings.Repeat("a", 256)}}}}},
			want: []string{
				"Forbidden spec.egress[0].toFQDNs[1].matchPattern", "Invalid spec.egress[0].toFQDNs[2].matchName", "Invalid spec.egress[0].toFQDNs[3].matchPattern",
				"Invalid spec.egress[0].toFQDNs[4].matchName", "Invalid spec.egress[0].toFQDNs[5].matchName", "Required spec.egress[0].toFQDNs[0]",
			}},
		{name: "bad dns rule selectors", rule: Rule{Egress: []EgressRule{egressPorts(dnsRules(
			FQDNSelector{MatchPattern: "a.**.com"}, FQDNSelector{MatchPattern: "*.com "}, FQDNSelector{MatchName: "a b.com"}, FQDNSelector{MatchPattern: "**.cilium.io"}),
			PortProtocol{Port: "53", Protocol: ProtoUDP})}},
			want: []string{
				"Invalid spec.egress[0].toPorts[0].rules.dns[0].matchPattern", "Invalid spec.egress[0].toPorts[0].rules.dns[1].matchPattern",
				"Invalid spec.egress[0].toPorts[0].rules.dns[2].matchName",
			}},

		// Authentication.
		{name: "authentication modes", rule: Rule{
			Ingress: []IngressRule{{Authentication: &Authentication{Mode: AuthenticationRequired}}},
			Egress:  []EgressRule{{Authentication: &Authentication{Mode: AuthenticationDisabled}}, {Authentication: &Authentication{Mode: AuthenticationAlwaysFail}}},
		}},
		{name: "bad authentication", rule: Rule{
			Ingress: []IngressRule{{Authentication: &Authentication{Mode: "mtls"}}},
			Egress:  []EgressRule{{Authentication: &Authentication{}}},
		}, want: []string{"NotSupported spec.ingress[0].authentication.mode", "Required spec.egress[0].authentication.mode"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.rule
			if r.EndpointSelector == nil && !tc.noSelector {
				r.EndpointSelector = labels("app", "web")
			}
			errs := r.Validate()
			if diff := cmp.Diff(tc.want, errorKeys(errs)); diff != "" {
				t.Errorf("errors (-want +got):\n%s\nall: %v", diff, errs)
			}
			for _, e := range errs {
				if e.Error() == "" || e.Field == "" {
					t.Errorf("error without message or path: %#v", e)
				}
			}
		})
	}
}

// TestFQDNErrorDetail checks that an FQDN selector's error says what is
// wrong with it, not only which field.
func TestFQDNErrorDetail(t *testing.T) {
	r := Rule{EndpointSelector: &metav1.LabelSelector{}, Egress: []EgressRule{{ToFQDNs: []FQDNSelector{{MatchPattern: "a.**.com"}, {MatchName: "ex ample.com"}}}}}
	errs := r.Validate()
	if len(errs) != 2 {
		t.Fatalf("%d errors, want 2: %v", len(errs), errs)
	}
	for i, want := range []string{`spec.egress[0].toFQDNs[0].matchPattern: Invalid value: "a.**.com": "**" in label "**": "**" is only allowed as the whole first label`,
		`spec.egress[0].toFQDNs[1].matchName: Invalid value: "ex ample.com": invalid character ' ' at offset 2`} {
		if !strings.Contains(errs[i].Error(), want) {
			t.Errorf("error %q, want it to contain %q", errs[i].Error(), want)
		}
	}
}

func TestPolicyValidate(t *testing.T) {
	bad := Rule{EndpointSelector: &metav1.LabelSelector{}, Ingress: []IngressRule{ingressPorts(nil, tcp("70000"))}}
	good := Rule{EndpointSelector: &metav1.LabelSelector{}}
	for _, tc := range []struct {
		name string
		p    policy
		want []string
	}{
		{"no spec or specs", &MembraneNetworkPolicy{}, []string{"Required spec"}},
		{"spec", &MembraneNetworkPolicy{Spec: &bad}, []string{"Invalid spec.ingress[0].toPorts[0].ports[0].port"}},
		{"specs", &MembraneNetworkPolicy{Specs: []Rule{good, bad}}, []string{"Invalid specs[1].ingress[0].toPorts[0].ports[0].port"}},
		{"clusterwide", &MembraneClusterwideNetworkPolicy{Spec: &good, Specs: []Rule{{}}}, []string{"Required specs[0].endpointSelector"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, errorKeys(tc.p.Validate())); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
	p := MembraneNetworkPolicy{Spec: &good, Specs: []Rule{bad}}
	if got := len(p.Rules()); got != 2 {
		t.Errorf("Rules: %d, want 2", got)
	}
}

func TestParseHeader(t *testing.T) {
	for _, tc := range []struct{ in, name, value, err string }{
		{in: "X-My-Header: true", name: "X-My-Header", value: "true"},
		{in: "X-My-Header:true", name: "X-My-Header", value: "true"},
		{in: "X-My-Header : a b", name: "X-My-Header", value: "a b"},
		{in: "X-Cilium-Form yes", name: "X-Cilium-Form", value: "yes"},
		{in: "X-Present", name: "X-Present"},
		{in: "X-Empty:", name: "X-Empty"},
		{in: "", err: "name"},
		{in: ": v", err: "name"},
		{in: "X-A: a\x00", err: "value"},
	} {
		name, value, err := ParseHeader(tc.in)
		got := fmt.Sprintf("%q %q", name, value)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseHeader(%q) = %s, %v; want an error about the %s", tc.in, got, err, tc.err)
			}
			continue
		}
		if want := fmt.Sprintf("%q %q", tc.name, tc.value); err != nil || got != want {
			t.Errorf("ParseHeader(%q) = %s, %v; want %s", tc.in, got, err, want)
		}
	}
}

func TestSelectorLabelKey(t *testing.T) {
	for in, want := range map[string]struct {
		key string
		ok  bool
	}{
		"app":                             {"app", true},
		"k8s:app":                         {"app", true},
		"any:org":                         {"org", true},
		"k8s:io.kubernetes.pod.namespace": {"io.kubernetes.pod.namespace", true},
		"reserved:host":                   {"host", false},
	} {
		if k, ok := SelectorLabelKey(in); k != want.key || ok != want.ok {
			t.Errorf("SelectorLabelKey(%q) = %q, %v; want %q, %v", in, k, ok, want.key, want.ok)
		}
	}
}
