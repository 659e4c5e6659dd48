package noderunner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/membrane-mesh/membrane/e2e/cgroups"
	"github.com/membrane-mesh/membrane/e2e/images"
	"github.com/membrane-mesh/membrane/e2e/noderunner/kubeletapi"
	"github.com/membrane-mesh/membrane/e2e/noderunner/runtime"
)

const syncPeriod = 250 * time.Millisecond

// The first and the longest wait after a failed pod set-up.
const (
	setupBackoff    = time.Second
	setupBackoffMax = 10 * time.Second
)

// podWorker owns one pod: its sandbox, containers and probes. Everything but
// the latest pod object is touched only by its run goroutine.
type podWorker struct {
	m      *Manager
	log    *slog.Logger
	notify chan struct{}

	mu  sync.Mutex
	pod *corev1.Pod // latest from the API; nil once deleted there

	dir        string
	cgroup     string
	sb         *sandbox
	mounts     map[string]string // volume name -> host dir
	roVolumes  map[string]bool   // volumes mounted read-only whatever the pod says
	refreshAt  time.Time         // when the volumes' tokens are due for renewal
	etc        map[string]string // /etc file -> host file
	inits      []*container
	containers []*container
	startTime  time.Time
	lastStatus *corev1.PodStatus
	setupErr   string
	// setupWait is how long after a failed set-up the next waits (doubling
	// to setupBackoffMax), setupAt when it may come: a plugin that keeps
	// failing is not run four times a second. A node without a network
	// configuration yet is looked at on every sync.
	setupWait  time.Duration
	setupAt    time.Time
	done       bool
	lastRecord []byte // as last persisted
}

func (w *podWorker) update(pod *corev1.Pod) {
	w.mu.Lock()
	w.pod = pod
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func (w *podWorker) current() *corev1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod
}

// run syncs the pod until it is gone.
func (w *podWorker) run(ctx context.Context, first *corev1.Pod) {
	t := time.NewTicker(syncPeriod)
	defer t.Stop()
	last := first
	for !w.done && ctx.Err() == nil {
		pod := w.current()
		if pod != nil {
			last = pod
		}
		w.sync(ctx, pod, last)
		if !w.done {
			w.persist()
		}
		select {
		case <-ctx.Done():
			return
		case <-w.notify:
		case <-t.C:
		}
	}
}

// sync moves the pod one step towards its spec; pod is nil once the API
// object is gone, last is the final version seen.
func (w *podWorker) sync(ctx context.Context, pod, last *corev1.Pod) {
	if pod == nil || pod.DeletionTimestamp != nil {
		w.terminate(ctx, pod, last)
		return
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		w.stopAll(0)
		return
	}
	if time.Now().Before(w.setupAt) {
		return
	}
	if err := w.setUp(ctx, pod); err != nil {
		if !errors.Is(err, errNetworkNotReady) {
			w.setupWait = min(max(2*w.setupWait, setupBackoff), setupBackoffMax)
			w.setupAt = time.Now().Add(w.setupWait)
		}
		msg := err.Error()
		if msg != w.setupErr {
			w.log.Error("set up pod", "error", err)
			w.setupErr = msg
			w.warn(ctx, pod, "SetupFailed", msg)
		}
		w.persist()
		w.writeStatus(ctx, pod)
		return
	}
	w.setupErr, w.setupWait = "", 0
	w.refreshVolumes(ctx, pod)
	w.runContainers(ctx, pod)
	// Recorded before it is reported: a runner restarted in between knows
	// at least what the API server was told.
	w.persist()
	w.writeStatus(ctx, pod)
}

