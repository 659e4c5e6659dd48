package operator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/membrane-mesh/membrane/encryption/spiffe"
)

// Extra keys of a TokenReview of a pod-bound service-account token.
const (
	extraPodName  = "authentication.kubernetes.io/pod-name"
	extraPodUID   = "authentication.kubernetes.io/pod-uid"
	extraNodeName = "authentication.kubernetes.io/node-name"
)

// CAConfig configures the built-in SPIFFE CA.
type CAConfig struct {
	TrustDomain spiffeid.TrustDomain
	Policy      spiffe.Policy
	// Namespace holds the CA Secret and the bundle ConfigMap, and runs the
	// node agents.
	Namespace string
	Secret    string
	ConfigMap string
	// AgentServiceAccount is the node agents' service account; only its
	// pod-bound tokens for Audience are accepted.
	AgentServiceAccount string
	Audience            string
	// Addr is the signing endpoint's TLS address.
	Addr string
	// Interval is how often the CA state is stepped (leader) and re-read.
	Interval time.Duration
}

// CA runs the built-in SPIFFE CA: the leader keeps the CA Secret and the
// bundle ConfigMap; every replica serves the signing endpoint.
type CA struct {
	log     *slog.Logger
	cfg     CAConfig
	client  kubernetes.Interface
	metrics *spiffe.Metrics
	now     func() time.Time

	mu      sync.Mutex
	state   spiffe.State
	serving *x509svid.SVID
}

// NewCA returns the CA.
func NewCA(log *slog.Logger, cfg CAConfig, client kubernetes.Interface, metrics *spiffe.Metrics) *CA {
	return &CA{log: log, cfg: cfg, client: client, metrics: metrics, now: time.Now}
}

// Setup adds the CA's runnables to mgr.
func (c *CA) Setup(mgr ctrl.Manager) error {
	if err := mgr.Add(ctrlRunnable(c.keep)); err != nil {
		return fmt.Errorf("add CA keeper: %w", err)
	}
	if err := mgr.Add(nonLeaderRunnable(c.serve)); err != nil {
		return fmt.Errorf("add CA server: %w", err)
	}
	return nil
}

// nonLeaderRunnable runs on every replica.
type nonLeaderRunnable func(ctx context.Context) error

func (f nonLeaderRunnable) Start(ctx context.Context) error { return f(ctx) }
func (nonLeaderRunnable) NeedLeaderElection() bool          { return false }

// keep steps the CA state on the leader.
func (c *CA) keep(ctx context.Context) error {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		if err := c.Step(ctx); err != nil {
			c.log.Error("CA step", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Step moves the CA Secret forward (see spiffe.Step) and publishes the
// bundle.
func (c *CA) Step(ctx context.Context) error {
	secrets := c.client.CoreV1().Secrets(c.cfg.Namespace)
	sec, err := secrets.Get(ctx, c.cfg.Secret, metav1.GetOptions{})
	missing := apierrors.IsNotFound(err)
	if err != nil && !missing {
		return fmt.Errorf("get CA secret %s/%s: %w", c.cfg.Namespace, c.cfg.Secret, err)
	}
	if missing {
		sec = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: c.cfg.Secret, Namespace: c.cfg.Namespace}, Type: corev1.SecretTypeOpaque}
	}
	st, err := spiffe.DecodeState(sec.Data)
	if err != nil {
		// Never overwrite a CA we cannot read: its SVIDs are in use.
		return fmt.Errorf("CA secret %s/%s: %w", c.cfg.Namespace, c.cfg.Secret, err)
	}
	request := sec.Annotations[spiffe.AnnotationRotate]
	rotate := request != "" && request != sec.Annotations[spiffe.AnnotationRotated]
	wasActive := st.Active
	next, changed, err := spiffe.Step(st, c.cfg.TrustDomain, c.cfg.Policy, c.now(), rotate)
	if err != nil {
		return err
	}
	if changed || rotate {
		data, err := next.Encode()
		if err != nil {
			return err
		}
		sec.Data = data
		if rotate {
			if sec.Annotations == nil {
				sec.Annotations = map[string]string{}
			}
			sec.Annotations[spiffe.AnnotationRotated] = request
		}
		if missing {
			_, err = secrets.Create(ctx, sec, metav1.CreateOptions{})
		} else {
			_, err = secrets.Update(ctx, sec, metav1.UpdateOptions{})
		}
		if err != nil {
			return fmt.Errorf("write CA secret %s/%s: %w", c.cfg.Namespace, c.cfg.Secret, err)
		}
		if wasActive != nil && !wasActive.Cert.Equal(next.Active.Cert) {
			c.metrics.Rotations.Inc()
			c.log.Info("CA rotated", "expires", next.Active.Cert.NotAfter)
		}
		if rotate {
			c.log.Info("CA rotation prepared", "activate_at", next.ActivateAt)
		}
	}
	c.setState(next)
	return c.publishBundle(ctx, next)
}

func (c *CA) publishBundle(ctx context.Context, st spiffe.State) error {
	pem := string(spiffe.EncodeBundle(st.Bundle(c.cfg.TrustDomain)))
	cms := c.client.CoreV1().ConfigMaps(c.cfg.Namespace)
	cm, err := cms.Get(ctx, c.cfg.ConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		cm = &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: c.cfg.ConfigMap, Namespace: c.cfg.Namespace},
			Data:       map[string]string{spiffe.BundleKey: pem, "trust-domain": c.cfg.TrustDomain.Name()},
		}
		if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create bundle configmap %s/%s: %w", c.cfg.Namespace, c.cfg.ConfigMap, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("get bundle configmap %s/%s: %w", c.cfg.Namespace, c.cfg.ConfigMap, err)
	}
	if cm.Data[spiffe.BundleKey] == pem && cm.Data["trust-domain"] == c.cfg.TrustDomain.Name() {
		return nil
	}
	cm.Data = map[string]string{spiffe.BundleKey: pem, "trust-domain": c.cfg.TrustDomain.Name()}
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update bundle configmap %s/%s: %w", c.cfg.Namespace, c.cfg.ConfigMap, err)
	}
	return nil
}

