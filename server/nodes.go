package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/keyring"
	"github.com/cairnbackup/cairn/server/orchestrator"
	"github.com/cairnbackup/cairn/wire"
)

// Pool defaults for pools a storage node announces that the catalog does not
// know yet.
const (
	defaultBlockSize    = 256 << 10
	defaultBlockRawSize = 1 << 20
)

func (s *Server) routeNodes(r *wire.Router) {
	r.Handle(wire.OpNodeRegister, wire.Typed(s.nodeRegister))
	r.Handle(wire.OpVolumeAcquire, wire.Typed(s.volumeAcquire))
	r.Handle(wire.OpVolumeLabeled, wire.Typed(s.volumeLabeled))
	r.Handle(wire.OpKeyGet, wire.Typed(s.keyGet))
	r.Handle(wire.OpRestorePlan, wire.Typed(s.restorePlan))
	r.Handle(wire.OpSessionIndex, wire.Typed(s.sessionIndex))
	r.Handle(wire.OpSessionCommit, wire.Typed(s.sessionCommit))
	r.Handle(wire.OpSessionAbort, wire.Typed(s.sessionAbort))
	s.routeTapeNodes(r)
}

// sender is the node or agent name in a cairn.srv.* subject. Handlers trust
// the subject, not the body: NATS permissions confine each credential to
// its own subjects.
func sender(subject string) string {
	name, _, _ := wire.SplitFrom(subject)
	return name
}

func (s *Server) nodeRegister(ctx context.Context, subject string, req wire.NodeRegisterReq) (wire.NodeRegisterResp, error) {
	id := sender(subject)
	if req.ID != id {
		return wire.NodeRegisterResp{}, wire.Errorf(wire.CodeInvalidArgument, "", "storage node %q registered on the subject of %q", req.ID, id)
	}
	if err := wire.ValidateName("storage node", id); err != nil {
		return wire.NodeRegisterResp{}, err
	}
	var libs []catalog.NodeLibrary
	for _, l := range req.Libraries {
		if err := wire.ValidateName("library", l.Name); err != nil {
			return wire.NodeRegisterResp{}, err
		}
		libs = append(libs, catalog.NodeLibrary{Name: l.Name, Changer: l.Changer, Drives: l.Drives, Slots: l.Slots, MailSlots: l.MailSlots})
	}
	announced := slices.Clone(req.Pools)
	if len(libs) > 0 && !slices.ContainsFunc(announced, func(p wire.NodePool) bool { return p.Name == catalog.ScratchPool }) {
		// Tapes labeled ahead of need wait in Scratch, which every
		// library's owner serves.
		announced = append(announced, wire.NodePool{Name: catalog.ScratchPool, Type: string(catalog.PoolTypeTape)})
	}
	for _, p := range announced {
		if err := wire.ValidateName("pool", p.Name); err != nil {
			return wire.NodeRegisterResp{}, err
		}
		if typ, _ := catalog.ParsePoolType(p.Type); typ.HasLibrary() && p.Library == "" && p.Name != catalog.ScratchPool {
			return wire.NodeRegisterResp{}, wire.Errorf(wire.CodeInvalidArgument, "give the tape pool its library in the storage node's configuration",
				"tape pool %s of storage node %s names no library", p.Name, id)
		}
		if err := s.ensurePool(ctx, id, p); err != nil {
			return wire.NodeRegisterResp{}, err
		}
	}
	var pools []catalog.NodePool
	for _, p := range announced {
		pools = append(pools, catalog.NodePool{Name: p.Name, Type: catalog.PoolType(p.Type), Dir: p.Dir, MaxVolumeBytes: p.MaxVolumeBytes, Library: p.Library})
	}
	if _, err := s.apply(ctx, &catalog.Command{Op: catalog.OpRegisterNode, Node: &catalog.StorageNode{
		ID: id, DataAddr: req.DataAddr, CertSHA256: req.CertSHA256, Version: req.Version, Pools: pools, Libraries: libs,
	}}); err != nil {
		return wire.NodeRegisterResp{}, err
	}
	l := s.touch(s.nodes, id)
	s.mu.Lock()
	l.suspect = time.Time{} // a node that registers again has restarted
	s.mu.Unlock()
	s.orch.Kick()
	// A hold or a release while it was away, or an order it failed, is
	// set now.
	s.relockWhere(catalog.VolumeFilter{Node: id})
	s.log.Info("storage node registered", "node", id, "data_addr", req.DataAddr, "pools", len(pools))
	resp := wire.NodeRegisterResp{TicketKey: s.ticketPublic(), ServerTime: s.clock.Now().UTC()}
	if g := s.group(); g != nil {
		// The group's keys, as its catalog records them: every server hands
		// out the same, so a node does not trust whichever server it asked.
		resp.Group, resp.TicketKeys, resp.TicketKey = g.ID, g.TicketKeys, g.TicketKeys[0]
	}
	return resp, nil
}

