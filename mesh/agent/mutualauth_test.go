package agent

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/membrane-mesh/membrane/mesh/flow"

	"github.com/membrane-mesh/membrane/mesh/model"
	"github.com/membrane-mesh/membrane/mesh/policy"
)

// TestWithAuthEgress: a redirect to the authenticating proxy is added; it
// turns the pod's own allow of the same entry into that redirect; an L7
// redirect or a deny of the same ports stays as it is.
func TestWithAuthEgress(t *testing.T) {
	add := policy.DatapathRule{Direction: model.Egress, RemoteIdentity: 200, Proto: model.TCP, Port: 8080, Verdict: model.Redirect, ProxyPort: 15002}
	got := withAuthEgress(nil, []policy.DatapathRule{add})
	if len(got) != 1 || got[0].ProxyPort != 15002 {
		t.Errorf("added to nothing: %v", got)
	}
	allow := add
	allow.Verdict, allow.ProxyPort = model.Allow, 0
	got = withAuthEgress([]policy.DatapathRule{allow}, []policy.DatapathRule{add})
	if len(got) != 1 || got[0].Verdict != model.Redirect || got[0].ProxyPort != 15002 {
		t.Errorf("over an allow: %v", got)
	}
	l7 := policy.DatapathRule{Direction: model.Egress, RemoteIdentity: 200, Proto: model.AnyProtocol, Port: 8000, EndPort: 9000, Verdict: model.Redirect, ProxyPort: 15001}
	got = withAuthEgress([]policy.DatapathRule{l7}, []policy.DatapathRule{add})
	if len(got) != 1 || got[0].ProxyPort != 15001 {
		t.Errorf("over an L7 redirect: %v", got)
	}
	deny := add
	deny.Verdict, deny.ProxyPort = model.Deny, 0
	got = withAuthEgress([]policy.DatapathRule{deny}, []policy.DatapathRule{add})
	if len(got) != 1 || got[0].Verdict != model.Deny {
		t.Errorf("over a deny: %v", got)
	}
}

func TestAuthMetrics(t *testing.T) {
	m := newAuthMetrics(prometheus.NewRegistry())
	m.count(flow.HTTPLog{SourceID: "spiffe://td/ns/a/sa/b"})
	m.count(flow.HTTPLog{SourceID: "spiffe://td/ns/a/sa/b"})
	m.count(flow.HTTPLog{SourceID: "spiffe://td/ns/a/sa/c", Denied: true})
	if a, d := testutil.ToFloat64(m.connections.WithLabelValues("allowed")), testutil.ToFloat64(m.connections.WithLabelValues("denied")); a != 2 || d != 1 {
		t.Errorf("allowed %v, denied %v; want 2, 1", a, d)
	}
}

// TestWithAuthEgressRequired: an egress allow requiring authentication
// becomes the redirect to the authenticating proxy without the
// requirement (the tunnel is the authentication); one of every protocol on
// the ports keeps it for UDP and SCTP, and TCP is redirected.
func TestWithAuthEgressRequired(t *testing.T) {
	add := policy.DatapathRule{Direction: model.Egress, RemoteIdentity: 200, Proto: model.TCP, Port: 8080, Verdict: model.Redirect, ProxyPort: 15002}
	tcp := add
	tcp.Verdict, tcp.ProxyPort, tcp.AuthRequired = model.Allow, 0, true
	got := withAuthEgress([]policy.DatapathRule{tcp}, []policy.DatapathRule{add})
	if len(got) != 1 || got[0].Verdict != model.Redirect || got[0].ProxyPort != 15002 || got[0].AuthRequired {
		t.Errorf("over a TCP allow requiring authentication: %v", got)
	}
	anyProto := tcp
	anyProto.Proto = model.AnyProtocol
	got = withAuthEgress([]policy.DatapathRule{anyProto}, []policy.DatapathRule{add})
	want := map[model.Protocol]string{model.UDP: "allow+auth", model.SCTP: "allow+auth", model.TCP: "redirect:15002"}
	if len(got) != 3 {
		t.Fatalf("over an allow of every protocol requiring authentication: %v", got)
	}
	for _, r := range got {
		if w := want[r.Proto]; !strings.HasSuffix(r.String(), " "+w) {
			t.Errorf("%s: want %s", r, w)
		}
	}
}