func (c *CA) setState(st spiffe.State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state.Active == nil || st.Active == nil || !c.state.Active.Cert.Equal(st.Active.Cert) {
		c.serving = nil // re-issue the serving certificate from the new CA
	}
	c.state = st
}

// State is the CA state this replica last read.
func (c *CA) State() spiffe.State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// load re-reads the CA Secret (on replicas that are not the leader).
func (c *CA) load(ctx context.Context) error {
	sec, err := c.client.CoreV1().Secrets(c.cfg.Namespace).Get(ctx, c.cfg.Secret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil // the leader creates it
	}
	if err != nil {
		return fmt.Errorf("get CA secret %s/%s: %w", c.cfg.Namespace, c.cfg.Secret, err)
	}
	st, err := spiffe.DecodeState(sec.Data)
	if err != nil {
		return fmt.Errorf("CA secret %s/%s: %w", c.cfg.Namespace, c.cfg.Secret, err)
	}
	c.setState(st)
	return nil
}

// servingCertificate is the signing endpoint's certificate: an SVID for
// ServerID from the active CA, re-issued at half its life.
func (c *CA) servingCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if s := c.serving; s != nil {
		leaf := s.Certificates[0]
		if now.Before(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)) {
			return tlsCertificate(s), nil
		}
	}
	if c.state.Active == nil {
		return nil, errors.New("the CA is not ready")
	}
	key, csr, err := spiffe.NewCSR(spiffe.CAServerID(c.cfg.TrustDomain))
	if err != nil {
		return nil, err
	}
	chain, err := c.state.Active.SignCSR(csr, spiffe.CAServerID(c.cfg.TrustDomain), now, c.cfg.Policy.MaxSVIDTTL)
	if err != nil {
		return nil, err
	}
	s, err := spiffe.NewSVID(chain, key)
	if err != nil {
		return nil, err
	}
	c.serving = s
	return tlsCertificate(s), nil
}

func tlsCertificate(s *x509svid.SVID) *tls.Certificate {
	cert := &tls.Certificate{PrivateKey: s.PrivateKey, Leaf: s.Certificates[0]}
	for _, c := range s.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert
}

