// Package ir is the gateway intermediate representation: what the node
// Envoys must do for the cluster's Gateways and routes, with every
// Kubernetes reference resolved. gateway/translate builds it from Gateway
// API objects and renders it to Envoy resources; it holds no Kubernetes
// types, so both steps are pure and tested apart.
package ir

import (
	"net/netip"
	"time"
)

// IR is the whole gateway configuration of the cluster (every node serves
// every Gateway).
type IR struct {
	// Listeners are sorted by address and port.
	Listeners []Listener `json:"listeners,omitempty"`
	// Clusters are the backends the routes forward to, sorted by name.
	Clusters []Cluster `json:"clusters,omitempty"`
}

// Protocol is a listener's protocol.
type Protocol string

// Protocols.
const (
	HTTP  Protocol = "HTTP"
	HTTPS Protocol = "HTTPS"
	// TLS is passed through to the backends, chosen by SNI.
	TLS Protocol = "TLS"
	// TCP connections and UDP datagrams are forwarded whole to the
	// backends of one route rule (TCPRoute, UDPRoute).
	TCP Protocol = "TCP"
	UDP Protocol = "UDP"
)

// Listener is one (address, port) of a Gateway: its HTTP listeners merged.
type Listener struct {
	// Name is unique: "<namespace>/<gateway>/<port>", and
	// "<namespace>/<gateway>/<port>/udp" for UDP (a TCP listener may share
	// its port).
	Name     string     `json:"name"`
	Address  netip.Addr `json:"address"`
	Port     uint16     `json:"port"`
	Protocol Protocol   `json:"protocol"`
	// Servers: for HTTP one server with every virtual host; for HTTPS one
	// per Gateway listener, chosen by SNI; for TLS one per SNI; for TCP
	// and UDP at most one.
	Servers []Server `json:"servers"`
}

// Server is one set of virtual hosts behind one TLS configuration (none for
// HTTP).
type Server struct {
	// Name is the Gateway listener's: "<namespace>/<gateway>/<listener>".
	Name string `json:"name"`
	// SNI are the server names it serves (HTTPS; empty: any).
	SNI []string `json:"sni,omitempty"`
	// Certificates serve HTTPS.
	Certificates []Certificate `json:"certificates,omitempty"`
	// ClientValidation checks the certificates of HTTPS clients (nil:
	// none asked).
	ClientValidation *ClientValidation `json:"clientValidation,omitempty"`
	// VirtualHosts are sorted by name; Envoy picks the most specific
	// domain.
	VirtualHosts []VirtualHost `json:"virtualHosts,omitempty"`
	// Backends take TLS connections whole (TLS passthrough), TCP
	// connections or UDP datagrams, by weight.
	Backends []Backend `json:"backends,omitempty"`
}

// Certificate is a PEM certificate chain and its private key.
type Certificate struct {
	// Name is the Secret's "<namespace>/<name>".
	Name  string `json:"name"`
	Chain []byte `json:"chain"`
	Key   []byte `json:"key"`
}

// ClientValidation is how an HTTPS server checks its clients'
// certificates (a Gateway's spec.tls.frontend).
type ClientValidation struct {
	// Name names the CA bundle after the Gateway's configuration it comes
	// from: "<namespace>/<gateway>" (default) or
	// "<namespace>/<gateway>/<port>" (perPort), the same while its
	// ConfigMaps change.
	Name string `json:"name"`
	// CA is the PEM bundle a client's certificate must chain to.
	CA []byte `json:"ca"`
	// Optional lets in clients without a certificate or with one that
	// does not verify (AllowInsecureFallback); otherwise the handshake
	// fails without a certificate that verifies.
	Optional bool `json:"optional,omitempty"`
}

// VirtualHost is the routes of one hostname.
type VirtualHost struct {
	Name string `json:"name"`
	// Domains are exact names, "*.suffix" wildcards or "*".
	Domains []string `json:"domains"`
	// Routes are in the order Envoy tries them (Gateway API precedence).
	Routes []Route `json:"routes,omitempty"`
}

