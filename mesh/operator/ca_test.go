package operator

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/membrane-mesh/membrane/encryption/spiffe"
)

// reviews answers TokenReviews from a table: token → status.
func reviews(c *fake.Clientset, table map[string]authenticationv1.TokenReviewStatus) {
	c.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview)
		tr.Status = table[tr.Spec.Token]
		return true, tr, nil
	})
}

func agentPod(name, uid, node, sa string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-system", UID: k8stypes.UID("uid-" + uid)},
		Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: sa},
	}
}

func TestKubeAgents(t *testing.T) {
	agent := "system:serviceaccount:kube-system:membrane-agent"
	bound := func(user, pod, uid, node string) authenticationv1.TokenReviewStatus {
		extra := map[string]authenticationv1.ExtraValue{}
		if pod != "" {
			extra[extraPodName], extra[extraPodUID] = authenticationv1.ExtraValue{pod}, authenticationv1.ExtraValue{uid}
		}
		if node != "" {
			extra[extraNodeName] = authenticationv1.ExtraValue{node}
		}
		return authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"membrane-ca"},
			User: authenticationv1.UserInfo{Username: user, Extra: extra}}
	}
	c := fake.NewClientset(
		agentPod("agent-a", "a", "node-a", "membrane-agent"),
		agentPod("imposter", "i", "node-a", "default"),
	)
	reviews(c, map[string]authenticationv1.TokenReviewStatus{
		"good":          bound(agent, "agent-a", "uid-a", ""),
		"good-claim":    bound(agent, "agent-a", "uid-a", "node-a"),
		"claim-differs": bound(agent, "agent-a", "uid-a", "node-b"),
		"replaced":      bound(agent, "agent-a", "uid-old", ""),
		"gone":          bound(agent, "agent-x", "uid-x", ""),
		"unbound":       bound(agent, "", "", ""),
		"other-sa":      bound("system:serviceaccount:demo:frontend", "agent-a", "uid-a", ""),
		"pod-other-sa":  bound(agent, "imposter", "uid-i", ""),
		"wrong-aud":     {Authenticated: true, Audiences: []string{"api"}, User: authenticationv1.UserInfo{Username: agent}},
		"bad":           {Authenticated: false, Error: "invalid"},
	})
	k := kubeAgents{client: c, namespace: "kube-system", serviceAccount: "membrane-agent", audience: "membrane-ca"}
	for _, tok := range []string{"good", "good-claim"} {
		if node, err := k.AgentNode(t.Context(), tok); err != nil || node != "node-a" {
			t.Errorf("%s: %q, %v; want node-a", tok, node, err)
		}
	}
	for _, tok := range []string{"claim-differs", "replaced", "gone", "unbound", "other-sa", "pod-other-sa", "wrong-aud", "bad"} {
		if node, err := k.AgentNode(t.Context(), tok); !errors.Is(err, spiffe.ErrUnauthenticated) {
			t.Errorf("%s: %q, %v; want ErrUnauthenticated", tok, node, err)
		}
	}
}

func TestKubePlacement(t *testing.T) {
	pod := func(name, node, sa string, mut func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "demo"},
			Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: sa},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning},
		}
		if mut != nil {
			mut(p)
		}
		return p
	}
	now := metav1.Now()
	c := fake.NewClientset(
		pod("a", "node-a", "alpha", nil),
		pod("b", "node-b", "beta", nil),
		pod("d", "node-a", "", func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }),
		pod("done", "node-a", "done", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
		pod("deleting", "node-a", "deleting", func(p *corev1.Pod) { p.DeletionTimestamp = &now; p.Finalizers = []string{"x"} }),
		pod("host", "node-a", "host", func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
	)
	k := kubePlacement{client: c}
	for sa, want := range map[string]bool{"alpha": true, "default": true, "beta": false, "done": false, "deleting": false, "host": false, "nobody": false} {
		got, err := k.HasPod(t.Context(), "node-a", "demo", sa)
		if err != nil || got != want {
			t.Errorf("HasPod(node-a, demo, %s) = %v, %v; want %v", sa, got, err, want)
		}
	}
}

func TestCAStep(t *testing.T) {
	c := fake.NewClientset()
	m, err := spiffe.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ca := NewCA(slog.New(slog.NewTextHandler(io.Discard, nil)), CAConfig{
		TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"),
		Policy:      spiffe.Policy{CATTL: 100 * time.Hour, MaxSVIDTTL: time.Hour, Propagation: time.Minute},
		Namespace:   "kube-system", Secret: "ca", ConfigMap: "bundle",
	}, c, m)
	ca.now = func() time.Time { return now }
	ctx := context.Background()
	if err := ca.Step(ctx); err != nil {
		t.Fatal(err)
	}
	sec, err := c.CoreV1().Secrets("kube-system").Get(ctx, "ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := spiffe.DecodeState(sec.Data)
	if err != nil || first.Active == nil {
		t.Fatalf("CA secret: %v", err)
	}
	bundleCAs := func() int {
		cm, err := c.CoreV1().ConfigMaps("kube-system").Get(ctx, "bundle", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := x509bundle.Parse(ca.cfg.TrustDomain, []byte(cm.Data[spiffe.BundleKey]))
		if err != nil {
			t.Fatal(err)
		}
		return len(b.X509Authorities())
	}
	if n := bundleCAs(); n != 1 {
		t.Fatalf("bundle has %d CAs, want 1", n)
	}

	// A rotation request: trusted first, signing after the propagation.
	sec.Annotations = map[string]string{spiffe.AnnotationRotate: "1"}
	if _, err := c.CoreV1().Secrets("kube-system").Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := ca.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if n := bundleCAs(); n != 2 {
		t.Fatalf("bundle during propagation has %d CAs, want 2", n)
	}
	if !ca.State().Active.Cert.Equal(first.Active.Cert) {
		t.Fatal("the new CA signs before it propagated")
	}
	now = now.Add(time.Minute)
	if err := ca.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if ca.State().Active.Cert.Equal(first.Active.Cert) || bundleCAs() != 2 {
		t.Fatal("the new CA did not take over, or the old one left the bundle too early")
	}
	// The request is handled once.
	sec, _ = c.CoreV1().Secrets("kube-system").Get(ctx, "ca", metav1.GetOptions{})
	if sec.Annotations[spiffe.AnnotationRotated] != "1" {
		t.Fatalf("annotations %v: the request is not marked handled", sec.Annotations)
	}

	// A Secret that is not a CA is never overwritten.
	sec.Data[spiffe.SecretCACert] = []byte("garbage")
	if _, err := c.CoreV1().Secrets("kube-system").Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := ca.Step(ctx); err == nil {
		t.Fatal("Step accepted an unreadable CA secret")
	}
	sec, _ = c.CoreV1().Secrets("kube-system").Get(ctx, "ca", metav1.GetOptions{})
	if string(sec.Data[spiffe.SecretCACert]) != "garbage" {
		t.Fatal("an unreadable CA secret was overwritten")
	}
}
