package controller

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/membrane-mesh/membrane/gateway/translate"
	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
)

// TestFoldRejections: a rejected listener makes its Gateway and listener
// Programmed=False and marks the routes on it; a rejected rule marks its
// route only; an Ingress's rejected listener is a problem of that Ingress;
// the nodes that reject the same thing are named together.
func TestFoldRejections(t *testing.T) {
	programmed := func(ok bool) []metav1.Condition {
		st := metav1.ConditionTrue
		if !ok {
			st = metav1.ConditionFalse
		}
		return []metav1.Condition{{Type: "Programmed", Status: st, Reason: "Programmed", ObservedGeneration: 2}}
	}
	section := func(s gwv1.SectionName) *gwv1.SectionName { return &s }
	route := func(name string, sec *gwv1.SectionName) translate.RouteStatus {
		return translate.RouteStatus{Namespace: "default", Name: name, Parents: []gwv1.RouteParentStatus{{
			ParentRef: gwv1.ParentReference{Name: "web", SectionName: sec}, ControllerName: translate.ControllerName,
			Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", ObservedGeneration: 1}}}}}
	}
	status := func() translate.Status {
		return translate.Status{
			Gateways: []translate.GatewayStatus{{Namespace: "default", Name: "web", Status: gwv1.GatewayStatus{
				Conditions: programmed(true),
				Listeners:  []gwv1.ListenerStatus{{Name: "http", Conditions: programmed(true)}, {Name: "https", Conditions: programmed(true)}},
			}}},
			HTTPRoutes: []translate.RouteStatus{route("on-https", section("https")), route("on-http", section("http")), route("on-all", nil)},
			Ingresses:  []translate.IngressStatus{{Namespace: "default", Name: "shop", Mode: "dedicated"}, {Namespace: "default", Name: "other", Mode: "dedicated"}},
		}
	}
	in := translate.Input{Gateways: []gwv1.Gateway{{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: gwv1.GatewaySpec{Listeners: []gwv1.Listener{{Name: "http", Port: 80}, {Name: "https", Port: 443}}}}}}
	marked := func(st translate.Status) map[string]string {
		out := map[string]string{}
		for _, r := range st.HTTPRoutes {
			if c := meta.FindStatusCondition(r.Parents[0].Conditions, RouteConditionProgrammed); c != nil {
				if c.Status != metav1.ConditionFalse || c.Reason != ReasonProxyRejected || c.ObservedGeneration != 1 {
					t.Errorf("route %s: %+v", r.Name, c)
				}
				out[r.Name] = c.Message
			}
		}
		return out
	}

	// A listener's certificate, on two nodes.
	st := status()
	foldRejections(&st, in, mergeRejections(map[string][]v1alpha1.GatewayRejection{
		"n2": {{Namespace: "default", Name: "web", Port: 443, Listeners: []string{"https"}, Error: "KEY_VALUES_MISMATCH"}},
		"n1": {{Namespace: "default", Name: "web", Port: 443, Listeners: []string{"https"}, Error: "KEY_VALUES_MISMATCH"}},
	}))
	gw := st.Gateways[0].Status
	c := meta.FindStatusCondition(gw.Conditions, "Programmed")
	if c.Status != metav1.ConditionFalse || c.Reason != "Invalid" || c.ObservedGeneration != 2 ||
		c.Message != "listener https (port 443) rejected by the node Envoy on node n1, node n2: KEY_VALUES_MISMATCH; the last accepted configuration keeps serving" {
		t.Errorf("Gateway Programmed %+v", c)
	}
	if c := meta.FindStatusCondition(gw.Listeners[0].Conditions, "Programmed"); c.Status != metav1.ConditionTrue {
		t.Errorf("listener http Programmed %+v, want True", c)
	}
	if c := meta.FindStatusCondition(gw.Listeners[1].Conditions, "Programmed"); c.Status != metav1.ConditionFalse || c.Reason != "Invalid" {
		t.Errorf("listener https Programmed %+v, want False", c)
	}
	m := marked(st)
	if len(m) != 2 || !strings.HasPrefix(m["on-https"], "listener https of Gateway default/web rejected") || m["on-all"] == "" {
		t.Errorf("marked routes %v, want on-https and on-all", m)
	}

	// A rule of one route on the HTTP port.
	st = status()
	foldRejections(&st, in, mergeRejections(map[string][]v1alpha1.GatewayRejection{
		"n1": {{Namespace: "default", Name: "web", Port: 80, Rules: []string{"default/on-http/rule/1"}, Error: "program size"}},
	}))
	m = marked(st)
	if len(m) != 1 || !strings.HasPrefix(m["on-http"], "rules[1] on listener http of Gateway default/web rejected by the node Envoy on node n1: program size") {
		t.Errorf("marked routes %v, want on-http's rule 1", m)
	}
	if c := meta.FindStatusCondition(st.Gateways[0].Status.Conditions, "Programmed"); c.Status != metav1.ConditionFalse ||
		!strings.Contains(c.Message, "listener http (port 80) with the rules default/on-http/rule/1") {
		t.Errorf("Gateway Programmed %+v", c)
	}

	// An Ingress's listener.
	st = status()
	foldRejections(&st, in, mergeRejections(map[string][]v1alpha1.GatewayRejection{
		"n1": {{Namespace: "default", Name: "ingress:shop", Port: 443, Error: "bad key"}},
	}))
	if p := st.Ingresses[0].Problems; len(p) != 1 || p[0] != "port 443 rejected by the node Envoy on node n1: bad key; the last accepted configuration keeps serving" {
		t.Errorf("Ingress shop problems %q", p)
	}
	if p := st.Ingresses[1].Problems; len(p) != 0 {
		t.Errorf("Ingress other problems %q, want none", p)
	}
	if c := meta.FindStatusCondition(st.Gateways[0].Status.Conditions, "Programmed"); c.Status != metav1.ConditionTrue {
		t.Errorf("Gateway web Programmed %+v after an Ingress's rejection", c)
	}
}

// TestRouteProgrammedRemoved: the route condition goes once the
// rejection does; other conditions of the old status stay.
func TestRouteProgrammedRemoved(t *testing.T) {
	r := New(slog.New(slog.DiscardHandler), nil, Config{})
	r.now = func() time.Time { return time.Unix(0, 0) }
	old := []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue}, {Type: RouteConditionProgrammed, Status: metav1.ConditionFalse},
		{Type: "example.com/Other", Status: metav1.ConditionTrue}}
	got := r.mergeConditions(old, []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue}})
	if len(got) != 2 || got[0].Type != "Accepted" || got[1].Type != "example.com/Other" {
		t.Errorf("merged %+v", got)
	}
}
