package storagenode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"syscall"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

// recordBatch is how many bytes of records a restore sends per frame.
const recordBatch = 1 << 20

// agentReads is what the agent's Hello says it reads beyond the oldest
// forms of the restore stream.
type agentReads struct {
	packedStarts bool // packed ReadStart frames
	storedBlocks bool // StoredBlock frames
}

func (n *Node) restore(ctx context.Context, log *slog.Logger, conn *dataplane.Conn, t ticket.Ticket, reads agentReads) {
	n.metrics.streams.WithLabelValues("restore").Inc()
	defer n.metrics.streams.WithLabelValues("restore").Dec()
	r := &reader{stream: stream{n: n, t: t, log: log}, conn: conn, agentReads: reads, keys: map[string]*volume.Key{}, media: map[medium]partReader{}}
	err := r.run(ctx)
	if err != nil {
		err = r.streamError(ctx, err)
	}
	// A drive goes back before anything else: another job may wait for it.
	for _, pr := range r.media {
		pr.release(err)
	}
	outcome := "success"
	if err != nil {
		outcome = "failed"
		we := edgeError(err)
		if we.Code == wire.CodeInternal {
			we = wire.Errorf(wire.CodeIO, "", "storage node %s: %w", n.cfg.ID, err)
		}
		log.Warn("restore stream failed; its drive is released", "err", we.Message)
		_ = conn.WriteError(we)
	}
	n.metrics.sessions.WithLabelValues("restore", outcome).Inc()
}

// streamError says why a restore stream ended early in terms of the job:
// the servers stopped it, or its agent stopped reading or went away.
func (r *reader) streamError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		if cause := context.Cause(ctx); cause != nil {
			return cause
		}
	}
	var se *dataplane.StallError
	switch {
	case errors.As(err, &se) && se.Write:
		return wire.Errorf(wire.CodeTimeout, "check the client; rerun the restore",
			"the agent of client %s took no data for %s: it stopped reading, and the restore of job %d ends", r.t.Client, se.After, r.t.JobID)
	case errors.As(err, &se):
		return wire.Errorf(wire.CodeTimeout, "check the client; rerun the restore",
			"the agent of client %s sent nothing for %s", r.t.Client, se.After)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
		return wire.Errorf(wire.CodeAborted, "check the agent's log", "the agent of client %s went away during the restore of job %d: %w", r.t.Client, r.t.JobID, err)
	}
	return err
}

type reader struct {
	stream
	conn *dataplane.Conn
	agentReads
	keys  map[string]*volume.Key
	batch []byte
	// media are the media the stream read from, each with what it keeps
	// between reads (a mounted tape); cur is the last one, the only one
	// that keeps anything.
	media map[medium]partReader
	cur   medium
}

// run serves the restore's plan: the agent only receives.
func (r *reader) run(ctx context.Context) error {
	if err := r.conn.WriteJSON(dataplane.FrameAccept, dataplane.Accept{V: dataplane.Version, JobID: r.t.JobID, Node: r.n.cfg.ID}); err != nil {
		return err
	}
	var end dataplane.RestoreEnd
	err := r.plan(ctx, func(rr *wire.ReadRequest) error {
		if err := r.serve(ctx, rr); err != nil {
			return err
		}
		end.Reads++
		end.Entries += int64(len(rr.Locs))
		return nil
	})
	if err != nil {
		return err
	}
	return r.conn.WriteJSON(dataplane.FrameEnd, end)
}

