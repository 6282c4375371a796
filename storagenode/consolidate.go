package storagenode

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/tmpfile"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

// A consolidation (a synthetic full) is a backup session whose records come
// from this node's own restore reading instead of an agent: the servers'
// plan of the chain as of its newest backup gives every entry of that point
// in time exactly once, from the backup that holds its version then
// (deleted entries are in none), and the merge below puts them in index
// order for the session writer. So the volume format stays one, and what
// the restore reader gives is what the new full holds: a large file kept
// by blocks across the chain is assembled first (consolidate_blocks.go).
//
// The plan reads one backup after another, each in index order. The
// servers put the reads of Stream (the chain's full, its largest backup)
// last; the reads of every other backup are staged in files of the node's
// temporary directory, one per backup, and merged into the full's entries
// as those are read, so only the changes go through the disk twice.

// runConsolidate starts the consolidation the servers ordered, in ctx (the
// node's), and answers once it runs. A repeat of the order for an attempt
// that runs here is answered without a second start.
func (n *Node) runConsolidate(ctx context.Context, o wire.RunConsolidate) (wire.Empty, error) {
	if n.byPool[o.Pool] == nil {
		return wire.Empty{}, wire.Errorf(wire.CodeInvalidArgument, "give a pool this storage node serves ('cairn pool list')",
			"storage node %s does not serve pool %s", n.cfg.ID, o.Pool)
	}
	n.mu.Lock()
	js := n.jobs[o.JobID]
	n.mu.Unlock()
	if js != nil && js.attempt == o.Attempt {
		return wire.Empty{}, nil
	}
	t := ticket.Ticket{
		JobID: o.JobID, Client: o.Client, Node: n.cfg.ID, Op: ticket.OpBackup, Pool: o.Pool, BackupID: o.BackupID,
		Level: "full", KeyID: o.KeyID, Attempt: o.Attempt,
	}
	for _, s := range o.Sessions {
		t.Sessions = append(t.Sessions, s.String())
	}
	jctx, done, err := n.startJob(ctx, t, nil)
	if err != nil {
		return wire.Empty{}, err
	}
	log := n.log.With("job", t.JobID, "attempt", t.Attempt, "client", t.Client, "op", "consolidate")
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer done()
		n.consolidate(jctx, log, t, o.Stream)
	}()
	return wire.Empty{}, nil
}

// consolidate writes the synthetic full and commits it, or rolls it back
// and tells the servers why, as a backup session does.
func (n *Node) consolidate(ctx context.Context, log *slog.Logger, t ticket.Ticket, live uuid.UUID) {
	n.metrics.streams.WithLabelValues("consolidate").Inc()
	defer n.metrics.streams.WithLabelValues("consolidate").Dec()
	s := &session{stream: stream{n: n, t: t, log: log}}
	log.Info("consolidation started", "pool", t.Pool, "sessions", len(t.Sessions))
	started := time.Now()
	pr := &consolidateProgress{job: t.JobID}
	stop := n.reportProgress(pr)
	res, read, err := s.consolidate(ctx, live, pr)
	stop()
	if err != nil && ctx.Err() != nil {
		if cause := context.Cause(ctx); cause != nil {
			err = cause
		}
	}
	outcome := "success"
	if err != nil {
		outcome = "failed"
		we := s.fail(ctx, err)
		log.Warn("consolidation failed; nothing of it is kept", "err", we.Message)
	} else {
		log.Info("consolidation committed", "entries", res.Entries, "read", read, "stored", res.StoredBytes, "seconds", time.Since(started).Seconds())
	}
	n.metrics.sessions.WithLabelValues("consolidate", outcome).Inc()
}

// consolidateProgress is what a consolidation has done so far, read by
// its progress reports while it goes on.
type consolidateProgress struct {
	job    uint64
	read   atomic.Int64                         // bytes of records the volumes gave
	writer atomic.Pointer[volume.SessionWriter] // the new full's, once opened
}

func (p *consolidateProgress) report() wire.Progress {
	out := wire.Progress{JobID: p.job, Phase: "reading the chain", Bytes: p.read.Load()}
	if w := p.writer.Load(); w != nil {
		wp := w.Progress()
		out.Phase, out.Files, out.Stored = "writing", wp.Files, wp.StoredBytes
	}
	return out
}

