package noderunner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// volumes prepares a pod's volumes as directories on the node.
type volumes struct {
	client    kubernetes.Interface
	refs      podRefs
	hostPaths hostPaths
	now       func() time.Time
}

// preparedVolumes are a pod's volumes on the node.
type preparedVolumes struct {
	// dirs holds the node's directory (or file) of each volume.
	dirs map[string]string
	// readOnly marks volumes that are mounted read-only whatever the
	// volumeMount says (system host paths).
	readOnly map[string]bool
	// refreshAt is when a service-account token is due for renewal (zero:
	// none): prepare again then.
	refreshAt time.Time
}

// prepare writes every volume of pod below dir/<volume name> and returns the
// directory of each. Called again on a prepared pod, it rewrites the files
// (renewing tokens), each replaced atomically.
func (v volumes) prepare(ctx context.Context, pod *corev1.Pod, dir, podIP, hostIP string) (preparedVolumes, error) {
	out := preparedVolumes{dirs: map[string]string{}, readOnly: map[string]bool{}}
	for _, vol := range pod.Spec.Volumes {
		path := filepath.Join(dir, vol.Name)
		if vol.HostPath != nil {
			src, ro, err := v.hostPaths.resolve(vol.HostPath.Path)
			if err == nil {
				err = checkHostPathType(src, vol.HostPath.Type)
			}
			if err == nil && !ro && ptr.Deref(vol.HostPath.Type, corev1.HostPathUnset) == corev1.HostPathUnset {
				// As container runtimes do for a bind mount source that
				// does not exist: a directory (in the node's own part).
				if _, serr := os.Stat(src); os.IsNotExist(serr) {
					err = os.MkdirAll(src, 0o755)
				}
			}
			if err != nil {
				return preparedVolumes{}, fmt.Errorf("volume %q: %w", vol.Name, err)
			}
			out.dirs[vol.Name], out.readOnly[vol.Name] = src, ro
			continue
		}
		if err := os.MkdirAll(path, 0o755); err != nil {
			return preparedVolumes{}, fmt.Errorf("volume %q: %w", vol.Name, err)
		}
		files := map[string]fileContent{}
		var err error
		switch {
		case vol.EmptyDir != nil:
		case vol.ConfigMap != nil:
			err = v.configMapFiles(ctx, pod.Namespace, vol.ConfigMap.Name, vol.ConfigMap.Items, vol.ConfigMap.Optional, vol.ConfigMap.DefaultMode, files)
		case vol.Secret != nil:
			err = v.secretFiles(ctx, pod.Namespace, vol.Secret.SecretName, vol.Secret.Items, vol.Secret.Optional, vol.Secret.DefaultMode, files)
		case vol.DownwardAPI != nil:
			err = downwardFiles(pod, vol.DownwardAPI.Items, podIP, hostIP, files)
		case vol.Projected != nil:
			var refresh time.Time
			refresh, err = v.projectedFiles(ctx, pod, vol.Projected, podIP, hostIP, files)
			if !refresh.IsZero() && (out.refreshAt.IsZero() || refresh.Before(out.refreshAt)) {
				out.refreshAt = refresh
			}
		default:
			err = fmt.Errorf("unsupported volume type")
		}
		if err != nil {
			return preparedVolumes{}, fmt.Errorf("volume %q: %w", vol.Name, err)
		}
		for name, f := range files {
			if err := writeAtomic(filepath.Join(path, name), f); err != nil {
				return preparedVolumes{}, fmt.Errorf("volume %q: write %s: %w", vol.Name, name, err)
			}
		}
		out.dirs[vol.Name] = path
	}
	return out, nil
}

// writeAtomic replaces p by f's content: a reader sees the old file or the
// new one, never a part.
func writeAtomic(p string, f fileContent) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".tmp-"+filepath.Base(p)+"-")
	if err != nil {
		return err
	}
	_, err = tmp.Write(f.data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), f.mode)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
	}
	return err
}

type fileContent struct {
	data []byte
	mode os.FileMode
}

func fileMode(defaultMode *int32, item *int32) os.FileMode {
	switch {
	case item != nil:
		return os.FileMode(*item)
	case defaultMode != nil:
		return os.FileMode(*defaultMode)
	}
	return 0o644
}

func addItems(data map[string][]byte, items []corev1.KeyToPath, defaultMode *int32, files map[string]fileContent) error {
	if len(items) == 0 {
		for k, d := range data {
			files[k] = fileContent{d, fileMode(defaultMode, nil)}
		}
		return nil
	}
	for _, it := range items {
		d, ok := data[it.Key]
		if !ok {
			return fmt.Errorf("no key %q", it.Key)
		}
		files[it.Path] = fileContent{d, fileMode(defaultMode, it.Mode)}
	}
	return nil
}

func (v volumes) configMapFiles(ctx context.Context, ns, name string, items []corev1.KeyToPath, optional *bool, mode *int32, files map[string]fileContent) error {
	cm, err := v.refs.configMap(ctx, ns, name)
	if err != nil {
		if optional != nil && *optional {
			return nil
		}
		return fmt.Errorf("configMap %q: %w", name, err)
	}
	data := map[string][]byte{}
	for k, s := range cm.Data {
		data[k] = []byte(s)
	}
	for k, b := range cm.BinaryData {
		data[k] = b
	}
	return addItems(data, items, mode, files)
}

func (v volumes) secretFiles(ctx context.Context, ns, name string, items []corev1.KeyToPath, optional *bool, mode *int32, files map[string]fileContent) error {
	s, err := v.refs.secret(ctx, ns, name)
	if err != nil {
		if optional != nil && *optional {
			return nil
		}
		return fmt.Errorf("secret %q: %w", name, err)
	}
	return addItems(s.Data, items, mode, files)
}