// plan hands fn the read requests of the job's plan, in order, which the
// node takes from the servers page by page. Pages go by bytes, so a plan of
// millions of entries is never held whole. A read of a session the ticket
// does not name ends it.
func (r *reader) plan(ctx context.Context, fn func(rr *wire.ReadRequest) error) error {
	allowed := map[string]bool{}
	for _, s := range r.t.Sessions {
		allowed[s] = true
	}
	for cursor := 0; ; {
		var page wire.RestorePlanResp
		if err := r.n.request(ctx, wire.OpRestorePlan, wire.RestorePlanReq{JobID: r.t.JobID, Attempt: r.t.Attempt, Cursor: cursor, Packed: wire.PackedVersion}, &page); err != nil {
			return &planError{job: r.t.JobID, cursor: cursor, err: err}
		}
		if page.Packed != nil {
			reads, err := wire.UnpackReads(page.Packed)
			if err != nil {
				return &planError{job: r.t.JobID, cursor: cursor, err: err}
			}
			page.Reads, page.Packed = reads, nil
		}
		for i := range page.Reads {
			rr := &page.Reads[i]
			if !allowed[rr.SessionID.String()] {
				return wire.Errorf(wire.CodeTicketRejected, "", "the ticket of job %d does not allow reading session %s", r.t.JobID, rr.SessionID)
			}
			if err := fn(rr); err != nil {
				return err
			}
		}
		if page.Done {
			return nil
		}
		if page.Cursor <= cursor {
			return &planError{job: r.t.JobID, cursor: cursor, err: fmt.Errorf("the servers answered with cursor %d, which does not move on", page.Cursor)}
		}
		cursor = page.Cursor
	}
}

// planError is a page of the restore's plan the servers did not give.
type planError struct {
	job    uint64
	cursor int
	err    error
}

func (e *planError) Error() string {
	return fmt.Sprintf("restore plan of job %d, page %d: %v", e.job, e.cursor, e.err)
}

func (e *planError) Unwrap() error { return e.err }

func (r *reader) key(ctx context.Context, id string) (*volume.Key, error) {
	if k := r.keys[id]; k != nil {
		return k, nil
	}
	var kr wire.KeyGetResp
	if err := r.n.request(ctx, wire.OpKeyGet, wire.KeyGetReq{JobID: r.t.JobID, KeyID: id}, &kr); err != nil {
		return nil, err
	}
	k := &volume.Key{ID: kr.ID, Material: kr.Key}
	r.keys[id] = k
	return k, nil
}

// stopStream is an error that ends the whole stream (the connection to
// the agent broke, the servers do not answer), where a volume that cannot
// be read only loses the entries of one read.
type stopStream struct{ err error }

func (e *stopStream) Error() string { return e.err.Error() }
func (e *stopStream) Unwrap() error { return e.err }

