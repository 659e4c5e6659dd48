// Package agentauth authenticates and authorizes requests to a node agent's
// API as the kubelet does for its own: the client is a cluster user, known
// by a client certificate signed by the cluster's client CA (user = CN,
// groups = O) or by a bearer token the API server vouches for
// (TokenReview); it may use the API when the API server says it may use
// the node's proxy subresource (SubjectAccessReview: nodes/proxy on this
// node, verb get to read and create to change). Decisions are cached
// briefly, in bounded caches.
package agentauth

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// User is an authenticated client.
type User struct {
	Name   string
	UID    string
	Groups []string
	Extra  map[string][]string
}

// Cache lifetimes and bound (the kubelet's are similar).
const (
	tokenTTL        = time.Minute
	tokenFailTTL    = 10 * time.Second
	allowedTTL      = 30 * time.Second
	deniedTTL       = 10 * time.Second
	cacheMaxEntries = 4096
)

// ErrUnauthenticated is returned when a request carries no credentials the
// cluster vouches for.
var ErrUnauthenticated = errors.New("unauthenticated")

// Options configure an Authorizer-and-Authenticator.
type Options struct {
	// Node is this node's name: the nodes/proxy object requests need.
	Node string
	// ClientCA verifies client certificates; nil accepts none (bearer
	// tokens only).
	ClientCA *x509.CertPool
	// Client makes TokenReviews and SubjectAccessReviews.
	Client kubernetes.Interface
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Auth authenticates and authorizes agent API requests.
type Auth struct {
	node   string
	ca     *x509.CertPool
	client kubernetes.Interface
	now    func() time.Time
	tokens *ttlCache[tokenResult]
	access *ttlCache[bool]
}

type tokenResult struct {
	user User
	ok   bool
}

// New returns an Auth.
func New(o Options) *Auth {
	now := o.Now
	if now == nil {
		now = time.Now
	}
	return &Auth{
		node: o.Node, ca: o.ClientCA, client: o.Client, now: now,
		tokens: newTTLCache[tokenResult](cacheMaxEntries, now),
		access: newTTLCache[bool](cacheMaxEntries, now),
	}
}

// Authenticate returns the request's user: its verified client certificate,
// else its bearer token as the API server reviews it. ErrUnauthenticated
// (wrapped, with the reason) when neither holds; other errors when the
// API server could not be asked.
func (a *Auth) Authenticate(ctx context.Context, r *http.Request) (User, error) {
	var certErr error
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		u, err := a.verifyCert(r.TLS.PeerCertificates)
		if err == nil {
			return u, nil
		}
		certErr = err
	}
	token, hasToken := bearerToken(r)
	if !hasToken {
		if certErr != nil {
			return User{}, fmt.Errorf("%w: client certificate: %v", ErrUnauthenticated, certErr)
		}
		return User{}, fmt.Errorf("%w: no client certificate and no bearer token", ErrUnauthenticated)
	}
	return a.reviewToken(ctx, token)
}

func (a *Auth) verifyCert(chain []*x509.Certificate) (User, error) {
	if a.ca == nil {
		return User{}, errors.New("no client CA configured")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: a.ca, Intermediates: inter, CurrentTime: a.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return User{}, err
	}
	if leaf.Subject.CommonName == "" {
		return User{}, errors.New("certificate has no common name")
	}
	return User{Name: leaf.Subject.CommonName, Groups: slices.Clone(leaf.Subject.Organization)}, nil
}

func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

func (a *Auth) reviewToken(ctx context.Context, token string) (User, error) {
	sum := sha256.Sum256([]byte(token))
	key := hex.EncodeToString(sum[:])
	if res, ok := a.tokens.get(key); ok {
		if !res.ok {
			return User{}, fmt.Errorf("%w: token not accepted", ErrUnauthenticated)
		}
		return res.user, nil
	}
	tr, err := a.client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token},
	}, metav1.CreateOptions{})
	if err != nil {
		return User{}, fmt.Errorf("token review: %w", err)
	}
	st := tr.Status
	if !st.Authenticated {
		a.tokens.put(key, tokenResult{}, tokenFailTTL)
		return User{}, fmt.Errorf("%w: token not accepted", ErrUnauthenticated)
	}
	u := User{Name: st.User.Username, UID: st.User.UID, Groups: st.User.Groups, Extra: map[string][]string{}}
	for k, v := range st.User.Extra {
		u.Extra[k] = v
	}
	a.tokens.put(key, tokenResult{user: u, ok: true}, tokenTTL)
	return u, nil
}

