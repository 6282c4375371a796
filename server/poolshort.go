package server

import (
	"fmt"
	"time"

	"github.com/cairnbackup/cairn/alert"
	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/server/orchestrator"
)

// A pool that cannot take a policy's next run is said before the run
// fails for it (alert pool_short). The leader looks when it records the
// run, before it starts the job: the run's size is estimated from what
// the same client and file set wrote before, and compared with what the
// pool can still take.
//
// The estimate is the stored size of the newest complete backup of the
// run's level of that client and file set (a full's, the last full's).
// A run with no such backup before it has no estimate, and is not judged:
// the first differential or incremental of a chain says nothing of the
// next.
//
// What the pool can take: on disk, the most free bytes one of its nodes
// reports (a backup is written on one node; an offline node's last report
// is not counted); on tape, the room left on its appendable cartridges,
// and a whole cartridge for each recyclable one of the pool and each
// scratch cartridge of its library. A cartridge ends where its tape does,
// so its size is what the fullest full cartridge of the pool held; a tape
// pool none of whose cartridges filled yet is not judged.

// poolShortLog starts the job log line of a run whose pool was short, by
// which run.list finds it again for 'cairn job runs'.
const poolShortLog = "pool_short: "

// poolShortage is what a run needs and its pool has, when it is short.
type poolShortage struct {
	pool       string
	need, free int64
	reason     string
}

// shortage returns the shortage of spec's pool for it, nil when the pool
// can take it or nothing says it cannot.
func (s *Server) shortage(spec orchestrator.BackupSpec) (*poolShortage, error) {
	if spec.Pool == "" {
		return nil, nil
	}
	pool, err := s.store.Pool(spec.Pool)
	if err != nil || pool == nil {
		return nil, err
	}
	level := catalog.Level(spec.Level)
	if level == "" {
		level = catalog.LevelIncremental
	}
	paths := make([]string, len(spec.Paths))
	for i, p := range spec.Paths {
		paths[i] = string(p)
	}
	excludes := make([]string, len(spec.Excludes))
	for i, p := range spec.Excludes {
		excludes[i] = string(p)
	}
	bs, err := s.store.Backups(catalog.BackupFilter{Client: spec.Client, FileSet: catalog.FileSetOf(paths, excludes), States: []catalog.BackupState{catalog.BackupComplete}})
	if err != nil {
		return nil, err
	}
	var last *catalog.Backup
	for i := range bs {
		if bs[i].Level == level && (last == nil || bs[i].StartTime.After(last.StartTime)) {
			last = &bs[i]
		}
	}
	if last == nil || last.StoredBytes <= 0 {
		return nil, nil
	}
	need := last.StoredBytes
	sized := fmt.Sprintf("the size of %s %d of %s", level, last.ID, last.StartTime.UTC().Format(time.RFC3339))
	if pool.Type.HasLibrary() {
		free, tapes, err := s.tapeRoom(pool)
		if err != nil || tapes < 0 || need <= free {
			return nil, err
		}
		return &poolShortage{pool: pool.Name, need: need, free: free,
			reason: fmt.Sprintf("%s; appendable, recyclable or scratch tapes: %d", sized, tapes)}, nil
	}
	var free int64
	reported := false
	s.mu.Lock()
	for _, n := range pool.Nodes {
		l := s.nodes[n]
		if l == nil || !s.alive(l) {
			continue
		}
		// A remote target's usage may carry only its state, no size.
		if u, ok := l.usage[pool.Name]; ok && u.TotalBytes > 0 {
			reported = true
			free = max(free, u.FreeBytes)
		}
	}
	s.mu.Unlock()
	if !reported || need <= free {
		return nil, nil
	}
	return &poolShortage{pool: pool.Name, need: need, free: free, reason: sized + ", on the node with the most free space"}, nil
}

// tapeRoom is what a tape pool can still take: the room left on its
// appendable tapes and a whole tape for each recyclable and each scratch
// tape of its library, and how many tapes that is; -1 tapes when no tape
// of the pool filled yet, which would say how much one holds.
func (s *Server) tapeRoom(pool *catalog.Pool) (int64, int, error) {
	full, err := s.store.Volumes(catalog.VolumeFilter{Pool: pool.Name, State: catalog.VolumeFull})
	if err != nil {
		return 0, 0, err
	}
	var capacity int64
	for _, v := range full {
		capacity = max(capacity, v.Bytes)
	}
	if capacity == 0 {
		return 0, -1, nil
	}
	var room int64
	var tapes int
	for _, f := range []catalog.VolumeFilter{
		{Pool: pool.Name, State: catalog.VolumeAppend},
		{Pool: pool.Name, State: catalog.VolumeRecyclable},
		{Pool: catalog.ScratchPool, State: catalog.VolumeAppend},
	} {
		vs, err := s.store.Volumes(f)
		if err != nil {
			return 0, 0, err
		}
		for _, v := range vs {
			if f.Pool == catalog.ScratchPool && pool.Library != "" && v.Library != pool.Library {
				continue
			}
			left := capacity
			if f.State == catalog.VolumeAppend && f.Pool == pool.Name {
				left -= v.Bytes
			}
			room += max(left, 0)
			tapes++
		}
	}
	return room, tapes, nil
}

// checkPoolShort alerts, and logs, when spec's pool cannot take the run;
// it returns the sentence for the run's job log, "" when the pool can.
// The dispatcher sends one alert per pool and policy within its repeat
// interval, however many runs find the pool short.
func (s *Server) checkPoolShort(spec orchestrator.BackupSpec) string {
	short, err := s.shortage(spec)
	if err != nil {
		s.log.Warn("pool_short: could not judge the pool", "pool", spec.Pool, "policy", spec.Policy, "err", err)
		return ""
	}
	if short == nil {
		return ""
	}
	e := alert.NewPoolShort(s.clock.Now(), short.pool, spec.Policy, spec.Scheduled, short.need, short.free, short.reason)
	s.log.Warn(e.Summary, "kind", e.Kind, "client", spec.Client)
	if s.alerts != nil {
		if _, err := s.alerts.Send(e); err != nil {
			s.log.Warn("pool_short alert", "err", err)
		}
	}
	return e.Summary
}
