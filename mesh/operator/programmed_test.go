package operator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
)

const (
	webRef    = "MembraneNetworkPolicy shop/web"
	globalRef = "MembraneClusterwideNetworkPolicy global"
)

// allowHTTP is allowPort with an HTTP rule on the port.
func allowHTTP(port string) *v1alpha1.Rule {
	r := allowPort(port)
	r.Ingress[0].ToPorts[0].Rules = &v1alpha1.L7Rules{HTTP: []v1alpha1.PortRuleHTTP{{Method: "GET"}}}
	return r
}

// rejection is an AnnotationProxyRejected value.
func rejection(t *testing.T, msg string, refs ...string) string {
	t.Helper()
	b, err := json.Marshal(v1alpha1.ProxyRejection{Version: "3", Error: msg, Policies: refs, At: metav1.Unix(1000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// node is a Node with the AnnotationProxyRejected annotation value, if any.
func node(name, annotation string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{"other": "x"}}}
	if annotation != "" {
		n.Annotations[v1alpha1.AnnotationProxyRejected] = annotation
	}
	return n
}

func programmedOf(s v1alpha1.PolicyStatus) *metav1.Condition {
	return meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionProgrammed)
}

func rejectedText(node, msg string) string {
	return fmt.Sprintf("node %s: Envoy rejected the L7 configuration: %s", node, msg)
}

func TestProgrammedRejected(t *testing.T) {
	r, c := newPolicyStatusTest(t, mnp("web", allowHTTP("80")),
		node("n1", rejection(t, "bad regex", webRef)))
	got := reconcileMNP(t, r, c, "web")
	cond := programmedOf(got.Status)
	want := rejectedText("n1", "bad regex")
	if cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != v1alpha1.ReasonProxyRejected || cond.Message != want {
		t.Fatalf("Programmed condition = %+v, want False/ProxyRejected %q", cond, want)
	}
	if cond.ObservedGeneration != 1 {
		t.Errorf("observedGeneration = %d, want 1", cond.ObservedGeneration)
	}
	if v := validOf(t, got.Status); v.Status != metav1.ConditionTrue {
		t.Errorf("Valid condition = %+v, want True", v)
	}
}

func TestProgrammedRejectedByTwoNodes(t *testing.T) {
	r, c := newPolicyStatusTest(t, mnp("web", allowHTTP("80")),
		node("n2", rejection(t, "second", webRef, globalRef)),
		node("n1", rejection(t, "first", "MembraneNetworkPolicy shop/other", webRef)),
		node("n3", rejection(t, "not web", "MembraneNetworkPolicy shop/other")),
		node("n4", ""))
	cond := programmedOf(reconcileMNP(t, r, c, "web").Status)
	want := rejectedText("n1", "first") + "; " + rejectedText("n2", "second")
	if cond == nil || cond.Status != metav1.ConditionFalse || cond.Message != want {
		t.Errorf("Programmed condition = %+v, want False with %q", cond, want)
	}
}

func TestProgrammedClusterwide(t *testing.T) {
	ctx := context.Background()
	global := &v1alpha1.MembraneClusterwideNetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "global", Generation: 4},
		Spec:       allowHTTP("80"),
	}
	r, c := newPolicyStatusTest(t, global, node("n1", rejection(t, "oops", globalRef)))
	key := types.NamespacedName{Name: "global"}
	if _, err := r.clusterwide.Reconcile(ctx, reconcile.Request{NamespacedName: key}); err != nil {
		t.Fatal(err)
	}
	var got v1alpha1.MembraneClusterwideNetworkPolicy
	if err := c.Get(ctx, key, &got); err != nil {
		t.Fatal(err)
	}
	cond := programmedOf(got.Status)
	if cond == nil || cond.Status != metav1.ConditionFalse || cond.Message != rejectedText("n1", "oops") || cond.ObservedGeneration != 4 {
		t.Errorf("Programmed condition = %+v, want False for n1 at generation 4", cond)
	}
}

func TestProgrammedAfterRejectionRemoved(t *testing.T) {
	ctx := context.Background()
	n1 := node("n1", rejection(t, "bad regex", webRef))
	r, c := newPolicyStatusTest(t, mnp("web", allowHTTP("80")), n1)
	if cond := programmedOf(reconcileMNP(t, r, c, "web").Status); cond == nil || cond.Status != metav1.ConditionFalse {
		t.Fatalf("Programmed condition = %+v, want False", cond)
	}
	old := n1.DeepCopy()
	delete(n1.Annotations, v1alpha1.AnnotationProxyRejected)
	if err := c.Update(ctx, n1); err != nil {
		t.Fatal(err)
	}
	// The update is let through and mapped (from the old Node) to the policy.
	if !r.namespaced.rejectionChanged().Update(event.UpdateEvent{ObjectOld: old, ObjectNew: n1}) {
		t.Error("removing the annotation was filtered out")
	}
	want := []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: "shop", Name: "web"}}}
	if diff := cmp.Diff(want, r.namespaced.rejectedByNode(ctx, old)); diff != "" {
		t.Errorf("requests for the old node (-want +got):\n%s", diff)
	}
	cond := programmedOf(reconcileMNP(t, r, c, "web").Status)
	if cond == nil || cond.Status != metav1.ConditionTrue || cond.Reason != v1alpha1.ReasonProgrammed || cond.Message != "accepted by the node proxies" {
		t.Errorf("Programmed condition = %+v, want True/Programmed", cond)
	}
}