// serve reads the entries of one read request and streams their records.
// Every entry asked for is accounted for: its records go out, or a Damaged
// frame names it with the reason it is lost; ReadDone counts both. A
// volume that cannot be read (missing, unreadable, a key that does not
// open it) loses the entries of this read and the stream goes on with the
// next. A broken connection, a stopped job, or a request the volumes
// contradict ends it.
func (r *reader) serve(ctx context.Context, rr *wire.ReadRequest) error {
	start := dataplane.ReadStart{SessionID: rr.SessionID, Entries: make([]dataplane.ReadEntry, len(rr.Locs))}
	for i, l := range rr.Locs {
		start.Entries[i] = dataplane.ReadEntry{Path: l.Path, Ancestor: l.Ancestor, Block: l.Block != nil}
	}
	var err error
	if r.packedStarts {
		if err = r.conn.WriteFrame(dataplane.FrameReadStartPacked, dataplane.PackReadStart(&start)); err == nil {
			err = r.conn.Flush() // as WriteJSON does: the agent learns of the read at once
		}
	} else {
		err = r.conn.WriteJSON(dataplane.FrameReadStart, start)
	}
	if err != nil {
		return &stopStream{err}
	}
	acct := newReadAccount(rr)
	onRecord := func(t volume.RecordType, body []byte) error {
		if t == volume.RecBlockStart {
			// The reader names the block by its place in locs; the agent
			// needs to know which file it belongs to and where it goes.
			i, err := volume.BlockIndex(body)
			if err != nil || i >= len(rr.Locs) || rr.Locs[i].Block == nil {
				return fmt.Errorf("session %s: the reader announced block %d, which the read did not ask for", rr.SessionID, i)
			}
			acct.block(i)
			l := &rr.Locs[i]
			r.batch = volume.AppendBlockStart(r.batch, &volume.BlockStart{Path: string(l.Path), Len: l.Loc.Len, At: l.Block.At})
			return nil
		}
		acct.record(t, body)
		if len(body) >= directRecord {
			if err := r.sendRecord(t, body); err != nil {
				return &stopStream{err}
			}
			return nil
		}
		r.batch = volume.AppendRecord(r.batch, t, body)
		if len(r.batch) >= recordBatch {
			if err := r.flush(); err != nil {
				return &stopStream{err}
			}
		}
		return nil
	}
	onDamage := func(cbe *volume.CorruptBlockError) error {
		// The records before the damage go first: the agent drops the
		// rest of an entry it names from where the name comes.
		if err := r.flush(); err != nil {
			return &stopStream{err}
		}
		r.log.Error("damaged block", "session", rr.SessionID, "seq", cbe.Seq, "err", cbe)
		r.n.metrics.damagedBlocks.Inc()
		if err := r.sendDamaged(acct.damage(cbe)); err != nil {
			return &stopStream{err}
		}
		return nil
	}
	var onStored func(*volume.StoredBlock) error
	if r.storedBlocks && (rr.Adjacent || slices.ContainsFunc(rr.Locs, func(l wire.ReadLoc) bool { return l.Follows })) {
		onStored = func(b *volume.StoredBlock) error {
			acct.stored(b)
			if err := r.sendStored(b); err != nil {
				return &stopStream{err}
			}
			return nil
		}
	}
	err = r.read(ctx, rr, onRecord, onStored, onDamage)
	var stop *stopStream
	if errors.As(err, &stop) || ctx.Err() != nil {
		return err
	}
	if err := r.flush(); err != nil {
		return err
	}
	var lost *volume.LostEntriesError
	if errors.As(err, &lost) {
		// The reader read on to the end and names what it could not pass
		// on whole, and why.
		for _, d := range acct.lostEntries(lost) {
			if err := r.sendDamaged(d); err != nil {
				return err
			}
		}
		err = nil
	}
	if err != nil && !losesEntries(err) {
		// The volumes contradict the request (a part that holds another
		// session, a location that is no entry): the request is wrong,
		// not the data, and the stream ends with why.
		return err
	}
	if err != nil {
		r.log.Error("read request failed; its entries not read yet are lost", "session", rr.SessionID, "err", err)
	}
	for _, d := range acct.unaccounted(err) {
		if err := r.sendDamaged(d); err != nil {
			return err
		}
	}
	done := dataplane.ReadDone{SessionID: rr.SessionID, Entries: acct.produced, Asked: len(rr.Locs), Lost: acct.lost}
	if done.Lost > 0 {
		r.log.Warn("read request served with entries lost", "session", rr.SessionID, "asked", done.Asked, "read", done.Entries, "lost", done.Lost)
	}
	return r.conn.WriteJSON(dataplane.FrameReadDone, done)
}

// read passes what the volumes give of rr's entries, record by record, to
// onRecord, and each damaged block it finds to onDamage. A body is only
// valid during the call.
func (r *reader) read(ctx context.Context, rr *wire.ReadRequest, onRecord func(volume.RecordType, []byte) error, onStored func(*volume.StoredBlock) error, onDamage func(*volume.CorruptBlockError) error) error {
	key, err := r.key(ctx, rr.KeyID)
	if err != nil {
		// The servers do not answer, or cannot hand out the key (their
		// key-encryption key is not the one that wrapped it): nothing is
		// wrong with the volumes, and the job fails with what is.
		return &stopStream{err}
	}
	type volumePart struct {
		part wire.ReadPart
		pr   partReader
	}
	vols := map[uuid.UUID]volumePart{}
	refs := make([]volume.PartRef, 0, len(rr.Parts))
	opts := volume.ReaderOptions{Workers: r.n.cfg.Workers}
	for _, p := range rr.Parts {
		pr, err := r.partReader(p)
		if err != nil {
			return err
		}
		pr.tune(&opts)
		vols[p.VolumeID] = volumePart{p, pr}
		refs = append(refs, volume.PartRef{VolumeID: p.VolumeID, VolumeStart: p.VolumeStart, DataStart: p.DataStart, StreamStart: p.StreamStart, StreamEnd: p.StreamEnd})
	}
	// The session reader owns what this opens and closes it when done.
	open := func(id uuid.UUID) (io.ReaderAt, error) {
		v, ok := vols[id]
		if !ok {
			return nil, fmt.Errorf("volume %s is not part of session %s", id, rr.SessionID)
		}
		return v.pr.open(ctx, v.part)
	}
	locs := make([]fileindex.Location, len(rr.Locs))
	for i, l := range rr.Locs {
		locs[i] = l.Loc
	}
	sr := volume.NewSessionReader(rr.SessionID, key, refs, open, opts)
	defer sr.Close()
	if onStored != nil {
		// A server older than Follows says Adjacent of the whole read.
		var follows []bool
		if !rr.Adjacent {
			follows = make([]bool, len(rr.Locs))
			for i, l := range rr.Locs {
				follows[i] = l.Follows
			}
		}
		return sr.ReadAdjacent(ctx, locs, follows, onRecord, onStored, onDamage)
	}
	return sr.ReadEntries(ctx, locs, onRecord, onDamage)
}

