package wire

import (
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	descNATSConnected  = prometheus.NewDesc("cairn_nats_connected", "1 while this role is connected to NATS, 0 while it waits for NATS or reconnects.", nil, nil)
	descNATSReconnects = prometheus.NewDesc("cairn_nats_reconnects_total", "Times this role reconnected to NATS.", nil, nil)
)

// ConnCollector exports the state of a role's NATS connection, so an alert
// can fire on a role that runs but cannot reach NATS (a refused credential,
// a NATS cluster down). It reads the connection at scrape time; Set gives
// it the connection once the role has one.
type ConnCollector struct {
	nc atomic.Pointer[nats.Conn]
}

// Set gives the collector the role's connection.
func (c *ConnCollector) Set(nc *nats.Conn) { c.nc.Store(nc) }

// Describe implements prometheus.Collector.
func (c *ConnCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descNATSConnected
	ch <- descNATSReconnects
}

// Collect implements prometheus.Collector.
func (c *ConnCollector) Collect(ch chan<- prometheus.Metric) {
	connected, reconnects := 0.0, 0.0
	if nc := c.nc.Load(); nc != nil {
		if nc.IsConnected() {
			connected = 1
		}
		reconnects = float64(nc.Stats().Reconnects)
	}
	ch <- prometheus.MustNewConstMetric(descNATSConnected, prometheus.GaugeValue, connected)
	ch <- prometheus.MustNewConstMetric(descNATSReconnects, prometheus.CounterValue, reconnects)
}
