package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
)

const scaleServices = 10000

// TestTenThousandServices programs 10,000 services with 2 endpoints each on
// every node, then checks that one more service added on top is reachable.
func TestTenThousandServices(t *testing.T) {
	k := cluster(t)
	const ns = "scale"
	backends, frontends := deployTutorial(t, k, ns)
	c := bulkClient(t, k.kubeconfig)

	start := time.Now()
	createServices(t, c, ns, scaleServices, backends)
	t.Logf("created %d services and endpointslices in %s", scaleServices, time.Since(start).Round(time.Millisecond))

	for _, n := range shared.cluster.Nodes {
		eventually(t, 5*time.Minute, "node "+n.Name+" programs every service", func() error {
			got := frontendsGauge(t, k, n.Name)
			if got < scaleServices {
				return fmt.Errorf("%d frontends programmed", got)
			}
			return nil
		})
	}
	t.Logf("all %d services programmed on every node %s after the first was created", scaleServices, time.Since(start).Round(time.Millisecond))

	k.must(`apiVersion: v1
kind: Service
metadata:
  name: one-more
  namespace: `+ns+`
spec:
  selector: {app: backend}
  ports:
  - {port: 8080, targetPort: http}
`, "apply", "-f", "-")
	added := time.Now()
	eventually(t, 30*time.Second, "the service added on top is reachable", func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		out, err := k.run(ctx, "", "-n", ns, "exec", frontends[0].Name, "--", "wget", "-q", "-O-", "http://one-more:8080")
		if err != nil || !strings.Contains(out, "Hello from Backend Service!") {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	t.Logf("service added at %d reachable after %s (kubectl exec included)", scaleServices, time.Since(added).Round(time.Millisecond))
}

// bulkClient is an admin client allowed a high request rate.
func bulkClient(t *testing.T, kubeconfig string) kubernetes.Interface {
	t.Helper()
	c, err := localcluster.BulkClient(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// createServices makes n selector-less services, each with an EndpointSlice
// of the given backend pods on port 8080, with 32 workers.
func createServices(t *testing.T, c kubernetes.Interface, ns string, n int, backends []corev1.Pod) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 12*time.Minute)
	defer cancel()
	var eps []discoveryv1.Endpoint
	for _, b := range backends {
		eps = append(eps, discoveryv1.Endpoint{
			Addresses:  []string{b.Status.PodIP},
			NodeName:   ptr.To(b.Spec.NodeName),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		})
	}
	jobs := make(chan int)
	errs := make(chan error, 32)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				name := "svc-" + strconv.Itoa(i)
				svc := &corev1.Service{
					ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
					Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 8080, Protocol: corev1.ProtocolTCP}}},
				}
				if _, err := c.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
					errs <- fmt.Errorf("create service %s: %w", name, err)
					return
				}
				slice := &discoveryv1.EndpointSlice{
					ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
					AddressType: discoveryv1.AddressTypeIPv4,
					Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(8080)), Protocol: ptr.To(corev1.ProtocolTCP)}},
					Endpoints:   eps,
				}
				if _, err := c.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
					errs <- fmt.Errorf("create endpointslice %s: %w", name, err)
					return
				}
			}
		}()
	}
	go func() {
		defer close(jobs)
		for i := range n {
			select {
			case jobs <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// frontendsGauge reads membrane_lb_frontends of a node's agent.
func frontendsGauge(t *testing.T, k *kube, node string) int {
	t.Helper()
	metrics := k.must("", "get", "--raw", "/api/v1/nodes/"+node+":9890/proxy/metrics")
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "membrane_lb_frontends ") {
			v, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return int(v)
		}
	}
	return 0
}