// partReader is the stream's reader of the medium that holds part p.
// Going on to another medium's parts releases what the last one kept.
func (r *reader) partReader(p wire.ReadPart) (partReader, error) {
	m := r.n.readerOf(p)
	if m == nil {
		where := "pool " + p.Pool
		if p.MediaType != "" {
			where = p.MediaType + " " + where
		}
		if p.Library != "" {
			where += " in library " + p.Library
		}
		return nil, &unreadableError{volume: p.Volume, err: fmt.Errorf("storage node %s has no medium that reads it (%s)", r.n.cfg.ID, where)}
	}
	if m != r.cur && r.cur != nil {
		r.media[r.cur].release(nil)
	}
	r.cur = m
	pr := r.media[m]
	if pr == nil {
		pr = m.readFrom(&r.stream)
		r.media[m] = pr
	}
	return pr, nil
}

// sendDamaged names lost entries, in frames of at most MaxDamagedPaths.
func (r *reader) sendDamaged(d dataplane.Damaged) error {
	paths := d.Paths
	for len(paths) > 0 {
		n := min(len(paths), dataplane.MaxDamagedPaths)
		d.Paths = paths[:n]
		if err := r.conn.WriteJSON(dataplane.FrameDamaged, d); err != nil {
			return err
		}
		paths = paths[n:]
	}
	return nil
}

// sendRecord sends a large record (file data) with the records batched
// before it, in one frame, its body from the block the volume reader
// decoded it into: the only copy of a restored byte on the node is then
// the read from the medium into that block (and, for a compressed block,
// the decompression); TLS encrypts from there.
func (r *reader) sendRecord(t volume.RecordType, body []byte) error {
	return r.sendAfterBatch(func(b []byte) []byte { return volume.AppendRecordHeader(b, t, len(body)) }, body)
}

// sendAfterBatch sends body in a Records frame after the records batched
// before it and what head appends to them, in one frame when that fits,
// after the batch otherwise.
func (r *reader) sendAfterBatch(head func([]byte) []byte, body []byte) error {
	h := head(r.batch)
	if len(h)+len(body) > dataplane.MaxFrame {
		if err := r.flush(); err != nil {
			return err
		}
		h = head(r.batch)
	}
	if err := r.conn.WriteFrameTail(dataplane.FrameRecords, h, body); err != nil {
		return err
	}
	r.n.metrics.bytesRead.Add(float64(len(h) + len(body)))
	r.batch = h[:0]
	return nil
}

// sendStored sends a block the volume reader passed on whole, after the
// records batched before it: its records as the batch's tail when it is
// stored uncompressed, a StoredBlock frame when compressed, the agent to
// decompress it.
func (r *reader) sendStored(b *volume.StoredBlock) error {
	if b.Codec == 0 {
		return r.sendAfterBatch(func(batch []byte) []byte { return batch }, b.Payload)
	}
	if err := r.flush(); err != nil {
		return err
	}
	head := dataplane.AppendStoredHead(r.batch[:0], uint16(b.Codec), b.RawLen)
	if err := r.conn.WriteFrameTail(dataplane.FrameStoredBlock, head, b.Payload); err != nil {
		return err
	}
	r.n.metrics.bytesRead.Add(float64(len(head) + len(b.Payload)))
	r.n.metrics.storedBlocks.Inc()
	return nil
}

// directRecord is the size from which a record's body is sent from where
// it lies rather than copied into the batch.
const directRecord = 64 << 10

func (r *reader) flush() error {
	if len(r.batch) == 0 {
		return nil
	}
	if err := r.conn.WriteFrame(dataplane.FrameRecords, r.batch); err != nil {
		return err
	}
	r.n.metrics.bytesRead.Add(float64(len(r.batch)))
	r.batch = r.batch[:0]
	return r.conn.Flush()
}

