package storagenode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/disk"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

// session is one backup stream being written: the stream and its pool's
// side of it, whatever the medium.
type session struct {
	stream
	app   appendSession // nil until the pool is known
	index *indexSender  // nil until the session is open
}

func (n *Node) backup(ctx context.Context, log *slog.Logger, conn *dataplane.Conn, t ticket.Ticket) {
	n.metrics.streams.WithLabelValues("backup").Inc()
	defer n.metrics.streams.WithLabelValues("backup").Dec()
	s := &session{stream: stream{n: n, t: t, log: log}}
	log.Info("backup session started", "pool", t.Pool)
	res, err := s.run(ctx, conn)
	if err != nil && ctx.Err() != nil {
		if cause := context.Cause(ctx); cause != nil {
			err = cause // the servers stopped the job, or the node stops
		}
	}
	outcome := "success"
	if err != nil {
		outcome = "failed"
		we := s.fail(ctx, err)
		_ = conn.WriteError(we)
		log.Warn("backup session failed", "err", we.Message)
	} else {
		_ = conn.WriteJSON(dataplane.FrameResult, res)
		log.Info("backup session committed", "entries", res.Stats.Entries, "bytes", res.Stats.ContentBytes, "stored", res.Stats.StoredBytes)
	}
	n.metrics.sessions.WithLabelValues("backup", outcome).Inc()
}

// run writes the stream and commits it; any error leaves nothing committed.
func (s *session) run(ctx context.Context, conn *dataplane.Conn) (*dataplane.Result, error) {
	t := s.t
	w, sessionID, err := s.open(ctx)
	if err != nil {
		return nil, err
	}
	defer s.abort(w) // no-op after a successful Close
	if err := conn.WriteJSON(dataplane.FrameAccept, dataplane.Accept{V: dataplane.Version, JobID: t.JobID, Node: s.n.cfg.ID}); err != nil {
		return nil, fmt.Errorf("agent connection: %w", err)
	}
	var end dataplane.End
	for done := false; !done; {
		typ, payload, err := conn.ReadFrame() // within IdleTimeout (serveConn)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, wire.Errorf(wire.CodeTimeout, "check the client; rerun the job",
					"the agent of client %s sent nothing for %s", t.Client, s.n.cfg.IdleTimeout)
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
				return nil, wire.Errorf(wire.CodeAgentLost, "", "the agent of client %s disconnected before the end of the stream (it stopped or lost the network)", t.Client)
			}
			return nil, wire.Errorf(wire.CodeAgentLost, "", "agent stream of client %s broke: %w", t.Client, err)
		}
		if err := s.index.refused(); err != nil {
			return nil, err
		}
		switch typ {
		case dataplane.FrameRecords:
			if err := w.Write(payload); err != nil {
				return nil, err
			}
			s.n.metrics.bytesWritten.Add(float64(len(payload)))
		case dataplane.FrameEnd:
			if err := dataplane.DecodeJSON(typ, payload, dataplane.FrameEnd, &end); err != nil {
				return nil, err
			}
			done = true
		case dataplane.FrameError:
			return nil, dataplane.DecodeJSON(typ, payload, dataplane.FrameEnd, &end)
		default:
			return nil, wire.Errorf(wire.CodeBadRequest, "", "unexpected frame %d in a backup stream", typ)
		}
	}
	res, err := w.Close()
	if err != nil {
		return nil, err
	}
	return s.commit(ctx, sessionID, res, end)
}

