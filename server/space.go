package server

import (
	"context"
	"errors"
	"time"

	"github.com/cairnbackup/cairn/catalog"
)

// Disk space. The catalog and the Raft log live in the data directory. A
// server keeps two margins there: below MinFreeBytes the leader starts
// nothing new (admit), so running jobs can still record their sessions;
// below CatalogFloorBytes its catalog stops applying the log, at a command
// boundary, before bbolt runs into the wall in the middle of a commit and
// while Raft keeps room for its own small writes (a Raft that cannot store
// its term panics).
//
// A member whose catalog stopped holds a catalog that no longer follows the
// group's: it proposes nothing (cluster.Node.Apply), hands the leadership
// to another voter (diskLoop), has the leader answer the reads it would
// have answered from its own copy (serveOrForward), and says why in
// 'cairn cluster status' and its metrics. Once there is room again it
// applies what it missed from its Raft log and goes on, without a restart.

// admit refuses new work while this server's disks are nearly full, or its
// catalog stopped.
func (s *Server) admit() error {
	if err := s.raft.FSM().Failed(); err != nil {
		return err
	}
	if s.cfg.MinFreeBytes <= 0 {
		return nil
	}
	for _, dir := range []string{s.cfg.DataDir, s.raftDir()} {
		if free, err := catalog.FreeBytes(dir); err == nil && free < s.cfg.MinFreeBytes {
			return &catalog.DiskFullError{Dir: dir, Free: free, Need: s.cfg.MinFreeBytes}
		}
	}
	return nil
}

// diskStopped is why this server's catalog stopped for lack of space, nil
// when it did not.
func (s *Server) diskStopped() *catalog.DiskFullError {
	var full *catalog.DiskFullError
	if err := s.raft.FSM().Failed(); err != nil && errors.As(err, &full) {
		return full
	}
	return nil
}

// diskLoop watches a catalog that stopped for lack of space: it hands the
// leadership over while it lasts, and resumes the catalog once there is
// room.
func (s *Server) diskLoop(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	var handedOver time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.raft.FSM().Failed() == nil {
			continue
		}
		if s.raft.IsLeader() && time.Since(handedOver) > 10*time.Second {
			handedOver = time.Now()
			tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := s.raft.TransferLeadership(tctx)
			cancel()
			if err != nil {
				// A group of one, or no other voter caught up: stay, and
				// refuse writes until the catalog goes on.
				s.log.Warn("catalog stopped; could not hand the leadership to another server", "err", err)
			} else {
				s.log.Warn("catalog stopped; handed the leadership to another server")
			}
		}
		if s.diskStopped() == nil {
			continue // another cause: a restart after the fix (an upgrade) brings it back
		}
		if err := s.raft.ResumeCatalog(); err != nil {
			s.log.Debug("catalog still stopped", "err", err)
			continue
		}
		s.log.Info("catalog applies the log again: there is room on the disk")
		s.orch.Kick()
	}
}