// reportProgress publishes p's progress to the servers at every heartbeat
// interval until stop is called: a synthetic full has no agent to report
// for it, and may read a chain for longer than the servers' stall timeout
// between two of its requests; the reports are its activity
// (storagenode/DESIGN.md, "Consolidation: a synthetic full").
func (n *Node) reportProgress(p *consolidateProgress) (stop func()) {
	done, ended := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		t := time.NewTicker(n.cfg.HeartbeatInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				r := p.report()
				r.Group = n.group.ID()
				if err := wire.Publish(n.nc, wire.NodeProgressSubject(n.cfg.ID), r); err != nil {
					n.log.Debug("progress report", "job", p.job, "err", err)
				}
			}
		}
	}()
	return func() {
		close(done)
		<-ended
	}
}

// consolidate reads the plan, merges and writes; read is the bytes of
// records the volumes gave.
func (s *session) consolidate(ctx context.Context, live uuid.UUID, pr *consolidateProgress) (res *volume.SessionResult, read int64, err error) {
	r := &reader{stream: s.stream, keys: map[string]*volume.Key{}, media: map[medium]partReader{}}
	defer func() {
		for _, pr := range r.media {
			pr.release(err)
		}
	}()
	m, err := newMerge(s.n.tempDir())
	if err != nil {
		return nil, 0, err
	}
	defer m.close()
	// The sources are read first, before a volume of the target is taken:
	// on a library with two drives, the one the target needs is free only
	// once the staged reads gave theirs back.
	var w *volume.SessionWriter
	var sessionID uuid.UUID
	defer func() {
		if w != nil {
			s.abort(w) // no-op after a successful Close
		}
	}()
	err = r.plan(ctx, func(rr *wire.ReadRequest) error {
		m.asm.expect(rr)
		var onRecord func(volume.RecordType, []byte) error
		if rr.SessionID == live {
			if w == nil {
				// The drive of the sources goes back before the target's
				// volume is taken.
				if r.cur != nil {
					r.media[r.cur].release(nil)
					r.cur = nil
				}
				var err error
				if w, sessionID, err = s.open(ctx); err != nil {
					return err
				}
				m.w = w
				pr.writer.Store(w)
			}
			onRecord = m.live
		} else {
			sp, err := m.stage(rr.SessionID)
			if err != nil {
				return err
			}
			onRecord = func(t volume.RecordType, body []byte) error {
				m.stagedBytes += int64(len(body))
				return sp.add(t, body)
			}
		}
		counted := func(t volume.RecordType, body []byte) error {
			if s.index != nil {
				if err := s.index.refused(); err != nil {
					return err // the new full's commit would be refused too
				}
			}
			read += int64(len(body))
			pr.read.Store(read)
			if took, err := m.asm.record(rr, t, body); took || err != nil {
				return err
			}
			return onRecord(t, body)
		}
		err := r.read(ctx, rr, counted, nil, nil)
		if err == nil {
			err = m.asm.endBlock()
		}
		var lost *volume.LostEntriesError
		var cbe *volume.CorruptBlockError
		switch {
		case errors.As(err, &lost), errors.As(err, &cbe):
			return fmt.Errorf("session %s of the chain is damaged, and a synthetic full must hold every entry whole: %w; "+
				"take a new full backup of client %s instead", rr.SessionID, err, s.t.Client)
		case err != nil && losesEntries(err):
			return wire.Errorf(wire.CodeIO, fmt.Sprintf("bring back the volume (or take a new full backup of client %s), then run the consolidation again", s.t.Client),
				"reading session %s of the chain: %w", rr.SessionID, err)
		}
		return err
	})
	if err != nil {
		return nil, read, err
	}
	if w == nil {
		// The full gave no entry (every one changed since): the staged
		// backups hold the whole point in time.
		if r.cur != nil {
			r.media[r.cur].release(nil)
			r.cur = nil
		}
		if w, sessionID, err = s.open(ctx); err != nil {
			return nil, read, err
		}
		m.w = w
		pr.writer.Store(w)
	}
	if err := m.finish(); err != nil {
		return nil, read, err
	}
	res, err = w.Close()
	if err != nil {
		return nil, read, err
	}
	w = nil
	note := fmt.Sprintf("synthetic full: read %d bytes of records from %d sessions of the chain, %d of them staged on storage node %s first",
		read, len(s.t.Sessions), m.stagedBytes, s.n.cfg.ID)
	if m.asm.assembled > 0 {
		note += fmt.Sprintf("; %d bytes of large files assembled there from their blocks", m.asm.assembled)
	}
	if _, err := s.commit(ctx, sessionID, res, dataplane.End{Notes: []string{note}}); err != nil {
		return nil, read, err
	}
	return res, read, nil
}