// setUp creates the sandbox and volumes once.
func (w *podWorker) setUp(ctx context.Context, pod *corev1.Pod) error {
	if w.sb != nil && w.mounts != nil {
		return nil
	}
	if w.startTime.IsZero() {
		w.startTime = time.Now().Truncate(time.Second)
	}
	if err := checkPodSecurity(pod); err != nil {
		return err
	}
	if w.containers == nil {
		for _, c := range pod.Spec.InitContainers {
			w.inits = append(w.inits, &container{spec: c, init: true, probeState: map[string]*probeState{}})
		}
		for _, c := range pod.Spec.Containers {
			w.containers = append(w.containers, &container{spec: c, probeState: map[string]*probeState{}})
		}
	}
	for _, d := range []string{w.dir, filepath.Join(w.dir, "etc"), w.cgroup} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	if w.sb == nil {
		if pod.Spec.HostNetwork {
			w.sb = &sandbox{IP: netip.MustParseAddr(w.m.cfg.NodeIP)}
		} else {
			sb, err := w.m.net.setUp(ctx, pod)
			if err != nil {
				return err
			}
			w.sb = &sb
		}
	}
	podIP := w.sb.IP.String()
	etc, err := etcFiles(pod, filepath.Join(w.dir, "etc"), podIP, w.m.cfg.ClusterDNS, w.m.cfg.ClusterDomain, w.m.nodeResolv)
	if err != nil {
		return err
	}
	mounts, err := w.m.vols.prepare(ctx, pod, filepath.Join(w.dir, "volumes"), podIP, w.m.cfg.NodeIP)
	if err != nil {
		return err
	}
	w.etc, w.mounts, w.roVolumes, w.refreshAt = etc, mounts.dirs, mounts.readOnly, mounts.refreshAt
	return nil
}

// warn records a Warning event on the pod, as the kubelet reports what
// keeps a pod from starting; a failure to record it is only logged.
func (w *podWorker) warn(ctx context.Context, pod *corev1.Pod, reason, msg string) {
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: pod.Name + ".", Namespace: pod.Namespace},
		InvolvedObject: corev1.ObjectReference{
			Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID,
		},
		Reason: reason, Message: msg, Type: corev1.EventTypeWarning, Count: 1,
		FirstTimestamp: now, LastTimestamp: now,
		Source:              corev1.EventSource{Component: "kubelet", Host: w.m.cfg.NodeName},
		ReportingController: "kubelet", ReportingInstance: w.m.cfg.NodeName,
	}
	if _, err := w.m.client.CoreV1().Events(pod.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		w.log.Warn("record event", "reason", reason, "error", err)
	}
}

// refreshVolumes renews the pod's service-account tokens (and with them the
// other files of its volumes) when they are due; a failure keeps the old
// files and tries again on the next sync.
func (w *podWorker) refreshVolumes(ctx context.Context, pod *corev1.Pod) {
	if w.refreshAt.IsZero() || time.Now().Before(w.refreshAt) {
		return
	}
	mounts, err := w.m.vols.prepare(ctx, pod, filepath.Join(w.dir, "volumes"), w.sb.IP.String(), w.m.cfg.NodeIP)
	if err != nil {
		w.log.Error("refresh volumes", "error", err)
		w.refreshAt = time.Now().Add(10 * time.Second)
		return
	}
	w.refreshAt = mounts.refreshAt
	w.log.Info("volumes refreshed", "next", w.refreshAt)
}

// runContainers starts init containers in order, then the app containers,
// restarts them per the pod's policy and runs their probes.
func (w *podWorker) runContainers(ctx context.Context, pod *corev1.Pod) {
	for _, c := range w.inits {
		w.reap(pod, c)
		if c.succeeded {
			continue
		}
		if c.run == nil {
			w.maybeStart(ctx, pod, c)
		}
		return // init containers run one at a time, to completion
	}
	for _, c := range w.containers {
		w.reap(pod, c)
		if c.run == nil {
			w.maybeStart(ctx, pod, c)
		}
		if c.run != nil {
			w.probe(ctx, pod, c)
		}
	}
}

// reap notices a container that exited and records it.
func (w *podWorker) reap(pod *corev1.Pod, c *container) {
	if c.run == nil {
		return
	}
	select {
	case <-c.run.Done():
	default:
		return
	}
	w.exited(pod, c, c.run.ExitCode(), time.Now())
}