// Route is one match of one HTTPRoute rule and what to do with it:
// exactly one of Redirect, DirectResponse and Backends.
type Route struct {
	// Name is "<namespace>/<route>/rule/<i>/match/<j>".
	Name  string `json:"name"`
	Match Match  `json:"match"`

	RequestHeaders  HeaderModifier `json:"requestHeaders,omitzero"`
	ResponseHeaders HeaderModifier `json:"responseHeaders,omitzero"`

	Redirect *Redirect `json:"redirect,omitempty"`
	// Rewrite changes the request on its way to the backends.
	Rewrite *Rewrite `json:"rewrite,omitempty"`
	// Timeout bounds the whole request (0: none); BackendTimeout each
	// request to a backend (0: none).
	Timeout        time.Duration `json:"timeout,omitempty"`
	BackendTimeout time.Duration `json:"backendTimeout,omitempty"`
	// Retry retries a request to another backend endpoint (nil: none).
	Retry *Retry `json:"retry,omitempty"`
	// Mirrors get a copy of the requests (responses are dropped).
	Mirrors []Mirror `json:"mirrors,omitempty"`
	// CORS answers preflight requests and adds the CORS response headers
	// for the origins it allows (nil: no CORS handling).
	CORS *CORS `json:"cors,omitempty"`
	// Session keeps a client's requests on the backend endpoint its first
	// one went to (nil: none).
	Session *Session `json:"session,omitempty"`
	// ExtAuth asks an authorization server about each request first
	// (nil: none).
	ExtAuth *ExtAuth `json:"extAuth,omitempty"`
	// DirectResponse answers with this status (500 for a rule whose
	// backends are all invalid).
	DirectResponse uint32 `json:"directResponse,omitempty"`
	// Backends share the requests by weight; an Invalid one answers 500.
	Backends []Backend `json:"backends,omitempty"`
}

// Session is how a client's session is kept on one endpoint: Envoy names
// the endpoint in a cookie or a header of its first response, and sends
// the requests that carry it back to that endpoint while it is there.
type Session struct {
	// Header: the endpoint travels in the header Name; else in the cookie
	// Name, with Path and (TTL > 0) Max-Age.
	Header bool          `json:"header,omitempty"`
	Name   string        `json:"name"`
	Path   string        `json:"path,omitempty"`
	TTL    time.Duration `json:"ttl,omitempty"`
}

// ExtAuth is an HTTP authorization server that answers for each request
// before it is served: a 2xx answer lets it through, any other answer is
// the client's (403 when the server cannot be reached).
type ExtAuth struct {
	// Cluster is the server's IR cluster, Authority the host of the
	// check requests.
	Cluster   string `json:"cluster"`
	Authority string `json:"authority"`
	// GRPC: the server is Envoy's external authorization service over
	// gRPC (envoy.service.auth.v3.Authorization, on an h2c cluster);
	// otherwise it answers HTTP check requests.
	GRPC bool `json:"grpc,omitempty"`
	// PathPrefix goes before the request's path in the check request
	// (HTTP).
	PathPrefix string `json:"pathPrefix,omitempty"`
	// RequestHeaders of the request go with the check request, besides
	// Host, Method, Path, Content-Length and Authorization (HTTP); over
	// gRPC only these, every header when empty.
	RequestHeaders []string `json:"requestHeaders,omitempty"`
	// ResponseHeaders of an allowing answer go into the request to the
	// backend (HTTP; a gRPC server names the headers it adds).
	ResponseHeaders []string `json:"responseHeaders,omitempty"`
	// MaxBody is how many bytes of the request's body go with the check
	// request (0: none).
	MaxBody uint32 `json:"maxBody,omitempty"`
}

// Retry is when and how often a request is tried again: on connection
// failures and resets (a backend timeout included) and on the status codes
// given, after at least Backoff, on an endpoint not tried yet where there is
// one.
type Retry struct {
	Codes    []int         `json:"codes,omitempty"`
	Attempts int           `json:"attempts"`
	Backoff  time.Duration `json:"backoff,omitempty"`
}

// PathMatch kinds.
const (
	PathExact  = "Exact"
	PathPrefix = "PathPrefix"
	// PathRegex matches the whole path with an RE2 regex.
	PathRegex = "RegularExpression"
)

// Match matches a request when every field given matches.
type Match struct {
	PathType string `json:"pathType"`
	Path     string `json:"path"`
	Method   string `json:"method,omitempty"`
	// Headers and QueryParams match exactly, or by RE2 regex with Regex.
	Headers     []ValueMatch `json:"headers,omitempty"`
	QueryParams []ValueMatch `json:"queryParams,omitempty"`
}

// ValueMatch matches a named value.
type ValueMatch struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	Regex bool   `json:"regex,omitempty"`
}

// Header is a header and its value.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// HeaderModifier sets (replaces), adds (appends) and removes headers.
type HeaderModifier struct {
	Set    []Header `json:"set,omitempty"`
	Add    []Header `json:"add,omitempty"`
	Remove []string `json:"remove,omitempty"`
}

// IsZero reports whether m changes nothing.
func (m HeaderModifier) IsZero() bool {
	return len(m.Set) == 0 && len(m.Add) == 0 && len(m.Remove) == 0
}

