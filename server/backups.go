package server

import (
	"context"
	"slices"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/retention"
	"github.com/cairnbackup/cairn/wire"
)

// The backups as an administrator manages them: list and show (with their
// holds and what the expiry pass would do), holds, deletion, and the
// expiry history.

func (s *Server) routeBackupAPI(r *wire.Router) {
	r.Handle(wire.OpBackupShow, wire.Typed(s.backupShow))
	r.Handle(wire.OpBackupHold, wire.Typed(s.backupHold))
	r.Handle(wire.OpBackupRelease, wire.Typed(s.backupRelease))
	r.Handle(wire.OpBackupDelete, wire.Typed(s.backupDelete))
	r.Handle(wire.OpPrune, wire.Typed(s.prune))
	r.Handle(wire.OpPruneHistory, wire.Typed(s.pruneHistory))
}

func holdInfo(h *catalog.Hold) *wire.HoldInfo {
	if h == nil {
		return nil
	}
	return &wire.HoldInfo{BackupID: h.Backup, Client: h.Client, Reason: h.Reason, By: h.By, Time: h.Time}
}

func (s *Server) backupInfo(b *catalog.Backup) wire.BackupInfo {
	info := wire.BackupInfo{
		ID: b.ID, Client: b.Client, Level: string(b.Level), Parent: b.Parent, Consolidates: b.Consolidates, Paths: b.Paths, Excludes: b.Excludes, FileSet: b.FileSet, State: string(b.State),
		StartTime: b.StartTime, EndTime: b.EndTime, Files: b.Files, Bytes: b.Bytes, StoredBytes: b.StoredBytes, Pool: b.Pool,
	}
	for _, p := range b.Parts {
		info.Volumes = append(info.Volumes, s.volumeName(p.VolumeID))
	}
	if h, err := s.store.HoldOf(b); err == nil {
		info.Hold = holdInfo(h)
	}
	return info
}

// expiring is what the expiry pass would expire now, and why, among the
// backups of clients.
func (s *Server) expiring(clients []string) (map[uint64]string, error) {
	rets, err := s.currentRetentions()
	if err != nil {
		return nil, err
	}
	plan, err := s.store.PlanExpiryOf(clients, rets.retentionFor, true)
	if err != nil {
		return nil, err
	}
	out := make(map[uint64]string, len(plan.Decisions))
	for _, d := range plan.Decisions {
		out[d.ID] = d.Why()
	}
	return out, nil
}

// backsUp reports whether a backup of paths holds path.
func backsUp(paths []fileindex.Path, path string) bool {
	return slices.ContainsFunc(paths, func(p fileindex.Path) bool { return fileindex.Within(path, string(p)) })
}

func (s *Server) backupList(_ context.Context, _ string, req wire.BackupListReq) (wire.BackupListResp, error) {
	if req.Client != "" {
		if _, err := s.store.Client(req.Client); err != nil {
			return wire.BackupListResp{}, wire.Errorf(wire.CodeUnknownClient, "", "client %q is not known", req.Client)
		}
	}
	fileSet := req.FileSet
	if req.Policy != "" {
		p, err := s.store.Policy(req.Policy)
		if err != nil {
			return wire.BackupListResp{}, wire.Errorf(wire.CodeNotFound, "list policies with 'cairn policy list'", "policy %q does not exist", req.Policy)
		}
		if fileSet != "" && fileSet != p.FileSet() {
			return wire.BackupListResp{Backups: []wire.BackupInfo{}}, nil
		}
		fileSet = p.FileSet()
	}
	resp := wire.BackupListResp{Backups: []wire.BackupInfo{}}
	pg, err := newPage(s.pageBytes(), resp)
	if err != nil {
		return resp, err
	}
	var page []catalog.Backup
	more := false
	for before := req.Before; ; {
		bs, err := s.store.Backups(catalog.BackupFilter{Client: req.Client, FileSet: fileSet, Before: before, Limit: listPageLimit})
		if err != nil {
			return wire.BackupListResp{}, err
		}
		for i := range bs {
			if req.Path == "" || backsUp(bs[i].Paths, req.Path) {
				page = append(page, bs[i])
			}
		}
		if len(bs) < listPageLimit {
			break
		}
		if req.Path == "" {
			more = true // a full page: the caller asks for the next one
			break
		}
		before = bs[len(bs)-1].ID
	}
	// What the pass would expire, planned for the clients of this page only.
	clients := []string{} // none for an empty page, not every client
	for i := range page {
		clients = append(clients, page[i].Client)
	}
	expires, err := s.expiring(clients)
	if err != nil {
		return wire.BackupListResp{}, err
	}
	for i := range page {
		info := s.backupInfo(&page[i])
		info.Expires = expires[page[i].ID]
		if ok, err := pg.add(info); err != nil || !ok {
			resp.More = true
			return resp, err
		}
		resp.Backups = append(resp.Backups, info)
	}
	resp.More = more
	return resp, nil
}

