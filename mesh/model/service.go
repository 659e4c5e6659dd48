// Package model holds Membrane's view of the cluster as plain Go values: no
// Kubernetes types, so translators and renderers stay pure and testable.
package model

import (
	"net/netip"
)

// ServiceID names a Service.
type ServiceID struct {
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
}

func (id ServiceID) String() string { return id.Namespace + "/" + id.Name }

// ServiceType is the Kubernetes Service type.
type ServiceType string

// Service types.
const (
	ClusterIP    ServiceType = "ClusterIP"
	NodePort     ServiceType = "NodePort"
	LoadBalancer ServiceType = "LoadBalancer"
	ExternalName ServiceType = "ExternalName"
)

// ServicePort is one port of a Service.
type ServicePort struct {
	Name     string   `json:"name,omitempty"`
	Port     uint16   `json:"port,omitempty"`
	NodePort uint16   `json:"nodePort,omitempty"`
	Protocol Protocol `json:"protocol,omitempty"`
}

// Service is what load balancing needs of a Kubernetes Service.
type Service struct {
	ID              ServiceID     `json:"id,omitempty"`
	Type            ServiceType   `json:"type,omitempty"`
	ClusterIPs      []netip.Addr  `json:"clusterIPs,omitempty"` // empty for headless services
	ExternalIPs     []netip.Addr  `json:"externalIPs,omitempty"`
	LoadBalancerIPs []netip.Addr  `json:"loadBalancerIPs,omitempty"`
	Ports           []ServicePort `json:"ports,omitempty"`
	// AffinityTimeoutSeconds is non-zero for sessionAffinity: ClientIP.
	AffinityTimeoutSeconds uint32 `json:"affinityTimeoutSeconds,omitempty"`
	// InternalLocal and ExternalLocal are the traffic policies "Local".
	InternalLocal bool `json:"internalLocal,omitempty"`
	ExternalLocal bool `json:"externalLocal,omitempty"`
	// Mesh is set for a global Service (cluster mesh); zero otherwise.
	Mesh Global `json:"mesh,omitzero"`
}

// EndpointPort is a port of an EndpointSlice, named after the service port.
type EndpointPort struct {
	Name     string   `json:"name,omitempty"`
	Port     uint16   `json:"port,omitempty"`
	Protocol Protocol `json:"protocol,omitempty"`
}

// Endpoint is one address of an EndpointSlice with its conditions.
type Endpoint struct {
	Addrs       []netip.Addr `json:"addrs,omitempty"`
	NodeName    string       `json:"nodeName,omitempty"`
	Ready       bool         `json:"ready,omitempty"`
	Serving     bool         `json:"serving,omitempty"`
	Terminating bool         `json:"terminating,omitempty"`
}

// EndpointSlice is one slice of a Service's endpoints.
type EndpointSlice struct {
	Name      string         `json:"name,omitempty"`
	Service   ServiceID      `json:"service,omitempty"`
	Ports     []EndpointPort `json:"ports,omitempty"`
	Endpoints []Endpoint     `json:"endpoints,omitempty"`
	// Cluster is the remote cluster the slice comes from; empty for this
	// cluster's own.
	Cluster string `json:"cluster,omitempty"`
}

// Node is a cluster node as load balancing sees it.
type Node struct {
	Name string       `json:"name,omitempty"`
	IPs  []netip.Addr `json:"ips,omitempty"`
}

// Affinity is a global Service's preference between its own cluster's
// backends and remote ones.
type Affinity string

// Affinities.
const (
	AffinityNone   Affinity = "none"
	AffinityLocal  Affinity = "local"
	AffinityRemote Affinity = "remote"
)

// Global is a Service's cluster-mesh settings (its annotations).
type Global struct {
	// Global merges the backends of the Services of this name and
	// namespace in every connected cluster.
	Global bool `json:"global,omitempty"`
	// Shared offers this cluster's backends to the other clusters
	// (default true; only meaningful with Global).
	Shared bool `json:"shared,omitempty"`
	// Affinity prefers local or remote backends while any is usable.
	Affinity Affinity `json:"affinity,omitempty"`
}