// ensurePool creates a pool a node announces, with its data key, unless the
// catalog has it. A pool that exists keeps its settings and key.
func (s *Server) ensurePool(ctx context.Context, node string, p wire.NodePool) error {
	if _, err := s.store.Pool(p.Name); err == nil {
		return nil // the node joins the pool when it registers
	}
	if err := s.checkKEK(); err != nil {
		// A key wrapped with a KEK that is not the group's opens on no
		// other member.
		return err
	}
	keyID := fmt.Sprintf("pool-%s-%s", p.Name, uuid.NewString()[:8])
	wrapped, err := keyring.Wrap(s.keys().kek, keyID, keyring.NewKey())
	if err != nil {
		return fmt.Errorf("wrap data key for pool %s: %w", p.Name, err)
	}
	if _, err := s.apply(ctx, &catalog.Command{Op: catalog.OpPutKey, Key: &catalog.Key{ID: keyID, Pool: p.Name, Wrapped: wrapped}}); err != nil {
		return err
	}
	typ, _ := catalog.ParsePoolType(p.Type) // the catalog refuses a type it does not know
	maxBytes := p.MaxVolumeBytes
	if !typ.FileBacked() {
		maxBytes = 0 // a cartridge ends where its tape does
	}
	_, err = s.apply(ctx, &catalog.Command{Op: catalog.OpCreatePool, Pool: &catalog.Pool{
		Name: p.Name, Type: typ, Library: p.Library, Nodes: []string{node}, MaxVolumeBytes: maxBytes,
		BlockSize: defaultBlockSize, BlockRawSize: defaultBlockRawSize, LabelPrefix: p.Name,
		KeyID: keyID, Compression: true,
	}})
	if err != nil && !errors.Is(err, orchestrator.ErrAlreadyExists) {
		return err
	}
	s.log.Info("pool created", "pool", p.Name, "node", node, "key", keyID)
	return nil
}

// compresses is a grant's Compression for pool: what a storage node from
// before VolumeGrant.Codec goes by, compressing with zstd or not at all.
func compresses(pool *catalog.Pool) bool { return pool.DataCodec() != catalog.CodecNone }

// runningJobOf checks that a node request concerns a running job of that node.
func (s *Server) runningJobOf(node string, id uint64) (*catalog.Job, error) {
	job, err := s.store.Job(id)
	if err != nil {
		return nil, wire.Errorf(wire.CodeNotFound, "", "job %d does not exist", id)
	}
	if job.Node != node {
		return nil, wire.Errorf(wire.CodeInvalidArgument, "", "job %d runs on storage node %s, not %s", id, job.Node, node)
	}
	if job.State.Done() {
		return nil, wire.Errorf(wire.CodeAborted, "", "job %d already ended (%s)", id, job.State)
	}
	return job, nil
}