func downwardFiles(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile, podIP, hostIP string, files map[string]fileContent) error {
	for _, it := range items {
		if it.FieldRef == nil {
			continue
		}
		val, err := podField(pod, it.FieldRef.FieldPath, podIP, hostIP)
		if err != nil {
			return err
		}
		files[it.Path] = fileContent{[]byte(val), fileMode(nil, it.Mode)}
	}
	return nil
}

// projectedFiles adds the files of a projected volume; refresh is when its
// earliest token is due for renewal (zero: no token).
func (v volumes) projectedFiles(ctx context.Context, pod *corev1.Pod, p *corev1.ProjectedVolumeSource, podIP, hostIP string, files map[string]fileContent) (refresh time.Time, err error) {
	for _, src := range p.Sources {
		switch {
		case src.ServiceAccountToken != nil:
			var at time.Time
			at, err = v.tokenFile(ctx, pod, src.ServiceAccountToken, p.DefaultMode, files)
			if refresh.IsZero() || at.Before(refresh) {
				refresh = at
			}
		case src.ConfigMap != nil:
			err = v.configMapFiles(ctx, pod.Namespace, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional, p.DefaultMode, files)
		case src.Secret != nil:
			err = v.secretFiles(ctx, pod.Namespace, src.Secret.Name, src.Secret.Items, src.Secret.Optional, p.DefaultMode, files)
		case src.DownwardAPI != nil:
			err = downwardFiles(pod, src.DownwardAPI.Items, podIP, hostIP, files)
		}
		if err != nil {
			return time.Time{}, err
		}
	}
	return refresh, nil
}

// tokenFile requests a service-account token bound to the pod, as the kubelet
// does for projected volumes, and returns when to renew it: as the kubelet,
// once 80% of the requested lifetime has passed (the API server may issue a
// longer-lived token for compatibility; the pod still gets a fresh one).
func (v volumes) tokenFile(ctx context.Context, pod *corev1.Pod, src *corev1.ServiceAccountTokenProjection, mode *int32, files map[string]fileContent) (time.Time, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	var aud []string
	if src.Audience != "" {
		aud = []string{src.Audience}
	}
	ttl := ptr.Deref(src.ExpirationSeconds, 3607)
	requested := v.clock()
	req := &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         aud,
			ExpirationSeconds: ptr.To(ttl),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}
	tr, err := v.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return time.Time{}, fmt.Errorf("token for service account %q: %w", sa, err)
	}
	if tr.Status.Token == "" {
		return time.Time{}, fmt.Errorf("token for service account %q: the API server returned an empty token", sa)
	}
	files[src.Path] = fileContent{[]byte(tr.Status.Token), fileMode(mode, nil)}
	return requested.Add(time.Duration(ttl) * time.Second * 8 / 10), nil
}

func (v volumes) clock() time.Time {
	if v.now != nil {
		return v.now()
	}
	return time.Now()
}

// etcFiles writes the pod's /etc/hosts, /etc/resolv.conf and /etc/hostname.
func etcFiles(pod *corev1.Pod, dir, podIP, clusterDNS, domain, nodeResolv string) (map[string]string, error) {
	hostname := pod.Name
	if pod.Spec.Hostname != "" {
		hostname = pod.Spec.Hostname
	}
	hosts := "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if podIP != "" {
		fqdn := hostname
		if pod.Spec.Subdomain != "" {
			fqdn = fmt.Sprintf("%s.%s.%s.svc.%s\t%s", hostname, pod.Spec.Subdomain, pod.Namespace, domain, hostname)
		}
		hosts += podIP + "\t" + fqdn + "\n"
	}
	for _, ha := range pod.Spec.HostAliases {
		hosts += ha.IP + "\t" + strings.Join(ha.Hostnames, "\t") + "\n"
	}
	resolv := resolvConf(pod, clusterDNS, domain, nodeResolv)
	out := map[string]string{}
	for name, content := range map[string]string{"hosts": hosts, "resolv.conf": resolv, "hostname": hostname + "\n"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return nil, fmt.Errorf("write pod %s: %w", name, err)
		}
		out["/etc/"+name] = p
	}
	return out, nil
}

func resolvConf(pod *corev1.Pod, clusterDNS, domain, nodeResolv string) string {
	policy := pod.Spec.DNSPolicy
	if policy == "" {
		policy = corev1.DNSClusterFirst
	}
	if policy == corev1.DNSClusterFirst && pod.Spec.HostNetwork {
		policy = corev1.DNSDefault
	}
	var servers, search, options []string
	switch policy {
	case corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet:
		servers = []string{clusterDNS}
		search = []string{pod.Namespace + ".svc." + domain, "svc." + domain, domain}
		options = []string{"ndots:5"}
	case corev1.DNSDefault:
		return nodeResolv
	}
	if dc := pod.Spec.DNSConfig; dc != nil {
		servers = append(servers, dc.Nameservers...)
		search = append(search, dc.Searches...)
		for _, o := range dc.Options {
			if o.Value != nil {
				options = append(options, o.Name+":"+*o.Value)
			} else {
				options = append(options, o.Name)
			}
		}
	}
	var b strings.Builder
	for _, s := range servers {
		b.WriteString("nameserver " + s + "\n")
	}
	if len(search) > 0 {
		b.WriteString("search " + strings.Join(search, " ") + "\n")
	}
	if len(options) > 0 {
		b.WriteString("options " + strings.Join(options, " ") + "\n")
	}
	return b.String()
}
