package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/server/orchestrator"
	"github.com/cairnbackup/cairn/wire"
)

// Tape: the servers keep the catalog's view of the cartridges (volume, pool,
// state, location) and route operators' requests to the storage node that
// owns the library, which alone drives the changer and the drives.

// Timeouts of the orders to a library's node. A label loads a cartridge,
// writes, reads back and unloads: minutes on a real library.
const (
	libraryStatusTimeout = 30 * time.Second
	libraryMoveTimeout   = 5 * time.Minute
	tapeLabelTimeout     = 10 * time.Minute
)

func (s *Server) routeTapeAPI(r *wire.Router) {
	r.Handle(wire.OpLibraryStatus, wire.Typed(s.libraryStatus))
	r.Handle(wire.OpLibraryMove, wire.Typed(s.libraryMove))
	r.Handle(wire.OpMediaLabel, wire.Typed(s.mediaLabel))
}

func (s *Server) routeTapeNodes(r *wire.Router) {
	r.Handle(wire.OpJobWaiting, wire.Typed(s.jobWaiting))
	r.Handle(wire.OpTapeMoved, wire.Typed(s.tapeMoved))
}

// libraryOf resolves the library a request names (any, when the system has
// exactly one) and the storage node that owns it.
func (s *Server) libraryOf(name string) (string, string, error) {
	libs, err := s.libraries()
	if err != nil {
		return "", "", err
	}
	var names []string
	for _, l := range libs {
		if l[0] == name {
			return l[0], l[1], nil
		}
		names = append(names, l[0])
	}
	switch {
	case name != "":
		return "", "", wire.Errorf(wire.CodeNotFound, "see 'cairn library status' for the libraries there are", "library %q is not known", name)
	case len(libs) == 1:
		return libs[0][0], libs[0][1], nil
	case len(libs) == 0:
		return "", "", wire.Errorf(wire.CodeNotFound, "configure a library on a storage node (libraries: in its config) and restart it",
			"no storage node has registered a tape library")
	}
	return "", "", wire.Errorf(wire.CodeInvalidArgument, "pass --library NAME", "there are several libraries (%s): name one", strings.Join(names, ", "))
}

// libraries lists every library with its owner, by name.
func (s *Server) libraries() ([][2]string, error) {
	nodes, err := s.store.Nodes()
	if err != nil {
		return nil, err
	}
	var out [][2]string
	for _, n := range nodes {
		for _, l := range n.Libraries {
			out = append(out, [2]string{l.Name, n.ID})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out, nil
}

// orderNode sends an order to a storage node and waits for its answer. The
// node's errors come back as they are, with their codes and hints.
func (s *Server) orderNode(ctx context.Context, node, library, op string, timeout time.Duration, req, resp any) error {
	if ok, seen := s.online(s.nodes, node); !ok {
		return wire.Errorf(wire.CodeUnavailable, fmt.Sprintf("start storage node %s", node),
			"storage node %s, which owns library %s, is offline (%s)", node, library, orchestrator.LastSeen(seen))
	}
	octx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return wire.RequestIn(octx, s.nc, s.groupName(), wire.NodeSubject(node, op), req, resp)
}

func (s *Server) libraryStatus(ctx context.Context, _ string, req wire.LibraryStatusReq) (wire.LibraryStatusResp, error) {
	var libs [][2]string
	if req.Library != "" {
		name, owner, err := s.libraryOf(req.Library)
		if err != nil {
			return wire.LibraryStatusResp{}, err
		}
		libs = [][2]string{{name, owner}}
	} else {
		var err error
		if libs, err = s.libraries(); err != nil {
			return wire.LibraryStatusResp{}, err
		}
		if len(libs) == 0 {
			_, _, err := s.libraryOf("")
			return wire.LibraryStatusResp{}, err
		}
	}
	// Asked all at once: a listing takes as long as the slowest library,
	// not the sum of them.
	sts := make([]wire.LibraryStatus, len(libs))
	errs := make([]error, len(libs))
	var wg sync.WaitGroup
	for i, l := range libs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.orderNode(ctx, l[1], l[0], wire.OpNodeLibraryStatus, libraryStatusTimeout, wire.LibraryStatusReq{Library: l[0]}, &sts[i])
		}()
	}
	wg.Wait()
	resp := wire.LibraryStatusResp{Libraries: []wire.LibraryStatus{}}
	for i, l := range libs {
		st := sts[i]
		if err := errs[i]; err != nil {
			if req.Library != "" {
				return wire.LibraryStatusResp{}, err
			}
			// One node down hides only its libraries from a listing.
			resp.Libraries = append(resp.Libraries, wire.LibraryStatus{Library: l[0], Node: l[1], Error: wire.AsError(err)})
			continue
		}
		st.Library, st.Node = l[0], l[1]
		s.reconcile(ctx, &st)
		for j := range st.Slots {
			sl := &st.Slots[j]
			if sl.Barcode == "" {
				continue
			}
			if v, err := s.store.TapeByBarcode(sl.Barcode); err == nil {
				sl.Volume, sl.Pool, sl.State = v.Name, v.Pool, string(v.State)
			}
		}
		resp.Libraries = append(resp.Libraries, st)
	}
	return resp, nil
}

