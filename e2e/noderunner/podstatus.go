package noderunner

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// podStatus computes the status the node runner reports for the pod.
func (w *podWorker) podStatus(pod *corev1.Pod) corev1.PodStatus {
	st := corev1.PodStatus{
		HostIP:   w.m.cfg.NodeIP,
		HostIPs:  []corev1.HostIP{{IP: w.m.cfg.NodeIP}},
		QOSClass: pod.Status.QOSClass,
	}
	if !w.startTime.IsZero() {
		st.StartTime = &metav1.Time{Time: w.startTime}
	}
	if w.sb != nil {
		ip := w.sb.IP.String()
		st.PodIP, st.PodIPs = ip, []corev1.PodIP{{IP: ip}}
	}
	initDone := true
	for _, c := range w.inits {
		st.InitContainerStatuses = append(st.InitContainerStatuses, c.status())
		if !c.succeeded {
			initDone = false
		}
	}
	running, succeeded, failed, ready := 0, 0, 0, 0
	for _, c := range w.containers {
		cs := c.status()
		if !initDone {
			cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
		switch {
		case c.run != nil:
			running++
		case c.lastTerm != nil && c.waiting == nil:
			if c.lastTerm.ExitCode == 0 {
				succeeded++
			} else {
				failed++
			}
		}
		if c.ready {
			ready++
		}
	}
	n := len(w.containers)
	switch {
	case w.sb == nil || !initDone:
		st.Phase = corev1.PodPending
		if initFailed(pod, w.inits) {
			st.Phase = corev1.PodFailed
		}
	case running > 0:
		st.Phase = corev1.PodRunning
	case succeeded == n:
		st.Phase = corev1.PodSucceeded
	case succeeded+failed == n && pod.Spec.RestartPolicy != corev1.RestartPolicyAlways:
		st.Phase = corev1.PodFailed
		if pod.Spec.RestartPolicy == corev1.RestartPolicyOnFailure && failed > 0 {
			st.Phase = corev1.PodRunning
		}
	case n > 0 && succeeded+failed == n:
		st.Phase = corev1.PodRunning
	default:
		st.Phase = corev1.PodPending
	}
	if w.setupErr != "" {
		st.Message = w.setupErr
		st.Reason = "SetupFailed"
	}
	cond := func(t corev1.PodConditionType, ok bool, reason string) corev1.PodCondition {
		c := corev1.PodCondition{Type: t, Status: corev1.ConditionFalse, Reason: reason}
		if ok {
			c.Status, c.Reason = corev1.ConditionTrue, ""
		}
		c.LastTransitionTime = transitionTime(pod.Status.Conditions, t, c.Status)
		return c
	}
	allReady := n > 0 && ready == n
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodReadyToStartContainers, w.sb != nil, ""),
		cond(corev1.PodInitialized, initDone, "ContainersNotInitialized"),
		cond(corev1.ContainersReady, allReady, "ContainersNotReady"),
		cond(corev1.PodReady, allReady, "ContainersNotReady"),
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled {
			st.Conditions = append(st.Conditions, c)
		}
	}
	return st
}

func initFailed(pod *corev1.Pod, inits []*container) bool {
	if pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
		return false
	}
	for _, c := range inits {
		if c.lastTerm != nil && c.lastTerm.ExitCode != 0 {
			return true
		}
	}
	return false
}

// transitionTime keeps a condition's transition time while its status holds.
func transitionTime(conds []corev1.PodCondition, t corev1.PodConditionType, s corev1.ConditionStatus) metav1.Time {
	for _, c := range conds {
		if c.Type == t && c.Status == s && !c.LastTransitionTime.IsZero() {
			return c.LastTransitionTime
		}
	}
	return metav1.Time{Time: time.Now().Truncate(time.Second)}
}

// writeStatus sends the pod's status when it changed.
func (w *podWorker) writeStatus(ctx context.Context, pod *corev1.Pod) {
	st := w.podStatus(pod)
	if w.lastStatus != nil && equality.Semantic.DeepEqual(*w.lastStatus, st) {
		return
	}
	p := pod.DeepCopy()
	p.Status = st
	out, err := w.m.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if err != nil {
		w.log.Debug("update pod status", "error", err)
		return // retried on the next sync with the newer pod
	}
	w.lastStatus = &st
	w.update(out)
}
