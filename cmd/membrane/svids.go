package main

import (
	"context"
	"encoding/pem"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/membrane-mesh/membrane/mesh/agentapi"
)

// svidsCommand is `membrane identity svids`: each node's X.509-SVIDs.
func svidsCommand(g *globals) *cobra.Command {
	return agentListCommand(g, "svids", "List each node's X.509-SVIDs (SPIFFE IDs of its pods' service accounts) with expiry, and its trust bundle", agentapi.PathSVIDs, printSVIDs)
}

func printSVIDs(g *globals, lists []agentapi.SVIDList) error {
	w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tSPIFFE ID\tEXPIRES\tRENEWS\tISSUER")
	now := time.Now()
	for _, l := range lists {
		if !l.Enabled {
			fmt.Fprintf(w, "%s\t(SPIFFE identities off)\t\t\t\n", l.Node)
			continue
		}
		for _, s := range l.SVIDs {
			fmt.Fprintf(w, "%s\t%s\t%s (in %s)\t%s\t%.12s\n", l.Node, s.SPIFFEID, s.NotAfter.Format(time.RFC3339),
				s.NotAfter.Sub(now).Round(time.Second), s.RenewAt.Format(time.RFC3339), s.Issuer)
		}
		for _, ca := range l.Bundle {
			fmt.Fprintf(w, "%s\t(trust bundle CA %.12s)\t%s\t\t\n", l.Node, ca.Fingerprint, ca.NotAfter.Format(time.RFC3339))
		}
	}
	return w.Flush()
}

// fetchCommand is `membrane identity fetch`: inside a pod, its own SVID from
// the SPIFFE Workload API of its node's agent.
func fetchCommand(g *globals) *cobra.Command {
	var socket, output string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "fetch",
		Short: "Fetch this pod's X.509-SVID from the SPIFFE Workload API (SPIFFE_ENDPOINT_SOCKET) and check it against the trust bundle",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "pem" {
				if err := checkOutput(output); err != nil {
					return fmt.Errorf("%w (or pem)", err)
				}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			var opts []workloadapi.ClientOption
			if socket != "" {
				opts = append(opts, workloadapi.WithAddr(socket))
			}
			x, err := workloadapi.FetchX509Context(ctx, opts...)
			if err != nil {
				return fmt.Errorf("workload API: %w", err)
			}
			if output == "pem" {
				return writeSVIDPEM(g, x)
			}
			type row struct {
				SPIFFEID string    `json:"spiffeID"`
				NotAfter time.Time `json:"notAfter"`
				Verified bool      `json:"verified"`
			}
			var rows []row
			for _, s := range x.SVIDs {
				_, _, verr := x509svid.Verify(s.Certificates, x.Bundles)
				rows = append(rows, row{SPIFFEID: s.ID.String(), NotAfter: s.Certificates[0].NotAfter, Verified: verr == nil})
			}
			if output == "json" {
				return writeJSON(g, rows)
			}
			w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "SPIFFE ID\tEXPIRES\tVERIFIED")
			for _, r := range rows {
				fmt.Fprintf(w, "%s\t%s\t%v\n", r.SPIFFEID, r.NotAfter.Format(time.RFC3339), r.Verified)
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "", "Workload API address, unix:///path (default: $SPIFFE_ENDPOINT_SOCKET)")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json, or pem (the SVIDs' certificates and private keys and the trust bundles, for programs that read PEM files)")
	return cmd
}

// writeSVIDPEM writes each SVID's certificate chain and PKCS#8 private key,
// then every trust bundle's CAs, as PEM blocks.
func writeSVIDPEM(g *globals, x *workloadapi.X509Context) error {
	for _, s := range x.SVIDs {
		certs, key, err := s.Marshal()
		if err != nil {
			return fmt.Errorf("SVID %s: %w", s.ID, err)
		}
		if _, err := g.stdout.Write(append(certs, key...)); err != nil {
			return err
		}
	}
	for _, b := range x.Bundles.Bundles() {
		for _, c := range b.X509Authorities() {
			if err := pem.Encode(g.stdout, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}); err != nil {
				return err
			}
		}
	}
	return nil
}
