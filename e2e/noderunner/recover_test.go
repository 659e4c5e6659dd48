package noderunner

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/membrane-mesh/membrane/e2e/noderunner/runtime"
)

// TestRestoreDeadContainers: a pod adopted whose containers did not survive
// keeps its sandbox, start time and counts; a container recorded as running
// is restarted per the pod's policy with an unknown exit status, one that
// had finished stays finished.
func TestRestoreDeadContainers(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		policy      corev1.RestartPolicy
		wantWaiting bool
		wantPhase   corev1.PodPhase
	}{
		// The phase of a pod waiting to restart a container is not checked.
		{corev1.RestartPolicyAlways, true, ""},
		{corev1.RestartPolicyOnFailure, true, ""},
		{corev1.RestartPolicyNever, false, corev1.PodFailed},
	} {
		t.Run(string(tc.policy), func(t *testing.T) {
			pod := &corev1.Pod{Spec: corev1.PodSpec{
				RestartPolicy:  tc.policy,
				InitContainers: []corev1.Container{{Name: "init"}},
				Containers:     []corev1.Container{{Name: "app"}, {Name: "done"}},
			}}
			pod.UID, pod.Namespace, pod.Name = "uid-1", "ns", "p"
			rec := podRecord{
				UID: "uid-1", Namespace: "ns", Name: "p", StartTime: start,
				Sandbox: &sandbox{Netns: "/run/netns/uid-1", IP: netip.MustParseAddr("10.0.0.7")},
				Inits:   []containerRecord{{Name: "init", Instance: 1, Succeeded: true, LastTerm: &corev1.ContainerStateTerminated{Reason: "Completed"}}},
				Containers: []containerRecord{
					{Name: "app", Instance: 3, Restarts: 2, StartedAt: start, Ready: true, Started: true, Process: &runtime.Process{PID: 42, StartTime: 7}},
					{Name: "done", Instance: 1, StartedAt: start, LastTerm: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}},
				},
			}
			m := &Manager{log: slog.New(slog.NewTextHandler(io.Discard, nil)), cfg: Config{NodeIP: "192.168.0.2", StateDir: t.TempDir()}}
			w := m.newWorker(pod)
			w.restore(pod, adoption{Record: rec, Alive: map[string]bool{"init": false, "app": false, "done": false}})

			st := w.podStatus(pod)
			if st.PodIP != "10.0.0.7" || !st.StartTime.Time.Equal(start) || (tc.wantPhase != "" && st.Phase != tc.wantPhase) {
				t.Errorf("pod ip %s start %v phase %s, want 10.0.0.7 %v %s", st.PodIP, st.StartTime, st.Phase, start, tc.wantPhase)
			}
			if len(st.InitContainerStatuses) != 1 || st.InitContainerStatuses[0].State.Terminated == nil {
				t.Errorf("init container: %+v", st.InitContainerStatuses)
			}
			app, done := st.ContainerStatuses[0], st.ContainerStatuses[1]
			term := app.LastTerminationState.Terminated
			if tc.wantWaiting {
				if app.State.Waiting == nil || app.State.Waiting.Reason != "CrashLoopBackOff" {
					t.Errorf("app state %+v, want waiting to restart", app.State)
				}
			} else {
				term = app.State.Terminated
			}
			if term == nil || term.Reason != "ContainerStatusUnknown" || term.ExitCode != 137 || term.ContainerID != "membrane://app-3" || !term.StartedAt.Time.Equal(start) {
				t.Errorf("app ended %+v, want ContainerStatusUnknown (137) of membrane://app-3", term)
			}
			if app.RestartCount != 2 || app.Ready {
				t.Errorf("app restarts %d ready %t, want 2 false", app.RestartCount, app.Ready)
			}
			if w.containers[0].instance != 3 || w.containers[0].run != nil {
				t.Errorf("app instance %d run %v", w.containers[0].instance, w.containers[0].run)
			}
			if done.State.Terminated == nil || done.State.Terminated.Reason != "Completed" {
				t.Errorf("finished container %+v, want it to stay terminated", done.State)
			}
		})
	}
}
