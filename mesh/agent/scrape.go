package agent

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// scrapeMaxAge is how old the datapath's gauges may be when scraped: a
// scrape refreshes them when they are older, so scrapes closer together
// than this cost nothing more.
const scrapeMaxAge = 5 * time.Second

// onScrape is a group of gauges that refresh fills when Prometheus
// scrapes them (at most every maxAge), instead of a loop: an agent nobody
// scrapes spends nothing on them.
type onScrape struct {
	refresh func()
	gauges  []prometheus.Collector
	maxAge  time.Duration
	now     func() time.Time

	mu sync.Mutex
	at time.Time // last refresh (zero: never)
}

func newOnScrape(maxAge time.Duration, refresh func(), gauges ...prometheus.Collector) *onScrape {
	return &onScrape{refresh: refresh, gauges: gauges, maxAge: maxAge, now: time.Now}
}

// Describe implements prometheus.Collector.
func (c *onScrape) Describe(ch chan<- *prometheus.Desc) {
	for _, g := range c.gauges {
		g.Describe(ch)
	}
}

// Collect implements prometheus.Collector: the gauges, refreshed first
// when older than maxAge.
func (c *onScrape) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	if now := c.now(); c.at.IsZero() || now.Sub(c.at) >= c.maxAge {
		c.refresh()
		c.at = now
	}
	c.mu.Unlock()
	for _, g := range c.gauges {
		g.Collect(ch)
	}
}
