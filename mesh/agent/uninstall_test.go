package agent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func uninstallConfig() UninstallConfig {
	return UninstallConfig{Namespace: "kube-system", AgentDaemonSet: "membrane-agent", AgentSelector: "k8s-app=membrane-agent",
		CleanupDaemonSet: "membrane-cleanup", Poll: 10 * time.Millisecond}
}

func daemonSet(name string, desired, ready int32) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-system"},
		Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: desired, NumberReady: ready}}
}

func TestAwaitUninstallCleanup(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	agentPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "membrane-agent-x", Namespace: "kube-system", Labels: map[string]string{"k8s-app": "membrane-agent"}}}

	t.Run("deletes the agents and waits for every node", func(t *testing.T) {
		client := fake.NewClientset(daemonSet("membrane-agent", 2, 2), daemonSet("membrane-cleanup", 2, 1), agentPod)
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- AwaitUninstallCleanup(ctx, log, client, uninstallConfig()) }()
		time.Sleep(100 * time.Millisecond)
		select {
		case err := <-done:
			t.Fatalf("returned while an agent pod was left: %v", err)
		default:
		}
		if err := client.CoreV1().Pods("kube-system").Delete(ctx, agentPod.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		select {
		case err := <-done:
			t.Fatalf("returned with one node of two cleaned: %v", err)
		default:
		}
		if _, err := client.AppsV1().DaemonSets("kube-system").UpdateStatus(ctx, daemonSet("membrane-cleanup", 2, 2), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if _, err := client.AppsV1().DaemonSets("kube-system").Get(ctx, "membrane-agent", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("agent daemonset: %v, want it deleted", err)
		}
	})

	t.Run("a node never cleaned fails with the count", func(t *testing.T) {
		client := fake.NewClientset(daemonSet("membrane-cleanup", 3, 2))
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		err := AwaitUninstallCleanup(ctx, log, client, uninstallConfig())
		if err == nil || !strings.Contains(err.Error(), "2 of 3 nodes cleaned") || !strings.Contains(err.Error(), "membrane-cleanup") {
			t.Errorf("got %v, want the deadline naming membrane-cleanup and 2 of 3 nodes cleaned", err)
		}
	})

	t.Run("no cleanup daemonset", func(t *testing.T) {
		err := AwaitUninstallCleanup(t.Context(), log, fake.NewClientset(), uninstallConfig())
		if err == nil || !strings.Contains(err.Error(), "kube-system/membrane-cleanup") {
			t.Errorf("got %v, want an error naming kube-system/membrane-cleanup", err)
		}
	})
}

func TestAwaitStopped(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	err = AwaitStopped(ctx, addr, 20*time.Millisecond, 10*time.Millisecond)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "deadline exceeded") || strings.Contains(err.Error(), "refused") {
		t.Errorf("while served: %v, want the deadline, the address never refused", err)
	}
	ln.Close()
	ctx, cancel = context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := AwaitStopped(ctx, addr, 50*time.Millisecond, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("returned after %s, before the address was closed for 50ms", d)
	}
}
