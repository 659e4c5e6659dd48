package flow

import (
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/mesh/model"

	"github.com/google/go-cmp/cmp"
)

// filterFlows are the flows the filter cases select from, by name.
func filterFlows() map[string]Flow {
	world := Endpoint{Identity: 2, Entity: "world", Labels: []string{"reserved:world"}}
	kubeDNS := Endpoint{Identity: 300, Namespace: "kube-system", PodName: "coredns-5d78c", Labels: []string{"k8s:k8s-app=kube-dns", "k8s:io.kubernetes.pod.namespace=kube-system"}}
	return map[string]Flow{
		"fe->be drop": {Time: t0, Type: TypeDrop, Verdict: Dropped, DropReason: &DropReason{Code: 133, Name: "POLICY_DENIED", Description: "Policy denied"},
			L4: L4{Protocol: TCP, SourcePort: 43210, DestinationPort: 8080, TCPFlags: model.SYN}, Source: frontend, Destination: backend},
		"fe->be trace": {Time: t0.Add(time.Second), Type: TypeTrace, Verdict: Forwarded,
			L4: L4{Protocol: TCP, SourcePort: 43211, DestinationPort: 8080, TCPFlags: model.SYN}, Source: frontend, Destination: backend},
		"fe->dns udp": {Time: t0.Add(2 * time.Second), Type: TypeTrace, Verdict: Forwarded,
			L4: L4{Protocol: UDP, SourcePort: 5353, DestinationPort: 53}, Source: frontend, Destination: kubeDNS},
		"world->be icmp": {Time: t0.Add(3 * time.Second), Type: TypeTrace, Verdict: Forwarded,
			L4: L4{Protocol: ICMPv4, ICMPType: 8}, Source: world, Destination: backend},
		"fe->be http": {Time: t0.Add(4 * time.Second), Type: TypeL7, Verdict: Forwarded,
			L4: L4{Protocol: TCP, SourcePort: 43212, DestinationPort: 8080}, Source: frontend, Destination: backend,
			L7: &L7{Type: L7Request, HTTP: &HTTP{Protocol: "HTTP/1.1", Method: "GET", Host: "backend", Path: "/"}}},
		"be->world redirect": {Time: t0.Add(5 * time.Second), Type: TypeTrace, Verdict: Redirected,
			L4: L4{Protocol: TCP, SourcePort: 40000, DestinationPort: 443, TCPFlags: model.SYN}, Source: backend, Destination: world},
	}
}