// serve runs the signing endpoint until ctx ends.
func (c *CA) serve(ctx context.Context) error {
	signer := &spiffe.Signer{
		Log:         c.log,
		TrustDomain: c.cfg.TrustDomain,
		TTL:         c.cfg.Policy.MaxSVIDTTL,
		State:       c.State,
		Agents:      kubeAgents{client: c.client, namespace: c.cfg.Namespace, serviceAccount: c.cfg.AgentServiceAccount, audience: c.cfg.Audience},
		Placement:   kubePlacement{client: c.client},
		Metrics:     c.metrics,
		Now:         c.now,
	}
	srv := &http.Server{
		Addr:              c.cfg.Addr,
		Handler:           signer,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: c.servingCertificate},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		MaxHeaderBytes:    16 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	// Open the port only once there is a CA to sign with: until then the
	// agents' connections are refused and they try again.
	for c.State().Active == nil {
		if err := c.load(ctx); err != nil {
			c.log.Error("CA load", "error", err)
		}
		if c.State().Active != nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	ln, err := net.Listen("tcp", c.cfg.Addr)
	if err != nil {
		return fmt.Errorf("CA listen on %s: %w", c.cfg.Addr, err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // re-reads the Secret, so replicas that are not the leader follow rotations
		defer wg.Done()
		t := time.NewTicker(c.cfg.Interval)
		defer t.Stop()
		for {
			if err := c.load(ctx); err != nil {
				c.log.Error("CA load", "error", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	c.log.Info("SPIFFE CA serving", "addr", ln.Addr().String(), "trust_domain", c.cfg.TrustDomain.String())
	err = srv.ServeTLS(ln, "", "")
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("CA serve: %w", err)
}

// kubeAgents authenticates node agents by their pod-bound service-account
// tokens: the API server reviews the token (audience, service account) and
// names the pod it is bound to; the pod, read back from the API server, names
// the node.
type kubeAgents struct {
	client         kubernetes.Interface
	namespace      string
	serviceAccount string
	audience       string
}

func (k kubeAgents) AgentNode(ctx context.Context, token string) (string, error) {
	tr, err := k.client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{k.audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token review: %w", err)
	}
	if !tr.Status.Authenticated {
		return "", fmt.Errorf("%w: token not authenticated: %s", spiffe.ErrUnauthenticated, tr.Status.Error)
	}
	if !slices.Contains(tr.Status.Audiences, k.audience) {
		return "", fmt.Errorf("%w: token audiences %v lack %q", spiffe.ErrUnauthenticated, tr.Status.Audiences, k.audience)
	}
	want := "system:serviceaccount:" + k.namespace + ":" + k.serviceAccount
	if tr.Status.User.Username != want {
		return "", fmt.Errorf("%w: %s is not %s", spiffe.ErrUnauthenticated, tr.Status.User.Username, want)
	}
	extra := tr.Status.User.Extra
	podName, podUID := first(extra[extraPodName]), first(extra[extraPodUID])
	if podName == "" || podUID == "" {
		return "", fmt.Errorf("%w: the token is not bound to a pod", spiffe.ErrUnauthenticated)
	}
	pod, err := k.client.CoreV1().Pods(k.namespace).Get(ctx, podName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("%w: the token's pod %s/%s is gone", spiffe.ErrUnauthenticated, k.namespace, podName)
	}
	if err != nil {
		return "", fmt.Errorf("get agent pod %s/%s: %w", k.namespace, podName, err)
	}
	switch {
	case string(pod.UID) != podUID:
		return "", fmt.Errorf("%w: the token's pod %s/%s was replaced", spiffe.ErrUnauthenticated, k.namespace, podName)
	case pod.Spec.ServiceAccountName != k.serviceAccount:
		return "", fmt.Errorf("%w: pod %s/%s does not run as %s", spiffe.ErrUnauthenticated, k.namespace, podName, k.serviceAccount)
	case pod.Spec.NodeName == "":
		return "", fmt.Errorf("%w: pod %s/%s is not bound to a node", spiffe.ErrUnauthenticated, k.namespace, podName)
	}
	if n := first(extra[extraNodeName]); n != "" && n != pod.Spec.NodeName {
		return "", fmt.Errorf("%w: the token names node %s, its pod runs on %s", spiffe.ErrUnauthenticated, n, pod.Spec.NodeName)
	}
	return pod.Spec.NodeName, nil
}

func first(v authenticationv1.ExtraValue) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// kubePlacement asks the API server where pods run.
type kubePlacement struct{ client kubernetes.Interface }

func (k kubePlacement) HasPod(ctx context.Context, node, namespace, serviceAccount string) (bool, error) {
	pods, err := k.client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String(),
	})
	if err != nil {
		return false, fmt.Errorf("list pods of %s on %s: %w", namespace, node, err)
	}
	for _, p := range pods.Items {
		sa := p.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		if p.Spec.NodeName == node && sa == serviceAccount && !p.Spec.HostNetwork && p.DeletionTimestamp == nil &&
			(p.Status.Phase == corev1.PodPending || p.Status.Phase == corev1.PodRunning) {
			return true, nil
		}
	}
	return false, nil
}