// open starts the session on the first volume of its pool the servers
// grant: whoever feeds it records (an agent's stream, a consolidation's
// merge) writes them to the writer it returns, then closes and commits, or
// aborts it.
func (s *session) open(ctx context.Context) (*volume.SessionWriter, uuid.UUID, error) {
	t := s.t
	m := s.n.byPool[t.Pool]
	if m == nil {
		return nil, uuid.Nil, wire.Errorf(wire.CodeInvalidArgument, "", "storage node %s does not serve pool %s", s.n.cfg.ID, t.Pool)
	}
	s.app = m.appendTo(&s.stream)
	var kr wire.KeyGetResp
	if err := s.n.request(ctx, wire.OpKeyGet, wire.KeyGetReq{JobID: t.JobID, KeyID: t.KeyID}, &kr); err != nil {
		return nil, uuid.Nil, fmt.Errorf("get the data key of pool %s: %w", t.Pool, err)
	}
	key := &volume.Key{ID: kr.ID, Material: kr.Key}
	first, grant, err := s.app.acquire(ctx, nil)
	if err != nil {
		return nil, uuid.Nil, err
	}
	sessionID := uuid.New()
	s.index = s.sendIndex(ctx)
	w, err := volume.NewSessionWriter(volume.SessionInfo{
		SessionID: sessionID, JobID: t.JobID, BackupID: t.BackupID, ParentBackup: t.Parent, Chain: chainParts(t.Chain), Client: t.Client, Level: t.Level,
		Pool: t.Pool, Created: time.Now().UTC(), Compression: grant.DataCodec(), BlockRawSize: grant.BlockRawSize,
	}, key, first, volume.WriterOptions{
		Workers: s.n.cfg.Workers,
		TempDir: s.n.tempDir(),
		Next: func(full volume.Appender) (volume.Appender, error) {
			app, _, err := s.app.acquire(ctx, full)
			return app, err
		},
		Lost:    s.app.lost,
		Segment: s.index.push,
	})
	if err != nil {
		s.index.stop()
		return nil, uuid.Nil, fmt.Errorf("start session: %w", err)
	}
	return w, sessionID, nil
}

// commit sends the index and asks the servers to record the backup. The
// session is durable on its volumes before this, so once the commit request
// is sent the volumes are never cut back: the servers may have recorded it.
func (s *session) commit(ctx context.Context, sessionID uuid.UUID, res *volume.SessionResult, end dataplane.End) (*dataplane.Result, error) {
	defer res.Index.Close()
	req := wire.SessionCommitReq{
		JobID: s.t.JobID, Attempt: s.t.Attempt, SessionID: sessionID, Warnings: end.Warnings, Notes: end.Notes,
		Stats: wire.SessionStats{
			Entries: res.Entries, Files: res.Files, ContentBytes: res.ContentBytes,
			StreamBytes: res.StreamBytes, StoredBytes: res.StoredBytes, Blocks: res.Blocks,
		},
	}
	for _, p := range res.Parts {
		req.Parts = append(req.Parts, sessionPart(p))
	}
	s.app.finish(&req, res)
	segments, err := s.index.finish(res.Index)
	if err != nil {
		return nil, err
	}
	req.Segments = segments
	names := s.app.committing()
	var volumes []string
	for _, p := range res.Parts {
		if name, ok := names[p.VolumeID]; ok {
			volumes = append(volumes, name)
		}
	}
	if err := s.n.request(ctx, wire.OpSessionCommit, req, nil); err != nil {
		return nil, fmt.Errorf("commit the session: %w", err)
	}
	return &dataplane.Result{JobID: s.t.JobID, Stats: req.Stats, Volumes: volumes}, nil
}

// abort stops a session's writer that was not closed, the index sender
// first: the writer may be waiting for it.
func (s *session) abort(w *volume.SessionWriter) {
	if s.index != nil {
		s.index.stop()
	}
	w.Abort()
}

// indexSender sends a session's index segments to the servers while the
// session is written, one request after the other in order, so that only
// the last is left when the trailer is written. The catalog takes the
// segments of a backup being written and drops them if it is not
// committed (catalog/DESIGN.md, "The file index").
//
// The servers refusing a segment fails the session at once: its commit
// would be refused too. The servers out of reach (a leader election, a
// NATS outage longer than ServerWait) does not: the sender stops, and the
// segments it could not send go with the commit, from the writer's
// trailer, as they did before the index was sent early.
type indexSender struct {
	s    *session
	ctx  context.Context
	segs chan fileindex.Segment
	quit chan struct{}
	once sync.Once
	done chan struct{}
	// Read after done, or by the sending goroutine.
	sent     int   // segments the servers took, numbered from 0
	deferred bool  // the rest goes with the commit
	err      error // why the servers refused a segment
}

// indexAhead is how many built segments may wait for their request before
// the writer is held back.
const indexAhead = 4

var errIndexStopped = errors.New("the session's index is no longer being sent")

func (s *session) sendIndex(ctx context.Context) *indexSender {
	x := &indexSender{s: s, ctx: ctx, segs: make(chan fileindex.Segment, indexAhead), quit: make(chan struct{}), done: make(chan struct{})}
	go x.run()
	return x
}