func (s *Server) backupShow(_ context.Context, _ string, req wire.BackupShowReq) (wire.BackupShowResp, error) {
	b, err := s.store.Backup(req.BackupID)
	if err != nil {
		return wire.BackupShowResp{}, wire.Errorf(wire.CodeNotFound, "list backups with 'cairn backup list'", "backup %d does not exist", req.BackupID)
	}
	resp := wire.BackupShowResp{Backup: s.backupInfo(b)}
	deps, err := s.store.Dependents(b.ID)
	if err != nil {
		return resp, catalogError(err)
	}
	for _, d := range deps {
		resp.Dependents = append(resp.Dependents, d.ID)
	}
	rets, err := s.currentRetentions()
	if err != nil {
		return resp, err
	}
	plan, err := s.store.PlanExpiryOf([]string{b.Client}, func(c, fs string) (*retention.Policy, bool) {
		if fs != b.FileSet {
			return nil, false
		}
		return rets.retentionFor(c, fs)
	}, false)
	if err != nil {
		return resp, err
	}
	for _, d := range plan.Decisions {
		if d.ID == b.ID {
			resp.Retention = d.Why()
			if !d.Keep {
				resp.Backup.Expires = resp.Retention
				resp.Retention = "expires: " + resp.Retention
			}
		}
	}
	return resp, nil
}

func (s *Server) backupHold(ctx context.Context, _ string, req wire.HoldReq) (wire.HoldInfo, error) {
	h := &catalog.Hold{Backup: req.BackupID, Client: req.Client, Reason: req.Reason, By: req.By}
	if _, err := s.apply(ctx, &catalog.Command{Op: catalog.OpHold, Hold: h}); err != nil {
		return wire.HoldInfo{}, err
	}
	s.relockHeld(h)
	holds, err := s.store.Holds()
	if err != nil {
		return wire.HoldInfo{}, err
	}
	for i := range holds {
		if holds[i].Backup == req.BackupID && holds[i].Client == req.Client {
			return *holdInfo(&holds[i]), nil
		}
	}
	return *holdInfo(h), nil
}

func (s *Server) backupRelease(ctx context.Context, _ string, req wire.HoldReq) (wire.Empty, error) {
	h := &catalog.Hold{Backup: req.BackupID, Client: req.Client, By: req.By}
	if _, err := s.apply(ctx, &catalog.Command{Op: catalog.OpRelease, Hold: h}); err != nil {
		return wire.Empty{}, err
	}
	s.relockHeld(h)
	return wire.Empty{}, nil
}

// relockHeld queues the volumes whose objects' legal holds a hold or a
// release of h may change: its backup's chain, or, for a client, every
// volume that locks.
func (s *Server) relockHeld(h *catalog.Hold) {
	if h.Client != "" {
		s.relockWhere(catalog.VolumeFilter{})
		return
	}
	s.relockBackups(h.Backup)
}

func (s *Server) backupDelete(ctx context.Context, _ string, req wire.BackupDeleteReq) (wire.BackupDeleteResp, error) {
	ids := []uint64{req.BackupID}
	if req.WithDependents {
		deps, err := s.store.Dependents(req.BackupID)
		if err != nil {
			return wire.BackupDeleteResp{}, catalogError(err)
		}
		for _, d := range deps {
			ids = append(ids, d.ID)
		}
	}
	e := &catalog.BackupsExpire{By: req.By, Manual: true}
	if e.By == "" {
		e.By = "admin"
	}
	for _, id := range ids {
		reason := "deleted by hand"
		if id != req.BackupID {
			reason = "deleted by hand with the backup it builds on"
		}
		e.Backups = append(e.Backups, catalog.ExpiringBackup{ID: id, Reason: reason})
	}
	res, err := s.apply(ctx, &catalog.Command{Op: catalog.OpExpireBackups, Expire: e})
	if err != nil {
		return wire.BackupDeleteResp{}, err
	}
	// One reclaim at a time: the expiry pass may be at it too.
	s.expiryMu.Lock()
	_, pending := s.reclaimVolumes(ctx)
	s.expiryMu.Unlock()
	return wire.BackupDeleteResp{Deleted: res.Expired, Pending: pending}, nil
}

// pruneHistoryLimit bounds one page of the expiry history.
const pruneHistoryLimit = 1000

func (s *Server) pruneHistory(_ context.Context, _ string, req wire.PruneHistoryReq) (wire.PruneHistoryResp, error) {
	resp := wire.PruneHistoryResp{Expiries: []wire.ExpiryRecord{}}
	pg, err := newPage(s.pageBytes(), resp)
	if err != nil {
		return resp, err
	}
	before := req.Before
	for {
		recs, err := s.store.Expiries(before, pruneHistoryLimit)
		if err != nil {
			return resp, err
		}
		for _, e := range recs {
			if req.Client != "" && e.Client != req.Client {
				continue
			}
			r := wire.ExpiryRecord{Seq: e.Seq, Time: e.Time, BackupID: e.Backup, Client: e.Client, FileSet: e.FileSet, Level: string(e.Level),
				StartTime: e.StartTime, Pool: e.Pool, Bytes: e.Bytes, Reason: e.Reason, By: e.By}
			if ok, err := pg.add(r); err != nil || !ok {
				resp.More = true
				return resp, err
			}
			resp.Expiries = append(resp.Expiries, r)
		}
		if len(recs) < pruneHistoryLimit || recs[len(recs)-1].Seq == 0 {
			return resp, nil
		}
		if req.Client == "" {
			resp.More = true
			return resp, nil
		}
		before = recs[len(recs)-1].Seq
	}
}