// reconcile brings the catalog's locations in line with an inventory: a
// tape seen somewhere else than recorded moved without a report (the node
// was restarted, a report was lost), and a tape the catalog left in a mail
// slot that is gone from the library was taken out: it is in the vault.
func (s *Server) reconcile(ctx context.Context, st *wire.LibraryStatus) {
	seen := map[string]string{}
	for _, d := range st.Drives {
		if d.Barcode != "" {
			seen[d.Barcode] = "drive " + strconv.Itoa(d.Number)
		}
	}
	for _, sl := range st.Slots {
		if sl.Barcode == "" {
			continue
		}
		where := catalog.SlotLocation(sl.Number)
		if sl.Mail {
			where = "mail slot " + strconv.Itoa(sl.Number)
		}
		seen[sl.Barcode] = where
	}
	vols, err := s.store.Volumes(catalog.VolumeFilter{Library: st.Library})
	if err != nil {
		return
	}
	for _, v := range vols {
		if !v.MediaType.HasLibrary() {
			continue
		}
		where, ok := seen[v.Barcode]
		switch {
		case ok && where != v.Location:
			s.recordMove(ctx, st.Library, v.Barcode, v.Location, where, "inventory")
		case !ok && strings.HasPrefix(v.Location, "mail slot "):
			s.recordMove(ctx, st.Library, v.Barcode, v.Location, catalog.LocationVault, "taken out of the mail slot")
		}
	}
}

func (s *Server) recordMove(ctx context.Context, library, barcode, from, to, reason string) {
	if to == "" || to == "removed" {
		to = catalog.LocationVault
	}
	_, err := s.apply(ctx, &catalog.Command{Op: catalog.OpMoveTape, TapeMove: &catalog.TapeMove{
		Library: library, Barcode: barcode, From: from, To: to, Reason: reason,
	}})
	if err != nil {
		s.log.Warn("tape move not recorded", "library", library, "barcode", barcode, "to", to, "err", err)
	}
}

