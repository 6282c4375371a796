package server

import (
	"context"
	"encoding/json"
	"errors"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/rpo"
	"github.com/cairnbackup/cairn/server/orchestrator"
	"github.com/cairnbackup/cairn/wire"
)

func (s *Server) routeAPI(r *wire.Router) {
	r.Handle(wire.OpStatus, wire.Typed(s.status))
	r.Handle(wire.OpClientList, wire.Typed(s.clientList))
	r.Handle(wire.OpPoolList, wire.Typed(s.poolList))
	r.Handle(wire.OpPoolSet, wire.Typed(s.poolSet))
	r.Handle(wire.OpVolumeList, wire.Typed(s.volumeList))
	r.Handle(wire.OpVolumeShow, wire.Typed(s.volumeShow))
	r.Handle(wire.OpJobList, wire.Typed(s.jobList))
	r.Handle(wire.OpRunList, wire.Typed(s.runList))
	r.Handle(wire.OpJobShow, wire.Typed(s.jobShow))
	r.Handle(wire.OpJobCancel, wire.Typed(s.cancelJob))
	r.Handle(wire.OpBackupStart, wire.Typed(s.startBackup))
	r.Handle(wire.OpBackupConsolidate, wire.Typed(s.startConsolidate))
	r.Handle(wire.OpBackupList, wire.Typed(s.backupList))
	r.Handle(wire.OpTreeList, wire.Typed(s.treeList))
	r.Handle(wire.OpRestoreStart, wire.Typed(s.startRestore))
	r.Handle(wire.OpKeyExport, wire.Typed(s.keyExport))
	r.Handle(wire.OpSecretsRotate, wire.Typed(s.rotateSecrets))
	r.Handle(wire.OpClusterStatus, wire.Typed(s.clusterStatus))
	r.Handle(wire.OpClusterJoin, wire.Typed(s.clusterJoin))
	r.Handle(wire.OpClusterRemove, wire.Typed(s.clusterRemove))
	s.routeTapeAPI(r)
	s.routePolicyAPI(r)
	s.routeBackupAPI(r)
}

func (s *Server) status(context.Context, string, wire.Empty) (wire.StatusResp, error) {
	st := s.raft.Stats()
	resp := wire.StatusResp{
		Server: s.cfg.Name, Version: Version, Leader: st.Leader, IsLeader: s.raft.IsLeader(),
		RaftState: st.State, Term: st.Term, AppliedIndex: st.AppliedIndex, Group: s.groupName(), CatalogError: st.FSMError,
		OtherGroups: func() []wire.OtherServer { o, _ := s.otherServers(); return o }(),
	}
	clients, err := s.store.Clients()
	if err != nil {
		return resp, err
	}
	sts, err := s.assessRPO(clients)
	if err != nil {
		return resp, err
	}
	resp.RPOTargets = len(sts)
	for _, b := range rpo.Breaches(sts) {
		resp.RPOBreaches = append(resp.RPOBreaches, wireRPO(b))
	}
	nodes, err := s.store.Nodes()
	if err != nil {
		return resp, err
	}
	hb := heartbeats{s}
	for _, n := range nodes {
		ns := hb.Node(n.ID)
		nl := wire.NodeLiveness{ID: n.ID, Online: ns.Online, LastSeen: ns.LastSeen, Draining: ns.Draining, Streams: ns.Streams, Version: n.Version}
		if nl.LastSeen.IsZero() {
			nl.LastSeen = n.LastSeen // not heard since this server started
		}
		resp.Nodes = append(resp.Nodes, nl)
	}
	resp.Agents = &wire.AgentsSummary{}
	for _, c := range clients { // by name
		if online, _ := s.online(s.agents, c.Name); online {
			resp.Agents.Online++
			continue
		}
		if resp.Agents.Offline++; len(resp.Agents.Named) < wire.MaxOfflineNamed {
			resp.Agents.Named = append(resp.Agents.Named, c.Name)
		}
	}
	return resp, nil
}

