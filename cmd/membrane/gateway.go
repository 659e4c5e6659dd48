package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/kubernetes"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// listGateways lists the cluster's Gateways of every class; none when the
// cluster does not serve the Gateway API.
func listGateways(ctx context.Context, c kubernetes.Interface) ([]gwv1.Gateway, error) {
	// The path of an API group the server does not serve answers a plain
	// 404 page, not a Status: ask discovery first.
	if _, err := c.Discovery().ServerResourcesForGroupVersion(gwv1.GroupVersion.String()); apierrors.IsNotFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("discover the Gateway API: %w", err)
	}
	raw, err := c.Discovery().RESTClient().Get().AbsPath("/apis/gateway.networking.k8s.io/v1/gateways").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("list gateways: %w", err)
	}
	var list gwv1.GatewayList
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("decode gateways: %w", err)
	}
	return list.Items, nil
}

// printGateways is the Gateways' table: address, Programmed (with the
// reason and, when not True, the message) and listeners with their routes.
func printGateways(out io.Writer, gws []gwv1.Gateway) error {
	if len(gws) == 0 {
		return nil
	}
	fmt.Fprintln(out)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "GATEWAY\tCLASS\tADDRESS\tPROGRAMMED\tLISTENERS")
	for _, gw := range gws {
		var addrs []string
		for _, a := range gw.Status.Addresses {
			addrs = append(addrs, a.Value)
		}
		programmed := "Unknown"
		if c := meta.FindStatusCondition(gw.Status.Conditions, "Programmed"); c != nil {
			programmed = fmt.Sprintf("%s (%s)", c.Status, c.Reason)
			if c.Status != "True" && c.Message != "" {
				programmed += ": " + c.Message
			}
			if c.ObservedGeneration != gw.Generation {
				programmed += fmt.Sprintf(" [generation %d, spec is %d]", c.ObservedGeneration, gw.Generation)
			}
		}
		var ls []string
		for _, l := range gw.Spec.Listeners {
			routes := int32(0)
			for _, st := range gw.Status.Listeners {
				if st.Name == l.Name {
					routes = st.AttachedRoutes
				}
			}
			ls = append(ls, fmt.Sprintf("%s %s/%d (%d routes)", l.Name, l.Protocol, l.Port, routes))
		}
		fmt.Fprintf(w, "%s/%s\t%s\t%s\t%s\t%s\n", gw.Namespace, gw.Name, gw.Spec.GatewayClassName,
			orNone(strings.Join(addrs, ",")), programmed, strings.Join(ls, ", "))
	}
	return w.Flush()
}