// merge puts the entries of the chain in index order: the live backup's as
// they are read, with the staged backups' entries that come before each
// one written first. The plan gives every path from one backup only, so
// no two sources ever hold the same path.
type merge struct {
	dir    string
	w      *volume.SessionWriter
	asm    *rebuild
	batch  []byte
	staged map[uuid.UUID]*stagedSource
	order  []*stagedSource
	// stagedBytes counts the record bytes that went through staging files.
	stagedBytes int64
}

func newMerge(dir string) (*merge, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("temporary directory of the consolidation: %w", err)
	}
	return &merge{dir: dir, asm: newRebuild(dir), staged: map[uuid.UUID]*stagedSource{}}, nil
}

// mergeBatch is how many bytes of records go to the session writer at once.
const mergeBatch = 1 << 20

// stage is the staging file of a backup's reads, made on its first read.
func (m *merge) stage(id uuid.UUID) (*stagedSource, error) {
	if sp := m.staged[id]; sp != nil {
		if sp.r != nil {
			return nil, fmt.Errorf("the plan reads session %s again after the full's reads began", id)
		}
		return sp, nil
	}
	// Nobody else needs the file by name: it goes when it is closed, or
	// with the node.
	f, err := tmpfile.Open(m.dir, "consolidate-*.rec", "staging file")
	if err != nil {
		return nil, fmt.Errorf("stage the changes of session %s: %w", id, err)
	}
	sp := &stagedSource{session: id, f: f, w: bufio.NewWriterSize(f, 1<<20)}
	m.staged[id] = sp
	m.order = append(m.order, sp)
	return sp, nil
}

// live takes a record of the live backup.
func (m *merge) live(t volume.RecordType, body []byte) error {
	if t == volume.RecFileHeader {
		e, err := fileindex.DecodeEntry(body)
		if err != nil {
			return fmt.Errorf("a FileHeader of the chain's full: %w", err)
		}
		if err := m.drain(e.Path); err != nil {
			return err
		}
		return m.header(&e, body)
	}
	return m.add(t, body)
}

// header writes the FileHeader of entry e, or holds it while the entry is
// assembled from its blocks.
func (m *merge) header(e *fileindex.Entry, body []byte) error {
	if held, err := m.asm.header(e, body); held || err != nil {
		return err
	}
	return m.add(volume.RecFileHeader, body)
}

// add writes a record of an entry after its FileHeader.
func (m *merge) add(t volume.RecordType, body []byte) error {
	if m.asm.cur != nil {
		switch t {
		case volume.RecData:
			return m.asm.data(body)
		case volume.RecFileEnd:
			return m.asm.end(body, m.put)
		}
		return fmt.Errorf("entry %q: a %s record inside a file's records", m.asm.cur.path, t)
	}
	m.batch = volume.AppendRecord(m.batch, t, body)
	return m.put(nil)
}

// put queues encoded records for the writer.
func (m *merge) put(recs []byte) error {
	m.batch = append(m.batch, recs...)
	if len(m.batch) < mergeBatch {
		return nil
	}
	return m.flush()
}

func (m *merge) flush() error {
	if len(m.batch) == 0 {
		return nil
	}
	err := m.w.Write(m.batch)
	m.batch = m.batch[:0]
	return err
}

// drain writes every staged entry before path ("" for all of them), the
// least first.
func (m *merge) drain(path string) error {
	for {
		var next *stagedSource
		for _, sp := range m.order {
			if err := sp.open(); err != nil {
				return err
			}
			if sp.done {
				continue
			}
			if next == nil || fileindex.Compare(sp.head.Path, next.head.Path) < 0 {
				next = sp
			}
		}
		if next == nil || (path != "" && fileindex.Compare(next.head.Path, path) >= 0) {
			return nil
		}
		if err := next.copyEntry(m); err != nil {
			return err
		}
	}
}