func (s *Server) libraryMove(ctx context.Context, _ string, req wire.LibraryMoveReq) (wire.LibraryMoveResp, error) {
	switch req.Op {
	case wire.MoveLoad, wire.MoveUnload, wire.MoveTransfer, wire.MoveImport, wire.MoveExport, wire.MoveOnline:
	default:
		return wire.LibraryMoveResp{}, wire.Errorf(wire.CodeInvalidArgument, "use load, unload, transfer, import, export or online",
			"library move %q is not known", req.Op)
	}
	rid, _, err := orchestrator.RequestID(req.Start)
	if err != nil {
		return wire.LibraryMoveResp{}, err
	}
	req.RequestID = rid
	name, owner, err := s.libraryOf(req.Library)
	if err != nil {
		return wire.LibraryMoveResp{}, err
	}
	req.Library = name
	// The owning node moves once per request id (a repeat gets the first
	// answer), so there is no record of moves by request here: only
	// concurrent repeats wait for the one running.
	return orchestrator.Shared(s.orch, ctx, "move/"+rid, func() (wire.LibraryMoveResp, error) {
		var resp wire.LibraryMoveResp
		if err := s.orderNode(ctx, owner, name, wire.OpNodeLibraryMove, libraryMoveTimeout, req, &resp); err != nil {
			if errors.Is(err, wire.ErrNoAnswer) {
				return resp, orchestrator.UnknownOutcome(fmt.Sprintf("the %s in library %s", req.Op, name), rid, err)
			}
			return resp, err
		}
		for _, m := range resp.Moves {
			s.recordMove(ctx, name, m.Barcode, m.From, m.To, "operator: "+req.Op)
		}
		if resp.Moves == nil {
			resp.Moves = []wire.TapeMove{}
		}
		return resp, nil
	})
}

// labelNamespace makes the volume id of a label from its request, so that
// a repeat (from another leader, say) orders the very same label, which the
// node finds already on the tape.
var labelNamespace = uuid.MustParse("1f0c6e36-5a0b-4d5e-9a43-6a7f3d1e2c90")

// labeling guards against two labels of the same cartridge at once: both
// would pass the catalog's check, and the second would overwrite the first.
func (s *Server) claimLabel(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.labeling == nil {
		s.labeling = map[string]bool{}
	}
	if s.labeling[key] {
		return false
	}
	s.labeling[key] = true
	return true
}

func (s *Server) releaseLabel(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.labeling, key)
}

func (s *Server) mediaLabel(ctx context.Context, _ string, req wire.MediaLabelReq) (wire.MediaLabelResp, error) {
	params := req
	params.Start = wire.Start{}
	digest := orchestrator.RequestDigest(wire.OpMediaLabel, params)
	rid, retry, err := orchestrator.RequestID(req.Start)
	if err != nil {
		return wire.MediaLabelResp{}, err
	}
	if retry {
		if err := s.raft.Barrier(ctx); err != nil {
			s.log.Debug("barrier before a repeated label", "request", rid, "err", err)
		}
	}
	if rec, err := s.store.Request(rid); err == nil {
		if rec.Op != catalog.OpLabelTape || (rec.Digest != "" && rec.Digest != digest) {
			return wire.MediaLabelResp{}, wire.Errorf(wire.CodeAlreadyExists, "give each request its own id: only a repeat of the very same command may reuse one",
				"request id %s was used for another request", rid)
		}
		v, err := s.store.Volume(rec.VolumeID)
		if err != nil {
			return wire.MediaLabelResp{}, catalogError(err)
		}
		return wire.MediaLabelResp{Volume: volumeInfo(v, ""), Repeated: true}, nil
	}
	return orchestrator.Shared(s.orch, ctx, "label/"+rid, func() (wire.MediaLabelResp, error) { return s.label(ctx, rid, retry, digest, req) })
}

