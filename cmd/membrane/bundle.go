package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/membrane-mesh/membrane/mesh/agentapi"
	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
)

// bundleLogLines is how much of each Membrane container's log a bundle
// holds (the end).
const bundleLogLines = 10000

// bundleStepTimeout bounds each thing a bundle collects, so one agent
// that does not answer costs the bundle seconds, not the whole run.
const bundleStepTimeout = 30 * time.Second

// bundleAgentPaths are the agent API answers a bundle saves for every
// node, by file name.
func bundleAgentPaths() map[string]string {
	return map[string]string{
		"status.json":      agentapi.PathStatus,
		"endpoints.json":   agentapi.PathEndpoints,
		"services.json":    agentapi.PathServices,
		"bpf-lb.json":      agentapi.PathBPFLB,
		"bpf-policy.json":  agentapi.PathBPFPolicy,
		"encryption.json":  agentapi.PathEncryption,
		"fqdn-cache.json":  agentapi.PathFQDNCache,
		"clustermesh.json": agentapi.PathClusterMesh,
		"svids.json":       agentapi.PathSVIDs,
		"metrics.txt":      "/metrics",
	}
}

// bundleResources are the Membrane kinds a bundle saves (cluster-wide).
func bundleResources() []string {
	return []string{"membranenetworkpolicies", "membraneclusterwidenetworkpolicies", "membraneidentities", "membraneloadbalancerippools"}
}

func newBundleCommand(g *globals) *cobra.Command {
	var node, out string
	cmd := &cobra.Command{
		Use:   "bundle",
		Short: "Save what it takes to look into a problem in one archive: every agent's view, Membrane's objects and logs",
		Long: "Save, in one gzipped tar archive, every node agent's status, endpoints, services, BPF maps, encryption,\n" +
			"learned names, cluster mesh, SVID list (no keys), metrics and heap and goroutine profiles; the nodes,\n" +
			"Membrane's custom resources and pods; and the end of every Membrane container's log. No Secret is read.\n" +
			"What could not be collected is listed in errors.txt in the archive, and the command fails after writing it.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				out = "membrane-bundle-" + time.Now().UTC().Format("20060102-150405") + ".tar.gz"
			}
			c, nodes, err := g.clientForNodes(cmd.Context(), node)
			if err != nil {
				return err
			}
			f, err := os.Create(out)
			if err != nil {
				return fmt.Errorf("-o: %w", err)
			}
			b := newBundle(f)
			collectBundle(cmd.Context(), c, nodes, b)
			if err := b.close(); err != nil {
				_ = f.Close()
				return fmt.Errorf("write %s: %w", out, err)
			}
			if err := f.Close(); err != nil {
				return fmt.Errorf("write %s: %w", out, err)
			}
			fmt.Fprintf(g.stdout, "Bundle saved to %s: %d files from %d nodes\n", out, b.files, len(nodes))
			if len(b.errs) > 0 {
				return fmt.Errorf("%d items could not be collected (listed in errors.txt): first: %s", len(b.errs), b.errs[0])
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "collect the agent of this node only (default: every node)")
	cmd.Flags().StringVarP(&out, "output", "o", "", "the archive to write (default membrane-bundle-<UTC time>.tar.gz)")
	return cmd
}

// bundle is a gzipped tar archive being written, and what could not go in.
type bundle struct {
	gz    *gzip.Writer
	tw    *tar.Writer
	now   time.Time
	files int
	errs  []string
	err   error // the first write error
}

func newBundle(w io.Writer) *bundle {
	gz := gzip.NewWriter(w)
	return &bundle{gz: gz, tw: tar.NewWriter(gz), now: time.Now()}
}

// add writes one file; a failed collection (err) is listed instead.
func (b *bundle) add(name string, data []byte, err error) {
	if err != nil {
		b.errs = append(b.errs, fmt.Sprintf("%s: %v", name, err))
		return
	}
	if b.err != nil {
		return
	}
	hdr := &tar.Header{Name: "membrane-bundle/" + name, Mode: 0o644, Size: int64(len(data)), ModTime: b.now}
	if b.err = b.tw.WriteHeader(hdr); b.err == nil {
		_, b.err = b.tw.Write(data)
		b.files++
	}
}

