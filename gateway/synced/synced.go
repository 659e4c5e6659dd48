// Package synced names and shapes the copies of the Secrets and ConfigMaps
// the gateway translation reads (HTTPS listeners' and Ingresses'
// certificates, BackendTLSPolicies' CA certificates). The operator keeps
// one copy of each referenced object in a namespace of its own; the node
// agents read only that namespace and see the copies under their sources'
// names again (Origins), so the translation they run is unchanged while
// no agent can read a Secret cluster-wide.
package synced

import (
	"crypto/sha256"
	"encoding/hex"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/membrane-mesh/membrane/gateway/translate"
)

// DefaultNamespace is the namespace of the copies the chart creates.
const DefaultNamespace = "membrane-secrets"

// The labels and annotations of a copy: where it comes from.
const (
	// LabelKind is the source's kind, Secret or ConfigMap; every copy has
	// it (the copies' selector).
	LabelKind = "gateway.membrane.io/source-kind"
	// LabelNamespace is the source's namespace.
	LabelNamespace = "gateway.membrane.io/source-namespace"
	// AnnotationName is the source's name (names may be longer than a
	// label value can be).
	AnnotationName = "gateway.membrane.io/source-name"

	kindSecret    = "Secret"
	kindConfigMap = "ConfigMap"
)

// Name is the copy's name of the object src: "<namespace>.<name>" (a
// namespace has no dots, so no two sources share it), or, when that is too
// long for a name, "s-" and a hash (no dot: no clash with the first form).
func Name(src types.NamespacedName) string {
	n := src.Namespace + "." + src.Name
	if len(n) <= validation.DNS1123SubdomainMaxLength {
		return n
	}
	h := sha256.Sum256([]byte(src.Namespace + "/" + src.Name))
	return "s-" + hex.EncodeToString(h[:20])
}

func meta(kind, namespace string, src metav1.Object) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Namespace: namespace,
		Name:      Name(types.NamespacedName{Namespace: src.GetNamespace(), Name: src.GetName()}),
		Labels: map[string]string{
			"app.kubernetes.io/managed-by": "membrane-operator",
			LabelKind:                      kind,
			LabelNamespace:                 src.GetNamespace(),
		},
		Annotations: map[string]string{AnnotationName: src.GetName()},
	}
}

// Secret is the copy of a kubernetes.io/tls Secret in namespace: its
// certificate chain and key only. Other Secrets are not copied (nil): the
// translation accepts none.
func Secret(src *corev1.Secret, namespace string) *corev1.Secret {
	if src.Type != corev1.SecretTypeTLS {
		return nil
	}
	data := map[string][]byte{}
	for _, k := range []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey} {
		if v, ok := src.Data[k]; ok {
			data[k] = v
		}
	}
	return &corev1.Secret{ObjectMeta: meta(kindSecret, namespace, src), Type: corev1.SecretTypeTLS, Data: data}
}

// ConfigMap is the copy of a ConfigMap in namespace: its CA certificates
// (ca.crt) only.
func ConfigMap(src *corev1.ConfigMap, namespace string) *corev1.ConfigMap {
	data := map[string]string{}
	if v, ok := src.Data[translate.CACertKey]; ok {
		data[translate.CACertKey] = v
	}
	return &corev1.ConfigMap{ObjectMeta: meta(kindConfigMap, namespace, src), Data: data}
}

// Desired are the copies in namespace of the Secrets and ConfigMaps of in
// that the translation of in reads (refs, from
// translate.BuildWithReferences).
func Desired(in translate.Input, refs translate.References, namespace string) ([]corev1.Secret, []corev1.ConfigMap) {
	secrets := map[types.NamespacedName]*corev1.Secret{}
	for i := range in.Secrets {
		s := &in.Secrets[i]
		secrets[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = s
	}
	cms := map[types.NamespacedName]*corev1.ConfigMap{}
	for i := range in.ConfigMaps {
		cm := &in.ConfigMaps[i]
		cms[types.NamespacedName{Namespace: cm.Namespace, Name: cm.Name}] = cm
	}
	var outS []corev1.Secret
	for _, nn := range refs.Secrets {
		if s, ok := secrets[nn]; ok {
			if c := Secret(s, namespace); c != nil {
				outS = append(outS, *c)
			}
		}
	}
	var outC []corev1.ConfigMap
	for _, nn := range refs.ConfigMaps {
		if cm, ok := cms[nn]; ok {
			outC = append(outC, *ConfigMap(cm, namespace))
		}
	}
	return outS, outC
}

// source is the object a copy stands for; false for an object that is no
// copy of kind (or is not named as its source's copy).
func source(kind string, copy metav1.Object) (types.NamespacedName, bool) {
	nn := types.NamespacedName{Namespace: copy.GetLabels()[LabelNamespace], Name: copy.GetAnnotations()[AnnotationName]}
	if copy.GetLabels()[LabelKind] != kind || nn.Namespace == "" || nn.Name == "" || copy.GetName() != Name(nn) {
		return nn, false
	}
	return nn, true
}

// Origins are the copies as their sources: the same content under the
// source's namespace and name, what the translation looks up. Objects that
// are not copies are left out.
func Origins(secrets []corev1.Secret, cms []corev1.ConfigMap) ([]corev1.Secret, []corev1.ConfigMap) {
	outS := make([]corev1.Secret, 0, len(secrets))
	for _, s := range secrets {
		if nn, ok := source(kindSecret, &s); ok {
			outS = append(outS, corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: nn.Namespace, Name: nn.Name,
				ResourceVersion: s.ResourceVersion}, Type: s.Type, Data: s.Data})
		}
	}
	outC := make([]corev1.ConfigMap, 0, len(cms))
	for _, cm := range cms {
		if nn, ok := source(kindConfigMap, &cm); ok {
			outC = append(outC, corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: nn.Namespace, Name: nn.Name,
				ResourceVersion: cm.ResourceVersion}, Data: cm.Data})
		}
	}
	return outS, outC
}