func TestFilterMatch(t *testing.T) {
	flows := filterFlows()
	all := []string{"be->world redirect", "fe->be drop", "fe->be http", "fe->be trace", "fe->dns udp", "world->be icmp"}
	for _, tc := range []struct {
		name string
		set  map[string][]string
		want []string
	}{
		{"empty filter matches all", nil, all},
		{"namespace either side", map[string][]string{KeyNamespace: {"kube-system"}}, []string{"fe->dns udp"}},
		{"namespace OR", map[string][]string{KeyNamespace: {"kube-system", "nope"}}, []string{"fe->dns udp"}},
		{"unknown namespace", map[string][]string{KeyNamespace: {"nope"}}, nil},
		{"pod either side, prefix", map[string][]string{KeyPod: {"backend"}}, []string{"be->world redirect", "fe->be drop", "fe->be http", "fe->be trace", "world->be icmp"}},
		{"pod with namespace", map[string][]string{KeyPod: {"kube-system/core"}}, []string{"fe->dns udp"}},
		{"pod: wrong namespace", map[string][]string{KeyPod: {"kube-system/backend"}}, nil},
		{"pod: namespace only", map[string][]string{KeyPod: {"kube-system/"}}, []string{"fe->dns udp"}},
		{"pod: any namespace", map[string][]string{KeyPod: {"/coredns"}}, []string{"fe->dns udp"}},
		{"from-pod", map[string][]string{KeyFromPod: {"default/backend-5f7c"}}, []string{"be->world redirect"}},
		{"to-pod", map[string][]string{KeyToPod: {"default/backend"}}, []string{"fe->be drop", "fe->be http", "fe->be trace", "world->be icmp"}},
		{"from-pod AND to-pod", map[string][]string{KeyFromPod: {"frontend"}, KeyToPod: {"coredns"}}, []string{"fe->dns udp"}},
		{"from-pod OR", map[string][]string{KeyFromPod: {"backend", "coredns"}}, []string{"be->world redirect"}},
		{"from-label without source", map[string][]string{KeyFromLabel: {"app=frontend"}}, []string{"fe->be drop", "fe->be http", "fe->be trace", "fe->dns udp"}},
		{"from-label with k8s source", map[string][]string{KeyFromLabel: {"k8s:app=frontend"}}, []string{"fe->be drop", "fe->be http", "fe->be trace", "fe->dns udp"}},
		{"label with another source", map[string][]string{KeyFromLabel: {"container:app=frontend"}}, nil},
		{"label with any source", map[string][]string{KeyFromLabel: {"any:app=frontend"}}, []string{"fe->be drop", "fe->be http", "fe->be trace", "fe->dns udp"}},
		{"to-label, terms AND", map[string][]string{KeyToLabel: {"app=backend,tier=db"}}, []string{"fe->be drop", "fe->be http", "fe->be trace", "world->be icmp"}},
		{"to-label, terms AND, one fails", map[string][]string{KeyToLabel: {"app=backend,tier=web"}}, nil},
		{"to-label OR", map[string][]string{KeyToLabel: {"k8s-app=kube-dns", "reserved:world"}}, []string{"be->world redirect", "fe->dns udp"}},
		{"label exists", map[string][]string{KeyToLabel: {"tier"}}, []string{"fe->be drop", "fe->be http", "fe->be trace", "world->be icmp"}},
		{"label absent", map[string][]string{KeyFromLabel: {"!app"}}, []string{"world->be icmp"}},
		{"label not equal", map[string][]string{KeyFromLabel: {"app!=frontend"}}, []string{"be->world redirect", "world->be icmp"}},
		{"from-identity number", map[string][]string{KeyFromIdentity: {"1234"}}, []string{"fe->be drop", "fe->be http", "fe->be trace", "fe->dns udp"}},
		{"from-identity reserved", map[string][]string{KeyFromIdentity: {"world"}}, []string{"world->be icmp"}},
		{"to-identity reserved:", map[string][]string{KeyToIdentity: {"reserved:world", "300"}}, []string{"be->world redirect", "fe->dns udp"}},
		{"verdict", map[string][]string{KeyVerdict: {"DROPPED"}}, []string{"fe->be drop"}},
		{"verdict case-insensitive OR", map[string][]string{KeyVerdict: {"dropped", "Redirected"}}, []string{"be->world redirect", "fe->be drop"}},
		{"type drop", map[string][]string{KeyType: {"drop"}}, []string{"fe->be drop"}},
		{"type l7", map[string][]string{KeyType: {"l7"}}, []string{"fe->be http"}},
		{"type trace", map[string][]string{KeyType: {"trace"}}, []string{"be->world redirect", "fe->be trace", "fe->dns udp", "world->be icmp"}},
		{"protocol udp", map[string][]string{KeyProtocol: {"udp"}}, []string{"fe->dns udp"}},
		{"protocol icmp", map[string][]string{KeyProtocol: {"ICMP"}}, []string{"world->be icmp"}},
		{"protocol icmpv4", map[string][]string{KeyProtocol: {"icmpv4"}}, []string{"world->be icmp"}},
		{"protocol http", map[string][]string{KeyProtocol: {"http"}}, []string{"fe->be http"}},
		{"protocol tcp", map[string][]string{KeyProtocol: {"tcp"}}, []string{"be->world redirect", "fe->be drop", "fe->be http", "fe->be trace"}},
		{"port either side", map[string][]string{KeyPort: {"53", "43210"}}, []string{"fe->be drop", "fe->dns udp"}},
		{"flags AND", map[string][]string{KeyNamespace: {"default"}, KeyProtocol: {"tcp"}, KeyVerdict: {"FORWARDED"}, KeyPort: {"8080"}}, []string{"fe->be http", "fe->be trace"}},
	} {
		t.Run(tc.name, func(t *testing.T) { checkFilter(t, tc.set, flows, all, tc.want) })
	}
}