func (s *Server) volumeAcquire(ctx context.Context, subject string, req wire.VolumeAcquireReq) (wire.VolumeGrant, error) {
	node := sender(subject)
	job, err := s.runningJobOf(node, req.JobID)
	if err != nil {
		return wire.VolumeGrant{}, err
	}
	s.orch.Activity(job.ID)
	if req.Pool != job.Pool {
		return wire.VolumeGrant{}, wire.Errorf(wire.CodeInvalidArgument, "", "job %d writes to pool %s, not %s", job.ID, job.Pool, req.Pool)
	}
	pool, err := s.store.Pool(req.Pool)
	if err != nil {
		return wire.VolumeGrant{}, catalogError(err)
	}
	library := ""
	if pool.Type.HasLibrary() {
		if library, err = s.nodeLibraryFor(node, pool); err != nil {
			return wire.VolumeGrant{}, err
		}
	}
	defer s.grants.lock(grantKey(pool, library))()
	if pool.Type.HasLibrary() {
		// A synthetic full reads its chain's tapes while it writes: it
		// writes none of them, since a tape is in one drive at a time.
		req.Used = append(req.Used, s.orch.SourceVolumes(job)...)
		return s.acquireTape(ctx, job, node, pool, req)
	}
	if req.Bad != uuid.Nil {
		s.markBad(ctx, job, node, req.Bad, req.BadReason)
	}
	if req.Full != uuid.Nil {
		// The volume is marked full when the session commits: if the job
		// fails, its part is cut off and the volume takes appends again.
		s.orch.JobLog(ctx, job.ID, "info", "volume %s is full; continuing on another volume", s.volumeName(req.Full))
	}
	var retainUntil time.Time
	if pool.Type.Locks() {
		retainUntil = s.retainUntil(job)
	}
	grant := func(v *catalog.Volume, isNew bool) wire.VolumeGrant {
		return wire.VolumeGrant{
			ID: v.ID, Name: v.Name, Pool: v.Pool, Bytes: v.Bytes, New: isNew,
			BlockSize: pool.BlockSize, BlockRawSize: pool.BlockRawSize,
			Compression: compresses(pool), Codec: pool.DataCodec(),
			MaxBytes: pool.MaxVolumeBytes, Created: v.Created, RetainUntil: retainUntil,
		}
	}
	vols, err := s.store.Volumes(catalog.VolumeFilter{Pool: pool.Name, Node: node, State: catalog.VolumeAppend})
	if err != nil {
		return wire.VolumeGrant{}, err
	}
	// A volume needs room for at least a part header, a few blocks and the
	// trailer to be worth starting a part on.
	minRoom := int64(4*pool.BlockRawSize + 4*pool.BlockSize)
	for i := range vols {
		v := &vols[i]
		if v.ID == req.Full || slices.Contains(req.Used, v.ID) || (v.WriterJob != 0 && v.WriterJob != job.ID) {
			continue
		}
		if pool.MaxVolumeBytes > 0 && pool.MaxVolumeBytes-v.Bytes < minRoom {
			continue
		}
		if _, err := s.apply(ctx, &catalog.Command{Op: catalog.OpUpdateVolume, VolumeUpdate: &catalog.VolumeUpdate{
			ID: v.ID, WriterJob: &job.ID, LockedUntil: retainUntil,
		}}); err != nil {
			return wire.VolumeGrant{}, err
		}
		s.orch.JobLog(ctx, job.ID, "info", "writing to volume %s at offset %d", v.Name, v.Bytes)
		return grant(v, false), nil
	}
	res, err := s.apply(ctx, &catalog.Command{Op: catalog.OpCreateVolume, Volume: &catalog.Volume{
		ID: uuid.New(), Pool: pool.Name, Node: node, MediaType: pool.Type, WriterJob: job.ID, LockedUntil: retainUntil,
	}})
	if err != nil {
		return wire.VolumeGrant{}, err
	}
	v, err := s.store.Volume(res.VolumeID)
	if err != nil {
		return wire.VolumeGrant{}, catalogError(err)
	}
	s.orch.JobLog(ctx, job.ID, "info", "labeling new volume %s in pool %s", v.Name, pool.Name)
	return grant(v, true), nil
}

