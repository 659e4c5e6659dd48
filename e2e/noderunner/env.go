package noderunner

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// podRefs is what env and volume resolution may read from the cluster.
type podRefs interface {
	configMap(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error)
	secret(ctx context.Context, namespace, name string) (*corev1.Secret, error)
	services(namespace string) []*corev1.Service
}

// containerEnv builds a container's environment as the kubelet does: image
// env, then service links, then envFrom, then env (with $(VAR) expansion).
func containerEnv(ctx context.Context, pod *corev1.Pod, c *corev1.Container, imageEnv []string, podIP, hostIP string, refs podRefs) ([]string, error) {
	vars := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	for _, kv := range imageEnv {
		k, v, _ := strings.Cut(kv, "=")
		set(k, v)
	}
	if pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks {
		for _, kv := range serviceEnv(refs.services(pod.Namespace)) {
			set(kv[0], kv[1])
		}
	}
	for _, kv := range serviceEnv(kubernetesService(refs.services(corev1.NamespaceDefault))) {
		set(kv[0], kv[1])
	}
	for _, from := range c.EnvFrom {
		data, err := envFromData(ctx, pod.Namespace, from, refs)
		if err != nil {
			return nil, err
		}
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			set(from.Prefix+k, data[k])
		}
	}
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			var err error
			v, err = envValueFrom(ctx, pod, e, podIP, hostIP, refs)
			if err != nil {
				return nil, err
			}
		} else {
			v = expand(v, vars)
		}
		set(e.Name, v)
	}
	// Like container runtimes, give the process a home (it runs as root).
	if _, ok := vars["HOME"]; !ok {
		set("HOME", "/root")
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+vars[k])
	}
	return out, nil
}

func envFromData(ctx context.Context, ns string, from corev1.EnvFromSource, refs podRefs) (map[string]string, error) {
	optional := func(p *bool) bool { return p != nil && *p }
	switch {
	case from.ConfigMapRef != nil:
		cm, err := refs.configMap(ctx, ns, from.ConfigMapRef.Name)
		if err != nil {
			if optional(from.ConfigMapRef.Optional) {
				return nil, nil
			}
			return nil, fmt.Errorf("envFrom configMap %q: %w", from.ConfigMapRef.Name, err)
		}
		return cm.Data, nil
	case from.SecretRef != nil:
		s, err := refs.secret(ctx, ns, from.SecretRef.Name)
		if err != nil {
			if optional(from.SecretRef.Optional) {
				return nil, nil
			}
			return nil, fmt.Errorf("envFrom secret %q: %w", from.SecretRef.Name, err)
		}
		out := map[string]string{}
		for k, v := range s.Data {
			out[k] = string(v)
		}
		return out, nil
	}
	return nil, nil
}

func envValueFrom(ctx context.Context, pod *corev1.Pod, e corev1.EnvVar, podIP, hostIP string, refs podRefs) (string, error) {
	vf := e.ValueFrom
	switch {
	case vf.FieldRef != nil:
		return podField(pod, vf.FieldRef.FieldPath, podIP, hostIP)
	case vf.ConfigMapKeyRef != nil:
		ref := vf.ConfigMapKeyRef
		cm, err := refs.configMap(ctx, pod.Namespace, ref.Name)
		if err == nil {
			if v, ok := cm.Data[ref.Key]; ok {
				return v, nil
			}
			err = fmt.Errorf("no key %q", ref.Key)
		}
		if ref.Optional != nil && *ref.Optional {
			return "", nil
		}
		return "", fmt.Errorf("env %s: configMap %q: %w", e.Name, ref.Name, err)
	case vf.SecretKeyRef != nil:
		ref := vf.SecretKeyRef
		s, err := refs.secret(ctx, pod.Namespace, ref.Name)
		if err == nil {
			if v, ok := s.Data[ref.Key]; ok {
				return string(v), nil
			}
			err = fmt.Errorf("no key %q", ref.Key)
		}
		if ref.Optional != nil && *ref.Optional {
			return "", nil
		}
		return "", fmt.Errorf("env %s: secret %q: %w", e.Name, ref.Name, err)
	case vf.ResourceFieldRef != nil:
		return "0", nil
	}
	return "", fmt.Errorf("env %s: unsupported valueFrom", e.Name)
}

