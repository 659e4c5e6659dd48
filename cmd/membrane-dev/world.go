package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/membrane-mesh/membrane/e2e/localcluster"

	"github.com/membrane-mesh/membrane/e2e/worldhost"
)

// newDevWorldHostCommand runs one host of a local cluster's outside world
// (`up` starts it in the host's network namespace).
func newDevWorldHostCommand(g *globals) *cobra.Command {
	var c worldhost.Config
	cmd := &cobra.Command{
		Use:    "world-host",
		Short:  "Serve one host of a local cluster's outside world: HTTP (with Envoy's external authorization service over gRPC), and an authoritative DNS zone",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return worldhost.Run(cmd.Context(), g.logger(), c)
		},
	}
	cmd.Flags().StringVar(&c.Name, "name", "", "the host's name, in HTTP answers")
	cmd.Flags().StringVar(&c.HTTPAddr, "http-addr", "", "address of the HTTP server, HTTP/1.1 and h2c (empty: none)")
	cmd.Flags().StringVar(&c.DNSAddr, "dns-addr", "", "address of the authoritative DNS server, UDP and TCP (empty: none)")
	cmd.Flags().StringVar(&c.ZoneFile, "zone-file", "", "the DNS server's zone (JSON; read again when it changes)")
	return cmd
}

// printWorld names the cluster's outside world.
func printWorld(g *globals, l localcluster.Layout) {
	fmt.Fprintf(g.stdout, "Outside world (%s, DNS zone %s served by %s, forwarded to by the cluster DNS):\n", l.WorldSubnet(), localcluster.WorldZone, l.WorldDNS())
	for _, h := range l.WorldHosts() {
		if len(h.Names) > 0 {
			fmt.Fprintf(g.stdout, "  %-6s %s  http://%s/\n", h.Name, h.IP, strings.Join(h.Names, ", http://"))
		}
	}
}