// finish writes what is left staged and the last batch.
func (m *merge) finish() error {
	if err := m.drain(""); err != nil {
		return err
	}
	if err := m.asm.finish(); err != nil {
		return err
	}
	return m.flush()
}

func (m *merge) close() {
	m.asm.close()
	for _, sp := range m.order {
		sp.f.Close()
	}
}

// stagedSource is the entries of one backup of the chain, as its reads
// gave them, in a temporary file: written whole first, then read back
// entry by entry.
type stagedSource struct {
	session uuid.UUID
	f       *os.File
	w       *bufio.Writer
	r       *bufio.Reader
	head    fileindex.Entry // the entry whose FileHeader was read last
	rec     []byte          // that FileHeader
	buf     []byte          // the body of the record read last
	done    bool
}

func (sp *stagedSource) add(t volume.RecordType, body []byte) error {
	var hdr [1 + binary.MaxVarintLen64]byte
	hdr[0] = byte(t)
	k := 1 + binary.PutUvarint(hdr[1:], uint64(len(body)))
	if _, err := sp.w.Write(hdr[:k]); err != nil {
		return fmt.Errorf("stage the changes of session %s: %w", sp.session, err)
	}
	if _, err := sp.w.Write(body); err != nil {
		return fmt.Errorf("stage the changes of session %s: %w", sp.session, err)
	}
	return nil
}

// open turns the staging file around for reading, once, and reads its
// first FileHeader.
func (sp *stagedSource) open() error {
	if sp.r != nil {
		return nil
	}
	if err := sp.w.Flush(); err != nil {
		return fmt.Errorf("stage the changes of session %s: %w", sp.session, err)
	}
	if _, err := sp.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	sp.r = bufio.NewReaderSize(sp.f, 1<<20)
	return sp.next()
}

// next reads the next FileHeader into head, or marks the source done.
func (sp *stagedSource) next() error {
	t, body, err := sp.record()
	if errors.Is(err, io.EOF) {
		sp.done = true
		return nil
	}
	if err != nil {
		return err
	}
	if t != volume.RecFileHeader {
		return fmt.Errorf("staged changes of session %s: a %s record where a FileHeader belongs", sp.session, t)
	}
	e, err := fileindex.DecodeEntry(body)
	if err != nil {
		return fmt.Errorf("staged changes of session %s: %w", sp.session, err)
	}
	sp.head, sp.rec = e, append(sp.rec[:0], body...)
	return nil
}

// record reads one record; body is valid until the next call.
func (sp *stagedSource) record() (volume.RecordType, []byte, error) {
	tb, err := sp.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	l, err := binary.ReadUvarint(sp.r)
	if err != nil {
		return 0, nil, fmt.Errorf("staged changes of session %s: %w", sp.session, noEOF(err))
	}
	if l > volume.MaxHeaderBody+binary.MaxVarintLen64 {
		return 0, nil, fmt.Errorf("staged changes of session %s: a record of %d bytes", sp.session, l)
	}
	if uint64(cap(sp.buf)) < l {
		sp.buf = make([]byte, l)
	}
	body := sp.buf[:l]
	if _, err := io.ReadFull(sp.r, body); err != nil {
		return 0, nil, fmt.Errorf("staged changes of session %s: %w", sp.session, noEOF(err))
	}
	return volume.RecordType(tb), body, nil
}

// copyEntry writes the head entry, its records up to its FileEnd, to m,
// and reads the next head.
func (sp *stagedSource) copyEntry(m *merge) error {
	if err := m.header(&sp.head, sp.rec); err != nil {
		return err
	}
	for {
		t, body, err := sp.record()
		if err != nil {
			return fmt.Errorf("staged changes of session %s: entry %q: %w", sp.session, sp.head.Path, noEOF(err))
		}
		if err := m.add(t, body); err != nil {
			return err
		}
		if t == volume.RecFileEnd {
			return sp.next()
		}
	}
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