// exited records the end of c's running instance (code < 0: its exit status
// is unknown, as for an adopted container) and schedules its restart per the
// pod's policy.
func (w *podWorker) exited(pod *corev1.Pod, c *container, code int, now time.Time) {
	term := &corev1.ContainerStateTerminated{
		ExitCode: int32(code), Reason: "Completed",
		StartedAt: metav1.NewTime(c.startedAt), FinishedAt: metav1.NewTime(now.Truncate(time.Second)),
		ContainerID: "membrane://" + c.id(),
	}
	switch {
	case code < 0:
		// As the kubelet reports a container it lost track of.
		term.ExitCode, term.Reason = 137, "ContainerStatusUnknown"
		term.Message = "The container exited while the node runner was restarting; its exit status is unknown"
		code = int(term.ExitCode)
	case code != 0:
		term.Reason = "Error"
	}
	c.lastTerm = term
	ranFor := now.Sub(c.startedAt)
	w.setRun(c, nil)
	c.ready, c.started = false, false
	c.probeState = map[string]*probeState{}
	w.log.Info("container exited", "container", c.spec.Name, "exitCode", code, "reason", term.Reason)
	if c.init && code == 0 {
		c.succeeded = true
		return
	}
	if !restarts(pod.Spec.RestartPolicy, code, c.init) {
		return
	}
	delay := c.nextBackoff(ranFor)
	c.nextStart = now.Add(delay)
	c.waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s", delay, c.spec.Name, pod.Name)}
}

func restarts(policy corev1.RestartPolicy, code int, init bool) bool {
	switch policy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return code != 0
	}
	return !init || code != 0
}

// maybeStart starts c unless it finished for good or is backing off.
func (w *podWorker) maybeStart(ctx context.Context, pod *corev1.Pod, c *container) {
	if c.lastTerm != nil && !restarts(pod.Spec.RestartPolicy, int(c.lastTerm.ExitCode), c.init) {
		return
	}
	if time.Now().Before(c.nextStart) {
		return
	}
	if err := w.start(ctx, pod, c); err != nil {
		w.log.Error("start container", "container", c.spec.Name, "error", err)
		delay := c.nextBackoff(0)
		c.nextStart = time.Now().Add(delay)
		return
	}
}

func (w *podWorker) start(ctx context.Context, pod *corev1.Pod, c *container) error {
	img, err := w.m.images.Resolve(c.spec.Image)
	if err != nil {
		c.waiting = &corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: err.Error()}
		return err
	}
	c.imageID = "membrane-image://" + images.Key(c.spec.Image) + "@" + img.Version
	env, err := containerEnv(ctx, pod, &c.spec, img.Env, w.sb.IP.String(), w.m.cfg.NodeIP, w.m)
	if err != nil {
		c.waiting = &corev1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: err.Error()}
		return err
	}
	argv := commandLine(&c.spec, img.Entrypoint, img.Cmd, envMap(env))
	if len(argv) == 0 {
		c.waiting = &corev1.ContainerStateWaiting{Reason: "CreateContainerError", Message: "no command: the image has no entrypoint and the container sets none"}
		return errors.New("no command")
	}
	var mounts []runtime.Mount
	for target, src := range w.etc {
		mounts = append(mounts, runtime.Mount{Source: src, Target: target})
	}
	for _, vm := range c.spec.VolumeMounts {
		src, ok := w.mounts[vm.Name]
		if !ok {
			c.waiting = &corev1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: fmt.Sprintf("volumeMount %q: no such volume", vm.Name)}
			return fmt.Errorf("volumeMount %q: no such volume", vm.Name)
		}
		if vm.SubPath != "" {
			src = filepath.Join(src, vm.SubPath)
		}
		m := runtime.Mount{Source: src, Target: vm.MountPath, ReadOnly: vm.ReadOnly || w.roVolumes[vm.Name]}
		if vm.MountPropagation != nil && *vm.MountPropagation == corev1.MountPropagationHostToContainer {
			m.Propagation = runtime.PropagationHostToContainer
		}
		mounts = append(mounts, m)
	}
	sec, err := containerSecurity(&c.spec)
	if err != nil {
		c.waiting = &corev1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: err.Error()}
		return err
	}
	wd := c.spec.WorkingDir
	if wd == "" {
		wd = img.WorkingDir
	}
	w.mu.Lock()
	c.instance++
	w.mu.Unlock()
	spec := runtime.Spec{
		ID:         string(pod.UID)[:8] + "-" + c.id(),
		Hostname:   hostnameOf(pod),
		RootFS:     img.RootFS,
		StateDir:   filepath.Join(w.dir, "containers", c.id()),
		Cgroup:     w.cgroup,
		HostPID:    pod.Spec.HostPID,
		Argv:       argv,
		Env:        env,
		WorkingDir: wd,
		Mounts:     mounts,
		Security:   sec,
		LogPath:    w.logPath(c.spec.Name, c.instance),
	}
	if w.sb.Netns != "" {
		spec.NetNS = w.sb.Netns
	}
	run, err := w.m.rt.Start(ctx, spec)
	if err != nil {
		c.waiting = &corev1.ContainerStateWaiting{Reason: "RunContainerError", Message: err.Error()}
		return err
	}
	c.restarts = int32(c.instance - 1)
	w.setRun(c, run)
	c.waiting = nil
	c.startedAt = time.Now().Truncate(time.Second)
	c.started = c.spec.StartupProbe == nil
	c.ready = c.spec.ReadinessProbe == nil && c.started && !c.init
	w.log.Info("container started", "container", c.spec.Name, "pid", run.Pid(), "argv", argv)
	return nil
}