// checkFilter sets a filter, and checks it and its trip through the
// observe API select want of the named flows (in the order of names).
func checkFilter(t *testing.T, set map[string][]string, flows map[string]Flow, names, want []string) {
	t.Helper()
	var f Filter
	for key, vs := range set {
		if err := f.Set(key, vs...); err != nil {
			t.Fatalf("Set(%s, %q): %v", key, vs, err)
		}
	}
	rt, err := ParseRequest(f.Values(), t0)
	if err != nil {
		t.Fatalf("ParseRequest(%s): %v", f.Values().Encode(), err)
	}
	for _, filter := range []Filter{f, rt.Filter} {
		var got []string
		for _, name := range names {
			fl := flows[name]
			if filter.Match(&fl) {
				got = append(got, name)
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("matched (-want +got):\n%s", diff)
		}
	}
}

// httpFilterFlows are filterFlows and completed HTTP requests, as
// FromHTTPLog makes them.
func httpFilterFlows() map[string]Flow {
	flows := filterFlows()
	req := func(method, path string, code int, denied bool) Flow {
		return FromHTTPLog(HTTPLog{Time: t0, Source: frontendSrc, Destination: backendDst, Direction: Ingress,
			Protocol: "HTTP/1.1", Method: method, Host: "backend:8080", Path: path, Code: code,
			Duration: time.Millisecond, Denied: denied}, "node-1", testEnrich)
	}
	flows["GET /api/v1/payments/P1 200"] = req("GET", "/api/v1/payments/P1", 200, false)
	flows["POST /api/v1/payments 201"] = req("POST", "/api/v1/payments", 201, false)
	flows["GET /healthz 503"] = req("GET", "/healthz", 503, false)
	flows["DELETE /api/v1/payments/P1 403 denied"] = req("DELETE", "/api/v1/payments/P1", 403, true)
	flows["GET /missing 404"] = req("GET", "/missing", 404, false)
	return flows
}

func TestFilterHTTP(t *testing.T) {
	flows := httpFilterFlows()
	const (
		get200  = "GET /api/v1/payments/P1 200"
		post201 = "POST /api/v1/payments 201"
		get503  = "GET /healthz 503"
		del403  = "DELETE /api/v1/payments/P1 403 denied"
		get404  = "GET /missing 404"
		l7req   = "fe->be http" // a Hubble-style request flow: no status
	)
	all := []string{"fe->be drop", "fe->be trace", "fe->dns udp", "world->be icmp", l7req, "be->world redirect",
		get200, post201, get503, del403, get404}
	for _, tc := range []struct {
		name string
		set  map[string][]string
		want []string
	}{
		{"status code", map[string][]string{KeyHTTPStatus: {"403"}}, []string{del403}},
		{"status class", map[string][]string{KeyHTTPStatus: {"4+"}}, []string{del403, get404}},
		{"status two-digit prefix", map[string][]string{KeyHTTPStatus: {"20+"}}, []string{get200, post201}},
		{"status OR", map[string][]string{KeyHTTPStatus: {"5+", "201"}}, []string{post201, get503}},
		{"status: no such code", map[string][]string{KeyHTTPStatus: {"418"}}, nil},
		{"method", map[string][]string{KeyHTTPMethod: {"GET"}}, []string{l7req, get200, get503, get404}},
		{"method case-insensitive OR", map[string][]string{KeyHTTPMethod: {"post", "Delete"}}, []string{post201, del403}},
		{"path regex, unanchored", map[string][]string{KeyHTTPPath: {"payments/P[0-9]+"}}, []string{get200, del403}},
		{"path anchored", map[string][]string{KeyHTTPPath: {"^/api/v1/payments$"}}, []string{post201}},
		{"path OR", map[string][]string{KeyHTTPPath: {"^/healthz$", "^/$"}}, []string{l7req, get503}},
		{"keys AND", map[string][]string{KeyHTTPMethod: {"GET"}, KeyHTTPStatus: {"2+", "5+"}, KeyHTTPPath: {"^/api/"}}, []string{get200}},
		{"with verdict", map[string][]string{KeyHTTPPath: {"payments"}, KeyVerdict: {"DROPPED"}}, []string{del403}},
		{"protocol http", map[string][]string{KeyProtocol: {"http"}}, []string{l7req, get200, post201, get503, del403, get404}},
		{"type l7 dropped", map[string][]string{KeyType: {"l7"}, KeyVerdict: {"DROPPED"}}, []string{del403}},
		{"to-pod and status", map[string][]string{KeyToPod: {"default/backend"}, KeyHTTPStatus: {"5+"}}, []string{get503}},
	} {
		t.Run(tc.name, func(t *testing.T) { checkFilter(t, tc.set, flows, all, tc.want) })
	}
}

func TestFilterSince(t *testing.T) {
	flows := filterFlows()
	f := Filter{Since: t0.Add(3 * time.Second)}
	for name, fl := range flows {
		want := !fl.Time.Before(f.Since)
		if got := f.Match(&fl); got != want {
			t.Errorf("%s at %v: Match = %v, want %v", name, fl.Time, got, want)
		}
	}
}

func TestFilterSetErrors(t *testing.T) {
	for _, tc := range []struct{ key, value, want string }{
		{KeyNamespace, "", `"": not a namespace`},
		{KeyNamespace, "a/b", `"a/b": not a namespace`},
		{KeyPod, "", "want [namespace/]pod-name-prefix"},
		{KeyPod, "a/b/c", "want [namespace/]pod-name-prefix"},
		{KeyPod, "/", "want [namespace/]pod-name-prefix"},
		{KeyFromLabel, "", "want key=value"},
		{KeyFromLabel, "app=a b", "want key=value"},
		{KeyToLabel, "app=x,", "want key=value"},
		{KeyFromIdentity, "-1", "not a security identity"},
		{KeyToIdentity, "moon", "not a security identity"},
		{KeyVerdict, "ALLOWED", `"ALLOWED": want one of FORWARDED, DROPPED, ERROR, AUDIT, REDIRECTED, TRACED, TRANSLATED`},
		{KeyType, "policy-verdict", `"policy-verdict": want one of trace, drop, l7`},
		{KeyProtocol, "quic", `"quic": want one of tcp, udp, sctp, icmp, icmpv4, icmpv6, http`},
		{KeyPort, "0", "not a port"},
		{KeyPort, "65536", "not a port"},
		{KeyPort, "http", "not a port"},
		{KeyHTTPStatus, "4x", `"4x": want a code like 404 or a class like 5+`},
		{KeyHTTPStatus, "", `"": want a code like 404 or a class like 5+`},
		{KeyHTTPStatus, "+", `"+": want a code like 404 or a class like 5+`},
		{KeyHTTPStatus, "4", `"4": want a code like 404 or a class like 5+`},
		{KeyHTTPStatus, "600", `"600": want a code like 404 or a class like 5+`},
		{KeyHTTPStatus, "404+", `"404+": want a code like 404 or a class like 5+`},
		{KeyHTTPStatus, "2000", `"2000": want a code like 404 or a class like 5+`},
		{KeyHTTPMethod, "", `"": not an HTTP method`},
		{KeyHTTPMethod, "GET /", `"GET /": not an HTTP method`},
		{KeyHTTPPath, "/api/(v1", `"/api/(v1": not a regular expression (RE2)`},
		{KeyHTTPPath, `/a(?=b)`, `"/a(?=b)": not a regular expression (RE2)`},
		{"color", "red", `unknown filter "color"`},
	} {
		var f Filter
		err := f.Set(tc.key, tc.value)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Set(%s, %q) = %v, want an error containing %q", tc.key, tc.value, err, tc.want)
		}
	}
}

