package noderunner

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/membrane-mesh/membrane/e2e/noderunner/runtime"
)

// defaultCapabilities is the capability set of an unprivileged container,
// as containerd and Docker grant it.
func defaultCapabilities() []string {
	return []string{
		"CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID",
		"CAP_KILL", "CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP",
		"CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT",
	}
}

// checkPodSecurity refuses what a pod asks for that this runner cannot do
// faithfully, naming the field at fault.
func checkPodSecurity(pod *corev1.Pod) error {
	if pod.Spec.HostIPC {
		return errors.New("spec.hostIPC: not supported on this node: containers always get their own IPC namespace")
	}
	for _, group := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range group {
			for i, vm := range c.VolumeMounts {
				if vm.MountPropagation != nil && *vm.MountPropagation == corev1.MountPropagationBidirectional {
					return fmt.Errorf("container %q volumeMounts[%d] (%s): mountPropagation Bidirectional is not supported on this node: "+
						"its host paths are directories of a machine shared by all nodes, so a mount made in the container could not reach the node alone "+
						"(bpffs and cgroup2 are already mounted for each node; use HostToContainer)", c.Name, i, vm.MountPath)
				}
			}
		}
	}
	return nil
}

// containerSecurity turns a container's securityContext into the runtime's
// terms: a privileged container keeps every capability; any other gets the
// default set with capabilities.add and without capabilities.drop (either
// may say ALL; names with or without the CAP_ prefix).
func containerSecurity(c *corev1.Container) (runtime.Security, error) {
	sc := c.SecurityContext
	if sc != nil && sc.Privileged != nil && *sc.Privileged {
		return runtime.Security{Privileged: true}, nil
	}
	set := map[string]bool{}
	for _, name := range defaultCapabilities() {
		set[name] = true
	}
	if sc != nil && sc.Capabilities != nil {
		norm := func(field string, i int, cp corev1.Capability) (string, error) {
			name := strings.ToUpper(string(cp))
			if name == "ALL" {
				return name, nil
			}
			if !strings.HasPrefix(name, "CAP_") {
				name = "CAP_" + name
			}
			if !runtime.KnownCapability(name) {
				return "", fmt.Errorf("container %q securityContext.capabilities.%s[%d]: unknown capability %q", c.Name, field, i, cp)
			}
			return name, nil
		}
		for i, cp := range sc.Capabilities.Drop {
			name, err := norm("drop", i, cp)
			if err != nil {
				return runtime.Security{}, err
			}
			if name == "ALL" {
				set = map[string]bool{}
				continue
			}
			delete(set, name)
		}
		// Added after dropped, as the kubelet's runtimes do: drop ALL
		// plus add NET_ADMIN leaves NET_ADMIN.
		for i, cp := range sc.Capabilities.Add {
			name, err := norm("add", i, cp)
			if err != nil {
				return runtime.Security{}, err
			}
			if name == "ALL" {
				for _, n := range runtime.AllCapabilities() {
					set[n] = true
				}
				continue
			}
			set[name] = true
		}
	}
	caps := make([]string, 0, len(set))
	for n := range set {
		caps = append(caps, n)
	}
	sort.Strings(caps)
	return runtime.Security{LimitCapabilities: true, Capabilities: caps}, nil
}