func (s *Server) volumeLabeled(ctx context.Context, subject string, req wire.VolumeLabeled) (wire.Empty, error) {
	node := sender(subject)
	v, err := s.store.Volume(req.VolumeID)
	if err != nil {
		return wire.Empty{}, catalogError(err)
	}
	if v.MediaType.HasLibrary() {
		return wire.Empty{}, s.tapeRelabeled(ctx, node, v, req)
	}
	if v.Node != node {
		return wire.Empty{}, wire.Errorf(wire.CodeInvalidArgument, "", "volume %s belongs to storage node %s", v.Name, v.Node)
	}
	upd := &catalog.VolumeUpdate{ID: v.ID, State: catalog.VolumeAppend}
	if req.Error != "" {
		upd.State = catalog.VolumeError
		upd.Error = req.Error
		zero := uint64(0)
		upd.WriterJob = &zero
	} else {
		pool, err := s.store.Pool(v.Pool)
		if err != nil {
			return wire.Empty{}, catalogError(err)
		}
		// The label takes the first block; sessions start after it.
		b := int64(pool.BlockSize)
		upd.Bytes = &b
	}
	if _, err := s.apply(ctx, &catalog.Command{Op: catalog.OpUpdateVolume, VolumeUpdate: upd}); err != nil {
		return wire.Empty{}, err
	}
	if req.Error != "" && req.JobID != 0 {
		s.orch.JobLog(ctx, req.JobID, "error", "labeling volume %s failed: %s", v.Name, req.Error)
	}
	return wire.Empty{}, nil
}

// keyGet hands a node the data key of a session its running job writes or
// reads, and nothing else.
func (s *Server) keyGet(ctx context.Context, subject string, req wire.KeyGetReq) (wire.KeyGetResp, error) {
	node := sender(subject)
	job, err := s.runningJobOf(node, req.JobID)
	if err != nil {
		return wire.KeyGetResp{}, err
	}
	allowed := false
	switch job.Type {
	case catalog.JobBackup:
		pool, err := s.store.Pool(job.Pool)
		allowed = err == nil && pool.KeyID == req.KeyID
	}
	// A restore reads its chain; a synthetic full, the chain it folds.
	allowed = allowed || s.orch.ReadsKey(job, req.KeyID)
	if !allowed {
		return wire.KeyGetResp{}, wire.Errorf(wire.CodeKey, "", "job %d has no use for key %q", job.ID, req.KeyID)
	}
	k, err := s.store.Key(req.KeyID)
	if err != nil {
		return wire.KeyGetResp{}, wire.Errorf(wire.CodeKey, "import the key from your escrow key file",
			"the catalog does not hold key %q, which the volume needs", req.KeyID)
	}
	material, err := s.unwrap(k)
	if err != nil {
		return wire.KeyGetResp{}, s.unwrapError(k.ID, err)
	}
	return wire.KeyGetResp{ID: k.ID, Key: material}, nil
}

func (s *Server) sessionIndex(ctx context.Context, subject string, req wire.SessionIndexReq) (wire.Empty, error) {
	job, err := s.runningJobOf(sender(subject), req.JobID)
	if err != nil {
		return wire.Empty{}, err
	}
	if err := attemptOver(job, req.Attempt); err != nil {
		return wire.Empty{}, err
	}
	s.orch.Activity(job.ID)
	_, err = s.apply(ctx, &catalog.Command{Op: catalog.OpAddIndexSegment, Segment: &catalog.IndexSegment{
		BackupID: job.BackupID, No: req.No, First: req.First, Last: req.Last, Count: req.Count, Data: req.Data,
		Node: job.Node, // fenced in the log: the job may move on before this applies
	}})
	return wire.Empty{}, err
}