func hostnameOf(pod *corev1.Pod) string {
	if pod.Spec.Hostname != "" {
		return pod.Spec.Hostname
	}
	return pod.Name
}

// probe runs the container's due probes.
func (w *podWorker) probe(ctx context.Context, pod *corev1.Pod, c *container) {
	exec := func(ctx context.Context, argv []string, stdout, stderr io.Writer) (int, error) {
		return c.run.Exec(ctx, argv, nil, stdout, stderr, false)
	}
	ip := w.sb.IP.String()
	now := time.Now()
	run := func(kind string, p *corev1.Probe) (result bool, changed bool) {
		ps := c.probeState[kind]
		if ps == nil {
			ps = &probeState{next: c.startedAt.Add(time.Duration(p.InitialDelaySeconds) * time.Second)}
			c.probeState[kind] = ps
		}
		if now.Before(ps.next) {
			return false, false
		}
		ps.next = now.Add(time.Duration(max(p.PeriodSeconds, 1)) * time.Second)
		if err := probeOnce(ctx, p, &c.spec, ip, exec); err != nil {
			if ctx.Err() != nil {
				return false, false // the runner stops: no verdict
			}
			ps.successes, ps.failures = 0, ps.failures+1
			w.log.Debug("probe failed", "container", c.spec.Name, "probe", kind, "error", err)
			return false, ps.failures == max(p.FailureThreshold, 1)
		}
		ps.failures, ps.successes = 0, ps.successes+1
		return true, ps.successes == max(p.SuccessThreshold, 1)
	}
	if p := c.spec.StartupProbe; p != nil && !c.started {
		ok, changed := run("startup", p)
		if changed && ok {
			c.started = true
		} else if changed && !ok {
			w.restartUnhealthy(pod, c, "startup")
			return
		}
		if !c.started {
			return
		}
	}
	if p := c.spec.LivenessProbe; p != nil {
		if ok, changed := run("liveness", p); changed && !ok {
			w.restartUnhealthy(pod, c, "liveness")
			return
		}
	}
	if p := c.spec.ReadinessProbe; p != nil {
		if ok, changed := run("readiness", p); changed {
			c.ready = ok
		}
	}
}

func (w *podWorker) restartUnhealthy(pod *corev1.Pod, c *container, kind string) {
	w.log.Info("container failed its probe, restarting", "container", c.spec.Name, "probe", kind)
	_ = c.run.Stop(gracePeriod(pod))
	<-c.run.Done()
	w.reap(pod, c)
}

func gracePeriod(pod *corev1.Pod) time.Duration {
	if pod.DeletionGracePeriodSeconds != nil {
		return time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	}
	return time.Duration(ptr.Deref(pod.Spec.TerminationGracePeriodSeconds, 30)) * time.Second
}

