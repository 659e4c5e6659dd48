package operator

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
)

func newPolicyStatusTest(t *testing.T, objs ...client.Object) (*PolicyStatusController, client.Client) {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().
		WithScheme(scheme).
		WithStatusSubresource(&v1alpha1.MembraneNetworkPolicy{}, &v1alpha1.MembraneClusterwideNetworkPolicy{}).
		WithIndex(&corev1.Node{}, rejectedPolicyIndex, rejectedPolicies).
		WithObjects(objs...).
		Build()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r := NewPolicyStatusController(log, c)
	r.WriteInterval = 0 // every reconcile writes (TestPolicyStatusWriteInterval tests the spacing)
	return r, c
}

// allowPort is a rule letting anything reach the selected pods on port.
func allowPort(port string) *v1alpha1.Rule {
	return &v1alpha1.Rule{
		EndpointSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Ingress: []v1alpha1.IngressRule{{
			ToPorts: []v1alpha1.PortRule{{Ports: []v1alpha1.PortProtocol{{Port: port, Protocol: v1alpha1.ProtoTCP}}}},
		}},
	}
}

func mnp(name string, spec *v1alpha1.Rule) *v1alpha1.MembraneNetworkPolicy {
	return &v1alpha1.MembraneNetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Generation: 1},
		Spec:       spec,
	}
}

func reconcileMNP(t *testing.T, r *PolicyStatusController, c client.Client, name string) *v1alpha1.MembraneNetworkPolicy {
	t.Helper()
	ctx := context.Background()
	key := types.NamespacedName{Namespace: "shop", Name: name}
	if _, err := r.namespaced.Reconcile(ctx, reconcile.Request{NamespacedName: key}); err != nil {
		t.Fatalf("reconcile %s: %v", key, err)
	}
	var got v1alpha1.MembraneNetworkPolicy
	if err := c.Get(ctx, key, &got); err != nil {
		t.Fatal(err)
	}
	return &got
}

func validOf(t *testing.T, s v1alpha1.PolicyStatus) *metav1.Condition {
	t.Helper()
	cond := meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionValid)
	if cond == nil {
		t.Fatalf("no Valid condition in %+v", s)
	}
	return cond
}

func TestPolicyStatusValid(t *testing.T) {
	r, c := newPolicyStatusTest(t, mnp("web", allowPort("80")))
	got := reconcileMNP(t, r, c, "web")
	cond := validOf(t, got.Status)
	if cond.Status != metav1.ConditionTrue || cond.Reason != v1alpha1.ReasonValid || cond.Message != "policy is valid" {
		t.Errorf("Valid condition = %+v, want True/Valid", cond)
	}
	if cond.ObservedGeneration != 1 || got.Status.ObservedGeneration != 1 {
		t.Errorf("observed generations = %d, %d, want 1", cond.ObservedGeneration, got.Status.ObservedGeneration)
	}
	if cond.LastTransitionTime.IsZero() {
		t.Error("lastTransitionTime not set")
	}
}