func (s *Server) clientList(_ context.Context, _ string, req wire.ClientListReq) (wire.ClientListResp, error) {
	clients, err := s.store.Clients() // by name
	if err != nil {
		return wire.ClientListResp{}, err
	}
	resp := wire.ClientListResp{Clients: []wire.ClientInfo{}}
	pg, err := newPage(s.pageBytes(), resp)
	if err != nil {
		return resp, err
	}
	for _, c := range clients {
		if req.After != "" && c.Name <= req.After {
			continue
		}
		online, seen := s.online(s.agents, c.Name)
		if seen.IsZero() {
			seen = c.LastSeen
		}
		info := wire.ClientInfo{
			Name: c.Name, Hostname: c.Hostname, OS: c.OS, Version: c.Version, Online: online,
			LastSeen: seen, DefaultPool: c.DefaultPool, Labels: c.Labels,
		}
		if dup := s.duplicate(c.Name); dup != nil {
			info.Duplicate, info.Instances = dup.Message, dup.Instances
		}
		sts, err := s.assessRPO([]catalog.Client{c})
		if err != nil {
			return resp, err
		}
		for _, st := range sts {
			info.RPO = append(info.RPO, wireRPO(st))
		}
		if sum, err := s.store.BackupSummary(c.Name); err == nil {
			info.Backups, info.LastBackup = sum.Complete, sum.Latest
		}
		if ok, err := pg.add(info); err != nil || !ok {
			resp.More = true
			return resp, err
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
		info := wire.PoolInfo{Name: p.Name, Type: string(p.Type), MaxVolumeBytes: p.MaxVolumeBytes, KeyID: p.KeyID, Compression: p.DataCodec()}
		for _, id := range p.Nodes {
			pn := wire.PoolNode{Name: id}
			pn.Online, _ = s.online(s.nodes, id)
			if n, err := s.store.Node(id); err == nil {
				for _, np := range n.Pools {
					if np.Name == p.Name {
						pn.Dir = np.Dir
						if np.Type.HasLibrary() {
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
				pn.Target = l.usage[p.Name].Target
			}
			s.mu.Unlock()
			info.FreeBytes += pn.FreeBytes
			info.Nodes = append(info.Nodes, pn)
		}
		vols, _ := s.store.Volumes(catalog.VolumeFilter{Pool: p.Name})
		now := s.clock.Now()
		for _, v := range vols {
			info.Volumes++
			if v.MediaType.Locks() && v.LockedUntil.After(now) {
				info.LockedBytes += v.Bytes
			}
			if v.State == catalog.VolumeExpired || v.State == catalog.VolumeRecyclable {
				// Its backups have all expired: the space comes back once
				// its node deletes it, or a backup relabels the tape.
				info.ReclaimableBytes += v.Bytes
				continue
			}
			info.UsedBytes += v.Bytes
		}
		resp.Pools = append(resp.Pools, info)
	}
	return resp, nil
}

// poolSet changes a pool's compression. The catalog checks the pool and
// the codec, so every server refuses the same; the sessions that start
// after it get the new codec with their first volume.
func (s *Server) poolSet(ctx context.Context, _ string, req wire.PoolSetReq) (wire.PoolSetResp, error) {
	if _, err := s.apply(ctx, &catalog.Command{Op: catalog.OpSetPoolCompression, PoolCompression: &catalog.PoolCompression{
		Pool: req.Name, Codec: req.Compression,
	}}); err != nil {
		return wire.PoolSetResp{}, err
	}
	p, err := s.store.Pool(req.Name)
	if err != nil {
		return wire.PoolSetResp{}, catalogError(err)
	}
	s.log.Info("pool compression set", "pool", p.Name, "compression", p.DataCodec())
	return wire.PoolSetResp{Name: p.Name, Compression: p.DataCodec()}, nil
}

func volumeInfo(v *catalog.Volume, dir string) wire.VolumeInfo {
	info := wire.VolumeInfo{
		ID: v.ID, Name: v.Name, Pool: v.Pool, Node: v.Node, MediaType: string(v.MediaType), State: string(v.State),
		Bytes: v.Bytes, Sessions: v.Sessions, Created: v.Created, LastWritten: v.LastWritten, Error: v.Error,
		Barcode: v.Barcode, Library: v.Library, Location: v.Location,
	}
	if dir != "" && v.MediaType.FileBacked() {
		info.Path = v.MediaType.VolumePath(dir, v.Name)
	}
	return info
}

// partInfo is part p of backup b, on the volume named volume, as
// job.show and volume.show show it.
func partInfo(volume string, b *catalog.Backup, p catalog.Part) wire.PartInfo {
	return wire.PartInfo{Volume: volume, BackupID: b.ID, Client: b.Client, Part: p.Part, VolumeStart: p.VolumeStart, End: p.End, Final: p.Final, Torn: p.Torn}
}

// volumeShow is a volume and the parts of sessions on it, oldest first.
func (s *Server) volumeShow(_ context.Context, _ string, req wire.VolumeShowReq) (wire.VolumeShowResp, error) {
	v, err := s.store.VolumeByName(req.Name)
	if err != nil {
		return wire.VolumeShowResp{}, catalogError(err)
	}
	dir := ""
	if n, err := s.store.Node(v.Node); err == nil {
		for _, p := range n.Pools {
			if p.Name == v.Pool {
				dir = p.Dir
			}
		}
	}
	resp := wire.VolumeShowResp{Volume: volumeInfo(v, dir), Parts: []wire.PartInfo{}}
	bs, err := s.store.Backups(catalog.BackupFilter{Volume: v.ID})
	if err != nil {
		return wire.VolumeShowResp{}, err
	}
	var parts []wire.PartInfo
	for i := range bs {
		for _, p := range bs[i].Parts {
			if p.VolumeID == v.ID {
				parts = append(parts, partInfo(v.Name, &bs[i], p))
			}
		}
	}
	// In the order they lie on the volume.
	sort.Slice(parts, func(i, j int) bool { return parts[i].VolumeStart < parts[j].VolumeStart })
	pg, err := newPage(s.pageBytes(), resp)
	if err != nil {
		return resp, err
	}
	for _, p := range parts {
		if ok, err := pg.add(p); err != nil || !ok {
			resp.More = true
			return resp, err
		}
		resp.Parts = append(resp.Parts, p)
	}
	return resp, nil
}

func (s *Server) volumeList(_ context.Context, _ string, req wire.VolumeListReq) (wire.VolumeListResp, error) {
	if req.Pool != "" {
		// A pool that does not exist has no volumes, and saying so as an
		// empty list would hide a misspelt name from a script.
		if _, err := s.store.Pool(req.Pool); err != nil {
			return wire.VolumeListResp{}, wire.Errorf(wire.CodeNotFound, "list pools with 'cairn pool list'", "pool %q does not exist", req.Pool)
		}
	}
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
	sort.Slice(vols, func(i, j int) bool { return vols[i].Name < vols[j].Name })
	resp := wire.VolumeListResp{Volumes: []wire.VolumeInfo{}}
	pg, err := newPage(s.pageBytes(), resp)
	if err != nil {
		return resp, err
	}
	for i := range vols {
		if req.After != "" && vols[i].Name <= req.After {
			continue
		}
		info := volumeInfo(&vols[i], dirs[vols[i].Node+"/"+vols[i].Pool])
		if ok, err := pg.add(info); err != nil || !ok {
			resp.More = true
			return resp, err
		}
		resp.Volumes = append(resp.Volumes, info)
	}
	return resp, nil
}

func (s *Server) jobInfo(j *catalog.Job, withLog bool) wire.JobInfo {
	info := wire.JobInfo{
		ID: j.ID, Type: string(j.Type), Client: j.Client, Level: string(j.Level), State: string(j.State),
		Node: j.Node, Pool: j.Pool, Paths: j.Paths, BackupID: j.BackupID, Target: j.Target, SkipNodump: j.SkipNodump,
		Created: j.Created, Started: j.Started, Ended: j.Ended, Files: j.Files, Bytes: j.Bytes,
		StoredBytes: j.StoredBytes, Warnings: j.Warnings, Entries: j.Entries, Restored: j.Restored, Lost: j.Lost,
		ErrorCode: j.ErrorCode, Error: j.Error,
		Hint: wire.HintFor(j.ErrorCode), Waiting: j.Waiting, Attempt: j.Attempt, RequestID: j.RequestID,
		Policy: j.Policy, Scheduled: j.Scheduled, Priority: j.Priority,
	}
	if c := j.Cancel; c != nil {
		info.CanceledBy, info.CancelReason = c.By, c.Reason
	}
	if t := j.Tape; t != nil {
		info.Tape = &wire.TapeStats{DriveBytes: t.DriveBytes, DriveSeconds: t.DriveSeconds, Stops: t.Stops, Tapes: t.Tapes, Spooled: t.Spooled}
	}
	if j.Type == catalog.JobRestore {
		if b, err := s.store.Backup(j.BackupID); err == nil {
			info.FileSet = orchestrator.FileSetInfo(b)
		}
	}
	if j.Type == catalog.JobBackup {
		info.FileSet = &wire.FileSetInfo{ID: catalog.FileSetOf(fileindex.Strings(j.Paths), fileindex.Strings(j.Excludes)), Paths: j.Paths, Excludes: j.Excludes}
		if b, err := s.store.Backup(j.BackupID); err == nil {
			for _, p := range b.Parts {
				name := s.volumeName(p.VolumeID)
				info.Volumes = append(info.Volumes, name)
				if withLog {
					info.Parts = append(info.Parts, partInfo(name, b, p))
				}
			}
		}
	}
	if withLog {
		info.LogFrom = int(j.LogLines) - len(j.Log)
		for _, l := range j.Log {
			info.Log = append(info.Log, wire.JobLogLine{Time: l.Time, Level: l.Level, Msg: l.Msg})
			if l.Level == "info" && strings.HasPrefix(l.Msg, "hint: ") && j.State == catalog.JobFailed {
				info.Hint = strings.TrimPrefix(l.Msg, "hint: ")
			}
		}
	}
	info.Progress = s.orch.Progress(j.ID)
	return info
}

// listPageLimit bounds how many records one page of a list reads from the
// catalog; its bytes are bounded by pageBytes.
const listPageLimit = 5000

func (s *Server) jobList(_ context.Context, _ string, req wire.JobListReq) (wire.JobListResp, error) {
	limit := req.Limit
	if limit <= 0 {
		limit = 50
	}
	f := catalog.JobFilter{Client: req.Client, Limit: min(limit, listPageLimit), Before: req.Before}
	// A filter that names nothing is refused, not answered with an empty
	// list a script would take for "no such jobs".
	if req.Client != "" {
		if _, err := s.store.Client(req.Client); err != nil {
			return wire.JobListResp{}, wire.Errorf(wire.CodeUnknownClient, "list clients with 'cairn client list'", "client %q is not known", req.Client)
		}
	}
	for _, st := range req.States {
		state := catalog.JobState(st)
		if !state.Valid() {
			var names []string
			for _, v := range catalog.JobStates {
				names = append(names, string(v))
			}
			return wire.JobListResp{}, wire.Errorf(wire.CodeInvalidArgument, "use one or more of "+strings.Join(names, ", "), "job state %q is not known", st)
		}
		f.States = append(f.States, state)
	}
	var jobs []catalog.Job
	var err error
	if req.RequestID != "" {
		jobs, err = s.requestJobs(req.RequestID, f)
	} else {
		jobs, err = s.store.Jobs(f)
	}
	if err != nil {
		return wire.JobListResp{}, err
	}
	resp := wire.JobListResp{Jobs: []wire.JobInfo{}}
	// Asked for more than one read returns: the rest may follow.
	resp.More = len(jobs) == f.Limit && limit > f.Limit
	pg, err := newPage(s.pageBytes(), resp)
	if err != nil {
		return resp, err
	}
	for i := range jobs {
		info := s.jobInfo(&jobs[i], false)
		if ok, err := pg.add(info); err != nil || !ok {
			resp.More = true
			return resp, err
		}
		resp.Jobs = append(resp.Jobs, info)
	}
	return resp, nil
}

// requestJobs is the job a start request made, if f selects it.
func (s *Server) requestJobs(id string, f catalog.JobFilter) ([]catalog.Job, error) {
	r, err := s.store.Request(id)
	if errors.Is(err, catalog.ErrNotFound) || (err == nil && r.JobID == 0) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	j, err := s.store.Job(r.JobID)
	if err != nil {
		return nil, err
	}
	j.Log = nil
	if (f.Client != "" && j.Client != f.Client) || (len(f.States) > 0 && !slices.Contains(f.States, j.State)) || (f.Before != 0 && j.ID >= f.Before) {
		return nil, nil
	}
	return []catalog.Job{*j}, nil
}

// jobShow answers a job with as much of its log, from line LogFrom on, as
// fits a message; LogNext says where the rest starts.
func (s *Server) jobShow(_ context.Context, _ string, req wire.JobShowReq) (wire.JobInfo, error) {
	j, err := s.store.Job(req.ID)
	if err != nil {
		return wire.JobInfo{}, wire.Errorf(wire.CodeNotFound, "list jobs with 'cairn job list'", "job %d does not exist", req.ID)
	}
	info := s.jobInfo(j, true)
	lines := info.Log
	if skip := req.LogFrom - info.LogFrom; skip > 0 {
		lines = lines[min(skip, len(lines)):]
		info.LogFrom = req.LogFrom
	}
	info.Log = nil
	pg, err := newPage(s.pageBytes(), info)
	if err != nil {
		return info, err
	}
	for i, l := range lines {
		if ok, err := pg.add(l); err != nil || !ok {
			info.LogNext = info.LogFrom + i
			return info, err
		}
		info.Log = append(info.Log, l)
	}
	return info, nil
}

// page fills one page of a list up to a byte budget, so that a reply
// never outgrows a NATS message however the list grows.
type page struct {
	size, budget, items int
}

// newPage starts a page whose reply, without its items, is base.
func newPage(budget int, base any) (*page, error) {
	n, err := jsonLen(base)
	return &page{size: n, budget: budget}, err
}

// add reports whether v still fits the page and counts it if so. The
// first item always fits: a page holds at least one.
func (p *page) add(v any) (bool, error) {
	n, err := jsonLen(v)
	if err != nil {
		return false, err
	}
	if p.items > 0 && p.size+n+1 > p.budget {
		return false, nil
	}
	p.size += n + 1
	p.items++
	return true, nil
}

// treeListLimit bounds the entries of one page of a listing; its bytes are
// bounded by pageBytes.
const treeListLimit = 5000

func (s *Server) treeList(_ context.Context, _ string, req wire.TreeListReq) (wire.TreeListResp, error) {
	dir, after := string(req.Path), string(req.After)
	if dir == "" {
		dir = "/"
	}
	dir = path.Clean(dir)
	b, err := s.orch.ResolveBackup(req.PointInTime, []string{dir})
	if err != nil {
		return wire.TreeListResp{}, err
	}
	chain, err := s.store.Chain(b.ID)
	if err != nil {
		return wire.TreeListResp{}, catalogError(err)
	}
	limit := req.Limit
	if limit <= 0 || limit > treeListLimit {
		limit = treeListLimit
	}
	resp := wire.TreeListResp{Backup: s.backupInfo(b), Entries: []wire.EntryInfo{}}
	size, err := jsonLen(resp)
	if err != nil {
		return resp, err
	}
	budget := s.pageBytes()
	// A page after the first seeks to its place, so listing a whole tree
	// page by page reads it once, not once a page.
	var jerr error
	found, err := s.store.ListTree(chain, dir, after, req.Recursive, func(te *catalog.TreeEntry) bool {
		e := &te.Entry
		info := wire.EntryInfo{
			Path: fileindex.Path(e.Path), Type: e.Type.String(), Mode: e.Mode, Size: e.Size, MTime: time.Unix(0, e.MTime).UTC(),
			User: e.User, Group: e.Group, UID: e.UID, GID: e.GID, Target: fileindex.Path(e.Target), Flags: e.Flags,
			Backup: te.Backup,
		}
		n, err := jsonLen(info)
		if err != nil {
			jerr = err
			return false
		}
		if len(resp.Entries) == limit || (len(resp.Entries) > 0 && size+n+1 > budget) {
			resp.More = true
			return false
		}
		resp.Entries = append(resp.Entries, info)
		size += n + 1
		return true
	})
	if err != nil {
		return resp, orchestrator.IndexError(err)
	}
	if jerr != nil {
		return resp, jerr
	}
	if !found {
		return resp, wire.Errorf(wire.CodeNotFound, "list the parent directory to see what the backup holds",
			"backup %d of %s holds nothing at %s", b.ID, b.Client, fileindex.Escape(dir))
	}
	return resp, nil
}

// jsonLen is the size of v's JSON encoding.
func jsonLen(v any) (int, error) {
	data, err := json.Marshal(v)
	return len(data), err
}

func (s *Server) keyExport(context.Context, string, wire.Empty) (wire.KeyExportResp, error) {
	keys, err := s.store.Keys()
	if err != nil {
		return wire.KeyExportResp{}, err
	}
	resp := wire.KeyExportResp{Keys: []wire.KeyMaterial{}}
	for _, k := range keys {
		material, err := s.unwrap(&k)
		if err != nil {
			return wire.KeyExportResp{}, s.unwrapError(k.ID, err)
		}
		resp.Keys = append(resp.Keys, wire.KeyMaterial{ID: k.ID, Pool: k.Pool, Key: material, Created: k.Created})
	}
	s.log.Warn("data keys exported", "keys", len(keys))
	return resp, nil
}
