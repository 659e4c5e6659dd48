package noderunner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/membrane-mesh/membrane/e2e/noderunner/runtime"
)

func TestContainerSecurity(t *testing.T) {
	caps := func(add ...corev1.Capability) *corev1.SecurityContext {
		return &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: add}}
	}
	with := func(extra ...string) []string {
		out := append(defaultCapabilities(), extra...)
		slices.Sort(out)
		return out
	}
	without := func(gone ...string) []string {
		return slices.DeleteFunc(with(), func(s string) bool { return slices.Contains(gone, s) })
	}
	for _, tc := range []struct {
		name string
		sc   *corev1.SecurityContext
		want runtime.Security
	}{
		{"none", nil, runtime.Security{LimitCapabilities: true, Capabilities: with()}},
		{"privileged", &corev1.SecurityContext{Privileged: ptr.To(true)}, runtime.Security{Privileged: true}},
		{"privileged with drops", &corev1.SecurityContext{Privileged: ptr.To(true), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}, runtime.Security{Privileged: true}},
		{"not privileged", &corev1.SecurityContext{Privileged: ptr.To(false)}, runtime.Security{LimitCapabilities: true, Capabilities: with()}},
		{"add", caps("NET_ADMIN", "CAP_BPF", "sys_admin"), runtime.Security{LimitCapabilities: true, Capabilities: with("CAP_BPF", "CAP_NET_ADMIN", "CAP_SYS_ADMIN")}},
		{"drop", &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"NET_RAW", "CAP_MKNOD"}}}, runtime.Security{LimitCapabilities: true, Capabilities: without("CAP_NET_RAW", "CAP_MKNOD")}},
		{"drop all add one", &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_BIND_SERVICE"}}}, runtime.Security{LimitCapabilities: true, Capabilities: []string{"CAP_NET_BIND_SERVICE"}}},
		{"drop all", &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"all"}}}, runtime.Security{LimitCapabilities: true, Capabilities: []string{}}},
		{"add all", caps("ALL"), runtime.Security{LimitCapabilities: true, Capabilities: runtime.AllCapabilities()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := containerSecurity(&corev1.Container{Name: "c", SecurityContext: tc.sc})
			if err != nil {
				t.Fatal(err)
			}
			if got.Privileged != tc.want.Privileged || got.LimitCapabilities != tc.want.LimitCapabilities || !slices.Equal(got.Capabilities, tc.want.Capabilities) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	_, err := containerSecurity(&corev1.Container{Name: "c", SecurityContext: caps("NET_ADMIN", "FLY")})
	if err == nil || !strings.Contains(err.Error(), `container "c" securityContext.capabilities.add[1]: unknown capability "FLY"`) {
		t.Fatalf("unknown capability: %v", err)
	}
}

func TestCheckPodSecurity(t *testing.T) {
	pod := func(mut func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{Spec: corev1.PodSpec{HostNetwork: true, Containers: []corev1.Container{{Name: "agent", VolumeMounts: []corev1.VolumeMount{
			{Name: "bpf", MountPath: "/sys/fs/bpf", MountPropagation: ptr.To(corev1.MountPropagationHostToContainer)},
		}}}}}
		mut(p)
		return p
	}
	if err := checkPodSecurity(pod(func(*corev1.Pod) {})); err != nil {
		t.Fatal(err)
	}
	if err := checkPodSecurity(pod(func(p *corev1.Pod) { p.Spec.HostPID = true })); err != nil {
		t.Fatalf("hostPID: %v", err)
	}
	if err := checkPodSecurity(pod(func(p *corev1.Pod) { p.Spec.HostIPC = true })); err == nil || !strings.Contains(err.Error(), "spec.hostIPC") {
		t.Fatalf("hostIPC: %v", err)
	}
	err := checkPodSecurity(pod(func(p *corev1.Pod) {
		p.Spec.Containers[0].VolumeMounts[0].MountPropagation = ptr.To(corev1.MountPropagationBidirectional)
	}))
	if err == nil || !strings.Contains(err.Error(), `container "agent" volumeMounts[0] (/sys/fs/bpf): mountPropagation Bidirectional is not supported`) {
		t.Fatalf("Bidirectional: %v", err)
	}
}

// The service-account token of a projected volume is requested for the pod
// and renewed at 80% of its requested lifetime, replacing the file.
func TestServiceAccountTokenRenewal(t *testing.T) {
	client := fake.NewClientset()
	var requests []*authenticationv1.TokenRequest
	client.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, k8sruntime.Object, error) {
		ca, ok := a.(k8stesting.CreateAction)
		if !ok || a.GetSubresource() != "token" {
			return false, nil, nil
		}
		tr := ca.GetObject().(*authenticationv1.TokenRequest).DeepCopy()
		requests = append(requests, tr)
		tr.Status.Token = fmt.Sprintf("token-%d", len(requests))
		tr.Status.ExpirationTimestamp = metav1.NewTime(time.Now().Add(365 * 24 * time.Hour))
		return true, tr, nil
	})
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	v := volumes{client: client, refs: fakeRefs{}, now: func() time.Time { return now }}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "agent-x", Namespace: "kube-system", UID: "uid-1"},
		Spec: corev1.PodSpec{ServiceAccountName: "membrane-agent", Volumes: []corev1.Volume{{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{
				{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To(int64(3607))}},
				{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}},
			},
		}}}}},
	}
	dir := t.TempDir()
	got, err := v.prepare(context.Background(), pod, dir, "10.0.0.1", "10.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if want := now.Add(3607 * time.Second * 8 / 10); !got.refreshAt.Equal(want) {
		t.Fatalf("refreshAt %s, want %s", got.refreshAt, want)
	}
	if len(requests) != 1 {
		t.Fatalf("%d token requests", len(requests))
	}
	r := requests[0]
	if r.Spec.Audiences != nil || ptr.Deref(r.Spec.ExpirationSeconds, 0) != 3607 || r.Spec.BoundObjectRef == nil ||
		r.Spec.BoundObjectRef.Kind != "Pod" || r.Spec.BoundObjectRef.Name != "agent-x" || r.Spec.BoundObjectRef.UID != "uid-1" {
		t.Fatalf("token request %+v", r.Spec)
	}
	token := filepath.Join(got.dirs["kube-api-access"], "token")
	if b, _ := os.ReadFile(token); string(b) != "token-1" {
		t.Fatalf("token file %q", b)
	}
	now = got.refreshAt
	again, err := v.prepare(context.Background(), pod, dir, "10.0.0.1", "10.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(token); string(b) != "token-2" {
		t.Fatalf("renewed token file %q", b)
	}
	if !again.refreshAt.After(got.refreshAt) {
		t.Fatalf("next renewal %s not after %s", again.refreshAt, got.refreshAt)
	}
	entries, _ := os.ReadDir(got.dirs["kube-api-access"])
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"namespace", "token"}) {
		t.Fatalf("volume holds %v", names)
	}
}