func TestPolicyStatusInvalid(t *testing.T) {
	cidr := allowPort("80")
	cidr.Ingress[0].FromCIDR = []v1alpha1.CIDR{"10.0.0.0/33"}
	entity := allowPort("80")
	entity.Ingress[0].FromEntities = []v1alpha1.Entity{"everyone"}
	for _, tc := range []struct {
		name string
		spec *v1alpha1.Rule
		want string
	}{
		{"port", allowPort("70000"), `spec.ingress[0].toPorts[0].ports[0].port: Invalid value: "70000"`},
		{"cidr", cidr, `spec.ingress[0].fromCIDR[0]: Invalid value: "10.0.0.0/33"`},
		{"entity", entity, `spec.ingress[0].fromEntities[0]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, c := newPolicyStatusTest(t, mnp("web", tc.spec))
			cond := validOf(t, reconcileMNP(t, r, c, "web").Status)
			if cond.Status != metav1.ConditionFalse || cond.Reason != v1alpha1.ReasonInvalid {
				t.Errorf("Valid condition = %+v, want False/Invalid", cond)
			}
			if !strings.Contains(cond.Message, tc.want) {
				t.Errorf("message %q does not contain %q", cond.Message, tc.want)
			}
		})
	}
}

func TestPolicyStatusClusterwide(t *testing.T) {
	ctx := context.Background()
	good := &v1alpha1.MembraneClusterwideNetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "good", Generation: 2},
		Spec:       allowPort("443"),
	}
	bad := &v1alpha1.MembraneClusterwideNetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "bad", Generation: 1},
		Specs:      []v1alpha1.Rule{*allowPort("80"), *allowPort("70000")},
	}
	r, c := newPolicyStatusTest(t, good, bad)
	for _, tc := range []struct {
		name    string
		status  metav1.ConditionStatus
		gen     int64
		message string
	}{
		{"good", metav1.ConditionTrue, 2, "policy is valid"},
		{"bad", metav1.ConditionFalse, 1, `specs[1].ingress[0].toPorts[0].ports[0].port: Invalid value: "70000"`},
	} {
		key := types.NamespacedName{Name: tc.name}
		if _, err := r.clusterwide.Reconcile(ctx, reconcile.Request{NamespacedName: key}); err != nil {
			t.Fatalf("reconcile %s: %v", tc.name, err)
		}
		var got v1alpha1.MembraneClusterwideNetworkPolicy
		if err := c.Get(ctx, key, &got); err != nil {
			t.Fatal(err)
		}
		cond := validOf(t, got.Status)
		if cond.Status != tc.status || !strings.Contains(cond.Message, tc.message) {
			t.Errorf("%s: Valid condition = %+v, want %s with %q", tc.name, cond, tc.status, tc.message)
		}
		if cond.ObservedGeneration != tc.gen || got.Status.ObservedGeneration != tc.gen {
			t.Errorf("%s: observed generations = %d, %d, want %d", tc.name, cond.ObservedGeneration, got.Status.ObservedGeneration, tc.gen)
		}
	}
}

func TestPolicyStatusNoChangeNoWrite(t *testing.T) {
	r, c := newPolicyStatusTest(t, mnp("web", allowPort("70000")))
	first := reconcileMNP(t, r, c, "web")
	second := reconcileMNP(t, r, c, "web")
	if first.ResourceVersion != second.ResourceVersion {
		t.Errorf("resourceVersion %s → %s: an unchanged policy was written", first.ResourceVersion, second.ResourceVersion)
	}
}

func TestPolicyStatusKeepsProgrammed(t *testing.T) {
	p := mnp("web", allowPort("80"))
	programmed := metav1.Condition{
		Type:               v1alpha1.ConditionProgrammed,
		Status:             metav1.ConditionFalse,
		Reason:             v1alpha1.ReasonPending,
		Message:            "2 of 3 nodes",
		ObservedGeneration: 1,
		LastTransitionTime: metav1.Unix(1000, 0),
	}
	p.Status.Conditions = []metav1.Condition{programmed}
	r, c := newPolicyStatusTest(t, p)
	got := reconcileMNP(t, r, c, "web")
	cond := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionProgrammed)
	if cond == nil || !cond.LastTransitionTime.Equal(&programmed.LastTransitionTime) ||
		cond.Status != programmed.Status || cond.Message != programmed.Message {
		t.Errorf("Programmed condition = %+v, want %+v", cond, programmed)
	}
}

func TestPolicyStatusGenerationBump(t *testing.T) {
	ctx := context.Background()
	r, c := newPolicyStatusTest(t, mnp("web", allowPort("70000")))
	before := reconcileMNP(t, r, c, "web")
	if cond := validOf(t, before.Status); cond.Status != metav1.ConditionFalse {
		t.Fatalf("Valid condition = %+v, want False", cond)
	}
	// The API server bumps the generation on a spec change; the fake
	// client does not.
	before.Spec = allowPort("8080")
	before.Generation = 2
	if err := c.Update(ctx, before); err != nil {
		t.Fatal(err)
	}
	after := reconcileMNP(t, r, c, "web")
	cond := validOf(t, after.Status)
	if cond.Status != metav1.ConditionTrue || cond.Reason != v1alpha1.ReasonValid || cond.Message != "policy is valid" {
		t.Errorf("Valid condition = %+v, want True/Valid", cond)
	}
	if cond.ObservedGeneration != 2 || after.Status.ObservedGeneration != 2 {
		t.Errorf("observed generations = %d, %d, want 2", cond.ObservedGeneration, after.Status.ObservedGeneration)
	}
}

// A policy's status is written at most once per WriteInterval: a change
// within it is requeued until the interval is over, and then written.
func TestPolicyStatusWriteInterval(t *testing.T) {
	ctx := context.Background()
	r, c := newPolicyStatusTest(t, mnp("web", allowPort("8080")))
	r.WriteInterval = time.Second
	now := time.Unix(1000, 0)
	r.namespaced.writes.now = func() time.Time { return now }
	key := types.NamespacedName{Namespace: "shop", Name: "web"}
	reconcileOnce := func() reconcile.Result {
		t.Helper()
		res, err := r.namespaced.Reconcile(ctx, reconcile.Request{NamespacedName: key})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	generation := func() int64 {
		t.Helper()
		var p v1alpha1.MembraneNetworkPolicy
		if err := c.Get(ctx, key, &p); err != nil {
			t.Fatal(err)
		}
		return p.Status.ObservedGeneration
	}
	bump := func(gen int64, port string) {
		t.Helper()
		var p v1alpha1.MembraneNetworkPolicy
		if err := c.Get(ctx, key, &p); err != nil {
			t.Fatal(err)
		}
		p.Spec, p.Generation = allowPort(port), gen
		if err := c.Update(ctx, &p); err != nil {
			t.Fatal(err)
		}
	}
	// The first write is at once.
	if res := reconcileOnce(); res.RequeueAfter != 0 || generation() != 1 {
		t.Fatalf("first reconcile: %+v, observed generation %d; want written at once", res, generation())
	}
	now = now.Add(300 * time.Millisecond)
	bump(2, "8081")
	if res := reconcileOnce(); res.RequeueAfter != 700*time.Millisecond || generation() != 1 {
		t.Fatalf("a change 300ms after a write: %+v, observed generation %d; want requeued after 700ms, not written", res, generation())
	}
	now = now.Add(400 * time.Millisecond)
	bump(3, "8082")
	if res := reconcileOnce(); res.RequeueAfter != 300*time.Millisecond || generation() != 1 {
		t.Fatalf("another change 700ms after the write: %+v, observed generation %d; want requeued after 300ms", res, generation())
	}
	now = now.Add(300 * time.Millisecond)
	if res := reconcileOnce(); res.RequeueAfter != 0 || generation() != 3 {
		t.Fatalf("at the interval's end: %+v, observed generation %d; want the last generation (3) written", res, generation())
	}
	// Nothing to change: nothing waits.
	if res := reconcileOnce(); res.RequeueAfter != 0 {
		t.Fatalf("unchanged: %+v, want no requeue", res)
	}
	// A deleted policy is forgotten.
	if err := c.Delete(ctx, &v1alpha1.MembraneNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}}); err != nil {
		t.Fatal(err)
	}
	reconcileOnce()
	if n := len(r.namespaced.writes.last); n != 0 {
		t.Errorf("%d policies remembered after the deletion, want 0", n)
	}
}

func TestPolicyStatusDeleted(t *testing.T) {
	r, _ := newPolicyStatusTest(t)
	key := types.NamespacedName{Namespace: "shop", Name: "gone"}
	if _, err := r.namespaced.Reconcile(context.Background(), reconcile.Request{NamespacedName: key}); err != nil {
		t.Errorf("reconcile of a deleted policy: %v", err)
	}
}

func TestErrorsMessage(t *testing.T) {
	p := field.NewPath("spec", "ingress")
	errs := field.ErrorList{
		field.Invalid(p.Index(0), "a", "first"),
		field.Invalid(p.Index(1), "b", "second"),
		field.Invalid(p.Index(2), "c", "third"),
	}
	all := errorsMessage(errs, maxConditionMessage)
	want := `spec.ingress[0]: Invalid value: "a": first; spec.ingress[1]: Invalid value: "b": second; spec.ingress[2]: Invalid value: "c": third`
	if all != want {
		t.Errorf("message = %q, want %q", all, want)
	}
	for limit := 40; limit <= len(all); limit++ {
		got := errorsMessage(errs, limit)
		if len(got) > limit || !utf8.ValidString(got) {
			t.Errorf("limit %d: message %q (%d bytes)", limit, got, len(got))
		}
	}
	if got := errorsMessage(errs, len(all)-1); !strings.HasSuffix(got, "; and 1 more error") ||
		!strings.Contains(got, "spec.ingress[1]") {
		t.Errorf("message = %q, want the first two errors and a count", got)
	}
	long := field.ErrorList{field.Invalid(p.Index(0), strings.Repeat("é", 40000), "too long")}
	if got := errorsMessage(long, maxConditionMessage); len(got) > maxConditionMessage || !utf8.ValidString(got) ||
		!strings.HasPrefix(got, "spec.ingress[0]") {
		t.Errorf("long message: %d bytes, valid UTF-8 %t", len(got), utf8.ValidString(got))
	}
}

func TestPolicyStatusConflictRequeued(t *testing.T) {
	ctx := context.Background()
	r, c := newPolicyStatusTest(t, mnp("web", allowPort("80")))
	conflicts := 1
	r.namespaced.c = interceptor.NewClient(c.(client.WithWatch), interceptor.Funcs{
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			if conflicts > 0 {
				conflicts--
				return apierrors.NewConflict(schema.GroupResource{Group: "membrane.io", Resource: "membranenetworkpolicies"}, obj.GetName(), errors.New("the object has been modified"))
			}
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
	})
	key := types.NamespacedName{Namespace: "shop", Name: "web"}
	res, err := r.namespaced.Reconcile(ctx, reconcile.Request{NamespacedName: key})
	if err != nil || !res.Requeue {
		t.Fatalf("reconcile meeting a conflict: %+v, %v; want requeued without an error", res, err)
	}
	if got := reconcileMNP(t, r, c, "web"); got.Status.ObservedGeneration != 1 {
		t.Errorf("after the retry: observed generation %d, want 1", got.Status.ObservedGeneration)
	}
}
