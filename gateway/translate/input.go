// Package translate turns the cluster's Gateway API objects into the
// gateway IR and the status every object should have (Build), and the IR
// into the node Envoys' listeners and clusters (Render). Both are pure: no
// I/O, no clocks; the operator writes the status, the agents serve the
// Envoy resources, from the same translation.
package translate

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1alpha2 "sigs.k8s.io/gateway-api/apis/v1alpha2"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	"sigs.k8s.io/yaml"
)

// ControllerName is the GatewayClass controllerName Membrane serves.
const ControllerName gwv1.GatewayController = "membrane.io/gateway-controller"

// Input is everything the translation reads. Objects of other
// GatewayClasses may be in it: they are ignored.
type Input struct {
	GatewayClasses  []gwv1.GatewayClass
	Gateways        []gwv1.Gateway
	HTTPRoutes      []gwv1.HTTPRoute
	GRPCRoutes      []gwv1.GRPCRoute
	TLSRoutes       []gwv1alpha2.TLSRoute
	TCPRoutes       []gwv1alpha2.TCPRoute
	UDPRoutes       []gwv1alpha2.UDPRoute
	ReferenceGrants []gwv1beta1.ReferenceGrant
	Namespaces      []corev1.Namespace
	Services        []corev1.Service
	EndpointSlices  []discoveryv1.EndpointSlice
	Secrets         []corev1.Secret
	// BackendTLSPolicies make the gateway speak TLS to Services, with
	// their CA certificates from ConfigMaps.
	BackendTLSPolicies []gwv1.BackendTLSPolicy
	ConfigMaps         []corev1.ConfigMap
	// Ingresses of IngressClasses with Membrane's controller are served
	// (see OwnedIngresses).
	Ingresses      []networkingv1.Ingress
	IngressClasses []networkingv1.IngressClass
	// Served are the route kinds of the experimental channel the cluster
	// serves; GatewayClasses list their features.
	Served ExperimentalKinds
	// Addresses are the Gateways' assigned addresses (LB IPAM), and the
	// Ingresses' under OwnedIngress.Key. A Gateway without one is not
	// programmed.
	Addresses map[types.NamespacedName]netip.Addr
}

// ExperimentalKinds says which route kinds of Gateway API's experimental
// channel the cluster serves (has the CRD of): each is watched and served
// only then.
type ExperimentalKinds struct {
	TLSRoute, TCPRoute, UDPRoute bool
}

// All reports whether every experimental route kind is served.
func (k ExperimentalKinds) All() bool { return k.TLSRoute && k.TCPRoute && k.UDPRoute }

// AddressesFromStatus reads the Gateways' addresses from their status (as
// the operator wrote them): the agents' view of the assignment.
func AddressesFromStatus(gws []gwv1.Gateway) map[types.NamespacedName]netip.Addr {
	out := map[types.NamespacedName]netip.Addr{}
	for _, gw := range gws {
		for _, a := range gw.Status.Addresses {
			if a.Type != nil && *a.Type != gwv1.IPAddressType {
				continue
			}
			if ip, err := netip.ParseAddr(a.Value); err == nil && ip.Is4() {
				out[types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}] = ip
				break
			}
		}
	}
	return out
}

// ParseObjects reads a multi-document YAML stream of Kubernetes objects
// into an Input (test data, `membrane` tooling) of a cluster that serves
// the experimental route kinds. The Gateways' addresses come from their status. Unknown kinds
// are errors.
func ParseObjects(r io.Reader) (Input, error) {
	var in Input
	dec := utilyaml.NewDocumentDecoder(io.NopCloser(r))
	buf := make([]byte, 1<<20)
	for i := 0; ; i++ {
		n, err := dec.Read(buf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Input{}, fmt.Errorf("document %d: %w", i, err)
		}
		doc := bytes.TrimSpace(buf[:n])
		if len(doc) == 0 {
			continue
		}
		var meta struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return Input{}, fmt.Errorf("document %d: %w", i, err)
		}
		var target any
		switch meta.Kind {
		case "GatewayClass":
			in.GatewayClasses = append(in.GatewayClasses, gwv1.GatewayClass{})
			target = &in.GatewayClasses[len(in.GatewayClasses)-1]
		case "Gateway":
			in.Gateways = append(in.Gateways, gwv1.Gateway{})
			target = &in.Gateways[len(in.Gateways)-1]
		case "HTTPRoute":
			in.HTTPRoutes = append(in.HTTPRoutes, gwv1.HTTPRoute{})
			target = &in.HTTPRoutes[len(in.HTTPRoutes)-1]
		case "GRPCRoute":
			in.GRPCRoutes = append(in.GRPCRoutes, gwv1.GRPCRoute{})
			target = &in.GRPCRoutes[len(in.GRPCRoutes)-1]
		case "TLSRoute":
			in.TLSRoutes = append(in.TLSRoutes, gwv1alpha2.TLSRoute{})
			target = &in.TLSRoutes[len(in.TLSRoutes)-1]
		case "TCPRoute":
			in.TCPRoutes = append(in.TCPRoutes, gwv1alpha2.TCPRoute{})
			target = &in.TCPRoutes[len(in.TCPRoutes)-1]
		case "UDPRoute":
			in.UDPRoutes = append(in.UDPRoutes, gwv1alpha2.UDPRoute{})
			target = &in.UDPRoutes[len(in.UDPRoutes)-1]
		case "ReferenceGrant":
			in.ReferenceGrants = append(in.ReferenceGrants, gwv1beta1.ReferenceGrant{})
			target = &in.ReferenceGrants[len(in.ReferenceGrants)-1]
		case "Namespace":
			in.Namespaces = append(in.Namespaces, corev1.Namespace{})
			target = &in.Namespaces[len(in.Namespaces)-1]
		case "Service":
			in.Services = append(in.Services, corev1.Service{})
			target = &in.Services[len(in.Services)-1]
		case "EndpointSlice":
			in.EndpointSlices = append(in.EndpointSlices, discoveryv1.EndpointSlice{})
			target = &in.EndpointSlices[len(in.EndpointSlices)-1]
		case "Secret":
			in.Secrets = append(in.Secrets, corev1.Secret{})
			target = &in.Secrets[len(in.Secrets)-1]
		case "BackendTLSPolicy":
			in.BackendTLSPolicies = append(in.BackendTLSPolicies, gwv1.BackendTLSPolicy{})
			target = &in.BackendTLSPolicies[len(in.BackendTLSPolicies)-1]
		case "ConfigMap":
			in.ConfigMaps = append(in.ConfigMaps, corev1.ConfigMap{})
			target = &in.ConfigMaps[len(in.ConfigMaps)-1]
		case "Ingress":
			in.Ingresses = append(in.Ingresses, networkingv1.Ingress{})
			target = &in.Ingresses[len(in.Ingresses)-1]
		case "IngressClass":
			in.IngressClasses = append(in.IngressClasses, networkingv1.IngressClass{})
			target = &in.IngressClasses[len(in.IngressClasses)-1]
		default:
			return Input{}, fmt.Errorf("document %d: kind %q is not an input of the gateway translation", i, meta.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, target); err != nil {
			return Input{}, fmt.Errorf("document %d (%s): %w", i, meta.Kind, err)
		}
	}
	in.Addresses = AddressesFromStatus(in.Gateways)
	maps.Copy(in.Addresses, IngressAddressesFromStatus(OwnedIngresses(in.IngressClasses, in.Ingresses)))
	in.Served = ExperimentalKinds{TLSRoute: true, TCPRoute: true, UDPRoute: true}
	return in, nil
}