func TestProgrammedWithoutL7(t *testing.T) {
	t.Run("no condition", func(t *testing.T) {
		r, c := newPolicyStatusTest(t, mnp("web", allowPort("80")), node("n1", rejection(t, "x", "MembraneNetworkPolicy shop/other")))
		if cond := programmedOf(reconcileMNP(t, r, c, "web").Status); cond != nil {
			t.Errorf("Programmed condition = %+v, want none", cond)
		}
	})
	t.Run("stale rejection deleted", func(t *testing.T) {
		p := mnp("web", allowPort("80"))
		p.Status.Conditions = []metav1.Condition{{
			Type: v1alpha1.ConditionProgrammed, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonProxyRejected,
			Message: rejectedText("n1", "x"), ObservedGeneration: 1, LastTransitionTime: metav1.Unix(1000, 0),
		}}
		r, c := newPolicyStatusTest(t, p)
		got := reconcileMNP(t, r, c, "web")
		if cond := programmedOf(got.Status); cond != nil {
			t.Errorf("Programmed condition = %+v, want none", cond)
		}
		validOf(t, got.Status)
	})
	t.Run("other programmed kept", func(t *testing.T) {
		p := mnp("web", allowPort("80"))
		programmed := metav1.Condition{
			Type: v1alpha1.ConditionProgrammed, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonProgrammed,
			Message: "programmed", ObservedGeneration: 1, LastTransitionTime: metav1.Unix(1000, 0),
		}
		p.Status.Conditions = []metav1.Condition{programmed}
		r, c := newPolicyStatusTest(t, p)
		cond := programmedOf(reconcileMNP(t, r, c, "web").Status)
		if cond == nil || cond.Message != programmed.Message || !cond.LastTransitionTime.Equal(&programmed.LastTransitionTime) {
			t.Errorf("Programmed condition = %+v, want %+v", cond, programmed)
		}
	})
}

func TestProgrammedUndecodableAnnotation(t *testing.T) {
	var logs bytes.Buffer
	bad := node("n0", `{"policies": ["MembraneNetworkPolicy shop/web"`)
	r, c := newPolicyStatusTest(t, mnp("web", allowHTTP("80")), bad, node("n1", rejection(t, "bad regex", webRef)))
	r.namespaced.log = slog.New(slog.NewTextHandler(&logs, nil))
	cond := programmedOf(reconcileMNP(t, r, c, "web").Status)
	if cond == nil || cond.Message != rejectedText("n1", "bad regex") {
		t.Errorf("Programmed condition = %+v, want n1's rejection only", cond)
	}
	if !r.namespaced.rejectionChanged().Create(event.CreateEvent{Object: bad}) {
		t.Error("a node with the annotation was filtered out")
	}
	if !strings.Contains(logs.String(), "ignoring undecodable node annotation") || !strings.Contains(logs.String(), "node=n0") {
		t.Errorf("logs = %q, want the undecodable annotation of n0", logs.String())
	}
	if reqs := r.namespaced.rejectedByNode(context.Background(), bad); len(reqs) != 0 {
		t.Errorf("requests for an undecodable annotation: %v", reqs)
	}

	// Alone, it leaves the policy programmed.
	r, c = newPolicyStatusTest(t, mnp("web", allowHTTP("80")), bad)
	if cond := programmedOf(reconcileMNP(t, r, c, "web").Status); cond == nil || cond.Status != metav1.ConditionTrue {
		t.Errorf("Programmed condition = %+v, want True", cond)
	}
}

func TestProgrammedNoChangeNoWrite(t *testing.T) {
	r, c := newPolicyStatusTest(t, mnp("web", allowHTTP("80")), node("n1", rejection(t, "bad regex", webRef)))
	first := reconcileMNP(t, r, c, "web")
	second := reconcileMNP(t, r, c, "web")
	if first.ResourceVersion != second.ResourceVersion {
		t.Errorf("resourceVersion %s → %s: an unchanged policy was written", first.ResourceVersion, second.ResourceVersion)
	}
}

