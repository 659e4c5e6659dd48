package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// listIngresses lists the cluster's Ingresses of every class and the
// Warning Events on them.
func listIngresses(ctx context.Context, c kubernetes.Interface) ([]networkingv1.Ingress, []corev1.Event, error) {
	ings, err := c.NetworkingV1().Ingresses("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("list ingresses: %w", err)
	}
	if len(ings.Items) == 0 {
		return nil, nil, nil
	}
	evs, err := c.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=Ingress,type=Warning"})
	if apierrors.IsForbidden(err) {
		return ings.Items, nil, nil // the Ingresses without their warnings
	} else if err != nil {
		return nil, nil, fmt.Errorf("list the Ingresses' events: %w", err)
	}
	return ings.Items, evs.Items, nil
}

// printIngresses is the Ingresses' table, in the Gateways' columns:
// address, Programmed (True once the Ingress has its address: every
// Ingress of the class membrane is served by the node Envoys from then
// on) and the rules; then, one line each, the Warning Events on them (a
// missing Service, Secret or address), newest last.
func printIngresses(out io.Writer, ings []networkingv1.Ingress, events []corev1.Event, now time.Time) error {
	if len(ings) == 0 {
		return nil
	}
	fmt.Fprintln(out)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "INGRESS\tCLASS\tADDRESS\tPROGRAMMED\tRULES")
	uids := map[string]string{}
	for _, ing := range ings {
		uids[string(ing.UID)] = ing.Namespace + "/" + ing.Name
		var addrs []string
		for _, a := range ing.Status.LoadBalancer.Ingress {
			if a.IP != "" {
				addrs = append(addrs, a.IP)
			} else if a.Hostname != "" {
				addrs = append(addrs, a.Hostname)
			}
		}
		programmed := "False (AddressNotAssigned)"
		if len(addrs) > 0 {
			programmed = "True (Programmed)"
		}
		class := ""
		if ing.Spec.IngressClassName != nil {
			class = *ing.Spec.IngressClassName
		} else if a := ing.Annotations["kubernetes.io/ingress.class"]; a != "" {
			class = a
		}
		fmt.Fprintf(w, "%s/%s\t%s\t%s\t%s\t%s\n", ing.Namespace, ing.Name, orNone(class),
			orNone(strings.Join(addrs, ",")), programmed, ingressRules(ing))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	evs := slices.Clone(events)
	slices.SortStableFunc(evs, func(a, b corev1.Event) int { return eventTime(a).Compare(eventTime(b)) })
	for _, ev := range evs {
		name, ok := uids[string(ev.InvolvedObject.UID)]
		if !ok {
			continue // an Event of an Ingress that is gone
		}
		times := ""
		if ev.Count > 1 {
			times = fmt.Sprintf(", %d times", ev.Count)
		}
		fmt.Fprintf(out, "%s: %s %s (%s ago%s): %s\n", name, ev.Type, ev.Reason,
			now.Sub(eventTime(ev)).Round(time.Second), times, strings.TrimSpace(ev.Message))
	}
	return nil
}

// eventTime is when an Event last happened.
func eventTime(ev corev1.Event) time.Time {
	switch {
	case !ev.LastTimestamp.IsZero():
		return ev.LastTimestamp.Time
	case !ev.EventTime.IsZero():
		return ev.EventTime.Time
	}
	return ev.CreationTimestamp.Time
}

// ingressRules is one line on an Ingress's rules: each host (TLS marked)
// with its paths, and the default backend.
func ingressRules(ing networkingv1.Ingress) string {
	tlsHosts := map[string]bool{}
	for _, t := range ing.Spec.TLS {
		for _, h := range t.Hosts {
			tlsHosts[h] = true
		}
	}
	var parts []string
	for _, r := range ing.Spec.Rules {
		host := r.Host
		if host == "" {
			host = "*"
		}
		if tlsHosts[r.Host] {
			host += " (TLS)"
		}
		n := 0
		if r.HTTP != nil {
			n = len(r.HTTP.Paths)
		}
		parts = append(parts, fmt.Sprintf("%s %d paths", host, n))
	}
	if b := ing.Spec.DefaultBackend; b != nil {
		parts = append(parts, "default "+ingressBackend(*b))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func ingressBackend(b networkingv1.IngressBackend) string {
	switch {
	case b.Service == nil && b.Resource != nil:
		return b.Resource.Kind + " " + b.Resource.Name
	case b.Service == nil:
		return "none"
	case b.Service.Port.Name != "":
		return b.Service.Name + ":" + b.Service.Port.Name
	}
	return fmt.Sprintf("%s:%d", b.Service.Name, b.Service.Port.Number)
}
