package server

import (
	"github.com/cairnbackup/cairn/alert"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/wire"
)

type metrics struct {
	jobs     *prometheus.CounterVec
	duration *prometheus.HistogramVec
	bytes    *prometheus.CounterVec
	files    *prometheus.CounterVec
	nats     wire.ConnCollector
}

func newMetrics(s *Server, reg prometheus.Registerer) *metrics {
	m := &metrics{
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_jobs_total", Help: "Jobs that ended, by type, client and outcome.",
		}, []string{"type", "client", "state"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "cairn_job_duration_seconds", Help: "Duration of jobs that ended.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 16),
		}, []string{"type", "state"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_job_bytes_total", Help: "Content bytes of ended jobs, by type and client.",
		}, []string{"type", "client"}),
		files: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_job_files_total", Help: "Files of ended jobs, by type and client.",
		}, []string{"type", "client"}),
	}
	if reg != nil {
		reg.MustRegister(m.jobs, m.duration, m.bytes, m.files, &catalogCollector{s: s}, &m.nats)
	}
	return m
}

func (m *metrics) jobEnded(j *catalog.Job) {
	m.jobs.WithLabelValues(string(j.Type), j.Client, string(j.State)).Inc()
	if !j.Started.IsZero() && !j.Ended.IsZero() {
		m.duration.WithLabelValues(string(j.Type), string(j.State)).Observe(j.Ended.Sub(j.Started).Seconds())
	}
	m.bytes.WithLabelValues(string(j.Type), j.Client).Add(float64(j.Bytes))
	m.files.WithLabelValues(string(j.Type), j.Client).Add(float64(j.Files))
}

// catalogCollector reads gauges from the catalog and Raft at scrape time, so
// every server reports them whether or not it leads.
type catalogCollector struct{ s *Server }

var (
	descVolumes     = prometheus.NewDesc("cairn_pool_volumes", "Volumes in a pool, by state.", []string{"pool", "state"}, nil)
	descPoolBytes   = prometheus.NewDesc("cairn_pool_used_bytes", "Committed bytes on a pool's volumes.", []string{"pool"}, nil)
	descPoolFree    = prometheus.NewDesc("cairn_pool_free_bytes", "Free bytes where a pool's volumes live, as its node reports.", []string{"pool"}, nil)
	descRaftState   = prometheus.NewDesc("cairn_raft_state", "1 for this server's current Raft state.", []string{"state"}, nil)
	descRaftTerm    = prometheus.NewDesc("cairn_raft_term", "Current Raft term.", nil, nil)
	descRaftApplied = prometheus.NewDesc("cairn_raft_applied_index", "Last Raft index applied to the catalog.", nil, nil)
	descRunning     = prometheus.NewDesc("cairn_jobs_running", "Jobs running, by type.", []string{"type"}, nil)
	descClients     = prometheus.NewDesc("cairn_clients_online", "Clients whose agent heartbeats.", nil, nil)
	descStopped     = prometheus.NewDesc("cairn_catalog_stopped", "1 while this server's catalog does not apply the Raft log (a full disk; the log says why).", nil, nil)
	descBehind      = prometheus.NewDesc("cairn_catalog_behind", "Commands Raft handed this server's catalog that it did not apply since it stopped.", nil, nil)
	descDataFree    = prometheus.NewDesc("cairn_server_free_bytes", "Free bytes on the filesystem of the server's catalog and of its Raft log.", []string{"dir"}, nil)
	descLastGood    = prometheus.NewDesc("cairn_client_last_good_backup_timestamp_seconds", "The time the newest good restore point of a client under a policy with an RPO represents (absent when there is none).", []string{"client", "policy"}, nil)
	descRPOTarget   = prometheus.NewDesc("cairn_client_rpo_target_seconds", "The RPO target of a client under a policy.", []string{"client", "policy"}, nil)
	descRPOAge      = prometheus.NewDesc("cairn_client_rpo_age_seconds", "Age of a client's newest good restore point under a policy (or how long the policy has covered it, with none).", []string{"client", "policy"}, nil)
	descRPOBreach   = prometheus.NewDesc("cairn_client_rpo_breach", "1 when a client's newest good restore point under a policy is older than its RPO target.", []string{"client", "policy"}, nil)
)