// label carries out a new label request: check, order the node, record.
func (s *Server) label(ctx context.Context, rid string, retry bool, digest string, req wire.MediaLabelReq) (wire.MediaLabelResp, error) {
	what := fmt.Sprintf("the label of slot %d", req.Slot)
	name, owner, err := s.libraryOf(req.Library)
	if err != nil {
		return wire.MediaLabelResp{}, err
	}
	if req.Slot <= 0 {
		return wire.MediaLabelResp{}, wire.Errorf(wire.CodeInvalidArgument, "pass --slots with slot numbers from 1", "slot %d does not exist", req.Slot)
	}
	if req.Pool == "" {
		return wire.MediaLabelResp{}, wire.Errorf(wire.CodeInvalidArgument, "pass --pool NAME (a tape pool, or Scratch)", "no pool given")
	}
	pool, err := s.store.Pool(req.Pool)
	if err != nil {
		return wire.MediaLabelResp{}, wire.Errorf(wire.CodeNotFound, "list pools with 'cairn pool list'", "pool %q does not exist", req.Pool)
	}
	if !pool.Type.HasLibrary() {
		return wire.MediaLabelResp{}, wire.Errorf(wire.CodeInvalidArgument, "label tapes into a tape pool, or into Scratch",
			"pool %s is a %s pool, not a tape pool", pool.Name, pool.Type)
	}
	if pool.Library != "" && pool.Library != name {
		return wire.MediaLabelResp{}, wire.Errorf(wire.CodeInvalidArgument, "label into Scratch, or pass the pool's library",
			"pool %s lies in library %s, not %s", pool.Name, pool.Library, name)
	}

	// The barcode as the inventory sees it, so the catalog's check and the
	// node's check at the drive name the same cartridge.
	var st wire.LibraryStatus
	if err := s.orderNode(ctx, owner, name, wire.OpNodeLibraryStatus, libraryStatusTimeout, wire.LibraryStatusReq{Library: name}, &st); err != nil {
		return wire.MediaLabelResp{}, err
	}
	var slot *wire.SlotInfo
	for i := range st.Slots {
		if st.Slots[i].Number == req.Slot && !st.Slots[i].Mail {
			slot = &st.Slots[i]
		}
	}
	switch {
	case slot == nil:
		return wire.MediaLabelResp{}, wire.Errorf(wire.CodeNotFound, "see 'cairn library status' for the slots",
			"library %s has no storage slot %d", name, req.Slot)
	case !slot.Full && retry:
		// An earlier try of this request may have the tape in a drive,
		// labeling it.
		return wire.MediaLabelResp{}, orchestrator.UnknownOutcome(what, rid, fmt.Errorf("slot %d of library %s is empty", req.Slot, name))
	case !slot.Full:
		return wire.MediaLabelResp{}, wire.Errorf(wire.CodeNotFound, "put a cartridge in the slot ('cairn library import') or pick another slot",
			"slot %d of library %s is empty", req.Slot, name)
	case slot.Barcode == "":
		return wire.MediaLabelResp{}, wire.Errorf(wire.CodeInvalidArgument, "put a barcode label on the cartridge: Cairn names tapes by barcode",
			"the cartridge in slot %d of library %s has no readable barcode", req.Slot, name)
	}
	if v, err := s.store.VolumeByName(slot.Barcode); err == nil {
		return wire.MediaLabelResp{}, wire.Errorf(wire.CodeAlreadyExists, "a tape the catalog knows is never relabeled; label another slot",
			"the tape in slot %d (%s) is already volume %s of pool %s (%s)", req.Slot, slot.Barcode, v.Name, v.Pool, v.State)
	}
	if err := s.admit(); err != nil {
		if retry && s.raft.FSM().Failed() != nil {
			return wire.MediaLabelResp{}, orchestrator.UnknownOutcome(what, rid, err)
		}
		return wire.MediaLabelResp{}, orchestrator.NotStarted(s.applyError(err), what)
	}
	if err := wire.ValidateName("barcode", slot.Barcode); err != nil {
		return wire.MediaLabelResp{}, err
	}
	key := name + "/" + slot.Barcode
	if !s.claimLabel(key) {
		return wire.MediaLabelResp{}, wire.Errorf(wire.CodeWrongState, "wait for the label in progress to end", "tape %s is being labeled already", slot.Barcode)
	}
	defer s.releaseLabel(key)

	bs := pool.BlockSize
	if bs <= 0 {
		bs = defaultBlockSize
	}
	order := wire.TapeLabelOrder{
		Library: name, Slot: req.Slot, Barcode: slot.Barcode, Name: slot.Barcode,
		VolumeID: uuid.NewSHA1(labelNamespace, []byte(rid+"\x00"+name+"\x00"+slot.Barcode)),
		Pool:     pool.Name, BlockSize: bs, Created: s.clock.Now().UTC(), Overwrite: req.Overwrite, RequestID: rid,
	}
	var res wire.TapeLabelResult
	if err := s.orderNode(ctx, owner, name, wire.OpNodeTapeLabel, tapeLabelTimeout, order, &res); err != nil {
		if errors.Is(err, wire.ErrNoAnswer) {
			return wire.MediaLabelResp{}, orchestrator.UnknownOutcome(what, rid, err)
		}
		return wire.MediaLabelResp{}, err
	}
	if res.VolumeID != order.VolumeID || (res.Barcode != "" && res.Barcode != slot.Barcode) {
		return wire.MediaLabelResp{}, wire.Errorf(wire.CodeInternal, "", "storage node %s labeled %s as volume %s, asked for %s as %s",
			owner, res.Barcode, res.VolumeID, slot.Barcode, order.VolumeID)
	}
	at := req.Slot
	if res.Slot > 0 {
		at = res.Slot
	}
	lres, err := s.orch.Propose(ctx, &catalog.Command{Op: catalog.OpLabelTape, Request: &catalog.RequestKey{ID: rid, Digest: digest},
		TapeLabel: &catalog.TapeLabel{
			VolumeID: order.VolumeID, Barcode: slot.Barcode, Library: name, Node: owner, Pool: pool.Name,
			Location: catalog.SlotLocation(at), BlockSize: bs,
		}})
	switch {
	case err != nil:
		// The tape carries the label; the catalog may not know it yet. A
		// repeat of the request records it (the node answers it as done).
		return wire.MediaLabelResp{}, orchestrator.UnknownOutcome(fmt.Sprintf("the record of tape %s, labeled as volume %s", slot.Barcode, order.VolumeID), rid, s.applyError(err))
	case lres.Err != nil:
		return wire.MediaLabelResp{}, catalogError(lres.Err)
	}
	v, err := s.store.Volume(lres.VolumeID)
	if err != nil {
		return wire.MediaLabelResp{}, catalogError(err)
	}
	s.log.Info("tape labeled", "library", name, "slot", at, "barcode", v.Barcode, "pool", v.Pool, "volume", v.ID)
	return wire.MediaLabelResp{Volume: volumeInfo(v, "")}, nil
}

