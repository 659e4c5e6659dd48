package agent

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestOnScrapeRefreshesWhenScraped(t *testing.T) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x", Help: "x"})
	refreshes := 0
	now := time.Unix(1000, 0)
	c := newOnScrape(5*time.Second, func() {
		refreshes++
		g.Set(float64(refreshes * 10))
	}, g)
	c.now = func() time.Time { return now }
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	if refreshes != 0 {
		t.Fatalf("refreshed %d times before any scrape", refreshes)
	}
	if v := testutil.ToFloat64(c); v != 10 || refreshes != 1 {
		t.Fatalf("first scrape: %v after %d refreshes, want 10 after 1", v, refreshes)
	}
	now = now.Add(4 * time.Second)
	if v := testutil.ToFloat64(c); v != 10 || refreshes != 1 {
		t.Fatalf("scrape 4s later: %v after %d refreshes, want the same 10", v, refreshes)
	}
	now = now.Add(time.Second)
	if v := testutil.ToFloat64(c); v != 20 || refreshes != 2 {
		t.Fatalf("scrape 5s after the refresh: %v after %d refreshes, want 20 after 2", v, refreshes)
	}
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
}