// readAccount keeps track of the entries of one read request: which went
// out and which were named lost, so that none is left out whatever the
// volume reader did or could not do.
type readAccount struct {
	rr       *wire.ReadRequest
	byPath   map[string]int
	out      []bool // its FileHeader went out
	lostAt   []bool // named lost
	open     int    // the entry whose FileHeader went out and whose FileEnd has not; -1 for none
	left     uint64 // of a block being passed on (open): the bytes still to come
	damages  []*volume.CorruptBlockError
	produced int
	lost     int
}

func newReadAccount(rr *wire.ReadRequest) *readAccount {
	a := &readAccount{rr: rr, byPath: make(map[string]int, len(rr.Locs)), out: make([]bool, len(rr.Locs)), lostAt: make([]bool, len(rr.Locs)), open: -1}
	for i, l := range rr.Locs {
		if l.Block == nil { // a file's blocks share its path; they are named by place
			a.byPath[string(l.Path)] = i
		}
	}
	return a
}

// block notes that the block at rr.Locs[i] is on its way.
func (a *readAccount) block(i int) {
	if !a.out[i] {
		a.out[i] = true
		a.produced++
	}
	a.open, a.left = i, a.rr.Locs[i].Loc.Len
}

// record notes a record on its way to the agent.
func (a *readAccount) record(t volume.RecordType, body []byte) {
	switch t {
	case volume.RecFileHeader:
		a.open, a.left = -1, 0
		e, err := fileindex.DecodeEntry(body)
		if err != nil {
			return // the agent refuses the stream on it
		}
		if i, ok := a.byPath[e.Path]; ok {
			if !a.out[i] {
				a.out[i] = true
				a.produced++
			}
			a.open = i
		}
	case volume.RecData:
		if a.left > 0 {
			if _, data, err := volume.DecodeData(body); err == nil {
				a.left -= min(a.left, uint64(len(data)))
				if a.left == 0 {
					a.open = -1 // the block is whole: it has no FileEnd
				}
			}
		}
	case volume.RecFileEnd:
		a.open = -1
	}
}

// stored notes a block passed on whole: the entries begun in it went out,
// and the one left open, if any, is under way.
func (a *readAccount) stored(b *volume.StoredBlock) {
	for _, i := range b.Begun {
		if !a.out[i] {
			a.out[i] = true
			a.produced++
		}
	}
	a.open, a.left = b.Open, 0
}

// damage names the entries a damaged block hurts: every one whose blocks,
// Seq to EndSeq, include it (those that start in it, lie in it, or run
// into or through it), and the one whose records are under way, which
// runs into it whatever its index says.
func (a *readAccount) damage(d *volume.CorruptBlockError) dataplane.Damaged {
	a.damages = append(a.damages, d)
	out := dataplane.Damaged{SessionID: a.rr.SessionID, Seq: d.Seq, Reason: d.Error()}
	for i, l := range a.rr.Locs {
		hurt := l.Loc.Seq <= d.Seq && d.Seq <= l.Loc.EndSeq
		if l.Loc.EndSeq < l.Loc.Seq {
			hurt = l.Loc.Seq == d.Seq // an index without EndSeq
		}
		if (hurt || i == a.open) && a.lose(i) {
			out.Paths = append(out.Paths, l.Path)
		}
	}
	if a.open >= 0 {
		a.open = -1 // its remaining records are dropped
	}
	return out
}

func (a *readAccount) lose(i int) bool {
	if a.lostAt[i] {
		return false
	}
	a.lostAt[i] = true
	a.lost++
	return true
}