// jobWaiting records what a running job waits for; the watchdog leaves a
// waiting job alone however long an operator takes to insert a tape.
func (s *Server) jobWaiting(ctx context.Context, subject string, req wire.JobWaitingReq) (wire.Empty, error) {
	job, err := s.runningJobOf(sender(subject), req.JobID)
	if err != nil {
		return wire.Empty{}, err
	}
	s.orch.Waiting(job.ID, req.Reason)
	if job.Waiting == req.Reason {
		return wire.Empty{}, nil
	}
	reason := req.Reason
	if _, err := s.apply(ctx, &catalog.Command{Op: catalog.OpUpdateJob, JobUpdate: &catalog.JobUpdate{ID: job.ID, Waiting: &reason}}); err != nil {
		return wire.Empty{}, err
	}
	if reason != "" {
		s.orch.JobLog(ctx, job.ID, "info", "waiting: %s", reason)
	} else {
		s.orch.JobLog(ctx, job.ID, "info", "no longer waiting (was: %s)", job.Waiting)
	}
	return wire.Empty{}, nil
}

func (s *Server) tapeMoved(ctx context.Context, subject string, req wire.TapeMoved) (wire.Empty, error) {
	node := sender(subject)
	if req.Barcode == "" {
		return wire.Empty{}, wire.Errorf(wire.CodeInvalidArgument, "", "a tape move without a barcode")
	}
	if owner, err := s.store.LibraryOwner(req.Library); err != nil || owner.ID != node {
		return wire.Empty{}, wire.Errorf(wire.CodeInvalidArgument, "", "storage node %s does not own library %q", node, req.Library)
	}
	reason := req.Reason
	if req.JobID != 0 {
		s.orch.Activity(req.JobID)
		if reason == "" {
			reason = fmt.Sprintf("job %d", req.JobID)
		}
	}
	s.recordMove(ctx, req.Library, req.Barcode, req.From, req.To, reason)
	return wire.Empty{}, nil
}

