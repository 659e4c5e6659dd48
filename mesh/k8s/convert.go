// Package k8s watches the Kubernetes API and converts its objects into
// Membrane's model. It is the only package of mesh/ that knows Kubernetes
// types.
package k8s

import (
	"errors"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/membrane-mesh/membrane/mesh/clustermesh"
	"github.com/membrane-mesh/membrane/mesh/model"
)

// Service converts a Service. Fields that cannot be used are reported in the
// error while the rest is still converted.
func Service(s *corev1.Service) (model.Service, error) {
	out := model.Service{
		ID:   model.ServiceID{Namespace: s.Namespace, Name: s.Name},
		Type: model.ServiceType(s.Spec.Type),
	}
	if out.Type == "" {
		out.Type = model.ClusterIP
	}
	var errs []error
	addrs := func(field string, in []string) []netip.Addr {
		var res []netip.Addr
		for _, a := range in {
			if a == "" || a == corev1.ClusterIPNone {
				continue
			}
			ip, err := netip.ParseAddr(a)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %q is not an IP address", field, a))
				continue
			}
			res = append(res, ip)
		}
		return res
	}
	ips := s.Spec.ClusterIPs
	if len(ips) == 0 && s.Spec.ClusterIP != "" {
		ips = []string{s.Spec.ClusterIP}
	}
	out.ClusterIPs = addrs("spec.clusterIPs", ips)
	out.ExternalIPs = addrs("spec.externalIPs", s.Spec.ExternalIPs)
	var lb []string
	for _, in := range s.Status.LoadBalancer.Ingress {
		lb = append(lb, in.IP)
	}
	out.LoadBalancerIPs = addrs("status.loadBalancer.ingress", lb)
	for i, p := range s.Spec.Ports {
		proto, err := model.ParseProtocol(string(p.Protocol))
		if err != nil {
			errs = append(errs, fmt.Errorf("spec.ports[%d].protocol: %w", i, err))
			continue
		}
		if p.Port < 0 || p.Port > 65535 || p.NodePort < 0 || p.NodePort > 65535 {
			errs = append(errs, fmt.Errorf("spec.ports[%d]: port %d / nodePort %d out of range", i, p.Port, p.NodePort))
			continue
		}
		out.Ports = append(out.Ports, model.ServicePort{Name: p.Name, Port: uint16(p.Port), NodePort: uint16(p.NodePort), Protocol: proto})
	}
	if s.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		out.AffinityTimeoutSeconds = uint32(corev1.DefaultClientIPServiceAffinitySeconds)
		if c := s.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil && *c.ClientIP.TimeoutSeconds > 0 {
			out.AffinityTimeoutSeconds = uint32(*c.ClientIP.TimeoutSeconds)
		}
	}
	if p := s.Spec.InternalTrafficPolicy; p != nil && *p == corev1.ServiceInternalTrafficPolicyLocal {
		out.InternalLocal = true
	}
	out.ExternalLocal = s.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
	return out, errors.Join(errs...)
}

// ServiceMesh reads a Service's cluster-mesh annotations; the zero value
// for a Service that is not global. A value that cannot be read is
// reported and counts as absent.
func ServiceMesh(s *corev1.Service) (model.Global, error) {
	g, err := clustermesh.Annotations(s.Annotations)
	if !g.Global {
		return model.Global{}, err
	}
	return g, err
}

// EndpointSlice converts an EndpointSlice; ok is false for one that belongs
// to no Service.
func EndpointSlice(s *discoveryv1.EndpointSlice) (out model.EndpointSlice, ok bool, err error) {
	svc := s.Labels[discoveryv1.LabelServiceName]
	if svc == "" {
		return model.EndpointSlice{}, false, nil
	}
	if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
		return model.EndpointSlice{}, false, nil
	}
	out = model.EndpointSlice{Name: s.Name, Service: model.ServiceID{Namespace: s.Namespace, Name: svc}}
	var errs []error
	for i, p := range s.Ports {
		var proto model.Protocol = model.TCP
		if p.Protocol != nil {
			if proto, err = model.ParseProtocol(string(*p.Protocol)); err != nil {
				errs = append(errs, fmt.Errorf("ports[%d].protocol: %w", i, err))
				continue
			}
		}
		if p.Port == nil {
			continue // "all ports": not used for Services with ports
		}
		if *p.Port < 0 || *p.Port > 65535 {
			errs = append(errs, fmt.Errorf("ports[%d].port %d out of range", i, *p.Port))
			continue
		}
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		out.Ports = append(out.Ports, model.EndpointPort{Name: name, Port: uint16(*p.Port), Protocol: proto})
	}
	for i, ep := range s.Endpoints {
		e := model.Endpoint{
			Ready:       ep.Conditions.Ready == nil || *ep.Conditions.Ready,
			Serving:     ep.Conditions.Serving == nil || *ep.Conditions.Serving,
			Terminating: ep.Conditions.Terminating != nil && *ep.Conditions.Terminating,
		}
		if ep.NodeName != nil {
			e.NodeName = *ep.NodeName
		}
		for _, a := range ep.Addresses {
			ip, err := netip.ParseAddr(a)
			if err != nil {
				errs = append(errs, fmt.Errorf("endpoints[%d]: %q is not an IP address", i, a))
				continue
			}
			e.Addrs = append(e.Addrs, ip)
		}
		out.Endpoints = append(out.Endpoints, e)
	}
	return out, true, errors.Join(errs...)
}

// Node converts a Node (its InternalIP and ExternalIP addresses).
func Node(n *corev1.Node) model.Node {
	out := model.Node{Name: n.Name}
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			out.IPs = append(out.IPs, ip)
		}
	}
	return out
}
