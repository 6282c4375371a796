package server

import (
	"context"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/keyring"
	"github.com/cairnbackup/cairn/wire"
)

func (s *Server) routeAPI(r *wire.Router) {
	r.Handle(wire.OpStatus, wire.Typed(s.status))
	r.Handle(wire.OpClientList, wire.Typed(s.clientList))
	r.Handle(wire.OpPoolList, wire.Typed(s.poolList))
	r.Handle(wire.OpVolumeList, wire.Typed(s.volumeList))
	r.Handle(wire.OpJobList, wire.Typed(s.jobList))
	r.Handle(wire.OpJobShow, wire.Typed(s.jobShow))
	r.Handle(wire.OpBackupStart, wire.Typed(s.startBackup))
	r.Handle(wire.OpBackupList, wire.Typed(s.backupList))
	r.Handle(wire.OpTreeList, wire.Typed(s.treeList))
	r.Handle(wire.OpRestoreStart, wire.Typed(s.startRestore))
	r.Handle(wire.OpKeyExport, wire.Typed(s.keyExport))
	r.Handle(wire.OpClusterStatus, wire.Typed(s.clusterStatus))
	r.Handle(wire.OpClusterJoin, wire.Typed(s.clusterJoin))
	r.Handle(wire.OpClusterRemove, wire.Typed(s.clusterRemove))
	s.routeTapeAPI(r)
}

func (s *Server) status(context.Context, string, wire.Empty) (wire.StatusResp, error) {
	st := s.raft.Stats()
	return wire.StatusResp{
		Server: s.cfg.Name, Version: Version, Leader: st.Leader, IsLeader: s.raft.IsLeader(),
		RaftState: st.State, Term: st.Term, AppliedIndex: st.AppliedIndex,
	}, nil
}

func (s *Server) clientList(context.Context, string, wire.Empty) (wire.ClientListResp, error) {
	clients, err := s.store.Clients()
	if err != nil {
		return wire.ClientListResp{}, err
	}
	resp := wire.ClientListResp{Clients: []wire.ClientInfo{}}
	for _, c := range clients {
		online, seen := s.online(s.agents, c.Name)
		if seen.IsZero() {
			seen = c.LastSeen
		}
		info := wire.ClientInfo{
			Name: c.Name, Hostname: c.Hostname, OS: c.OS, Version: c.Version, Online: online,
			LastSeen: seen, DefaultPool: c.DefaultPool,
		}
		if bs, err := s.store.Backups(catalog.BackupFilter{Client: c.Name, States: []catalog.BackupState{catalog.BackupComplete}}); err == nil {
			info.Backups = len(bs)
			if len(bs) > 0 {
				info.LastBackup = bs[0].StartTime
			}
		}
		resp.Clients = append(resp.Clients, info)
	}
	return resp, nil
}

func (s *Server) poolList(context.Context, string, wire.Empty) (wire.PoolListResp, error) {
	pools, err := s.store.Pools()
	if err != nil {
		return wire.PoolListResp{}, err
	}
	resp := wire.PoolListResp{Pools: []wire.PoolInfo{}}
	for _, p := range pools {
		info := wire.PoolInfo{Name: p.Name, Type: p.Type, MaxVolumeBytes: p.MaxVolumeBytes, KeyID: p.KeyID}
		for _, id := range p.Nodes {
			pn := wire.PoolNode{Name: id}
			pn.Online, _ = s.online(s.nodes, id)
			if n, err := s.store.Node(id); err == nil {
				for _, np := range n.Pools {
					if np.Name == p.Name {
						pn.Dir = np.Dir
						if np.Type == catalog.PoolTypeTape {
							// Where a tape pool's volumes are.
							pn.Dir = "library " + np.Library
							if np.Library == "" {
								pn.Dir = "any library"
							}
						}
					}
				}
			}
			s.mu.Lock()
			if l := s.nodes[id]; l != nil {
				pn.FreeBytes = l.usage[p.Name].FreeBytes
			}
			s.mu.Unlock()
			info.FreeBytes += pn.FreeBytes
			info.Nodes = append(info.Nodes, pn)
		}
		vols, _ := s.store.Volumes(catalog.VolumeFilter{Pool: p.Name})
		for _, v := range vols {
			info.Volumes++
			info.UsedBytes += v.Bytes
		}
		resp.Pools = append(resp.Pools, info)
	}
	return resp, nil
}

