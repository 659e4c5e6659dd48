package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/membrane-mesh/membrane/mesh/agentapi"
)

func newServiceCommand(g *globals) *cobra.Command {
	svc := &cobra.Command{Use: "service", Short: "Inspect Service load balancing"}
	svc.AddCommand(agentListCommand(g, "list", "List the Service frontends each node's agent programmed, with their backends", agentapi.PathServices, printServices))
	return svc
}

func printServices(g *globals, lists []agentapi.ServiceList) error {
	w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	for _, l := range lists {
		fmt.Fprintf(w, "Node: %s\n", l.Node)
		fmt.Fprintln(w, "ID\tFRONTEND\tSERVICE TYPE\tSERVICE\tBACKENDS")
		for _, s := range l.Services {
			backends := []string{"(none)"}
			if len(s.Backends) > 0 {
				backends = backends[:0]
				for i, b := range s.Backends {
					state := string(b.State)
					if b.Cluster != "" {
						state += ", cluster " + b.Cluster
					}
					backends = append(backends, fmt.Sprintf("%d => %s (%s)", i+1, b.Backend, state))
				}
			}
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", s.ID, s.Frontend, s.Kind, s.Service, backends[0])
			for _, b := range backends[1:] {
				fmt.Fprintf(w, "\t\t\t\t%s\n", b)
			}
		}
		fmt.Fprintln(w)
	}
	return w.Flush()
}

func newBPFCommand(g *globals) *cobra.Command {
	bpf := &cobra.Command{Use: "bpf", Short: "Inspect the eBPF datapath's maps"}
	lbCmd := &cobra.Command{Use: "lb", Short: "Socket load-balancer maps"}
	lbCmd.AddCommand(agentListCommand(g, "list", "Dump the service, backend and reverse-NAT maps of each node", agentapi.PathBPFLB, printBPFLB))
	bpf.AddCommand(lbCmd)
	return bpf
}

func printBPFLB(g *globals, lists []agentapi.BPFLBList) error {
	w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	for _, l := range lists {
		fmt.Fprintf(w, "Node: %s\n", l.Node)
		fmt.Fprintln(w, "SERVICE ADDRESS\tREV-NAT ID\tFLAGS\tBACKEND IDS")
		for _, s := range l.Dump.Services {
			ids := make([]string, len(s.Backends))
			for i, id := range s.Backends {
				ids[i] = fmt.Sprint(id)
			}
			fmt.Fprintf(w, "%s\t%d\t%d\t%s\n", s.Frontend, s.Info.RevNATID, s.Info.Flags, strings.Join(ids, ","))
		}
		fmt.Fprintln(w, "\nBACKEND ID\tADDRESS")
		for _, b := range l.Dump.Backends {
			fmt.Fprintf(w, "%d\t%s\n", b.ID, b.Backend)
		}
		fmt.Fprintln(w)
	}
	return w.Flush()
}

func checkOutput(o string) error {
	if o != "table" && o != "json" {
		return fmt.Errorf("-o %q: must be table or json", o)
	}
	return nil
}

func writeJSON(g *globals, v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