func (s *Server) sessionCommit(ctx context.Context, subject string, req wire.SessionCommitReq) (wire.Empty, error) {
	job, err := s.runningJobOf(sender(subject), req.JobID)
	if err != nil {
		if s.committed(sender(subject), req) {
			// The node resends a commit whose answer it lost (the leader
			// died after recording it): it is done, not failed.
			return wire.Empty{}, nil
		}
		return wire.Empty{}, err
	}
	if err := attemptOver(job, req.Attempt); err != nil {
		return wire.Empty{}, err
	}
	if err := s.orch.Commit(ctx, job, req); err != nil {
		return wire.Empty{}, err
	}
	if !req.LockedUntil.IsZero() {
		// The backups it builds on are locked as long as it now
		// (catalog: extendChainLocks); their objects are told so.
		s.relockBackups(job.BackupID)
	}
	return wire.Empty{}, nil
}

// committed reports whether the catalog already holds this session of the
// job as its node's completed backup.
func (s *Server) committed(node string, req wire.SessionCommitReq) bool {
	job, err := s.store.Job(req.JobID)
	if err != nil || job.Node != node || (job.State != catalog.JobSuccess && job.State != catalog.JobWarning) {
		return false
	}
	b, err := s.store.Backup(job.BackupID)
	return err == nil && b.State == catalog.BackupComplete && b.SessionID == req.SessionID
}

func (s *Server) sessionAbort(ctx context.Context, subject string, req wire.SessionAbortReq) (wire.Empty, error) {
	job, err := s.store.Job(req.JobID)
	if err != nil || job.Node != sender(subject) {
		return wire.Empty{}, wire.Errorf(wire.CodeNotFound, "", "job %d is not a job of this storage node", req.JobID)
	}
	s.orch.NodeAborted(ctx, job, req)
	return wire.Empty{}, nil
}

func (s *Server) volumeName(id uuid.UUID) string { return s.orch.VolumeName(id) }

// retainUntil is the date a backup job's data must stay locked until on
// a medium that locks: the job's start plus the longest the retention
// that governs its client and file set (as the expiry pass finds it,
// whether a policy's run or an ad hoc backup) may keep it
// (retention.Policy.Longest). A backup no retention governs, or whose
// retention no date bounds, gets none: the storage node then locks for
// its pool's default, if it has one.
func (s *Server) retainUntil(job *catalog.Job) time.Time {
	rets, err := s.currentRetentions()
	if err != nil {
		s.log.Warn("retention not read; the job's objects are locked for the pool's default", "job", job.ID, "err", err)
		return time.Time{}
	}
	rp, ok := rets.retentionFor(job.Client, catalog.FileSetOf(fileindex.Strings(job.Paths), fileindex.Strings(job.Excludes)))
	if !ok {
		return time.Time{}
	}
	d, ok := rp.Longest()
	if !ok {
		return time.Time{}
	}
	start := job.Started
	if start.IsZero() {
		start = job.Created
	}
	return start.Add(d)
}

// attemptOver refuses what a storage node sends about attempt of a
// running job whose attempt is another: a session that outlived its
// attempt (the job was handed back or requeued while the session went on,
// then given to the same node again) must add nothing to the next
// attempt's backup, whose session writes where it wrote. Attempt 0 comes
// from a node older than the field and is not checked.
func attemptOver(job *catalog.Job, attempt int) error {
	if attempt == 0 || attempt == job.Attempt {
		return nil
	}
	return wire.Errorf(wire.CodeAborted, fmt.Sprintf("nothing to do: this session is dropped, and the job goes on with attempt %d", job.Attempt),
		"attempt %d of job %d is over: attempt %d runs", attempt, job.ID, job.Attempt)
}
