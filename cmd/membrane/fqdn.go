package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/membrane-mesh/membrane/mesh/agentapi"
)

func newFQDNCommand(g *globals) *cobra.Command {
	f := &cobra.Command{Use: "fqdn", Short: "Inspect DNS-aware policy: the names each node's DNS proxy learned"}
	cache := &cobra.Command{Use: "cache", Short: "The names the DNS proxy learned for toFQDNs selectors"}
	cache.AddCommand(agentListCommand(g, "list",
		"List each node's learned names: name, address, TTL left, the pod that asked (TTL 0: expired, kept while a connection uses it)",
		agentapi.PathFQDNCache, printFQDNCache))
	f.AddCommand(cache)
	return f
}

func printFQDNCache(g *globals, lists []agentapi.FQDNCacheList) error {
	w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tNAME\tIP\tTTL\tSOURCE\tEXPIRES")
	for _, l := range lists {
		if !l.Enabled {
			fmt.Fprintf(w, "%s\t(no DNS proxy)\t\t\t\t\n", l.Node)
			continue
		}
		for _, e := range l.Entries {
			src := e.Source.String()
			if e.Pod != "" {
				src = e.Namespace + "/" + e.Pod + " (" + src + ")"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%ds\t%s\t%s\n", l.Node, e.Name, e.IP, e.TTLSeconds, src, e.Expires.UTC().Format("15:04:05"))
		}
	}
	return w.Flush()
}