// Verb maps an HTTP method to the Kubernetes verb it is authorized as; ""
// for methods the API has no use for.
func Verb(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead:
		return "get"
	case http.MethodPost:
		return "create"
	case http.MethodPut:
		return "update"
	case http.MethodPatch:
		return "patch"
	case http.MethodDelete:
		return "delete"
	}
	return ""
}

// Authorize reports whether u may verb nodes/proxy on this node, with the
// API server's reason.
func (a *Auth) Authorize(ctx context.Context, u User, verb string) (bool, string, error) {
	key := accessKey(u, verb)
	if allowed, ok := a.access.get(key); ok {
		return allowed, "cached", nil
	}
	extra := map[string]authorizationv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = v
	}
	sar, err := a.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User: u.Name, UID: u.UID, Groups: u.Groups, Extra: extra,
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: verb, Group: "", Version: "v1", Resource: "nodes", Subresource: "proxy", Name: a.node,
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, "", fmt.Errorf("subject access review: %w", err)
	}
	allowed := sar.Status.Allowed && !sar.Status.Denied
	ttl := deniedTTL
	if allowed {
		ttl = allowedTTL
	}
	a.access.put(key, allowed, ttl)
	return allowed, sar.Status.Reason, nil
}

// accessKey identifies a decision: the whole user and the verb.
func accessKey(u User, verb string) string {
	var b strings.Builder
	field := func(s string) { fmt.Fprintf(&b, "%d:%s", len(s), s) }
	field(verb)
	field(u.Name)
	field(u.UID)
	groups := slices.Clone(u.Groups)
	sort.Strings(groups)
	for _, g := range groups {
		field("g" + g)
	}
	keys := make([]string, 0, len(u.Extra))
	for k := range u.Extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		field("x" + k)
		for _, v := range u.Extra[k] {
			field(v)
		}
	}
	return b.String()
}

// Handler serves next to requests whose user may use this node's proxy:
// 401 without valid credentials, 403 without the permission, 500 when the
// API server could not be asked. Nothing of next runs otherwise.
func (a *Auth) Handler(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A refused client does not keep its connection.
		refuse := func(msg string, code int) {
			w.Header().Set("Connection", "close")
			http.Error(w, msg, code)
		}
		u, err := a.Authenticate(r.Context(), r)
		switch {
		case errors.Is(err, ErrUnauthenticated):
			log.Debug("agent API request refused", "method", r.Method, "path", r.URL.Path, "reason", err)
			w.Header().Set("WWW-Authenticate", `Bearer realm="membrane-agent"`)
			refuse("Unauthorized: present a client certificate of the cluster's client CA or a bearer token", http.StatusUnauthorized)
			return
		case err != nil:
			log.Warn("authenticate agent API request", "error", err)
			refuse("cannot authenticate the request now", http.StatusInternalServerError)
			return
		}
		verb := Verb(r.Method)
		if verb == "" {
			refuse("method not allowed", http.StatusMethodNotAllowed)
			return
		}
		allowed, reason, err := a.Authorize(r.Context(), u, verb)
		if err != nil {
			log.Warn("authorize agent API request", "user", u.Name, "error", err)
			refuse("cannot authorize the request now", http.StatusInternalServerError)
			return
		}
		if !allowed {
			log.Debug("agent API request forbidden", "user", u.Name, "verb", verb, "path", r.URL.Path, "reason", reason)
			refuse(fmt.Sprintf("Forbidden: user %q may not %s nodes/proxy on node %q", u.Name, verb, a.node), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}
