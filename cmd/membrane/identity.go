package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
	"github.com/membrane-mesh/membrane/mesh/identity"
)

func newIdentityCommand(g *globals) *cobra.Command {
	id := &cobra.Command{Use: "identity", Short: "Inspect security identities and SPIFFE workload identities"}
	var output string
	list := &cobra.Command{
		Use:   "list",
		Short: "List the security identities: reserved ones and those allocated for endpoints",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			raw, err := c.CoreV1().RESTClient().Get().AbsPath("/apis/membrane.io/v1alpha1/membraneidentities").DoRaw(cmd.Context())
			if err != nil {
				return fmt.Errorf("list identities (are Membrane's CRDs installed?): %w", err)
			}
			var l v1alpha1.MembraneIdentityList
			if err := json.Unmarshal(raw, &l); err != nil {
				return fmt.Errorf("decode identities: %w", err)
			}
			type row struct {
				ID     uint64            `json:"id"`
				Labels map[string]string `json:"labels"`
			}
			var rows []row
			for n := identity.Host; n <= identity.KubeAPIServer; n++ {
				rows = append(rows, row{ID: uint64(n), Labels: map[string]string{"reserved:" + identity.Reserved(n): ""}})
			}
			for _, mi := range l.Items {
				n, err := strconv.ParseUint(mi.Name, 10, 32)
				if err != nil {
					continue
				}
				rows = append(rows, row{ID: n, Labels: mi.SecurityLabels})
			}
			sort.Slice(rows, func(i, j int) bool { return rows[i].ID < rows[j].ID })
			if output == "json" {
				return writeJSON(g, rows)
			}
			w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tLABELS")
			for _, r := range rows {
				keys := make([]string, 0, len(r.Labels))
				for k := range r.Labels {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				for i, k := range keys {
					label := k
					if v := r.Labels[k]; v != "" {
						label += "=" + v
					}
					if i == 0 {
						fmt.Fprintf(w, "%d\t%s\n", r.ID, label)
					} else {
						fmt.Fprintf(w, "\t%s\n", label)
					}
				}
			}
			return w.Flush()
		},
	}
	list.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	id.AddCommand(list, svidsCommand(g), fetchCommand(g))
	return id
}
