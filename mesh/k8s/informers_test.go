package k8s

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
)

// TestInformersSyncAfterHandlers checks the shared informers' contract:
// Synced closes only in WaitForSync, and only after every registered
// handler has been handed its informer's initial list.
func TestInformersSyncAfterHandlers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fake.NewClientset(
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "a"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "b"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}},
	)
	inf := NewInformers(client, dynamicfake.NewSimpleDynamicClient(runtime.NewScheme()))
	var nodes, services atomic.Int32
	count := func(n *atomic.Int32) cache.ResourceEventHandlerFuncs {
		return cache.ResourceEventHandlerFuncs{AddFunc: func(any) {
			time.Sleep(10 * time.Millisecond) // a slow handler still counts
			n.Add(1)
		}}
	}
	if err := inf.Watch(inf.Typed.Core().V1().Nodes().Informer(), count(&nodes)); err != nil {
		t.Fatal(err)
	}
	if err := inf.Watch(inf.Typed.Core().V1().Services().Informer(), count(&services)); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer func() {
		stop()
		inf.Shutdown()
	}()
	inf.Start(runCtx)
	select {
	case <-inf.Synced():
		t.Fatal("Synced closed before WaitForSync")
	default:
	}
	if !inf.WaitForSync(ctx) {
		t.Fatal("WaitForSync: not synced")
	}
	select {
	case <-inf.Synced():
	default:
		t.Fatal("Synced not closed after WaitForSync")
	}
	if n, s := nodes.Load(), services.Load(); n != 2 || s != 1 {
		t.Errorf("handlers saw %d nodes, %d services at sync; want 2, 1", n, s)
	}
}
