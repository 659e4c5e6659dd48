package summary

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Table prints rows as one aligned table, in their order, with a count of
// the verdicts below it.
func Table(w io.Writer, rows []Row) error {
	var sb strings.Builder
	sb.WriteString("\n== Benchmark summary: each figure, its peer measured in the same run, their ratio, the target ==\n")
	if len(rows) == 0 {
		sb.WriteString("No benchmark recorded a figure.\n")
		_, err := io.WriteString(w, sb.String())
		return err
	}
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "benchmark\tfigure\tvalue\tpeer\tpeer value\tratio\ttarget\tresult")
	count := map[Verdict]int{}
	for _, r := range rows {
		count[r.Met]++
		peer, peerValue, ratio := "-", "-", "-"
		if r.Peer != "" {
			peer, peerValue = r.Peer, withUnit(r.PeerValue, r.Unit)
		}
		if r.HasRatio {
			ratio = number(r.Ratio) + "x"
		}
		target := r.Target
		if target == "" {
			target = "-"
		}
		result := string(r.Met)
		if r.Met == Missed {
			result = "MISSED"
		}
		if r.Note != "" {
			result += " (" + r.Note + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Benchmark, r.Figure, withUnit(r.Value, r.Unit), peer, peerValue, ratio, target, result)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	withTarget := count[Met] + count[Missed] + count[NotEvaluated]
	figures := "figures"
	if withTarget == 1 {
		figures = "figure"
	}
	fmt.Fprintf(&sb, "%d %s with a target: %d met, %d missed, %d not evaluated; %d without a target.\n",
		withTarget, figures, count[Met], count[Missed], count[NotEvaluated], count[NoTarget])
	_, err := io.WriteString(w, sb.String())
	return err
}

func withUnit(v float64, unit string) string {
	if unit == "" {
		return number(v)
	}
	return number(v) + " " + unit
}

// number prints v with about three significant digits, whole numbers from
// 100 up.
func number(v float64) string {
	a := math.Abs(v)
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return strconv.FormatFloat(v, 'f', -1, 64)
	case a >= 100 || v == math.Trunc(v):
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}
