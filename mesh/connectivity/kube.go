package connectivity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"

	"github.com/membrane-mesh/membrane/mesh/flow"
)

// Kube is the Cluster of a real API server.
type Kube struct {
	Client    kubernetes.Interface
	Dynamic   dynamic.Interface
	Config    *rest.Config
	Namespace string
	// FlowSource reads a node agent's flows (the observe API); nil: none.
	FlowSource func(ctx context.Context, node string, req flow.Request) ([]flow.Flow, error)
	// TunnelSource reads a node's WireGuard counters of a peer (the
	// agent's encryption status); nil: none.
	TunnelSource func(ctx context.Context, node, peer string) (Transfer, error)
}

// NewKube is the Cluster behind cfg, for the test's namespace ns.
func NewKube(cfg *rest.Config, ns string) (*Kube, error) {
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	d, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	return &Kube{Client: c, Dynamic: d, Config: cfg, Namespace: ns}, nil
}

// policyResource is the resource of a policy kind the test applies.
func policyResource(kind string) schema.GroupVersionResource {
	if kind == "MembraneNetworkPolicy" {
		return schema.GroupVersionResource{Group: "membrane.io", Version: "v1alpha1", Resource: "membranenetworkpolicies"}
	}
	return schema.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "networkpolicies"}
}

// Claim makes the namespace, after removing one a previous run left.
func (k *Kube) Claim(ctx context.Context) error {
	ns, err := k.Client.CoreV1().Namespaces().Get(ctx, k.Namespace, metav1.GetOptions{})
	switch {
	case err == nil && ns.Labels["app.kubernetes.io/managed-by"] != ManagedBy:
		return fmt.Errorf("namespace %s exists and is not the connectivity test's (no label app.kubernetes.io/managed-by=%s): choose another with --namespace", k.Namespace, ManagedBy)
	case err == nil:
		if err := k.Teardown(ctx); err != nil {
			return fmt.Errorf("remove the namespace a previous run left: %w", err)
		}
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("get namespace %s: %w", k.Namespace, err)
	}
	if _, err := k.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: k.Namespace, Labels: labels(nil)}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %s: %w", k.Namespace, err)
	}
	return nil
}

// Setup makes the Service and the pods and waits until every pod is
// ready.
func (k *Kube) Setup(ctx context.Context, w Workload) (Addresses, error) {
	for i := range w.Services {
		if _, err := k.Client.CoreV1().Services(k.Namespace).Create(ctx, &w.Services[i], metav1.CreateOptions{}); err != nil {
			return Addresses{}, fmt.Errorf("create Service %s: %w", w.Services[i].Name, err)
		}
	}
	for i := range w.Pods {
		if _, err := k.Client.CoreV1().Pods(k.Namespace).Create(ctx, &w.Pods[i], metav1.CreateOptions{}); err != nil {
			return Addresses{}, fmt.Errorf("create pod %s: %w", w.Pods[i].Name, err)
		}
	}
	a := Addresses{Pods: map[string]string{}, Nodes: map[string]string{}}
	var notReady []string
	for {
		list, err := k.Client.CoreV1().Pods(k.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return Addresses{}, fmt.Errorf("list pods: %w", err)
		}
		notReady = notReady[:0]
		for _, p := range list.Items {
			a.Pods[p.Name], a.Nodes[p.Name] = p.Status.PodIP, p.Spec.NodeName
			if !podReady(&p) {
				notReady = append(notReady, fmt.Sprintf("%s on %s: %s", p.Name, p.Spec.NodeName, podState(&p)))
			}
		}
		if len(notReady) == 0 && len(list.Items) == len(w.Pods) {
			break
		}
		select {
		case <-ctx.Done():
			return Addresses{}, fmt.Errorf("pods not ready: %s", strings.Join(notReady, "; "))
		case <-time.After(poll):
		}
	}
	svc, err := k.Client.CoreV1().Services(k.Namespace).Get(ctx, EchoService, metav1.GetOptions{})
	if err != nil {
		return Addresses{}, fmt.Errorf("get Service %s: %w", EchoService, err)
	}
	a.ClusterIP = svc.Spec.ClusterIP
	return a, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podState is why a pod is not ready, in brief.
func podState(p *corev1.Pod) string {
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			return fmt.Sprintf("%s %s: %s", cs.Name, w.Reason, w.Message)
		}
		if t := cs.State.Terminated; t != nil {
			return fmt.Sprintf("%s terminated: %s (exit %d)", cs.Name, t.Reason, t.ExitCode)
		}
	}
	return string(p.Status.Phase)
}

// Apply creates p, replacing one of its name.
func (k *Kube) Apply(ctx context.Context, p Policy) error {
	r := k.Dynamic.Resource(policyResource(p.Kind)).Namespace(k.Namespace)
	if err := r.Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	_, err := r.Create(ctx, p.Object, metav1.CreateOptions{})
	return err
}

// Delete removes p.
func (k *Kube) Delete(ctx context.Context, p Policy) error {
	err := k.Dynamic.Resource(policyResource(p.Kind)).Namespace(k.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// Exec runs cmd in pod's first container, as kubectl exec does
// (WebSocket, falling back to SPDY).
func (k *Kube) Exec(ctx context.Context, pod string, cmd []string) (string, error) {
	req := k.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(k.Namespace).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(k.Config, "GET", req.URL().String())
	if err != nil {
		return "", fmt.Errorf("exec in %s: %w", pod, err)
	}
	spdy, err := remotecommand.NewSPDYExecutor(k.Config, "POST", req.URL())
	if err != nil {
		return "", fmt.Errorf("exec in %s: %w", pod, err)
	}
	ex, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return "", fmt.Errorf("exec in %s: %w", pod, err)
	}
	var stdout, stderr bytes.Buffer
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr})
	var ee utilexec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		return stdout.String(), &ExitError{Code: ee.ExitStatus(), Stderr: stderr.String()}
	}
	if err != nil {
		return stdout.String(), fmt.Errorf("exec in %s: %w", pod, err)
	}
	return stdout.String(), nil
}

// Flows reads node's flows through FlowSource.
func (k *Kube) Flows(ctx context.Context, node string, req flow.Request) ([]flow.Flow, error) {
	if k.FlowSource == nil {
		return nil, ErrNoFlows
	}
	return k.FlowSource(ctx, node, req)
}

// Tunnel reads node's counters of peer through TunnelSource.
func (k *Kube) Tunnel(ctx context.Context, node, peer string) (Transfer, error) {
	if k.TunnelSource == nil {
		return Transfer{}, ErrNoTunnel
	}
	return k.TunnelSource(ctx, node, peer)
}

// Teardown deletes the namespace and waits until it is gone.
func (k *Kube) Teardown(ctx context.Context) error {
	err := k.Client.CoreV1().Namespaces().Delete(ctx, k.Namespace, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete namespace %s: %w", k.Namespace, err)
	}
	for {
		_, err := k.Client.CoreV1().Namespaces().Get(ctx, k.Namespace, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("namespace %s still there: %w", k.Namespace, ctx.Err())
		case <-time.After(poll):
		}
	}
}