// podField resolves a downward-API field path.
func podField(pod *corev1.Pod, path, podIP, hostIP string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return podIP, nil
	case "status.hostIP", "status.hostIPs":
		return hostIP, nil
	}
	for prefix, m := range map[string]map[string]string{"metadata.labels": pod.Labels, "metadata.annotations": pod.Annotations} {
		if path == prefix {
			keys := make([]string, 0, len(m))
			for k := range m {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			var b strings.Builder
			for _, k := range keys {
				fmt.Fprintf(&b, "%s=%q\n", k, m[k])
			}
			return b.String(), nil
		}
		if strings.HasPrefix(path, prefix+"['") && strings.HasSuffix(path, "']") {
			return m[path[len(prefix)+2:len(path)-2]], nil
		}
	}
	return "", fmt.Errorf("unsupported field path %q", path)
}

func kubernetesService(svcs []*corev1.Service) []*corev1.Service {
	for _, s := range svcs {
		if s.Name == "kubernetes" {
			return []*corev1.Service{s}
		}
	}
	return nil
}

// serviceEnv returns the docker-link style variables of services.
func serviceEnv(svcs []*corev1.Service) [][2]string {
	var out [][2]string
	for _, s := range svcs {
		ip := s.Spec.ClusterIP
		if ip == "" || ip == corev1.ClusterIPNone || len(s.Spec.Ports) == 0 {
			continue
		}
		name := strings.ToUpper(strings.ReplaceAll(s.Name, "-", "_"))
		first := s.Spec.Ports[0]
		out = append(out,
			[2]string{name + "_SERVICE_HOST", ip},
			[2]string{name + "_SERVICE_PORT", strconv.Itoa(int(first.Port))},
			[2]string{name + "_PORT", fmt.Sprintf("%s://%s:%d", strings.ToLower(string(first.Protocol)), ip, first.Port)},
		)
		for _, p := range s.Spec.Ports {
			if p.Name != "" {
				out = append(out, [2]string{name + "_SERVICE_PORT_" + strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_")), strconv.Itoa(int(p.Port))})
			}
			proto := strings.ToLower(string(p.Protocol))
			pre := fmt.Sprintf("%s_PORT_%d_%s", name, p.Port, strings.ToUpper(proto))
			out = append(out,
				[2]string{pre, fmt.Sprintf("%s://%s:%d", proto, ip, p.Port)},
				[2]string{pre + "_PROTO", proto},
				[2]string{pre + "_PORT", strconv.Itoa(int(p.Port))},
				[2]string{pre + "_ADDR", ip},
			)
		}
	}
	return out
}

// expand replaces $(VAR) with vars' values; $$ escapes; unknown references
// stay as written, as in Kubernetes.
func expand(s string, vars map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// envMap turns KEY=VALUE pairs into a map for expansion.
func envMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// commandLine merges image entrypoint/cmd with the container's command/args;
// only the container's own strings get $(VAR) expansion.
func commandLine(c *corev1.Container, entrypoint, cmd []string, env map[string]string) []string {
	expandAll := func(in []string) []string {
		out := make([]string, len(in))
		for i, a := range in {
			out[i] = expand(a, env)
		}
		return out
	}
	switch {
	case len(c.Command) > 0:
		return append(expandAll(c.Command), expandAll(c.Args)...)
	case len(c.Args) > 0:
		return append(append([]string{}, entrypoint...), expandAll(c.Args)...)
	default:
		return append(append([]string{}, entrypoint...), cmd...)
	}
}
