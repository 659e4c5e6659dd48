package noderunner

import (
	"context"
	"fmt"
	"runtime"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

const (
	leaseDuration = 40 * time.Second
	leaseRenew    = 10 * time.Second
	statusReport  = time.Minute
)

// registerNode creates the Node (or adopts the existing one after a restart)
// and sets its status; it returns the Node as stored.
func registerNode(ctx context.Context, c kubernetes.Interface, cfg Config) (*corev1.Node, error) {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: cfg.NodeName,
			Labels: map[string]string{
				"kubernetes.io/hostname":  cfg.NodeName,
				"kubernetes.io/os":        runtime.GOOS,
				"kubernetes.io/arch":      runtime.GOARCH,
				"beta.kubernetes.io/os":   runtime.GOOS,
				"beta.kubernetes.io/arch": runtime.GOARCH,
			},
		},
	}
	stored, err := c.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		stored, err = c.CoreV1().Nodes().Get(ctx, cfg.NodeName, metav1.GetOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("register node %s: %w", cfg.NodeName, err)
	}
	// Others write the fresh Node too (the PodCIDR allocator, an agent
	// publishing its key): on a conflict, read it again and retry.
	var out *corev1.Node
	err = retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		var err error
		if out, err = updateNodeStatus(ctx, c, cfg, stored); apierrors.IsConflict(err) {
			if fresh, gerr := c.CoreV1().Nodes().Get(ctx, cfg.NodeName, metav1.GetOptions{}); gerr == nil {
				stored = fresh
			}
		}
		return err
	})
	return out, err
}

// updateNodeStatus writes the node's addresses, capacity and conditions.
func updateNodeStatus(ctx context.Context, c kubernetes.Interface, cfg Config, node *corev1.Node) (*corev1.Node, error) {
	now := metav1.Now()
	n := node.DeepCopy()
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("8"),
		corev1.ResourceMemory:           resource.MustParse("16Gi"),
		corev1.ResourcePods:             resource.MustParse("110"),
		corev1.ResourceEphemeralStorage: resource.MustParse("20Gi"),
	}
	n.Status.Capacity = capacity
	n.Status.Allocatable = capacity
	n.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: cfg.NodeIP},
		{Type: corev1.NodeHostName, Address: cfg.NodeName},
	}
	n.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(cfg.KubeletPort)
	n.Status.NodeInfo = corev1.NodeSystemInfo{
		KubeletVersion:          cfg.KubeletVersion,
		KubeProxyVersion:        "",
		ContainerRuntimeVersion: "membrane-dev://" + cfg.KubeletVersion,
		OperatingSystem:         runtime.GOOS,
		Architecture:            runtime.GOARCH,
		OSImage:                 "Membrane local node",
		KernelVersion:           kernelVersion(),
	}
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		c := corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
		for _, old := range node.Status.Conditions {
			if old.Type == t && old.Status == s {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		return c
	}
	n.Status.Conditions = []corev1.NodeCondition{
		cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "node runner has sufficient memory available"),
		cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "node runner has no disk pressure"),
		cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "node runner has sufficient PID available"),
		cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "node runner is posting ready status"),
	}
	out, err := c.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("update node %s status: %w", cfg.NodeName, err)
	}
	return out, nil
}

// renewLease keeps the node's Lease in kube-node-lease current.
func renewLease(ctx context.Context, c kubernetes.Interface, node *corev1.Node) error {
	leases := c.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	lease, err := leases.Get(ctx, node.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{
				Name: node.Name, Namespace: corev1.NamespaceNodeLease,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}},
			},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(node.Name),
				LeaseDurationSeconds: ptr.To(int32(leaseDuration.Seconds())),
				RenewTime:            &now,
			},
		}
		_, err = leases.Create(ctx, lease, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create lease %s: %w", node.Name, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("get lease %s: %w", node.Name, err)
	}
	lease.Spec.RenewTime = &now
	lease.Spec.HolderIdentity = ptr.To(node.Name)
	if _, err := leases.Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("renew lease %s: %w", node.Name, err)
	}
	return nil
}