// Redirect answers with a redirect; unset fields keep the request's.
type Redirect struct {
	Scheme   string `json:"scheme,omitempty"`
	Hostname string `json:"hostname,omitempty"`
	Port     uint16 `json:"port,omitempty"`
	// StatusCode is 301, 302, 303, 307 or 308.
	StatusCode int `json:"statusCode"`
	// FullPath replaces the path; PrefixPath replaces the matched prefix.
	FullPath   *string `json:"fullPath,omitempty"`
	PrefixPath *string `json:"prefixPath,omitempty"`
}

// Rewrite replaces the Host header and the path: FullPath the whole path,
// PrefixPath the matched prefix.
type Rewrite struct {
	Hostname   string  `json:"hostname,omitempty"`
	FullPath   *string `json:"fullPath,omitempty"`
	PrefixPath *string `json:"prefixPath,omitempty"`
}

// CORS is a cross-origin resource sharing policy.
type CORS struct {
	// AllowOrigins are origins ("scheme://host[:port]"), "*" for any, or
	// with a "*" wildcard for a part of the host.
	AllowOrigins     []string `json:"allowOrigins,omitempty"`
	AllowCredentials bool     `json:"allowCredentials,omitempty"`
	AllowMethods     []string `json:"allowMethods,omitempty"`
	AllowHeaders     []string `json:"allowHeaders,omitempty"`
	ExposeHeaders    []string `json:"exposeHeaders,omitempty"`
	// MaxAge is how long browsers may cache a preflight's answer.
	MaxAge time.Duration `json:"maxAge,omitempty"`
}

// Mirror sends a copy of a share of the requests to a cluster.
type Mirror struct {
	Cluster string `json:"cluster"`
	// Percent of the requests mirrored (100: all).
	Percent float64 `json:"percent"`
}

// Backend is one weighted destination of a route.
type Backend struct {
	// Cluster names an IR cluster; empty when Invalid.
	Cluster string `json:"cluster,omitempty"`
	Weight  uint32 `json:"weight"`
	// Invalid: the reference did not resolve; its share of the requests
	// gets 500.
	Invalid bool `json:"invalid,omitempty"`
	// RequestHeaders change the requests sent to this backend only.
	RequestHeaders HeaderModifier `json:"requestHeaders,omitzero"`
}

// Cluster is a Service port's ready endpoints, or several Service ports'
// as one (Localities).
type Cluster struct {
	// Name is "<namespace>/<service>/<port>"; for Localities, that of
	// what weighs them.
	Name      string           `json:"name"`
	Endpoints []netip.AddrPort `json:"endpoints,omitempty"`
	// Localities are the endpoints of several backends, each with its
	// weight: one cluster, so that a session (UDP, session persistence)
	// can stay on an endpoint of any of them. Endpoints is then empty.
	Localities []Locality `json:"localities,omitempty"`
	// Protocol is how the backend speaks HTTP: "" (HTTP/1.1, upgrades to
	// WebSocket allowed) or "h2c" (HTTP/2 over cleartext, from the
	// Service port's appProtocol kubernetes.io/h2c).
	Protocol string `json:"protocol,omitempty"`
	// TLS: the gateway speaks TLS to the endpoints and verifies them
	// (a BackendTLSPolicy); nil: plaintext.
	TLS *UpstreamTLS `json:"tls,omitempty"`
}

// Locality is one backend's endpoints in a cluster of several.
type Locality struct {
	// Name is the backend's cluster.
	Name      string           `json:"name"`
	Weight    uint32           `json:"weight"`
	Endpoints []netip.AddrPort `json:"endpoints,omitempty"`
}

// UpstreamTLS is how the gateway connects to a backend over TLS.
type UpstreamTLS struct {
	// SNI is sent in the ClientHello.
	SNI string `json:"sni"`
	// CAName names the CA bundle after the BackendTLSPolicy it comes from
	// ("<namespace>/<name>"): the same while its ConfigMaps change.
	CAName string `json:"caName"`
	// CA is the PEM bundle the backend's certificate must chain to.
	CA []byte `json:"ca"`
	// SANs the certificate must have one of (SNI as a DNS name when empty).
	SANs []SAN `json:"sans,omitempty"`
	// ClientCertificate is presented to the backend when it asks for one
	// (the Gateway's spec.tls.backend.clientCertificateRef); nil: none.
	ClientCertificate *Certificate `json:"clientCertificate,omitempty"`
}

// SAN is a subject alternative name: a DNS name or a URI.
type SAN struct {
	DNS string `json:"dns,omitempty"`
	URI string `json:"uri,omitempty"`
}