func TestRejectionChanged(t *testing.T) {
	r, _ := newPolicyStatusTest(t)
	p := r.namespaced.rejectionChanged()
	a := node("n1", `{"error":"a","policies":["`+webRef+`"]}`)
	b := node("n1", `{"error":"b","policies":["`+webRef+`"]}`)
	none := node("n1", "")
	other := none.DeepCopy()
	other.Annotations["other"] = "y"
	for _, tc := range []struct {
		name     string
		old, new client.Object
		want     bool
	}{
		{"unrelated", none, other, false},
		{"same", a, a.DeepCopy(), false},
		{"added", none, a, true},
		{"changed", a, b, true},
		{"removed", a, none, true},
	} {
		if got := p.Update(event.UpdateEvent{ObjectOld: tc.old, ObjectNew: tc.new}); got != tc.want {
			t.Errorf("%s: update let through = %t, want %t", tc.name, got, tc.want)
		}
	}
	if p.Create(event.CreateEvent{Object: none}) || p.Delete(event.DeleteEvent{Object: none}) {
		t.Error("a node without the annotation was let through")
	}
	if !p.Create(event.CreateEvent{Object: a}) || !p.Delete(event.DeleteEvent{Object: a}) {
		t.Error("a node with the annotation was filtered out")
	}
}

func TestRejectedByNode(t *testing.T) {
	r, _ := newPolicyStatusTest(t)
	n := node("n1", rejection(t, "x", webRef, webRef, globalRef,
		"MembraneNetworkPolicy noslash", "MembraneClusterwideNetworkPolicy ns/global", "MembraneNetworkPolicy /x",
		"NetworkPolicy shop/web", "MembraneNetworkPolicy shop/b"))
	ctx := context.Background()
	want := []reconcile.Request{
		{NamespacedName: types.NamespacedName{Namespace: "shop", Name: "b"}},
		{NamespacedName: types.NamespacedName{Namespace: "shop", Name: "web"}},
	}
	if diff := cmp.Diff(want, r.namespaced.rejectedByNode(ctx, n)); diff != "" {
		t.Errorf("namespaced requests (-want +got):\n%s", diff)
	}
	want = []reconcile.Request{{NamespacedName: types.NamespacedName{Name: "global"}}}
	if diff := cmp.Diff(want, r.clusterwide.rejectedByNode(ctx, n)); diff != "" {
		t.Errorf("clusterwide requests (-want +got):\n%s", diff)
	}
}

func TestHasHTTPRules(t *testing.T) {
	egress := v1alpha1.Rule{Egress: []v1alpha1.EgressRule{{ToPorts: []v1alpha1.PortRule{
		{Ports: []v1alpha1.PortProtocol{{Port: "53"}}, Rules: &v1alpha1.L7Rules{DNS: []v1alpha1.FQDNSelector{{MatchName: "example.com"}}}},
		{Ports: []v1alpha1.PortProtocol{{Port: "80"}}, Rules: &v1alpha1.L7Rules{HTTP: []v1alpha1.PortRuleHTTP{{}}}},
	}}}}
	for _, tc := range []struct {
		name  string
		rules []v1alpha1.Rule
		want  bool
	}{
		{"none", nil, false},
		{"L4", []v1alpha1.Rule{*allowPort("80")}, false},
		{"ingress HTTP", []v1alpha1.Rule{*allowPort("80"), *allowHTTP("80")}, true},
		{"egress HTTP", []v1alpha1.Rule{egress}, true},
		{"DNS only", []v1alpha1.Rule{{Egress: []v1alpha1.EgressRule{{ToPorts: egress.Egress[0].ToPorts[:1]}}}}, false},
	} {
		if got := hasHTTPRules(tc.rules); got != tc.want {
			t.Errorf("%s: hasHTTPRules = %t, want %t", tc.name, got, tc.want)
		}
	}
}

func TestRejectedMessageLimit(t *testing.T) {
	var rejections []nodeRejection
	for i := range 100 {
		rejections = append(rejections, nodeRejection{node: fmt.Sprintf("node-%03d", i), error: strings.Repeat("é", 500)})
	}
	got := rejectedMessage(rejections, maxConditionMessage)
	if len(got) > maxConditionMessage || !utf8.ValidString(got) {
		t.Fatalf("message of %d bytes, valid UTF-8 %t", len(got), utf8.ValidString(got))
	}
	if !strings.HasPrefix(got, rejectedText("node-000", "")) || !strings.HasSuffix(got, " more nodes") {
		t.Errorf("message = %.80q…%q, want the first nodes and a count", got, got[len(got)-30:])
	}
	if got := rejectedMessage(rejections[:1], 60); len(got) > 60 || !strings.HasSuffix(got, "…") {
		t.Errorf("one long rejection, 60 bytes: %q", got)
	}
}
