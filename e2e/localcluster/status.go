package localcluster

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	chart "github.com/membrane-mesh/membrane/charts/membrane"
)

// Status describes a running cluster.
type Status struct {
	Name        string `json:"name"`
	APIServer   string `json:"apiServer"`
	Kubeconfig  string `json:"kubeconfig"`
	PodCIDR     string `json:"podCIDR"`
	ServiceCIDR string `json:"serviceCIDR"`
	Underlay    string `json:"underlay"`
	Bridge      string `json:"bridge"`
	// Membrane says how Membrane is installed: the helm release, or none
	// (--no-membrane).
	Membrane   string            `json:"membrane"`
	Components []ComponentStatus `json:"components"`
	Nodes      []NodeStatus      `json:"nodes"`
}

// ComponentStatus is one process of the host (the control plane and the
// node runners; Membrane's components are pods).
type ComponentStatus struct {
	Name    string `json:"name"`
	PID     int    `json:"pid"`
	Running bool   `json:"running"`
	Log     string `json:"log"`
}

// NodeStatus is one node as the harness and the API server see it.
type NodeStatus struct {
	Name     string `json:"name"`
	Netns    string `json:"netns"`
	IP       string `json:"ip"`
	Underlay string `json:"underlayInterface"`
	HostLink string `json:"hostLink"`
	PodCIDR  string `json:"podCIDR"`
	Ready    string `json:"ready"`
}

// GetStatus reads the record of the cluster and asks its API server about
// the nodes (fields stay empty when it does not answer).
func GetStatus(ctx context.Context, name string) (*Status, error) {
	s, err := Load(name)
	if err != nil {
		return nil, err
	}
	l := s.Layout()
	st := &Status{
		Name: s.Name, APIServer: l.APIServerURL(), Kubeconfig: l.Kubeconfig(),
		PodCIDR: s.PodCIDR, ServiceCIDR: s.ServiceCIDR, Underlay: l.Subnet().String(), Bridge: l.Bridge(),
		Membrane: "helm release " + chart.ReleaseName + " in " + chartNamespace,
	}
	if s.NoMembrane {
		st.Membrane = "none (--no-membrane)"
	}
	for _, p := range s.Processes {
		st.Components = append(st.Components, ComponentStatus{Name: p.Name, PID: p.PID, Running: p.Alive(), Log: p.Log})
	}
	apiNodes := map[string]corev1.Node{}
	if c, err := Client(l.Kubeconfig()); err == nil {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if list, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err == nil {
			for _, n := range list.Items {
				apiNodes[n.Name] = n
			}
		}
	}
	for _, n := range s.Nodes {
		ns := NodeStatus{Name: n.Name, Netns: n.Netns, IP: n.IP, Underlay: l.UnderlayIf(), HostLink: n.Link, Ready: "Unknown"}
		if an, ok := apiNodes[n.Name]; ok {
			ns.PodCIDR = an.Spec.PodCIDR
			for _, c := range an.Status.Conditions {
				if c.Type == corev1.NodeReady {
					ns.Ready = string(c.Status)
				}
			}
		}
		st.Nodes = append(st.Nodes, ns)
	}
	return st, nil
}
