package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// l7EnvoyStatsFilter picks the Envoy stats that say where a request's time
// and CPU go: worker threads, connections and requests on each side (how
// well connections are reused), the request-time histograms downstream
// and upstream (the proxy's own share is the difference), and the access
// log's gRPC stream.
const l7EnvoyStatsFilter = `^(server\.concurrency|listener\.[^.]*\.downstream_cx_total|http\.[^.]*\.downstream_(cx|rq)_total|` +
	`http\.[^.]*\.downstream_rq_time|http\.[^.]*\.rbac\..*|cluster\.[^.]*\.upstream_(cx|rq)_total|cluster\.[^.]*\.upstream_rq_time|` +
	`cluster\.[^.]*\.upstream_cx_rx_bytes_total|cluster\.[^.]*\.upstream_cx_tx_bytes_total|access_logs\..*)$`

// l7EnvoyProfile is an Envoy's stats that l7EnvoyStatsFilter picks,
// counters that never moved left out; with dir set, all its stats go to
// dir/name.stats as well.
func l7EnvoyProfile(ctx context.Context, nsPath, admin, name, dir string) (string, error) {
	body, err := l7AdminGet(ctx, nsPath, admin, "/stats?usedonly&filter="+url.QueryEscape(l7EnvoyStatsFilter))
	if err != nil {
		return "", err
	}
	var sb strings.Builder
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasSuffix(line, ": 0") || strings.Contains(line, "No recorded values") {
			continue
		}
		fmt.Fprintf(&sb, "    %s\n", line)
	}
	if dir != "" {
		all, err := l7AdminGet(ctx, nsPath, admin, "/stats")
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, name+".stats"), all, 0o644); err != nil {
			return "", err
		}
	}
	return sb.String(), nil
}