// acquireTape grants a job a tape of its pool in the requesting node's
// library: an appendable one of the pool (one in a drive first, then the
// fullest), else an empty tape of Scratch, which joins the pool. With none,
// the error says what an operator can do, and the node waits with it.
func (s *Server) acquireTape(ctx context.Context, job *catalog.Job, node string, pool *catalog.Pool, req wire.VolumeAcquireReq) (wire.VolumeGrant, error) {
	if req.Bad != uuid.Nil {
		s.markBad(ctx, job, node, req.Bad, req.BadReason)
	}
	if req.Full != uuid.Nil {
		if v, err := s.store.Volume(req.Full); err == nil && v.Pool == pool.Name && v.State == catalog.VolumeAppend {
			if _, err := s.apply(ctx, &catalog.Command{Op: catalog.OpUpdateVolume, VolumeUpdate: &catalog.VolumeUpdate{
				ID: v.ID, State: catalog.VolumeFull,
			}}); err != nil {
				return wire.VolumeGrant{}, err
			}
			s.orch.JobLog(ctx, job.ID, "info", "tape %s is full; continuing on another tape", v.Name)
		}
	}
	library, err := s.nodeLibraryFor(node, pool)
	if err != nil {
		return wire.VolumeGrant{}, err
	}
	skip := func(v *catalog.Volume) bool {
		return v.ID == req.Full || v.ID == req.Bad || slices.Contains(req.Used, v.ID) || v.Library != library ||
			!inLibrary(v.Location) || (v.WriterJob != 0 && v.WriterJob != job.ID)
	}
	grant := func(v *catalog.Volume) wire.VolumeGrant {
		bs := v.BlockSize
		if bs <= 0 {
			bs = pool.BlockSize
		}
		return wire.VolumeGrant{
			ID: v.ID, Name: v.Name, Pool: pool.Name, Bytes: v.Bytes, BlockSize: bs, BlockRawSize: pool.BlockRawSize,
			Compression: compresses(pool), Codec: pool.DataCodec(),
			Created: v.Created, MediaType: string(v.MediaType), Barcode: v.Barcode,
			Library: v.Library, Parts: len(v.PartStarts), Relabel: v.Relabel,
		}
	}
	vols, err := s.store.Volumes(catalog.VolumeFilter{Pool: pool.Name, State: catalog.VolumeAppend, Library: library})
	if err != nil {
		return wire.VolumeGrant{}, err
	}
	vols = slices.DeleteFunc(vols, func(v catalog.Volume) bool { return skip(&v) })
	sort.SliceStable(vols, func(i, j int) bool {
		a, b := &vols[i], &vols[j]
		if da, db := inDrive(a.Location), inDrive(b.Location); da != db {
			return da // no robot move, no load
		}
		return a.Bytes > b.Bytes // fill a tape before starting another
	})
	if len(vols) > 0 {
		v := &vols[0]
		if _, err := s.apply(ctx, &catalog.Command{Op: catalog.OpUpdateVolume, VolumeUpdate: &catalog.VolumeUpdate{ID: v.ID, WriterJob: &job.ID}}); err != nil {
			return wire.VolumeGrant{}, err
		}
		s.orch.JobLog(ctx, job.ID, "info", "writing to tape %s (%s of library %s) at offset %d", v.Name, v.Location, library, v.Bytes)
		return grant(v), nil
	}
	// A tape of the pool whose backups have all expired comes before a
	// scratch tape: the pool reuses its own tapes, and Scratch is left
	// for pools that have none to reuse. The oldest written first.
	recyclable, err := s.store.Volumes(catalog.VolumeFilter{Pool: pool.Name, State: catalog.VolumeRecyclable, Library: library})
	if err != nil {
		return wire.VolumeGrant{}, err
	}
	recyclable = slices.DeleteFunc(recyclable, func(v catalog.Volume) bool { return skip(&v) })
	sort.SliceStable(recyclable, func(i, j int) bool {
		a, b := &recyclable[i], &recyclable[j]
		if da, db := inDrive(a.Location), inDrive(b.Location); da != db {
			return da
		}
		return a.LastWritten.Before(b.LastWritten)
	})
	if len(recyclable) > 0 {
		v := &recyclable[0]
		// A new volume id for the cartridge's new life, chosen here (the
		// leader's choice travels in the command): its writer writes the
		// label anew before any data.
		res, err := s.apply(ctx, &catalog.Command{Op: catalog.OpRenewTape, TapeRecycle: &catalog.TapeRecycle{VolumeID: v.ID, WriterJob: job.ID, NewID: uuid.New()}})
		if err != nil {
			return wire.VolumeGrant{}, err
		}
		nv, err := s.store.Volume(res.VolumeID)
		if err != nil {
			return wire.VolumeGrant{}, catalogError(err)
		}
		s.orch.JobLog(ctx, job.ID, "info", "tape %s of pool %s is recyclable (its backups have all expired); it becomes volume %s, relabeled before it is written (%s of library %s)",
			v.Name, pool.Name, nv.ID, v.Location, library)
		return grant(nv), nil
	}
	scratch, err := s.store.Volumes(catalog.VolumeFilter{Pool: catalog.ScratchPool, State: catalog.VolumeAppend, Library: library})
	if err != nil {
		return wire.VolumeGrant{}, err
	}
	scratch = slices.DeleteFunc(scratch, func(v catalog.Volume) bool { return skip(&v) || v.Sessions > 0 || v.WriterJob != 0 })
	sort.SliceStable(scratch, func(i, j int) bool { return inDrive(scratch[i].Location) && !inDrive(scratch[j].Location) })
	if len(scratch) > 0 && pool.Name != catalog.ScratchPool {
		v := &scratch[0]
		if _, err := s.apply(ctx, &catalog.Command{Op: catalog.OpAssignTape, TapeAssign: &catalog.TapeAssign{
			VolumeID: v.ID, Pool: pool.Name, WriterJob: job.ID,
		}}); err != nil {
			return wire.VolumeGrant{}, err
		}
		s.orch.JobLog(ctx, job.ID, "info", "tape %s moves from pool %s into pool %s; writing to it (%s of library %s)",
			v.Name, catalog.ScratchPool, pool.Name, v.Location, library)
		return grant(v), nil
	}
	return wire.VolumeGrant{}, s.noTapeError(pool, library)
}

