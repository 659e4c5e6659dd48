package localcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// crashRestarts is how often a container of a workload `up` waits for may
// restart before `up` gives up: it keeps failing, as in a crash loop.
const crashRestarts = 2

// workloadTimeout bounds the wait for one workload.
const workloadTimeout = 90 * time.Second

// workload is a DaemonSet or a Deployment `up` waits for.
type workload struct {
	kind      string // "daemonset" or "deployment"
	namespace string
	name      string
}

func (w workload) String() string { return w.kind + " " + w.namespace + "/" + w.name }

// waitAvailable waits until w has every pod available: for a DaemonSet a
// current one on every node. It fails early when a container of w's pods
// keeps exiting. A failure names the pod that is not ready, keeps the logs
// of such pods in the log dir and quotes the one to blame (ComponentError).
func waitAvailable(ctx context.Context, c kubernetes.Interface, s *State, w workload) error {
	what := w.String() + " available"
	if w.kind == "daemonset" {
		what += " on every node"
	}
	var selector string
	err := poll(ctx, workloadTimeout, what, func() (bool, error) {
		if err := s.CheckProcesses(); err != nil {
			return false, err
		}
		done, sel, err := available(ctx, c, len(s.Nodes), w)
		if err != nil {
			return false, nil // not there yet, or the API server is busy
		}
		if done {
			return true, nil
		}
		selector = sel
		return false, crashing(ctx, c, w, sel)
	})
	var ce *ComponentError
	if err == nil || selector == "" || errors.As(err, &ce) && ce.Log != "" {
		return err
	}
	return blamePod(ctx, c, s, w, selector, err)
}

// available reports whether w is available, and its pods' label selector.
func available(ctx context.Context, c kubernetes.Interface, nodes int, w workload) (bool, string, error) {
	switch w.kind {
	case "daemonset":
		d, err := c.AppsV1().DaemonSets(w.namespace).Get(ctx, w.name, metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		st, n := d.Status, int32(nodes)
		ok := st.ObservedGeneration >= d.Generation && st.DesiredNumberScheduled == n &&
			st.UpdatedNumberScheduled == n && st.NumberAvailable == n
		return ok, metav1.FormatLabelSelector(d.Spec.Selector), nil
	case "deployment":
		d, err := c.AppsV1().Deployments(w.namespace).Get(ctx, w.name, metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		ok := d.Spec.Replicas != nil && d.Status.AvailableReplicas == *d.Spec.Replicas &&
			d.Status.UpdatedReplicas == *d.Spec.Replicas && d.Status.ObservedGeneration >= d.Generation
		return ok, metav1.FormatLabelSelector(d.Spec.Selector), nil
	}
	return false, "", fmt.Errorf("%s: unknown kind", w)
}

// crashing returns a ComponentError (without a log yet) for the first
// container of w's pods that restarted crashRestarts times and is not ready.
func crashing(ctx context.Context, c kubernetes.Interface, w workload, selector string) error {
	pods, err := c.CoreV1().Pods(w.namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil
	}
	for _, p := range pods.Items {
		for _, cs := range p.Status.ContainerStatuses {
			if cs.Ready || cs.RestartCount < crashRestarts {
				continue
			}
			code := int32(0)
			for _, t := range []*corev1.ContainerStateTerminated{cs.State.Terminated, cs.LastTerminationState.Terminated} {
				if t != nil {
					code = t.ExitCode
					break
				}
			}
			comp := podComponent(w, p, cs.Name)
			return &ComponentError{Component: comp, Err: fmt.Errorf("%s exited with code %d (%d restarts)", comp, code, cs.RestartCount)}
		}
	}
	return nil
}

// podComponent names a container of one of w's pods as errors and log files
// do: WORKLOAD/NODE for a DaemonSet, WORKLOAD/POD for a Deployment, and
// /CONTAINER after it when the pod has more than one.
func podComponent(w workload, p corev1.Pod, container string) string {
	name := w.name + "/" + p.Name
	if w.kind == "daemonset" {
		name = w.name + "/" + p.Spec.NodeName
	}
	if len(p.Spec.Containers) > 1 {
		name += "/" + container
	}
	return name
}

// PodLog is the file in the log dir that keeps the log of a container of a
// failed `up`'s workload (see component).
func (l Layout) PodLog(component string) string {
	return filepath.Join(l.LogDir(), strings.ReplaceAll(component, "/", "-")+".log")
}

// blamePod saves the logs of w's containers that are not ready into the log
// dir and returns err as the ComponentError of the one to blame: the one
// err names, else the first one not ready. The error says what state each
// such pod is in.
func blamePod(ctx context.Context, c kubernetes.Interface, s *State, w workload, selector string, err error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	pods, lerr := c.CoreV1().Pods(w.namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if lerr != nil {
		return fmt.Errorf("%w (list the pods of %s: %v)", err, w, lerr)
	}
	var ce *ComponentError
	errors.As(err, &ce)
	var blame *ComponentError
	var b strings.Builder
	for _, p := range pods.Items {
		if podReady(p) {
			continue
		}
		fmt.Fprintf(&b, "\npod %s/%s on %q: %s %s %s", p.Namespace, p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.Reason, p.Status.Message)
		for _, cs := range p.Status.ContainerStatuses {
			switch {
			case cs.State.Waiting != nil:
				fmt.Fprintf(&b, "; %s waiting: %s %s", cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message)
			case cs.State.Terminated != nil:
				fmt.Fprintf(&b, "; %s exited %d: %s", cs.Name, cs.State.Terminated.ExitCode, cs.State.Terminated.Reason)
			case !cs.Ready:
				fmt.Fprintf(&b, "; %s running, not ready", cs.Name)
			}
			if cs.RestartCount > 0 {
				fmt.Fprintf(&b, " (%d restarts)", cs.RestartCount)
			}
			if cs.Ready {
				continue
			}
			comp := podComponent(w, p, cs.Name)
			path := s.Layout().PodLog(comp)
			if serr := savePodLog(ctx, c, p, cs, path); serr != nil {
				fmt.Fprintf(&b, " (%v)", serr)
				continue
			}
			if (ce != nil && ce.Component == comp) || (ce == nil && blame == nil) {
				blame = &ComponentError{Component: comp, Log: path}
			}
		}
	}
	switch {
	case blame == nil:
		return fmt.Errorf("%w%s", err, b.String())
	case ce != nil:
		blame.Err = fmt.Errorf("wait for %s: %w", w, ce.Err)
	default:
		blame.Err = fmt.Errorf("%w (%s is not ready)", err, blame.Component)
	}
	return fmt.Errorf("%w%s", blame, b.String())
}

// maxPodLogBytes bounds a saved pod log.
const maxPodLogBytes = 1 << 20

// savePodLog writes the log of cs's last instance (its previous one when
// the last wrote nothing yet) to path.
func savePodLog(ctx context.Context, c kubernetes.Interface, p corev1.Pod, cs corev1.ContainerStatus, path string) error {
	limit := int64(maxPodLogBytes)
	get := func(previous bool) ([]byte, error) {
		return c.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: cs.Name, Previous: previous, LimitBytes: &limit}).DoRaw(ctx)
	}
	raw, err := get(false)
	if (err != nil || len(raw) == 0) && cs.RestartCount > 0 {
		raw, err = get(true)
	}
	if err != nil {
		return fmt.Errorf("read the log of %s/%s container %s: %w", p.Namespace, p.Name, cs.Name, err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		return fmt.Errorf("keep the log of %s/%s container %s: %w", p.Namespace, p.Name, cs.Name, err)
	}
	return nil
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