func (c *catalogCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descVolumes, descPoolBytes, descPoolFree, descRaftState, descRaftTerm, descRaftApplied, descRunning, descClients,
		descStopped, descBehind, descDataFree, descLastGood, descRPOTarget, descRPOAge, descRPOBreach} {
		ch <- d
	}
}

func (c *catalogCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	st := s.raft.Stats()
	for _, state := range []string{"Leader", "Follower", "Candidate", "Shutdown"} {
		v := 0.0
		if st.State == state {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descRaftState, prometheus.GaugeValue, v, state)
	}
	ch <- prometheus.MustNewConstMetric(descRaftTerm, prometheus.GaugeValue, float64(st.Term))
	ch <- prometheus.MustNewConstMetric(descRaftApplied, prometheus.GaugeValue, float64(st.AppliedIndex))
	stopped := 0.0
	if st.FSMError != "" {
		stopped = 1
	}
	ch <- prometheus.MustNewConstMetric(descStopped, prometheus.GaugeValue, stopped)
	ch <- prometheus.MustNewConstMetric(descBehind, prometheus.GaugeValue, float64(st.CatalogBehind))
	for _, dir := range []string{s.cfg.DataDir, s.raftDir()} {
		if free, err := catalog.FreeBytes(dir); err == nil {
			ch <- prometheus.MustNewConstMetric(descDataFree, prometheus.GaugeValue, float64(free), dir)
		}
	}
	if pools, err := s.store.Pools(); err == nil {
		for _, p := range pools {
			vols, _ := s.store.Volumes(catalog.VolumeFilter{Pool: p.Name})
			byState := map[string]int{}
			var used int64
			for _, v := range vols {
				byState[string(v.State)]++
				used += v.Bytes
			}
			for state, n := range byState {
				ch <- prometheus.MustNewConstMetric(descVolumes, prometheus.GaugeValue, float64(n), p.Name, state)
			}
			ch <- prometheus.MustNewConstMetric(descPoolBytes, prometheus.GaugeValue, float64(used), p.Name)
			var free int64
			s.mu.Lock()
			for _, id := range p.Nodes {
				if l := s.nodes[id]; l != nil {
					free += l.usage[p.Name].FreeBytes
				}
			}
			s.mu.Unlock()
			ch <- prometheus.MustNewConstMetric(descPoolFree, prometheus.GaugeValue, float64(free), p.Name)
		}
	}
	running := s.orch.Running()
	s.mu.Lock()
	online := 0
	for name := range s.agents {
		if l := s.agents[name]; l != nil && s.alive(l) {
			online++
		}
	}
	s.mu.Unlock()
	for _, t := range []catalog.JobType{catalog.JobBackup, catalog.JobRestore} {
		ch <- prometheus.MustNewConstMetric(descRunning, prometheus.GaugeValue, float64(running[t]), string(t))
	}
	ch <- prometheus.MustNewConstMetric(descClients, prometheus.GaugeValue, float64(online))
	if clients, err := s.store.Clients(); err == nil {
		sts, _ := s.assessRPO(clients)
		for _, st := range sts {
			if !st.LastGood.IsZero() {
				ch <- prometheus.MustNewConstMetric(descLastGood, prometheus.GaugeValue, float64(st.LastGood.UnixNano())/1e9, st.Client, st.Policy)
			}
			ch <- prometheus.MustNewConstMetric(descRPOTarget, prometheus.GaugeValue, st.RPO.Seconds(), st.Client, st.Policy)
			ch <- prometheus.MustNewConstMetric(descRPOAge, prometheus.GaugeValue, st.Age.Seconds(), st.Client, st.Policy)
			breach := 0.0
			if st.Breach {
				breach = 1
			}
			ch <- prometheus.MustNewConstMetric(descRPOBreach, prometheus.GaugeValue, breach, st.Client, st.Policy)
		}
	}
}

// jobEnded counts a job that this server ended, and tells the
// administrator of one that failed. The server that ends a job is the
// leader that applied its end, so each failure is told once, barring a
// leader lost between the end and the alert.
func (s *Server) jobEnded(j *catalog.Job) {
	s.metrics.jobEnded(j)
	if j.State != catalog.JobFailed || s.alerts == nil {
		return
	}
	at := j.Ended
	if at.IsZero() {
		at = s.clock.Now()
	}
	level := ""
	if j.Type == catalog.JobBackup {
		level = string(j.Level)
	}
	s.sendAlert(alert.NewJobFailed(at, j.ID, j.Client, "", level, j.Error))
}
