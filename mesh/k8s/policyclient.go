package k8s

import (
	"bytes"
	"context"
	stdjson "encoding/json"
	"fmt"

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

// leadingTypeMeta finds an object's apiVersion and kind among its leading
// scalar fields, where the API server writes them (its JSON has them
// first), without scanning the rest of the object; otherwise it reads the
// whole object as json.DefaultMetaFactory does.
type leadingTypeMeta struct{}

func (leadingTypeMeta) Interpret(data []byte) (*schema.GroupVersionKind, error) {
	if gvk, ok := typeMetaHead(data); ok {
		return gvk, nil
	}
	return json.DefaultMetaFactory.Interpret(data)
}

// typeMetaHead reads data's top-level fields while their values are
// scalars, until it has both apiVersion and kind.
func typeMetaHead(data []byte) (*schema.GroupVersionKind, bool) {
	dec := stdjson.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != stdjson.Delim('{') {
		return nil, false
	}
	var apiVersion, kind string
	var haveVersion, haveKind bool
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, false
		}
		v, err := dec.Token()
		if err != nil {
			return nil, false
		}
		if _, ok := v.(stdjson.Delim); ok {
			return nil, false // an object or array: not worth skipping
		}
		s, isString := v.(string)
		switch k {
		case "apiVersion":
			if !isString || haveVersion {
				return nil, false
			}
			apiVersion, haveVersion = s, true
		case "kind":
			if !isString || haveKind {
				return nil, false
			}
			kind, haveKind = s, true
		}
		if haveVersion && haveKind {
			gv, err := schema.ParseGroupVersion(apiVersion)
			if err != nil {
				return nil, false
			}
			gvk := gv.WithKind(kind)
			return &gvk, true
		}
	}
	return nil, false
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