// noTapeError says why a tape pool has nothing to append to and where
// tapes that would do are.
func (s *Server) noTapeError(pool *catalog.Pool, library string) error {
	count := func(poolName string) (vault, elsewhere int) {
		vols, _ := s.store.Volumes(catalog.VolumeFilter{Pool: poolName, State: catalog.VolumeAppend})
		for _, v := range vols {
			if !v.MediaType.HasLibrary() || (poolName == catalog.ScratchPool && v.Sessions > 0) {
				continue
			}
			switch {
			case v.Location == catalog.LocationVault:
				vault++
			case v.Library != library || !inLibrary(v.Location):
				elsewhere++
			}
		}
		return vault, elsewhere
	}
	msg := fmt.Sprintf("no appendable volume in pool %s in library %s", pool.Name, library)
	var where []string
	plural := func(n int, what string) string {
		if n == 1 {
			return "1 " + what + " tape"
		}
		return fmt.Sprintf("%d %s tapes", n, what)
	}
	if v, e := count(catalog.ScratchPool); v+e > 0 {
		if v > 0 {
			where = append(where, plural(v, "scratch")+" in vault")
		}
		if e > 0 {
			where = append(where, plural(e, "scratch")+" in other libraries or mail slots")
		}
	}
	if pool.Name != catalog.ScratchPool {
		if v, e := count(pool.Name); v+e > 0 {
			if v > 0 {
				where = append(where, plural(v, pool.Name)+" in vault")
			}
			if e > 0 {
				where = append(where, plural(e, pool.Name)+" in other libraries or mail slots")
			}
		}
	}
	hint := fmt.Sprintf("label blank tapes with 'cairn media label --library %s --slots N-M --pool %s'", library, pool.Name)
	if len(where) > 0 {
		msg += "; " + strings.Join(where, ", ")
		hint = fmt.Sprintf("put those tapes in a mail slot and run 'cairn library import --library %s', or %s", library, hint)
	}
	return wire.Errorf(wire.CodeNoVolume, hint, "%s", msg)
}

