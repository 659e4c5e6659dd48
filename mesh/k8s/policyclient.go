package k8s

import (
	"context"
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
)

// NewMembraneClient returns a REST client of membrane.io/v1alpha1 that
// decodes the API server's JSON straight into v1alpha1's Go types: one pass
// over each object, where the dynamic client decodes it into maps first
// (and the policy source then converted those, by reflection, again).
// Policy objects are large (a 250-rule policy is ~40 KB of JSON) and every
// agent decodes every version of them.
func NewMembraneClient(cfg *rest.Config) (rest.Interface, error) {
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("membrane.io scheme: %w", err)
	}
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &v1alpha1.SchemeGroupVersion
	c.APIPath = "/apis"
	c.ContentType = runtime.ContentTypeJSON
	c.AcceptContentTypes = runtime.ContentTypeJSON
	c.NegotiatedSerializer = newTypedCodecs(scheme)
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("membrane.io client: %w", err)
	}
	return rc, nil
}

// typedCodecs is a NegotiatedSerializer of JSON only, without conversion:
// the client reads one version, the one it asks for.
type typedCodecs struct {
	info runtime.SerializerInfo
}

var _ runtime.NegotiatedSerializer = typedCodecs{}

func newTypedCodecs(scheme *runtime.Scheme) typedCodecs {
	s := json.NewSerializerWithOptions(leadingTypeMeta{}, scheme, scheme, json.SerializerOptions{})
	return typedCodecs{info: runtime.SerializerInfo{
		MediaType: runtime.ContentTypeJSON, MediaTypeType: "application", MediaTypeSubType: "json",
		EncodesAsText: true, Serializer: s, PrettySerializer: s, StrictSerializer: s,
		StreamSerializer: &runtime.StreamSerializerInfo{EncodesAsText: true, Serializer: s, Framer: json.Framer},
	}}
}

func (c typedCodecs) SupportedMediaTypes() []runtime.SerializerInfo {
	return []runtime.SerializerInfo{c.info}
}

func (c typedCodecs) EncoderForVersion(e runtime.Encoder, _ runtime.GroupVersioner) runtime.Encoder {
	return e
}

func (c typedCodecs) DecoderToVersion(d runtime.Decoder, _ runtime.GroupVersioner) runtime.Decoder {
	return d
}

// leadingTypeMeta reads an object's top-level apiVersion and kind in one
// quick pass over its bytes, skipping every other value without decoding it
// (and stopping once it has both, which the API server writes first);
// json.DefaultMetaFactory unmarshals the whole object twice over for them
// (a watch event's envelope, which has neither, included). JSON it does not
// expect (escapes in those fields, keys differing only in case, anything
// malformed) is read as json.DefaultMetaFactory does.
type leadingTypeMeta struct{}

func (leadingTypeMeta) Interpret(data []byte) (*schema.GroupVersionKind, error) {
	if apiVersion, kind, ok := typeMetaScan(data); ok {
		if gv, err := schema.ParseGroupVersion(apiVersion); err == nil {
			gvk := gv.WithKind(kind)
			return &gvk, nil
		}
	}
	return json.DefaultMetaFactory.Interpret(data)
}

// typeMetaScan returns the top-level apiVersion and kind of the JSON object
// data ("" where absent); ok false where it cannot tell quickly.
func typeMetaScan(data []byte) (apiVersion, kind string, ok bool) {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return "", "", false
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return "", "", true
	}
	var haveVersion, haveKind bool
	for {
		key, j, ok := plainString(data, i)
		if !ok {
			return "", "", false
		}
		i = skipSpace(data, j)
		if i >= len(data) || data[i] != ':' {
			return "", "", false
		}
		i = skipSpace(data, i+1)
		switch {
		case key == "apiVersion" || key == "kind":
			v, j, ok := plainString(data, i)
			if !ok {
				return "", "", false
			}
			if key == "kind" {
				kind, haveKind = v, true
			} else {
				apiVersion, haveVersion = v, true
			}
			if haveVersion && haveKind {
				return apiVersion, kind, true
			}
			i = j
		case strings.EqualFold(key, "apiVersion") || strings.EqualFold(key, "kind"):
			return "", "", false // encoding/json would take it
		default:
			if i, ok = skipValue(data, i); !ok {
				return "", "", false
			}
		}
		i = skipSpace(data, i)
		if i >= len(data) {
			return "", "", false
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case '}':
			return apiVersion, kind, true
		default:
			return "", "", false
		}
	}
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// plainString reads the string at data[i] if it has no escapes.
func plainString(data []byte, i int) (string, int, bool) {
	if i >= len(data) || data[i] != '"' {
		return "", 0, false
	}
	for j := i + 1; j < len(data); j++ {
		switch data[j] {
		case '\\':
			return "", 0, false
		case '"':
			return string(data[i+1 : j]), j + 1, true
		}
	}
	return "", 0, false
}

// skipString returns the index after the string at data[i] (a quote).
func skipString(data []byte, i int) (int, bool) {
	for j := i + 1; j < len(data); j++ {
		switch data[j] {
		case '\\':
			j++
		case '"':
			return j + 1, true
		}
	}
	return 0, false
}

// skipValue returns the index after the value at data[i]; the value is
// read only as far as its extent (the decoder checks it).
func skipValue(data []byte, i int) (int, bool) {
	if i >= len(data) {
		return 0, false
	}
	switch data[i] {
	case '"':
		return skipString(data, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(data); j++ {
			switch data[j] {
			case '"':
				end, ok := skipString(data, j)
				if !ok {
					return 0, false
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, true
				}
			}
		}
		return 0, false
	}
	j := i
	for j < len(data) && !strings.ContainsRune(",}] \t\n\r", rune(data[j])) {
		j++
	}
	return j, j > i
}

// typedInformer is an informer of one membrane.io resource of rc, decoded
// into obj's type (list is its list type).
func typedInformer(rc rest.Interface, resource string, obj, list runtime.Object) cache.SharedIndexInformer {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			out := list.DeepCopyObject()
			err := rc.Get().Resource(resource).VersionedParams(&opts, metav1.ParameterCodec).Do(ctx).Into(out)
			return out, err
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.Watch = true
			return rc.Get().Resource(resource).VersionedParams(&opts, metav1.ParameterCodec).Watch(ctx)
		},
	}
	return cache.NewSharedIndexInformer(lw, obj, 0, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
}