// stopAll stops every running container in parallel.
func (w *podWorker) stopAll(grace time.Duration) {
	var wg sync.WaitGroup
	for _, c := range append(append([]*container{}, w.inits...), w.containers...) {
		if c.run == nil {
			continue
		}
		wg.Add(1)
		go func(run *runtime.Container) {
			defer wg.Done()
			if err := run.Stop(grace); err != nil {
				w.log.Error("stop container", "container", c.spec.Name, "error", err)
			}
		}(c.run)
	}
	wg.Wait()
}

// terminate stops everything, releases the network and, for a pod being
// deleted gracefully, completes the deletion in the API.
func (w *podWorker) terminate(ctx context.Context, pod, last *corev1.Pod) {
	grace := time.Duration(0)
	if pod != nil {
		grace = gracePeriod(pod)
	}
	w.stopAll(grace)
	w.release(ctx, last)
	if pod != nil {
		err := w.m.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To(int64(0)),
			Preconditions:      &metav1.Preconditions{UID: &pod.UID},
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			w.log.Error("delete pod", "error", err)
			return // try again on the next sync
		}
	}
	w.log.Info("pod terminated")
	w.done = true
}

// release removes the sandbox, the cgroup and the pod's files.
func (w *podWorker) release(ctx context.Context, pod *corev1.Pod) {
	if w.sb != nil && w.sb.Netns != "" {
		if err := w.m.net.tearDown(ctx, pod, w.sb.Network); err != nil {
			w.log.Error("tear down pod network", "error", err)
		}
	}
	w.sb = nil
	if err := cgroups.Remove(w.cgroup); err != nil {
		w.log.Error("remove pod cgroup", "error", err)
	}
	if err := os.RemoveAll(w.dir); err != nil {
		w.log.Error("remove pod dir", "error", err)
	}
}

// logPath is the CRI log file of one instance of a container.
func (w *podWorker) logPath(container string, instance int) string {
	return filepath.Join(w.dir, "logs", container, strconv.Itoa(instance)+".log")
}

// running returns the running instance of a container; "" names the only one.
// It is called from the kubelet API's goroutines, so it takes the pod lock
// and reads only the container's run handle.
func (w *podWorker) running(name string) (*runtime.Container, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c, err := w.byName(name)
	if err != nil {
		return nil, err
	}
	if c.run == nil {
		return nil, fmt.Errorf("container %q is not running", c.spec.Name)
	}
	return c.run, nil
}

// logFile returns the log of a container's current (or previous) instance
// and a channel closed once nothing writes it any more.
func (w *podWorker) logFile(name string, previous bool) (string, <-chan struct{}, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c, err := w.byName(name)
	if err != nil {
		return "", nil, err
	}
	instance := c.instance
	if previous {
		instance--
	}
	if instance < 1 {
		what := "has not started yet"
		if previous {
			what = "has no previous terminated instance"
		}
		return "", nil, fmt.Errorf("container %q %s: %w", c.spec.Name, what, kubeletapi.ErrNotFound)
	}
	var done <-chan struct{}
	if !previous && c.run != nil {
		done = c.run.Done()
	} else {
		closed := make(chan struct{})
		close(closed)
		done = closed
	}
	return w.logPath(c.spec.Name, instance), done, nil
}

// byName finds a container, init or app; "" names the pod's only container.
// The caller holds w.mu.
func (w *podWorker) byName(name string) (*container, error) {
	if name == "" {
		if len(w.containers) != 1 {
			return nil, fmt.Errorf("the pod has %d containers: name one", len(w.containers))
		}
		return w.containers[0], nil
	}
	for _, c := range append(append([]*container{}, w.containers...), w.inits...) {
		if c.spec.Name == name {
			return c, nil
		}
	}
	return nil, fmt.Errorf("container %q: %w", name, kubeletapi.ErrNotFound)
}

// setRun publishes a container's running instance to the kubelet API.
func (w *podWorker) setRun(c *container, run *runtime.Container) {
	w.mu.Lock()
	c.run = run
	w.mu.Unlock()
}