func (x *indexSender) run() {
	defer close(x.done)
	for {
		var seg fileindex.Segment
		var ok bool
		select {
		case seg, ok = <-x.segs:
			if !ok {
				return
			}
		case <-x.quit:
			return
		}
		if x.deferred {
			continue // the writer's trailer has it; the commit sends it
		}
		fitted, err := fitSegments([]fileindex.Segment{seg})
		if err != nil {
			x.err = err
			return
		}
		for _, f := range fitted {
			if err := x.send(f); err != nil {
				if x.ctx.Err() == nil && (wire.Transient(err) || wire.CodeOf(err) == wire.CodeOutcomeUnknown) {
					x.s.log.Warn("the servers did not take an index segment in time; the rest of the index goes with the commit",
						"segment", x.sent, "err", err)
					x.deferred = true
					break
				}
				x.err = err
				return
			}
		}
	}
}

// send sends f as segment number x.sent.
func (x *indexSender) send(f fileindex.Segment) error {
	if err := x.s.n.request(x.ctx, wire.OpSessionIndex, wire.SessionIndexReq{
		JobID: x.s.t.JobID, Attempt: x.s.t.Attempt, No: x.sent, First: fileindex.Path(f.First), Last: fileindex.Path(f.Last), Count: f.Count, Data: f.Data,
	}, nil); err != nil {
		return fmt.Errorf("send file index segment %d: %w", x.sent, err)
	}
	x.s.log.Debug("index segment sent", "no", x.sent, "entries", f.Count, "bytes", len(f.Data))
	x.sent++
	return nil
}

// push is the writer's WriterOptions.Segment: it queues seg, waiting while
// indexAhead segments already wait, and fails once the servers refused
// one or sending was stopped.
func (x *indexSender) push(seg fileindex.Segment) error {
	if err := x.refused(); err != nil {
		return err
	}
	select {
	case x.segs <- seg:
		return nil
	case <-x.done:
		if x.err != nil {
			return x.err
		}
		return errIndexStopped
	case <-x.quit:
		return errIndexStopped
	}
}

// refused is, once the servers refused a segment, why: the stream's loop
// asks it as it goes, so a session stops at once rather than at its next
// segment, which a large file may put far off.
func (x *indexSender) refused() error {
	select {
	case <-x.done:
		return x.err
	default:
		return nil
	}
}