// close writes errors.txt (when something failed) and ends the archive.
func (b *bundle) close() error {
	if len(b.errs) > 0 {
		b.add("errors.txt", []byte(strings.Join(b.errs, "\n")+"\n"), nil)
	}
	if b.err != nil {
		return b.err
	}
	if err := b.tw.Close(); err != nil {
		return err
	}
	return b.gz.Close()
}

// bundleParallel is how many items a bundle collects at once (and holds
// at most before writing them).
const bundleParallel = 8

// bundleItem is one file of a bundle and how to collect it.
type bundleItem struct {
	name  string
	fetch func(ctx context.Context) ([]byte, error)
}

// collectBundle fills b: each node's agent, then the cluster's objects and
// Membrane's logs. Every item has its own timeout; the agents and the logs
// are collected bundleParallel at a time, and written in a fixed order.
func collectBundle(ctx context.Context, c *clusterClient, nodes []string, b *bundle) {
	agentGet := func(node, path string, query url.Values) func(ctx context.Context) ([]byte, error) {
		return func(ctx context.Context) ([]byte, error) {
			body, err := c.agents.Stream(ctx, node, path, query)
			if err != nil {
				return nil, err
			}
			defer body.Close()
			return io.ReadAll(body)
		}
	}
	var items []bundleItem
	paths := bundleAgentPaths()
	for _, node := range nodes {
		dir := "nodes/" + node + "/"
		for _, name := range slices.Sorted(maps.Keys(paths)) {
			items = append(items, bundleItem{dir + name, agentGet(node, paths[name], nil)})
		}
		for _, kind := range []string{"heap", "goroutine"} {
			items = append(items, bundleItem{dir + kind + ".pprof", agentGet(node, agentapi.PathDebugProfile, url.Values{"kind": {kind}})})
		}
	}
	items = append(items, bundleItem{"cluster/nodes.json", func(ctx context.Context) ([]byte, error) {
		list, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		return json.MarshalIndent(list, "", "  ")
	}})
	for _, res := range bundleResources() {
		items = append(items, bundleItem{"cluster/" + res + ".json", func(ctx context.Context) ([]byte, error) {
			raw, err := c.Discovery().RESTClient().Get().AbsPath("/apis", v1alpha1.GroupName, v1alpha1.SchemeGroupVersion.Version, res).DoRaw(ctx)
			if err != nil {
				return nil, err
			}
			var v bytes.Buffer
			if json.Indent(&v, raw, "", "  ") != nil {
				return raw, nil
			}
			return v.Bytes(), nil
		}})
	}
	var pods *corev1.PodList
	items = append(items, bundleItem{"cluster/pods.json", func(ctx context.Context) ([]byte, error) {
		list, err := c.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=membrane"})
		if err != nil {
			return nil, err
		}
		pods = list
		return json.MarshalIndent(list, "", "  ")
	}})
	fetchInOrder(ctx, items, b.add)
	if pods == nil {
		return
	}
	items = items[:0]
	for _, p := range pods.Items {
		for _, ctr := range p.Spec.Containers {
			items = append(items, bundleItem{fmt.Sprintf("logs/%s/%s/%s.log", p.Namespace, p.Name, ctr.Name), func(ctx context.Context) ([]byte, error) {
				return c.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: ctr.Name, TailLines: ptr.To(int64(bundleLogLines))}).DoRaw(ctx)
			}})
		}
	}
	fetchInOrder(ctx, items, b.add)
}

// fetchInOrder collects items, bundleParallel at a time, each within
// bundleStepTimeout, and hands them to add in their order. An item starts
// only once fewer than bundleParallel are collected and not yet added.
func fetchInOrder(ctx context.Context, items []bundleItem, add func(name string, data []byte, err error)) {
	type result struct {
		data []byte
		err  error
	}
	results := make([]chan result, len(items))
	for i := range results {
		results[i] = make(chan result, 1)
	}
	slots := make(chan struct{}, bundleParallel)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		for i, it := range items {
			slots <- struct{}{} // freed by add's loop below, which never stops early
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(ctx, bundleStepTimeout)
				defer cancel()
				data, err := it.fetch(ctx)
				results[i] <- result{data, err}
			})
		}
	})
	for i, it := range items {
		r := <-results[i]
		add(it.name, r.data, r.err)
		<-slots
	}
}