func TestParseRequest(t *testing.T) {
	now := time.Date(2025, 11, 21, 17, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		query   string
		want    Request
		wantErr string
	}{
		{query: "", want: Request{}},
		{query: "last=20&follow=true", want: Request{Last: 20, Follow: true}},
		{query: "since=5m", want: Request{Filter: Filter{Since: now.Add(-5 * time.Minute)}}},
		{query: "since=2025-11-21T16:40:00Z&follow=1", want: Request{Filter: Filter{Since: time.Date(2025, 11, 21, 16, 40, 0, 0, time.UTC)}, Follow: true}},
		{query: "verdict=DROPPED&verdict=REDIRECTED&port=8080", want: Request{Filter: Filter{Verdict: []Verdict{Dropped, Redirected}, Port: []uint16{8080}}}},
		{query: "http-status=5%2B&http-status=404&http-method=get&http-path=%5E%2Fapi%2F", want: Request{Filter: Filter{
			HTTPStatus: []string{"5+", "404"}, HTTPMethod: []string{"get"}, HTTPPath: []*regexp.Regexp{regexp.MustCompile("^/api/")}}}},
		{query: "http-status=4x", wantErr: `parameter http-status: "4x": want a code like 404 or a class like 5+`},
		{query: "last=-1", wantErr: `parameter last: "-1": not a count`},
		{query: "last=many", wantErr: `parameter last: "many": not a count`},
		{query: "follow=maybe", wantErr: `parameter follow: "maybe": not a boolean`},
		{query: "since=yesterday", wantErr: `parameter since: "yesterday": want a duration`},
		{query: "verdict=NOPE", wantErr: `parameter verdict: "NOPE": want one of`},
		{query: "color=red", wantErr: `unknown parameter "color"`},
	} {
		q, err := url.ParseQuery(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseRequest(q, now)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseRequest(%q) = %v, want an error containing %q", tc.query, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseRequest(%q): %v", tc.query, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got, cmpRegexp); diff != "" {
			t.Errorf("ParseRequest(%q) (-want +got):\n%s", tc.query, diff)
		}
		// And back.
		again, err := ParseRequest(got.Values(), now)
		if err != nil || !cmp.Equal(got, again, cmpRegexp) {
			t.Errorf("ParseRequest(%q).Values() = %s: parses to %+v, %v", tc.query, got.Values().Encode(), again, err)
		}
	}
}

// cmpRegexp compares regular expressions by their source.
var cmpRegexp = cmp.Comparer(func(a, b *regexp.Regexp) bool { return a.String() == b.String() })

func TestLabelSelectorString(t *testing.T) {
	for _, in := range []string{"app=web", "k8s:app=web,tier", "!debug", "k8s:app!=web", "reserved:world"} {
		s, err := ParseLabelSelector(in)
		if err != nil {
			t.Fatalf("ParseLabelSelector(%q): %v", in, err)
		}
		if s.String() != in {
			t.Errorf("ParseLabelSelector(%q).String() = %q", in, s.String())
		}
	}
	if s, _ := ParseLabelSelector("app==web"); s.String() != "app=web" {
		t.Errorf(`"app==web" prints as %q, want "app=web"`, s.String())
	}
}
