package storagenode

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairnbackup/cairn/wire"
)

type metrics struct {
	streams         *prometheus.GaugeVec
	sessions        *prometheus.CounterVec
	bytesWritten    prometheus.Counter
	bytesRead       prometheus.Counter
	ticketsRejected *prometheus.CounterVec
	damagedBlocks   prometheus.Counter
	storedBlocks    prometheus.Counter
	nats            wire.ConnCollector
}

func newMetrics(n *Node, reg prometheus.Registerer) *metrics {
	m := &metrics{
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cairn_node_streams", Help: "Data-port streams in progress, by operation.",
		}, []string{"op"}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_node_streams_total", Help: "Data-port streams that ended, by operation and outcome.",
		}, []string{"op", "outcome"}),
		bytesWritten: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cairn_node_stream_bytes_received_total", Help: "Record bytes received from agents for backups.",
		}),
		bytesRead: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cairn_node_stream_bytes_sent_total", Help: "Record bytes sent to agents for restores.",
		}),
		ticketsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_node_tickets_rejected_total", Help: "Data-port connections refused, by reason.",
		}, []string{"reason"}),
		damagedBlocks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cairn_node_damaged_blocks_total", Help: "Blocks found damaged while reading volumes.",
		}),
		storedBlocks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cairn_node_stored_blocks_sent_total", Help: "Compressed data blocks sent to agents for restores as the volumes store them, for the agent to decompress.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.streams, m.sessions, m.bytesWritten, m.bytesRead, m.ticketsRejected, m.damagedBlocks, m.storedBlocks, &poolCollector{n: n}, &m.nats)
	}
	return m
}

var (
	descPoolFree  = prometheus.NewDesc("cairn_node_pool_free_bytes", "Free bytes of the filesystem holding a pool's volumes.", []string{"node", "pool"}, nil)
	descPoolTotal = prometheus.NewDesc("cairn_node_pool_size_bytes", "Size of the filesystem holding a pool's volumes.", []string{"node", "pool"}, nil)

	// A pool on a remote target (SFTP, object storage): one set of series
	// for every kind, labeled with the target's address.
	poolTarget        = []string{"node", "pool", "target"}
	descTargetUp      = prometheus.NewDesc("cairn_node_pool_target_up", "1 when the last try reached the pool's remote target, 0 when it did not (absent before the first try).", poolTarget, nil)
	descTargetBytes   = prometheus.NewDesc("cairn_node_pool_target_bytes_total", "Volume bytes sent to (direction=write) and received from (read) the pool's remote target.", append(poolTarget, "direction"), nil)
	descTargetSeconds = prometheus.NewDesc("cairn_node_pool_target_transfer_seconds_total", "Time spent sending to and receiving from the pool's remote target; bytes over seconds is its throughput while in use.", append(poolTarget, "direction"), nil)
	descTargetErrors  = prometheus.NewDesc("cairn_node_pool_target_errors_total", "Failed connections to and operations on the pool's remote target, each retry counted.", poolTarget, nil)
)

// poolCollector reads filesystem usage at scrape time.
type poolCollector struct{ n *Node }

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descPoolFree
	ch <- descPoolTotal
	ch <- descTargetUp
	ch <- descTargetBytes
	ch <- descTargetSeconds
	ch <- descTargetErrors
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	for _, u := range c.n.usage() {
		ch <- prometheus.MustNewConstMetric(descPoolFree, prometheus.GaugeValue, float64(u.FreeBytes), c.n.cfg.ID, u.Name)
		ch <- prometheus.MustNewConstMetric(descPoolTotal, prometheus.GaugeValue, float64(u.TotalBytes), c.n.cfg.ID, u.Name)
		t := u.Target
		if t == nil {
			continue
		}
		l := []string{c.n.cfg.ID, u.Name, t.Addr}
		if t.Tried {
			up := 0.0
			if t.Reachable {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(descTargetUp, prometheus.GaugeValue, up, l...)
		}
		ch <- prometheus.MustNewConstMetric(descTargetBytes, prometheus.CounterValue, float64(t.BytesWritten), append(l, "write")...)
		ch <- prometheus.MustNewConstMetric(descTargetBytes, prometheus.CounterValue, float64(t.BytesRead), append(l, "read")...)
		ch <- prometheus.MustNewConstMetric(descTargetSeconds, prometheus.CounterValue, t.WriteSeconds, append(l, "write")...)
		ch <- prometheus.MustNewConstMetric(descTargetSeconds, prometheus.CounterValue, t.ReadSeconds, append(l, "read")...)
		ch <- prometheus.MustNewConstMetric(descTargetErrors, prometheus.CounterValue, float64(t.Errors), l...)
	}
}