// finish, after the writer's Close, waits until every segment pushed is
// sent, sends those of trailer (the session's whole index) the servers
// were out of reach for, and returns how many segments they now hold.
func (x *indexSender) finish(trailer *volume.IndexSegments) (int, error) {
	close(x.segs)
	<-x.done
	if x.err != nil || !x.deferred {
		return x.sent, x.err
	}
	// The one that failed is sent again: the catalog takes a segment it
	// holds already when it is the same. The trailer is read a segment at
	// a time; the count is of segments as sent, some cut in two to fit.
	fitted := 0
	err := trailer.Each(0, func(_ int, seg fileindex.Segment) error {
		parts, err := fitSegments([]fileindex.Segment{seg})
		if err != nil {
			return err
		}
		for _, f := range parts {
			if fitted >= x.sent {
				if err := x.send(f); err != nil {
					return err
				}
			}
			fitted++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return x.sent, nil
}

// stop ends the sending early, once the request under way has its answer:
// a session that failed must not have a segment of its applied after the
// servers are told.
func (x *indexSender) stop() {
	x.once.Do(func() { close(x.quit) })
	<-x.done
}

// sessionPart is where a part the session writer wrote lies, as the
// servers record it: every field of the part (Torn among them: the
// catalog must know a tape part has no end marker) but its block count,
// which nothing after the writer reads.
func sessionPart(p volume.PartResult) wire.SessionPart {
	return wire.SessionPart{
		VolumeID: p.VolumeID, Part: p.Part, VolumeStart: p.VolumeStart, DataStart: p.DataStart, End: p.End,
		StreamStart: p.StreamStart, StreamEnd: p.StreamEnd, FirstSeq: p.FirstSeq, LastSeq: p.LastSeq, Final: p.Final, Torn: p.Torn,
	}
}

// fitSegments re-cuts index segments that would not fit one NATS message.
func fitSegments(in []fileindex.Segment) ([]fileindex.Segment, error) {
	var out []fileindex.Segment
	for _, seg := range in {
		if len(seg.Data) <= wire.MaxIndexSegmentBytes {
			out = append(out, seg)
			continue
		}
		entries, err := fileindex.DecodeSegment(seg.Data)
		if err != nil {
			return nil, err
		}
		b := fileindex.NewSegmentBuilder(wire.MaxIndexSegmentBytes / 4)
		for i := range entries {
			if err := b.Add(&entries[i]); err != nil {
				return nil, err
			}
			if b.Full() {
				out = append(out, b.Flush())
			}
		}
		if b.Len() > 0 {
			out = append(out, b.Flush())
		}
	}
	return out, nil
}

// fail cuts every volume back to where the session started on it, tells
// the servers, and returns the error for the agent.
func (s *session) fail(ctx context.Context, err error) *wire.Error {
	we := s.classify(err)
	if s.n.isHandingBack() {
		we = wire.Errorf(wire.CodeHandedBack, "", "storage node %s stopped during the backup and handed it back (%w)", s.n.cfg.ID, we)
	}
	if s.index != nil {
		s.index.stop()
	}
	if s.app != nil {
		s.app.rollback(err)
	}
	// The servers must hear of it even if the job's context is gone.
	actx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if rerr := s.n.request(actx, wire.OpSessionAbort, wire.SessionAbortReq{JobID: s.t.JobID, Error: *we, Attempt: s.t.Attempt}, nil); rerr != nil {
		s.log.Warn("could not report the failed session; the server's watchdog will", "err", rerr)
	}
	return we
}

func (s *session) classify(err error) *wire.Error {
	if we := edgeError(err); we.Code != wire.CodeInternal {
		return we
	}
	if dir := s.n.tempDirOf(err); dir != "" && (errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)) {
		// The node's own temporary files, not the pool: on another
		// filesystem, freeing the pool's would change nothing.
		return wire.Errorf(wire.CodeDiskFull,
			fmt.Sprintf("free space in %s (the storage node's data directory), then rerun the job; earlier backups are intact", dir),
			"storage node %s has no room for its temporary files (a backup's index, a consolidation's staging) in %s: %w", s.n.cfg.ID, dir, err)
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		where := "the pool's filesystem"
		var se *disk.SpaceError
		if errors.As(err, &se) {
			where = se.Dir
		}
		return wire.Errorf(wire.CodePoolFull,
			fmt.Sprintf("free space in %s (or move the pool to a larger filesystem), then rerun the job; earlier backups are intact", where),
			"disk pool %s on storage node %s is full: %w", s.t.Pool, s.n.cfg.ID, err)
	}
	var pe *fileindex.OrderError
	if errors.As(err, &pe) {
		return wire.Errorf(wire.CodeBadRequest, "upgrade the agent", "the agent sent entries out of order: %w", err)
	}
	return wire.Errorf(wire.CodeIO, "", "storage node %s: %w", s.n.cfg.ID, err)
}

// tempDir holds the node's own temporary files, unnamed where the kernel
// allows: a crash leaves nothing behind.
func (n *Node) tempDir() string { return filepath.Join(n.cfg.DataDir, "tmp") }

// tempDirOf is the node's tempDir when err is a failure of a file there (a
// session writer's index spill file, a consolidation's staging and
// assembly files: tmpfile names them DIR/(what)), else "".
func (n *Node) tempDirOf(err error) string {
	tmp := n.tempDir()
	var pe *os.PathError
	if n.cfg.DataDir != "" && errors.As(err, &pe) && strings.HasPrefix(pe.Path, tmp+string(filepath.Separator)) {
		return tmp
	}
	return ""
}

// chainParts is the ticket's chain as the part headers record it; a part
// whose ids do not parse is left out (it is a hint for a reader with no
// catalog, not something the session needs).
func chainParts(in []ticket.ChainPart) []volume.ChainPart {
	var out []volume.ChainPart
	for _, c := range in {
		s, err1 := uuid.Parse(c.Session)
		v, err2 := uuid.Parse(c.Volume)
		if err1 == nil && err2 == nil {
			out = append(out, volume.ChainPart{Session: s, Backup: c.Backup, Volume: v, Name: c.Name})
		}
	}
	return out
}