// lostEntries names the entries the reader says it lost, with its
// reasons, those not named yet.
func (a *readAccount) lostEntries(e *volume.LostEntriesError) []dataplane.Damaged {
	type at struct {
		seq     uint64
		inBlock uint32
	}
	byLoc := make(map[at][]int, len(a.rr.Locs))
	for i, l := range a.rr.Locs {
		k := at{l.Loc.Seq, l.Loc.InBlock}
		byLoc[k] = append(byLoc[k], i)
	}
	groups := map[string]*dataplane.Damaged{}
	var order []string
	for _, le := range e.Lost {
		seq := le.Loc.Seq
		if le.Damage != nil {
			seq = le.Damage.Seq
		}
		for _, i := range byLoc[at{le.Loc.Seq, le.Loc.InBlock}] {
			if !a.lose(i) {
				continue
			}
			g := groups[le.Reason]
			if g == nil {
				g = &dataplane.Damaged{SessionID: a.rr.SessionID, Seq: seq, Reason: le.Reason}
				groups[le.Reason] = g
				order = append(order, le.Reason)
			}
			g.Paths = append(g.Paths, a.rr.Locs[i].Path)
			if i == a.open {
				a.open = -1
			}
		}
	}
	out := make([]dataplane.Damaged, 0, len(order))
	for _, reason := range order {
		out = append(out, *groups[reason])
	}
	return out
}

// unaccounted names every entry that neither went out whole nor was named
// yet: the one the read stopped inside, and those it never reached. err
// is why the read stopped early, if it did; otherwise the last damage
// before an entry is what took it (a volume cut short ends in damage, and
// everything after it is lost with it).
func (a *readAccount) unaccounted(err error) []dataplane.Damaged {
	groups := map[string]*dataplane.Damaged{}
	var order []string
	add := func(seq uint64, reason string, path fileindex.Path) {
		g := groups[reason]
		if g == nil {
			g = &dataplane.Damaged{SessionID: a.rr.SessionID, Seq: seq, Reason: reason}
			groups[reason] = g
			order = append(order, reason)
		}
		g.Paths = append(g.Paths, path)
	}
	for i, l := range a.rr.Locs {
		if a.lostAt[i] || (a.out[i] && i != a.open) {
			continue
		}
		a.lose(i)
		seq, reason := l.Loc.Seq, ""
		switch {
		case err != nil && a.out[i]:
			reason = "the read stopped inside it: " + errorText(err)
		case err != nil:
			reason = "not read: " + errorText(err)
		case a.out[i]:
			reason = "its records end before its FileEnd"
			if d := a.lastDamage(l.Loc.Seq); d != nil {
				reason += ", lost after " + d.Error()
			}
		default:
			if d := a.lastDamage(l.Loc.Seq); d != nil {
				seq, reason = d.Seq, "lost with the damage before it: "+d.Error()
			} else {
				reason = fmt.Sprintf("nothing of it was read: the volume ends before block seq %d (it was cut short) or does not hold what the catalog says", l.Loc.Seq)
			}
		}
		add(seq, reason, l.Path)
	}
	a.open = -1
	out := make([]dataplane.Damaged, 0, len(order))
	for _, reason := range order {
		out = append(out, *groups[reason])
	}
	return out
}

// lastDamage is the last damage reported at or before block seq.
func (a *readAccount) lastDamage(seq uint64) *volume.CorruptBlockError {
	var last *volume.CorruptBlockError
	for _, d := range a.damages {
		if d.Seq <= seq && (last == nil || d.Seq >= last.Seq) {
			last = d
		}
	}
	return last
}

// unreadableError is a volume this node cannot read: its file is missing
// or does not open, its tape does not mount, its pool or library is not
// here.
type unreadableError struct {
	volume string
	err    error
}

func (e *unreadableError) Error() string {
	if errors.Is(e.err, os.ErrNotExist) {
		return fmt.Sprintf("volume %s is missing: %v", e.volume, e.err)
	}
	return fmt.Sprintf("volume %s cannot be read: %v", e.volume, e.err)
}

func (e *unreadableError) Unwrap() error { return e.err }

// losesEntries says whether err, which ended a read early, loses the
// entries of the read rather than the stream: the volumes cannot give
// them (a volume missing or unreadable, a medium or I/O error, a key
// that does not open the session).
func losesEntries(err error) bool {
	var ke *volume.KeyError
	var ue *unreadableError
	return errors.As(err, &ke) || errors.As(err, &ue) ||
		errors.Is(err, syscall.EIO) || errors.Is(err, tape.ErrMedium) || errors.Is(err, tape.ErrHung)
}

// errorText is an error as the agent's list of lost entries shows it.
func errorText(err error) string {
	var ke *volume.KeyError
	if errors.As(err, &ke) {
		return "the key does not open the session: " + err.Error()
	}
	return err.Error()
}
