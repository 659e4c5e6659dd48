package synced

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/membrane-mesh/membrane/gateway/translate"
)

// TestAgentViewServesTheSame runs every golden input of the translation
// the way the agents now see it: the copies Desired makes, read back
// through Origins, in place of all Secrets and ConfigMaps. The IR, what
// the node Envoys serve, must not change.
func TestAgentViewServesTheSame(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "translate", "testdata", "*.in.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("golden inputs: %v (%d)", err, len(files))
	}
	copied := 0
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".in.yaml"), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			in, err := translate.ParseObjects(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			want, _, refs := translate.BuildWithReferences(in)
			secrets, cms := Desired(in, refs, DefaultNamespace)
			copied += len(secrets) + len(cms)
			for _, s := range secrets {
				if s.Namespace != DefaultNamespace {
					t.Errorf("copy %s/%s is not in %s", s.Namespace, s.Name, DefaultNamespace)
				}
			}
			agent := in
			agent.Secrets, agent.ConfigMaps = Origins(secrets, cms)
			got, _ := translate.Build(agent)
			if d := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{}, netip.Prefix{})); d != "" {
				t.Errorf("IR from the copies (-from the sources +from the copies):\n%s", d)
			}
		})
	}
	if copied == 0 {
		t.Error("no golden input has a copy: the check above checked nothing")
	}
}

// TestSecret checks a copy's content and origin: the certificate and key
// only, named and labelled after its source; other Secrets are not copied.
func TestSecret(t *testing.T) {
	src := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-tls", Labels: map[string]string{"team": "a"},
		Annotations: map[string]string{"note": "x"}}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": []byte("chain"), "tls.key": []byte("key"), "ca.crt": []byte("ca"), "extra": []byte("no")}}
	c := Secret(src, "membrane-secrets")
	want := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "membrane-secrets", Name: "shop.web-tls",
		Labels:      map[string]string{"app.kubernetes.io/managed-by": "membrane-operator", LabelKind: "Secret", LabelNamespace: "shop"},
		Annotations: map[string]string{AnnotationName: "web-tls"}},
		Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": []byte("chain"), "tls.key": []byte("key")}}
	if d := cmp.Diff(want, c); d != "" {
		t.Errorf("copy (-want +got):\n%s", d)
	}
	if c := Secret(&corev1.Secret{ObjectMeta: src.ObjectMeta, Type: corev1.SecretTypeOpaque, Data: src.Data}, "membrane-secrets"); c != nil {
		t.Errorf("an Opaque Secret was copied: %+v", c)
	}
	back, _ := Origins([]corev1.Secret{*c}, nil)
	if len(back) != 1 || back[0].Namespace != "shop" || back[0].Name != "web-tls" || string(back[0].Data["tls.key"]) != "key" {
		t.Errorf("Origins: %+v", back)
	}

	cm := ConfigMap(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "ca"},
		Data: map[string]string{"ca.crt": "pem", "other": "no"}, BinaryData: map[string][]byte{"bin": {1}}}, "membrane-secrets")
	if cm.Name != "shop.ca" || len(cm.Data) != 1 || cm.Data["ca.crt"] != "pem" || cm.BinaryData != nil || cm.Labels[LabelKind] != "ConfigMap" {
		t.Errorf("ConfigMap copy %+v: want shop.ca with ca.crt only", cm)
	}
}

// TestName checks that names are valid, distinct where the sources are
// (a-b/c and a/b-c) and that a name too long for "<namespace>.<name>" is
// hashed.
func TestName(t *testing.T) {
	long := strings.Repeat("x", 252)
	seen := map[string]types.NamespacedName{}
	for _, nn := range []types.NamespacedName{{Namespace: "a-b", Name: "c"}, {Namespace: "a", Name: "b-c"}, {Namespace: "a", Name: "b.c"},
		{Namespace: "ns", Name: long}, {Namespace: "ns2", Name: long}} {
		n := Name(nn)
		if msgs := validation.IsDNS1123Subdomain(n); len(msgs) > 0 {
			t.Errorf("Name(%s) = %q: %v", nn, n, msgs)
		}
		if o, ok := seen[n]; ok {
			t.Errorf("Name(%s) = Name(%s) = %q", nn, o, n)
		}
		seen[n] = nn
	}
	if n := Name(types.NamespacedName{Namespace: "ns", Name: long}); strings.Contains(n, ".") {
		t.Errorf("long name %q: want the hashed form", n)
	}
}

// TestOriginsIgnoresOthers: objects of the namespace that are not copies,
// or whose name is not their source's copy name, are not read as sources.
func TestOriginsIgnoresOthers(t *testing.T) {
	good := *Secret(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "a"}, Type: corev1.SecretTypeTLS}, "membrane-secrets")
	renamed := *good.DeepCopy()
	renamed.Name = "shop.b"
	unlabelled := corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "membrane-secrets", Name: "shop.c"}}
	wrongKind := *good.DeepCopy()
	wrongKind.Labels[LabelKind] = "ConfigMap"
	got, _ := Origins([]corev1.Secret{good, renamed, unlabelled, wrongKind}, nil)
	if len(got) != 1 || got[0].Name != "a" {
		t.Errorf("Origins: %+v, want shop/a only", got)
	}
}
