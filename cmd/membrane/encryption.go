package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/membrane-mesh/membrane/mesh/agentapi"
)

func newEncryptionCommand(g *globals) *cobra.Command {
	enc := &cobra.Command{Use: "encryption", Short: "Inspect node-to-node encryption (WireGuard) and rotate keys"}
	status := agentListCommand(g, "status", "Show each node's WireGuard device: backend, key fingerprint and peers", agentapi.PathEncryption,
		func(g *globals, list []agentapi.EncryptionStatus) error {
			return printEncryptionStatus(g, list, time.Now())
		})

	var rotateNode, rotateOutput string
	rotate := &cobra.Command{
		Use:   "rotate-key",
		Short: "Give a node a new WireGuard key; its peers pick it up from the Node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(rotateOutput); err != nil {
				return err
			}
			c, _, err := g.clientForNodes(cmd.Context(), rotateNode)
			if err != nil {
				return err
			}
			var res agentapi.RotateResult
			if err := postAgent(cmd.Context(), c, rotateNode, agentapi.PathEncryptionRotate, &res); err != nil {
				return err
			}
			if rotateOutput == "json" {
				return writeJSON(g, res)
			}
			_, err = fmt.Fprintf(g.stdout, "Node %s: WireGuard key rotated: %s -> %s\n", res.Node, res.PreviousFingerprint, res.PublicKeyFingerprint)
			return err
		},
	}
	rotate.Flags().StringVar(&rotateNode, "node", "", "the node whose key to rotate")
	rotate.Flags().StringVarP(&rotateOutput, "output", "o", "table", "output format: table or json")
	_ = rotate.MarkFlagRequired("node")
	enc.AddCommand(status, rotate)
	return enc
}

func printEncryptionStatus(g *globals, list []agentapi.EncryptionStatus, now time.Time) error {
	w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	for _, s := range list {
		fmt.Fprintf(w, "Node: %s\n", s.Node)
		if s.WireGuard == nil {
			fmt.Fprintf(w, "Encryption:\t%s\n", s.Mode)
			if s.Error != "" {
				fmt.Fprintf(w, "Error:\t%s\n", s.Error)
			}
			fmt.Fprintln(w)
			continue
		}
		wg := s.WireGuard
		fmt.Fprintf(w, "Encryption:\t%s (device %s, %s backend, port %d)\n", s.Mode, wg.Device, wg.Backend, wg.ListenPort)
		fmt.Fprintf(w, "Public key:\t%s\n", wg.PublicKeyFingerprint)
		if s.KeyCreated != nil {
			fmt.Fprintf(w, "Key age:\t%s\n", now.Sub(*s.KeyCreated).Round(time.Second))
		}
		if s.Error != "" {
			fmt.Fprintf(w, "Error:\t%s\n", s.Error)
		}
		fmt.Fprintln(w, "PEER\tKEY\tENDPOINT\tALLOWED IPS\tLATEST HANDSHAKE\tRX\tTX")
		for _, p := range wg.Peers {
			hs := "never"
			if !p.LatestHandshake.IsZero() {
				hs = now.Sub(p.LatestHandshake).Round(time.Second).String() + " ago"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Node, p.PublicKeyFingerprint, p.Endpoint, strings.Join(p.AllowedIPs, ","), hs, byteSize(p.ReceiveBytes), byteSize(p.TransmitBytes))
		}
		for _, sk := range s.Skipped {
			fmt.Fprintf(w, "%s\t(skipped: %s)\n", sk.Node, sk.Reason)
		}
		fmt.Fprintln(w)
	}
	return w.Flush()
}

func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// postAgent POSTs to path on a node's agent (through the API server's
// node proxy) and decodes the answer into out.
func postAgent(ctx context.Context, c *clusterClient, node, path string, out any) error {
	return c.agents.JSON(ctx, node, http.MethodPost, path, out)
}