// nodeLibraryFor is the library where node writes pool's tapes.
func (s *Server) nodeLibraryFor(node string, pool *catalog.Pool) (string, error) {
	n, err := s.store.Node(node)
	if err != nil {
		return "", catalogError(err)
	}
	for _, l := range n.Libraries {
		if pool.Library == "" || l.Name == pool.Library {
			return l.Name, nil
		}
	}
	return "", wire.Errorf(wire.CodeInvalidArgument, "", "storage node %s does not own library %q of pool %s", node, pool.Library, pool.Name)
}

// markBad puts a tape that failed a job in state error, with the reason.
func (s *Server) markBad(ctx context.Context, job *catalog.Job, node string, id uuid.UUID, reason string) {
	v, err := s.store.Volume(id)
	if err != nil || v.State == catalog.VolumeError {
		return
	}
	if reason == "" {
		reason = fmt.Sprintf("failed during job %d on storage node %s", job.ID, node)
	}
	zero := uint64(0)
	if _, err := s.apply(ctx, &catalog.Command{Op: catalog.OpUpdateVolume, VolumeUpdate: &catalog.VolumeUpdate{
		ID: v.ID, State: catalog.VolumeError, Error: reason, WriterJob: &zero,
	}}); err != nil {
		s.log.Warn("mark volume error", "volume", v.Name, "err", err)
		return
	}
	s.orch.JobLog(ctx, job.ID, "warning", "volume %s marked error: %s; continuing on another volume", v.Name, reason)
}

func inDrive(loc string) bool { return strings.HasPrefix(loc, "drive ") }

// inLibrary reports whether a location is one a changer can load from
// without an operator: a storage slot or a drive.
func inLibrary(loc string) bool { return strings.HasPrefix(loc, "slot ") || inDrive(loc) }

// tapeRelabeled records that the writer of a recycled tape wrote its new
// volume's label over the old one (catalog.TapeRecycle): only the job
// that holds the tape, on the node that runs it, says so.
func (s *Server) tapeRelabeled(ctx context.Context, node string, v *catalog.Volume, req wire.VolumeLabeled) error {
	job, err := s.runningJobOf(node, req.JobID)
	if err != nil {
		return err
	}
	if v.WriterJob != job.ID {
		return wire.Errorf(wire.CodeWrongState, "", "tape %s is not held by job %d", v.Name, job.ID)
	}
	if v.Relabel == uuid.Nil {
		return nil // a repeat
	}
	if _, err := s.apply(ctx, &catalog.Command{Op: catalog.OpUpdateVolume, VolumeUpdate: &catalog.VolumeUpdate{ID: v.ID, Relabeled: true}}); err != nil {
		return err
	}
	s.orch.JobLog(ctx, job.ID, "info", "tape %s relabeled as volume %s of pool %s (it was volume %s)", v.Name, v.ID, v.Pool, v.Relabel)
	return nil
}