func volumeInfo(v *catalog.Volume, dir string) wire.VolumeInfo {
	info := wire.VolumeInfo{
		ID: v.ID, Name: v.Name, Pool: v.Pool, Node: v.Node, MediaType: v.MediaType, State: string(v.State),
		Bytes: v.Bytes, Sessions: v.Sessions, Created: v.Created, LastWritten: v.LastWritten, Error: v.Error,
		Barcode: v.Barcode, Library: v.Library, Location: v.Location,
	}
	if dir != "" && v.MediaType != catalog.PoolTypeTape {
		info.Path = path.Join(dir, v.Name+".cvol")
	}
	return info
}

func (s *Server) volumeList(_ context.Context, _ string, req wire.VolumeListReq) (wire.VolumeListResp, error) {
	vols, err := s.store.Volumes(catalog.VolumeFilter{Pool: req.Pool})
	if err != nil {
		return wire.VolumeListResp{}, err
	}
	dirs := map[string]string{}
	if nodes, err := s.store.Nodes(); err == nil {
		for _, n := range nodes {
			for _, p := range n.Pools {
				dirs[n.ID+"/"+p.Name] = p.Dir
			}
		}
	}
	resp := wire.VolumeListResp{Volumes: []wire.VolumeInfo{}}
	for i := range vols {
		resp.Volumes = append(resp.Volumes, volumeInfo(&vols[i], dirs[vols[i].Node+"/"+vols[i].Pool]))
	}
	sort.Slice(resp.Volumes, func(i, j int) bool { return resp.Volumes[i].Name < resp.Volumes[j].Name })
	return resp, nil
}

func (s *Server) jobInfo(j *catalog.Job, withLog bool) wire.JobInfo {
	info := wire.JobInfo{
		ID: j.ID, Type: string(j.Type), Client: j.Client, Level: string(j.Level), State: string(j.State),
		Node: j.Node, Pool: j.Pool, Paths: j.Paths, BackupID: j.BackupID, Target: j.Target,
		Created: j.Created, Started: j.Started, Ended: j.Ended, Files: j.Files, Bytes: j.Bytes,
		StoredBytes: j.StoredBytes, Warnings: j.Warnings, ErrorCode: j.ErrorCode, Error: j.Error,
		Hint: wire.HintFor(j.ErrorCode), Waiting: j.Waiting, Attempt: j.Attempt,
	}
	if t := j.Tape; t != nil {
		info.Tape = &wire.TapeStats{DriveBytes: t.DriveBytes, DriveSeconds: t.DriveSeconds, Stops: t.Stops, Tapes: t.Tapes, Spooled: t.Spooled}
	}
	if j.Type == catalog.JobBackup {
		if b, err := s.store.Backup(j.BackupID); err == nil {
			for _, p := range b.Parts {
				info.Volumes = append(info.Volumes, s.volumeName(p.VolumeID))
			}
		}
	}
	if withLog {
		for _, l := range j.Log {
			info.Log = append(info.Log, wire.JobLogLine{Time: l.Time, Level: l.Level, Msg: l.Msg})
			if l.Level == "info" && strings.HasPrefix(l.Msg, "hint: ") && j.State == catalog.JobFailed {
				info.Hint = strings.TrimPrefix(l.Msg, "hint: ")
			}
		}
	}
	if r := s.run(j.ID); r != nil {
		s.mu.Lock()
		if r.progress != nil {
			p := *r.progress
			info.Progress = &p
		}
		s.mu.Unlock()
	}
	return info
}

func (s *Server) jobList(_ context.Context, _ string, req wire.JobListReq) (wire.JobListResp, error) {
	f := catalog.JobFilter{Client: req.Client, Limit: req.Limit}
	for _, st := range req.States {
		f.States = append(f.States, catalog.JobState(st))
	}
	if f.Limit == 0 {
		f.Limit = 50
	}
	jobs, err := s.store.Jobs(f)
	if err != nil {
		return wire.JobListResp{}, err
	}
	resp := wire.JobListResp{Jobs: []wire.JobInfo{}}
	for i := range jobs {
		resp.Jobs = append(resp.Jobs, s.jobInfo(&jobs[i], false))
	}
	return resp, nil
}

func (s *Server) jobShow(_ context.Context, _ string, req wire.JobShowReq) (wire.JobInfo, error) {
	j, err := s.store.Job(req.ID)
	if err != nil {
		return wire.JobInfo{}, wire.Errorf(wire.CodeNotFound, "list jobs with 'cairn job list'", "job %d does not exist", req.ID)
	}
	return s.jobInfo(j, true), nil
}

