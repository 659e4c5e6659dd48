package localcluster

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// agentObjects is an agent DaemonSet on two nodes whose pod on n1 is ready
// and whose pod on n2 has a container that exited with code 1 after
// restarts restarts.
func agentObjects(restarts int32) (*appsv1.DaemonSet, []corev1.Pod) {
	sel := map[string]string{"k8s-app": agentDaemonSet}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: agentDaemonSet, Namespace: chartNamespace, Generation: 1},
		Spec:       appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: sel}},
		Status:     appsv1.DaemonSetStatus{ObservedGeneration: 1, DesiredNumberScheduled: 2, UpdatedNumberScheduled: 2, NumberAvailable: 1},
	}
	pod := func(name, node string, ready bool, cs corev1.ContainerStatus) corev1.Pod {
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		cs.Name, cs.Ready = agentContainer, ready
		return corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: chartNamespace, Labels: sel},
			Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: agentContainer}}},
			Status: corev1.PodStatus{
				Phase:             corev1.PodRunning,
				Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: status}},
				ContainerStatuses: []corev1.ContainerStatus{cs},
			},
		}
	}
	return ds, []corev1.Pod{
		pod("membrane-agent-a", "n1", true, corev1.ContainerStatus{State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}),
		pod("membrane-agent-b", "n2", false, corev1.ContainerStatus{
			RestartCount:         restarts,
			State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error"}},
		}),
	}
}

// A container that keeps exiting fails the wait at once, naming it, with
// its log kept in the log dir; the ready pod's log is not kept.
func TestWaitAvailableFailsOnACrashLoop(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: writes below " + DefaultStateRoot)
	}
	ds, pods := agentObjects(crashRestarts)
	c := fake.NewClientset(ds, &pods[0], &pods[1])
	s := &State{Name: "unit-w-" + strconv.Itoa(os.Getpid()), Nodes: []NodeState{{Name: "n1"}, {Name: "n2"}}}
	l := s.Layout()
	if err := os.MkdirAll(l.LogDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(l.StateDir()) })

	start := time.Now()
	err := waitAvailable(t.Context(), c, s, workload{"daemonset", chartNamespace, agentDaemonSet})
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the wait took %s: it did not fail on the crash loop", took)
	}
	var ce *ComponentError
	if !errors.As(err, &ce) || ce.Component != agentDaemonSet+"/n2" || ce.Log != l.PodLog(agentDaemonSet+"/n2") {
		t.Fatalf("waitAvailable = %v, want the ComponentError of %s/n2 with its log", err, agentDaemonSet)
	}
	msg := err.Error()
	for _, want := range []string{
		"wait for daemonset kube-system/membrane-agent: membrane-agent/n2 exited with code 1 (2 restarts); see " + ce.Log,
		`pod kube-system/membrane-agent-b on "n2": Running`,
		"agent waiting: CrashLoopBackOff",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not say %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "membrane-agent-a") {
		t.Errorf("error names the ready pod:\n%s", msg)
	}
	if raw, err := os.ReadFile(ce.Log); err != nil || len(raw) == 0 {
		t.Errorf("the failing container's log %s: %v, %d bytes", ce.Log, err, len(raw))
	}
	if _, err := os.Stat(l.PodLog(agentDaemonSet + "/n1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the ready pod's log was kept: %v", err)
	}
}

// One restart is not a crash loop: the wait goes on.
func TestCrashingNeedsRepeatedRestarts(t *testing.T) {
	ds, pods := agentObjects(crashRestarts - 1)
	c := fake.NewClientset(ds, &pods[0], &pods[1])
	sel := metav1.FormatLabelSelector(ds.Spec.Selector)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := crashing(ctx, c, workload{"daemonset", chartNamespace, agentDaemonSet}, sel); err != nil {
		t.Errorf("crashing after %d restart = %v, want nil", crashRestarts-1, err)
	}
}
