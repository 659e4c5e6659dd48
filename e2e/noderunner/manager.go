package noderunner

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/membrane-mesh/membrane/e2e/images"
	"github.com/membrane-mesh/membrane/e2e/noderunner/kubeletapi"
	"github.com/membrane-mesh/membrane/e2e/noderunner/runtime"
)

// Manager runs the pods bound to this node, one worker each.
type Manager struct {
	log        *slog.Logger
	cfg        Config
	client     kubernetes.Interface
	rt         *runtime.Runtime
	net        *network
	vols       volumes
	images     images.Stores
	svcs       corelisters.ServiceLister
	nodeResolv string

	mu      sync.Mutex
	workers map[types.UID]*podWorker
	adopted []*podWorker // not started yet
	wg      sync.WaitGroup
}

func newManager(log *slog.Logger, cfg Config, client kubernetes.Interface, rt *runtime.Runtime, net *network, svcs corelisters.ServiceLister) *Manager {
	resolv, _ := os.ReadFile("/etc/resolv.conf")
	m := &Manager{
		log: log, cfg: cfg, client: client, rt: rt, net: net, svcs: svcs,
		images:     imageStores(cfg),
		nodeResolv: string(resolv),
		workers:    map[types.UID]*podWorker{},
	}
	m.vols = volumes{client: client, refs: m, hostPaths: newHostPaths(cfg.HostPaths)}
	return m
}

// imageStores are Membrane's own images, then the pinned ones.
func imageStores(cfg Config) images.Stores {
	var ss images.Stores
	if cfg.OwnImagesDir != "" {
		ss = append(ss, images.Store{Dir: cfg.OwnImagesDir})
	}
	return append(ss, images.Store{Dir: cfg.ImagesDir})
}

// upsert hands the latest pod object to its worker, starting one if needed.
func (m *Manager) upsert(ctx context.Context, pod *corev1.Pod) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if w, ok := m.workers[pod.UID]; ok {
		w.update(pod)
		return
	}
	m.startWorker(ctx, m.newWorker(pod), pod)
}

func (m *Manager) newWorker(pod *corev1.Pod) *podWorker {
	return &podWorker{
		m:      m,
		log:    m.log.With("pod", pod.Namespace+"/"+pod.Name, "uid", pod.UID),
		notify: make(chan struct{}, 1),
		pod:    pod,
		dir:    filepath.Join(m.cfg.StateDir, "pods", string(pod.UID)),
		cgroup: filepath.Join(m.cfg.CgroupDir, "pods", string(pod.UID)),
	}
}

// startWorker registers w and runs it until its pod is gone; the caller
// holds m.mu.
func (m *Manager) startWorker(ctx context.Context, w *podWorker, pod *corev1.Pod) {
	m.workers[pod.UID] = w
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		w.run(ctx, pod)
		m.mu.Lock()
		delete(m.workers, pod.UID)
		m.mu.Unlock()
	}()
}

// remove tells the worker that the API object is gone.
func (m *Manager) remove(uid types.UID) {
	m.mu.Lock()
	w, ok := m.workers[uid]
	m.mu.Unlock()
	if ok {
		w.update(nil)
	}
}

// forgetMissing tells the workers whose pods pods does not hold that their
// API object is gone.
func (m *Manager) forgetMissing(pods corelisters.PodLister) {
	m.mu.Lock()
	var gone []*podWorker
	for uid, w := range m.workers {
		p := w.current()
		if p == nil {
			continue
		}
		cur, err := pods.Pods(p.Namespace).Get(p.Name)
		if err != nil || cur.UID != uid {
			gone = append(gone, w)
		}
	}
	m.mu.Unlock()
	for _, w := range gone {
		w.update(nil)
	}
}

// wait returns when every worker has ended (after ctx is done).
func (m *Manager) wait() { m.wg.Wait() }

// find returns the worker of the live pod namespace/name.
func (m *Manager) find(namespace, name string) (*podWorker, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, w := range m.workers {
		p := w.current()
		if p != nil && p.Namespace == namespace && p.Name == name {
			return w, nil
		}
	}
	return nil, fmt.Errorf("pod %s/%s is not running on this node: %w", namespace, name, kubeletapi.ErrNotFound)
}

// configMap, secret and services let env and volumes read the cluster.
func (m *Manager) configMap(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error) {
	return m.client.CoreV1().ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
}

func (m *Manager) secret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	return m.client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
}

func (m *Manager) services(namespace string) []*corev1.Service {
	svcs, err := m.svcs.Services(namespace).List(labels.Everything())
	if err != nil {
		return nil
	}
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Name < svcs[j].Name })
	return svcs
}

// LogPath implements the kubelet API's view of container logs.
func (m *Manager) LogPath(namespace, pod, containerName string, previous bool) (string, <-chan struct{}, error) {
	w, err := m.find(namespace, pod)
	if err != nil {
		return "", nil, err
	}
	return w.logFile(containerName, previous)
}

// Exec runs a command in a running container, for `kubectl exec`.
func (m *Manager) Exec(ctx context.Context, namespace, pod, containerName string, argv []string, stdin io.Reader, stdout, stderr io.Writer, tty bool) (int, error) {
	w, err := m.find(namespace, pod)
	if err != nil {
		return 0, err
	}
	run, err := w.running(containerName)
	if err != nil {
		return 0, err
	}
	return run.Exec(ctx, argv, stdin, stdout, stderr, tty)
}