func (s *Server) backupInfo(b *catalog.Backup) wire.BackupInfo {
	info := wire.BackupInfo{
		ID: b.ID, Client: b.Client, Level: string(b.Level), Parent: b.Parent, Paths: b.Paths, State: string(b.State),
		StartTime: b.StartTime, EndTime: b.EndTime, Files: b.Files, Bytes: b.Bytes, StoredBytes: b.StoredBytes, Pool: b.Pool,
	}
	for _, p := range b.Parts {
		info.Volumes = append(info.Volumes, s.volumeName(p.VolumeID))
	}
	return info
}

func (s *Server) backupList(_ context.Context, _ string, req wire.BackupListReq) (wire.BackupListResp, error) {
	if req.Client != "" {
		if _, err := s.store.Client(req.Client); err != nil {
			return wire.BackupListResp{}, wire.Errorf(wire.CodeUnknownClient, "", "client %q is not known", req.Client)
		}
	}
	bs, err := s.store.Backups(catalog.BackupFilter{Client: req.Client})
	if err != nil {
		return wire.BackupListResp{}, err
	}
	resp := wire.BackupListResp{Backups: []wire.BackupInfo{}}
	for i := range bs {
		resp.Backups = append(resp.Backups, s.backupInfo(&bs[i]))
	}
	return resp, nil
}

// treeListLimit bounds one page of a listing.
const treeListLimit = 5000

func (s *Server) treeList(_ context.Context, _ string, req wire.TreeListReq) (wire.TreeListResp, error) {
	b, err := s.resolveBackup(req.PointInTime)
	if err != nil {
		return wire.TreeListResp{}, err
	}
	chain, err := s.store.Chain(b.ID)
	if err != nil {
		return wire.TreeListResp{}, catalogError(err)
	}
	dir := req.Path
	if dir == "" {
		dir = "/"
	}
	dir = path.Clean(dir)
	limit := req.Limit
	if limit <= 0 || limit > treeListLimit {
		limit = treeListLimit
	}
	layers := make([]fileindex.Iterator, len(chain))
	for i, c := range chain {
		layers[i] = fileindex.SegmentIterator(s.store.Segments(c.ID))
	}
	it := fileindex.Merge(layers...)
	resp := wire.TreeListResp{Backup: s.backupInfo(b), Entries: []wire.EntryInfo{}}
	found := false
	for {
		e, ok := it.Next()
		if !ok {
			break
		}
		if !fileindex.Within(e.Path, dir) {
			if found && fileindex.Compare(e.Path, dir) > 0 {
				break // past the subtree: index order keeps it contiguous
			}
			continue
		}
		found = true
		if req.After != "" && fileindex.Compare(e.Path, req.After) <= 0 {
			continue
		}
		direct := e.Path == dir || path.Dir(e.Path) == dir
		if e.Path == dir && e.Type == fileindex.TypeDir && !req.Recursive {
			continue // list a directory's content, not the directory
		}
		if !req.Recursive && !direct {
			continue
		}
		if len(resp.Entries) == limit {
			resp.More = true
			break
		}
		resp.Entries = append(resp.Entries, wire.EntryInfo{
			Path: e.Path, Type: e.Type.String(), Mode: e.Mode, Size: e.Size, MTime: time.Unix(0, e.MTime).UTC(),
			User: e.User, Group: e.Group, UID: e.UID, GID: e.GID, Target: e.Target, Backup: chain[it.Layer()].ID,
		})
	}
	if err := it.Err(); err != nil {
		return resp, wire.Errorf(wire.CodeCorrupt, "", "reading the catalog's file index: %v", err)
	}
	if !found {
		return resp, wire.Errorf(wire.CodeNotFound, "list the parent directory to see what the backup holds",
			"backup %d of %s holds nothing at %s", b.ID, b.Client, dir)
	}
	return resp, nil
}

func (s *Server) keyExport(context.Context, string, wire.Empty) (wire.KeyExportResp, error) {
	keys, err := s.store.Keys()
	if err != nil {
		return wire.KeyExportResp{}, err
	}
	resp := wire.KeyExportResp{Keys: []wire.KeyMaterial{}}
	for _, k := range keys {
		material, err := keyring.Unwrap(s.kek, k.ID, k.Wrapped)
		if err != nil {
			return wire.KeyExportResp{}, s.unwrapError(k.ID, err)
		}
		resp.Keys = append(resp.Keys, wire.KeyMaterial{ID: k.ID, Pool: k.Pool, Key: material, Created: k.Created})
	}
	s.log.Warn("data keys exported", "keys", len(keys))
	return resp, nil
}
