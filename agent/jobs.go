package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/wire"
)

// onBackup accepts a backup order after checking what can be checked at
// once, so that a path that does not exist fails the command that asked.
func (a *Agent) onBackup(_ context.Context, _ string, o wire.RunBackup) (wire.Empty, error) {
	if err := checkOrder("backup", o.JobID, o.Node, o.Ticket); err != nil {
		return wire.Empty{}, err
	}
	if len(o.Paths) == 0 {
		return wire.Empty{}, wire.Errorf(wire.CodeBadRequest, "", "backup order of job %d names no path", o.JobID)
	}
	if err := a.endEarlierAttempt(o.JobID, o.Attempt); err != nil {
		return wire.Empty{}, err
	}
	if !a.claim(o.JobID, o.Attempt) {
		return wire.Empty{}, nil // never run a job twice
	}
	if err := a.checkPaths(o.Paths); err != nil {
		a.unclaim(o.JobID)
		return wire.Empty{}, err
	}
	a.track(o.JobID, func(ctx context.Context) { a.runBackup(ctx, o) })
	return wire.Empty{}, nil
}

// onCheckBackup answers whether a backup of the paths would be taken,
// which the servers ask before they make the job.
func (a *Agent) onCheckBackup(_ context.Context, _ string, c wire.CheckBackup) (wire.Empty, error) {
	if len(c.Paths) == 0 {
		return wire.Empty{}, wire.Errorf(wire.CodeBadRequest, "", "backup check names no path")
	}
	return wire.Empty{}, a.checkPaths(c.Paths)
}

// checkPaths refuses a backup of a path that does not exist.
func (a *Agent) checkPaths(paths []fileindex.Path) error {
	for _, p := range paths {
		if _, err := os.Lstat(string(p)); err != nil {
			return wire.Errorf(wire.CodeInvalidArgument, "check the path on the client; give absolute paths",
				"path %s does not exist on client %s", fileindex.Escape(string(p)), a.cfg.Name)
		}
	}
	return nil
}

// onCheckRestore answers whether a restore into the target would be
// taken, which the servers ask before they make the job. It only looks.
func (a *Agent) onCheckRestore(_ context.Context, _ string, c wire.CheckRestore) (wire.Empty, error) {
	if _, err := NewRestorer(RestoreOptions{Root: c.To, Force: c.Force, Logger: a.log}); err != nil {
		return wire.Empty{}, a.targetError(err)
	}
	return wire.Empty{}, nil
}

// targetError is the answer to an order to restore into a target that
// NewRestorer refused.
func (a *Agent) targetError(err error) error {
	var ne *TargetNotEmptyError
	if errors.As(err, &ne) {
		return wire.Errorf(wire.CodeTargetNotEmpty, "", "%w", err)
	}
	return wire.Errorf(wire.CodeInvalidArgument, "", "restore target on client %s: %w", a.cfg.Name, err)
}

// onRestore accepts a restore order once the target is fit to restore into.
func (a *Agent) onRestore(_ context.Context, _ string, o wire.RunRestore) (wire.Empty, error) {
	if err := checkOrder("restore", o.JobID, o.Node, o.Ticket); err != nil {
		return wire.Empty{}, err
	}
	if err := a.endEarlierAttempt(o.JobID, o.Attempt); err != nil {
		return wire.Empty{}, err
	}
	if !a.claim(o.JobID, o.Attempt) {
		return wire.Empty{}, nil // never run a job twice
	}
	run := a.newRestoreRun(o)
	r, err := NewRestorer(RestoreOptions{Root: o.To, Force: o.Force, Devices: o.Devices, Logger: a.log, Admit: run.admit, OnEntry: run.arrived})
	if err != nil {
		a.unclaim(o.JobID)
		return wire.Empty{}, a.targetError(err)
	}
	a.track(o.JobID, func(ctx context.Context) { run.ctx = ctx; a.runRestore(ctx, run, r) })
	return wire.Empty{}, nil
}

// checkOrder refuses an order that lacks what every job needs, before
// anything runs: an empty or truncated message must not start a job.
func checkOrder(kind string, jobID uint64, node wire.DataEndpoint, tk string) error {
	if jobID == 0 || node.Addr == "" || tk == "" {
		return wire.Errorf(wire.CodeBadRequest, "", "incomplete %s order: it needs a job id, a storage node and a ticket", kind)
	}
	return nil
}

// dial opens the data connection and presents the ticket. The connection
// closes when ctx ends (the job was stopped), so no read or write on it
// outlives the job. A node whose data-port protocol is older than need is
// refused with the versions: a backup needs 1, a restore, whose plan the
// node fetches itself, dataplane.Version.
func (a *Agent) dial(ctx context.Context, ep wire.DataEndpoint, tk string, need int) (*dataplane.Conn, error) {
	conn, err := dataplane.Dial(ctx, ep.Addr, ep.CertSHA256)
	if err != nil {
		return nil, wire.Errorf(wire.CodeNodeLost, "check that the storage node runs and that this client can reach its data port",
			"client %s cannot reach storage node %s: %w", a.cfg.Name, ep.Node, err)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	conn.SetTimeout(a.cfg.DataTimeout)
	if err := conn.WriteJSON(dataplane.FrameHello, dataplane.Hello{V: dataplane.Version, Ticket: tk, Client: a.cfg.Name, Version: Version,
		PackedReadStart: dataplane.PackedReadStartVersion, StoredBlocks: dataplane.StoredBlockVersion}); err != nil {
		stop()
		conn.Close()
		return nil, wire.Errorf(wire.CodeNodeLost, "check the storage node's log", "data connection to storage node %s: %w", ep.Node, err)
	}
	// The node answers once it holds a volume and the key: that can take
	// a while (a tape to wait for), with keepalives meanwhile.
	var acc dataplane.Accept
	if err := conn.ReadJSON(dataplane.FrameAccept, &acc); err != nil {
		stop()
		conn.Close()
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, wire.Errorf(wire.CodeTimeout, "check the storage node's log", "storage node %s did not accept the job: %w", ep.Node, err)
		}
		var we *wire.Error
		if errors.As(err, &we) {
			return nil, err // the node's own refusal
		}
		// The node died or dropped the connection before it accepted: a
		// node lost, for the job to go on another node, not the client's
		// failure.
		return nil, wire.Errorf(wire.CodeNodeLost, "check the storage node's log",
			"storage node %s closed the connection before it accepted the job: %w", ep.Node, err)
	}
	if v := max(acc.V, 1); v < need {
		// A node of version 1 says no version and waits for Read frames
		// this agent no longer sends.
		stop()
		conn.Close()
		return nil, wire.Errorf(wire.CodeUnsupportedVersion, "run the same Cairn release on agents and storage nodes",
			"storage node %s: %w", ep.Node, &dataplane.VersionError{Peer: v, Ours: dataplane.Version, PeerIs: "storage node"})
	}
	return conn, nil
}

// peerError reads the error a storage node sent before it closed the
// connection, if any; a write that failed usually has one waiting.
func peerError(conn *dataplane.Conn, fallback error) error {
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	typ, p, err := conn.ReadFrame()
	if err == nil && typ == dataplane.FrameError {
		return dataplane.DecodeJSON(typ, p, dataplane.FrameResult, nil)
	}
	return fallback
}

func (a *Agent) runBackup(ctx context.Context, o wire.RunBackup) {
	log := a.log.With("job", o.JobID, "attempt", o.Attempt)
	log.Info("backup started", "node", o.Node.Node)
	t0 := time.Now()
	done := wire.JobDoneReq{JobID: o.JobID, Attempt: o.Attempt}
	fail := func(err error) {
		we := wire.AsError(err)
		if we.Code == wire.CodeInternal {
			we = wire.Errorf(wire.CodeIO, "", "client %s: %w", a.cfg.Name, err)
		}
		if hb := a.handedBack(ctx, "backup", err, 0, ""); hb != nil {
			we = hb
		}
		log.Warn("backup failed", "err", we.Message)
		done.Error = we
		a.metrics.jobs.WithLabelValues("backup", "failed").Inc()
		a.report(done)
	}
	app := a.newAppRun(o)
	defer app.close()
	// Nothing runs unless everything may: a refused after-step found
	// once the before-steps quiesced a database would leave it so.
	if err := app.check(); err != nil {
		fail(err)
		return
	}
	conn, err := a.dial(ctx, o.Node, o.Ticket, 1)
	if err != nil {
		fail(err)
		return
	}
	defer conn.Close()
	// The node's keepalives are read while the agent only writes: a node
	// waiting for the next tape takes no data, and they hold the writes.
	conn.ReadAhead(1)
	if len(o.Before) > 0 || len(o.Sources) > 0 {
		stop := keepalive(conn, a.keepaliveEvery)
		err = app.runSteps(ctx, "before", o.Before, app.env("before"), false)
		if err == nil {
			err = app.runSources(ctx)
		}
		stop()
	}
	var st SourceStats
	if err == nil {
		st, err = a.stream(ctx, o, conn, app.spooled)
	}
	app.close()
	if len(o.After) > 0 {
		// They run even when the job was stopped: what the before-steps
		// did (a quiesce, a snapshot) must be undone.
		env := append(app.env("after"), "CAIRN_JOB_STATUS=success")
		if err != nil {
			env = append(app.env("after"), "CAIRN_JOB_STATUS=failed", "CAIRN_JOB_ERROR="+wire.AsError(err).Message)
		}
		stop := keepalive(conn, a.keepaliveEvery)
		aerr := app.runSteps(context.WithoutCancel(ctx), "after", o.After, env, true)
		stop()
		if err == nil {
			err = aerr
		} else if len(app.warnings) > 0 || aerr != nil {
			log.Warn("after-steps of a failed backup", "failed", aerr, "warnings", app.warnings)
		}
	}
	if err != nil {
		// The report carries the steps' warnings too, though the servers
		// log only the error of a failed backup today.
		done.Warnings = app.warnings
		fail(err)
		return
	}
	end := dataplane.End{Entries: st.Entries, Files: st.Files, Bytes: st.Bytes, Notes: append(st.Notes(), app.notes...)}
	end.Warnings = append(end.Warnings, app.warnings...)
	for _, w := range st.Warnings {
		end.Warnings = append(end.Warnings, w.String())
	}
	if st.WarningCount > int64(len(st.Warnings)) {
		end.Warnings = append(end.Warnings, fmt.Sprintf("... and %d more warnings", st.WarningCount-int64(len(st.Warnings))))
	}
	if err := conn.WriteJSON(dataplane.FrameEnd, end); err != nil {
		fail(peerError(conn, wire.Errorf(wire.CodeNodeLost, "check the storage node's log; rerun the job",
			"the connection to storage node %s broke at the end of the backup: %w", o.Node.Node, err)))
		return
	}
	var res dataplane.Result
	if err := conn.ReadJSON(dataplane.FrameResult, &res); err != nil {
		var we *wire.Error
		if !errors.As(err, &we) {
			err = wire.Errorf(wire.CodeNodeLost, "check the storage node's log; rerun the job",
				"storage node %s closed the connection before confirming the backup: %w", o.Node.Node, err)
		}
		fail(err)
		return
	}
	log.Info("backup done", "files", st.Files, "bytes", st.Bytes, "took", time.Since(t0))
	a.metrics.jobs.WithLabelValues("backup", "success").Inc()
	a.metrics.bytes.WithLabelValues("backup").Add(float64(st.Bytes))
	a.metrics.files.WithLabelValues("backup").Add(float64(st.Files))
	done.Files, done.Bytes, done.Warnings = st.Files, st.Bytes, end.Warnings
	a.report(done)
}

// stream walks the backup's paths and sends them, with the spooled
// command sources, to the storage node.
func (a *Agent) stream(ctx context.Context, o wire.RunBackup, conn *dataplane.Conn, spooled []SpooledFile) (SourceStats, error) {
	var base fileindex.Iterator
	if o.Base != 0 {
		base = a.baseTree(ctx, o.JobID)
	}
	pace := newPacer(a.cfg.MaxBytesPerSecond)
	walkOpts := WalkOptions{Paths: fileindex.Strings(o.Paths), Excludes: fileindex.Strings(o.Excludes), SkipNodump: o.SkipNodump, OneFileSystem: o.OneFileSystem}
	src, err := NewSource(SourceOptions{
		Walk: walkOpts,
		Base: base,
		Emit: func(batch []byte) error {
			if err := pace.wait(ctx, len(batch)); err != nil {
				return err
			}
			if err := conn.WriteFrame(dataplane.FrameRecords, batch); err != nil {
				return fmt.Errorf("%w: %w", errEmit, err)
			}
			return nil
		},
		Logger:  a.log,
		Spooled: spooled,
	})
	if err != nil {
		return SourceStats{}, err
	}
	total := totals{files: o.EstimateFiles, bytes: o.EstimateBytes}
	if o.Level == "full" {
		// The count (an estimate) and the scout run beside the backup and
		// stop with it, and the job waits for them, so no walk outlives
		// the agent's Close. The scout is advisory: an error only ends
		// its fetching.
		wctx, stopWalks := context.WithCancel(ctx)
		var walks sync.WaitGroup
		walks.Go(func() { total.count(wctx, walkOpts) })
		if budget := scoutBudget(memAvailable()); budget > 0 {
			sc := newScout(budget, src.bytesRead)
			walks.Go(func() { sc.run(wctx, walkOpts) })
		}
		defer func() {
			stopWalks()
			walks.Wait()
		}()
	}
	stopProgress := a.progressWhile(func() wire.Progress {
		st := src.Stats()
		f, b := total.get()
		return wire.Progress{JobID: o.JobID, Phase: "streaming", Files: st.Files, Bytes: st.Bytes, TotalFiles: f, TotalBytes: b}
	})
	err = src.Run(ctx)
	stopProgress()
	st := src.Stats()
	if err != nil && ctx.Err() != nil {
		err = context.Cause(ctx) // the servers stopped the job
	}
	if err != nil && errors.Is(err, errEmit) {
		err = peerError(conn, wire.Errorf(wire.CodeNodeLost, "check the storage node's log; rerun the job",
			"the connection to storage node %s broke during the backup: %w", o.Node.Node, err))
	}
	return st, err
}

// errEmit marks a failed write to the data connection: the storage node
// most likely sent an error frame saying why before it closed.
var errEmit = errors.New("data connection write failed")

// totals is the expected size of a job, for the progress ETA.
type totals struct {
	mu           sync.Mutex
	files, bytes int64
}

func (t *totals) get() (int64, int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.files, t.bytes
}

// count walks the tree once more, metadata only, to size a full backup.
func (t *totals) count(ctx context.Context, opts WalkOptions) {
	var files, bytes int64
	err := walkSizes(ctx, opts, func(e *fileindex.Entry) error {
		if e.Type == fileindex.TypeFile {
			files++
			bytes += e.Size
		}
		return nil
	})
	if err == nil {
		t.mu.Lock()
		t.files, t.bytes = files, bytes
		t.mu.Unlock()
	}
}

// baseTree pages the tree an incremental compares against from the servers.
func (a *Agent) baseTree(ctx context.Context, job uint64) fileindex.Iterator {
	var after string
	done := false
	var it *lastPathIterator
	it = &lastPathIterator{it: fileindex.SegmentIterator(func() ([]byte, bool, error) {
		for !done {
			var resp wire.BaseTreeResp
			if err := a.request(ctx, wire.OpBaseTree, wire.BaseTreeReq{JobID: job, After: fileindex.Path(after)}, &resp); err != nil {
				return nil, false, fmt.Errorf("get the base tree from the servers: %w", err)
			}
			done = resp.Done
			if len(resp.Segment) > 0 {
				return resp.Segment, true, nil
			}
		}
		return nil, false, nil
	})}
	it.onNext = func(p string) { after = p }
	return it
}

// lastPathIterator tells its owner the path of each entry it yields, so the
// next page is asked for after it.
type lastPathIterator struct {
	it     fileindex.Iterator
	onNext func(string)
}

func (l *lastPathIterator) Next() (fileindex.Entry, bool) {
	e, ok := l.it.Next()
	if ok {
		l.onNext(e.Path)
	}
	return e, ok
}

func (l *lastPathIterator) Err() error { return l.it.Err() }

// restoreRun is a restore's own state besides the Restorer: whether it
// may still write, and the accounting of what it asked the node for.
type restoreRun struct {
	a   *Agent
	o   wire.RunRestore
	ctx context.Context // the job's; set when it starts

	// recheck: a restore held up longer than this asks the servers
	// whether the job still runs before it writes on.
	recheck time.Duration
	last    time.Time // when a record was last admitted

	// want are the paths the read under way named, true until each is
	// accounted for (its records came, or it was named lost); pending
	// counts the trues.
	want    map[string]bool
	pending int
	// unexpected is the first entry that came and was not named by its
	// read: the stream is not what was asked for, and nothing more is
	// written (admit).
	unexpected atomic.Pointer[string]
	asked      int64
	// blocks are the reads of asked that bring a block of a large file,
	// not an entry: what the job reports as entries leaves them out.
	blocks int64
}

func (a *Agent) newRestoreRun(o wire.RunRestore) *restoreRun {
	rc := o.Recheck
	if rc <= 0 {
		rc = defaultRecheck
	}
	return &restoreRun{a: a, o: o, recheck: rc}
}

// defaultRecheck is the recheck of an order that names none.
const defaultRecheck = 10 * time.Second

// admit lets the Restorer apply a record while the job runs. Once the
// servers stopped the job, nothing more is written. A restore that was
// held up (the agent's process stopped, the target's disk hung, the node
// went quiet) for longer than recheck asks the servers first: they may
// have failed the job meanwhile (an agent silent for their liveness
// timeout is taken for dead) and sent a cancel order that is not in yet.
func (run *restoreRun) admit() error {
	if err := run.ctx.Err(); err != nil {
		return context.Cause(run.ctx)
	}
	if err := run.unexpectedErr(); err != nil {
		return err
	}
	now := time.Now()
	if !run.last.IsZero() && now.Sub(run.last) > run.recheck {
		if err := run.a.request(run.ctx, wire.OpJobAlive, wire.JobAliveReq{JobID: run.o.JobID, Attempt: run.o.Attempt}, nil); err != nil {
			run.a.log.Warn("the restore was held up and the servers do not confirm the job; writing nothing more",
				"job", run.o.JobID, "held", now.Sub(run.last).Round(time.Millisecond), "err", err)
			return fmt.Errorf("the restore was held up for %s and the servers no longer run the job: %w", now.Sub(run.last).Round(time.Second), err)
		}
		now = time.Now()
	}
	run.last = now
	return nil
}

// arrived notes an entry whose records came (or a block of a file's).
func (run *restoreRun) arrived(path string) {
	pending, named := run.want[path]
	switch {
	case !named:
		run.unexpected.CompareAndSwap(nil, &path)
	case pending:
		run.want[path] = false
		run.pending--
	}
}

// accounted notes an entry named lost.
func (run *restoreRun) accounted(path string) {
	if run.want[path] {
		run.want[path] = false
		run.pending--
	}
}

// unexpectedErr is why the restore stops when an entry its read did not
// name came: a storage node that sends what was not asked for could
// write outside the paths chosen.
func (run *restoreRun) unexpectedErr() error {
	if p := run.unexpected.Load(); p != nil {
		return wire.Errorf(wire.CodeIO, "check the storage node's version and log; rerun the restore",
			"restore stream: the storage node sent %q, which its read did not name; nothing more is written", *p)
	}
	return nil
}

func (a *Agent) runRestore(ctx context.Context, run *restoreRun, r *Restorer) {
	o := run.o
	log := a.log.With("job", o.JobID, "attempt", o.Attempt)
	log.Info("restore started", "node", o.Node.Node)
	done := wire.JobDoneReq{JobID: o.JobID, Attempt: o.Attempt}
	finish := func(err error) {
		st, ferr := r.Finish()
		if err == nil {
			err = ferr
		}
		done.Files, done.Bytes = st.Files, st.Bytes
		done.Entries, done.Restored, done.Lost = run.asked-run.blocks, st.Files+st.Dirs+st.Links+st.Specials, st.DamagedCount
		for _, w := range st.Warnings {
			done.Warnings = append(done.Warnings, w.String())
		}
		done.Damaged = lostList(st.Damaged)
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		done.Refused = st.Refused // entries left out; the server fails the job on them
		outcome := "success"
		if err != nil {
			we := wire.AsError(err)
			if we.Code == wire.CodeInternal {
				we = wire.Errorf(wire.CodeIO, "", "client %s: %w", a.cfg.Name, err)
			}
			if hb := a.handedBack(ctx, "restore", err, st.Files, o.To); hb != nil {
				we = hb
			}
			done.Error = we
			outcome = "failed"
			log.Warn("restore failed", "err", we.Message, "restored", done.Restored, "lost", done.Lost)
		} else if done.Lost > 0 {
			outcome = "damaged"
			log.Warn("restore ended with entries lost", "asked", done.Entries, "restored", done.Restored, "lost", done.Lost)
		} else if done.Refused > 0 {
			outcome = "refused"
		}
		a.metrics.jobs.WithLabelValues("restore", outcome).Inc()
		a.metrics.bytes.WithLabelValues("restore").Add(float64(st.Bytes))
		a.metrics.files.WithLabelValues("restore").Add(float64(st.Files))
		a.report(done)
	}
	conn, err := a.dial(ctx, o.Node, o.Ticket, dataplane.Version)
	if err != nil {
		finish(err)
		return
	}
	defer conn.Close()
	// The next frames are decrypted while this one is written to disk.
	conn.ReadAhead(2)
	defer a.progressWhile(func() wire.Progress {
		st := r.Stats()
		return wire.Progress{JobID: o.JobID, Phase: "restoring", Files: st.Files, Bytes: st.Bytes, TotalFiles: o.Files, TotalBytes: o.Bytes}
	})()
	// The node takes the plan from the servers and streams it: nothing
	// goes back to it.
	st := &restoreFrames{log: log, r: r, run: run}
	stop := make(chan struct{})
	defer close(stop)
	for f := range readFrames(conn, stop) {
		if f.err != nil {
			err := f.err
			if ctx.Err() != nil {
				err = context.Cause(ctx)
			} else if !errors.As(err, new(*wire.Error)) {
				err = wire.Errorf(wire.CodeNodeLost, "check the storage node's log; rerun the restore",
					"the connection to the storage node broke during the restore: %w", err)
			}
			finish(err)
			return
		}
		done, err := st.frameLent(f.t, f.p, f.giveBack)
		if err != nil {
			finish(err)
			return
		}
		if done {
			break
		}
	}
	finish(nil)
}

// lentFrame is a frame of a restore stream that its receiver keeps: given
// back with giveBack when set, the collector's otherwise.
type lentFrame struct {
	t        byte
	p        []byte
	giveBack func([]byte)
	err      error // the last: why the stream ended
}

// readFrames reads conn's frames on a goroutine of its own and hands them
// on in order: Records frames taken from the connection (no copy),
// StoredBlock frames decompressed into Records, the rest copied. So a
// block's decompression, like the wait for the network and TLS (the
// connection's read-ahead), overlaps with the records before it being
// applied. It ends at a read error, sent last, or when stop closes.
func readFrames(conn *dataplane.Conn, stop <-chan struct{}) <-chan lentFrame {
	out := make(chan lentFrame, 2)
	go func() {
		defer close(out)
		for {
			var f lentFrame
			t, p, err := conn.ReadFrame()
			switch {
			case err != nil:
				f.err = err
			case t == dataplane.FrameRecords:
				f = lentFrame{t: t, p: conn.TakeFrame(), giveBack: conn.GiveFrame}
			case t == dataplane.FrameStoredBlock:
				recs, err := storedRecords(p)
				f = lentFrame{t: dataplane.FrameRecords, p: recs, giveBack: putStoredBuf, err: err}
			default:
				f = lentFrame{t: t, p: slices.Clone(p)}
			}
			select {
			case out <- f:
			case <-stop:
				if f.giveBack != nil {
					f.giveBack(f.p)
				}
				return
			}
			if f.err != nil {
				return
			}
		}
	}()
	return out
}

// storedRecords decompresses a StoredBlock frame into a buffer of
// storedBufs.
func storedRecords(p []byte) ([]byte, error) {
	codec, rawLen, data, err := dataplane.ParseStoredBlock(p)
	if err != nil {
		return nil, wire.Errorf(wire.CodeIO, "check the storage node's version and log", "restore stream: %w", err)
	}
	buf := getStoredBuf(rawLen)
	recs, err := volume.Decompress(buf, volume.Flags(codec), rawLen, data)
	if err != nil {
		putStoredBuf(buf)
		return nil, wire.Errorf(wire.CodeIO, "check the storage node's version and log", "restore stream: %w", err)
	}
	return recs, nil
}

// storedBufs hold the records of StoredBlock frames, decompressed, until
// the file workers are done with them: a few, kept across collections
// (a sync.Pool drops them at each, and a restore is a stream of them).
var storedBufs = make(chan []byte, heldFrames+4)

func getStoredBuf(n int) []byte {
	n = min(n, volume.MaxBlockRawSize) // a longer block is refused before it is decoded
	select {
	case b := <-storedBufs:
		if cap(b) >= n {
			return b[:0]
		}
	default:
	}
	return make([]byte, 0, max(n, volume.DefaultBlockRawSize))
}

func putStoredBuf(b []byte) {
	select {
	case storedBufs <- b:
	default:
	}
}

// Bounds of the list of lost entries a job report carries: the job log
// keeps MaxJobLogLines lines, and a report is one NATS message.
const (
	maxLostListed     = 900
	maxLostListedSize = 512 << 10
)

func lostList(ds []Damage) []string {
	var out []string
	size := 0
	for _, d := range ds {
		line := Warning{Path: d.Path, Err: d.Reason}.String()
		if len(out) == maxLostListed || size+len(line) > maxLostListedSize {
			break
		}
		out = append(out, line)
		size += len(line)
	}
	return out
}

// restoreFrames takes in what a storage node streams for a restore: for
// each read of the plan a ReadStart naming its entries, Records and
// Damaged frames and a ReadDone; then End. Every entry a ReadStart names
// is restored or named lost: the node names what it could not read, and
// the agent what the node left out without a word. Its frames come from
// the network and are checked as such (FuzzRestoreFrames).
type restoreFrames struct {
	log *slog.Logger
	r   *Restorer
	run *restoreRun
	cur *dataplane.ReadStart // the read under way; nil between reads
	// reads counts the reads that came, to check against End.
	reads int
}

// frame takes one frame of the stream; done once the node ended it. The
// payload is the caller's again when it returns.
func (s *restoreFrames) frame(typ byte, p []byte) (done bool, err error) {
	return s.frameLent(typ, p, nil)
}

// frameLent is frame with a payload the restorer may keep until it calls
// giveBack(p), when giveBack is set.
func (s *restoreFrames) frameLent(typ byte, p []byte, giveBack func([]byte)) (done bool, err error) {
	run, r := s.run, s.r
	if s.cur == nil && (typ == dataplane.FrameRecords || typ == dataplane.FrameStoredBlock || typ == dataplane.FrameDamaged || typ == dataplane.FrameReadDone) {
		return false, wire.Errorf(wire.CodeIO, "check the storage node's version and log", "restore stream: frame %d outside a read", typ)
	}
	switch typ {
	case dataplane.FrameReadStart, dataplane.FrameReadStartPacked:
		if s.cur != nil {
			return false, wire.Errorf(wire.CodeIO, "check the storage node's version and log", "restore stream: a read starts inside the read of session %s", s.cur.SessionID)
		}
		var rs dataplane.ReadStart
		if typ == dataplane.FrameReadStartPacked {
			var err error
			if rs, err = dataplane.UnpackReadStart(p); err != nil {
				return false, wire.Errorf(wire.CodeIO, "check the storage node's version and log", "restore stream: %w", err)
			}
		} else if err := dataplane.DecodeJSON(typ, p, dataplane.FrameReadStart, &rs); err != nil {
			return false, err
		}
		s.cur = &rs
		run.want, run.pending = make(map[string]bool, len(rs.Entries)), 0
		for _, e := range rs.Entries {
			if !run.want[string(e.Path)] {
				run.want[string(e.Path)] = true
				run.pending++
			}
			if e.Ancestor {
				r.Ancestor(string(e.Path))
			}
			if e.Block {
				run.blocks++
			}
		}
		run.asked += int64(len(rs.Entries))
		return false, nil
	case dataplane.FrameRecords, dataplane.FrameStoredBlock:
		var err error
		switch {
		case typ == dataplane.FrameStoredBlock:
			var recs []byte
			if recs, err = storedRecords(p); err == nil {
				err = r.RecordsLent(recs, putStoredBuf)
			}
		case giveBack != nil:
			err = r.RecordsLent(p, giveBack)
		default:
			err = r.Records(p)
		}
		if err == nil {
			err = run.unexpectedErr()
		}
		return false, err
	case dataplane.FrameDamaged:
		var d dataplane.Damaged
		if err := dataplane.DecodeJSON(typ, p, dataplane.FrameDamaged, &d); err != nil {
			return false, err
		}
		for _, path := range d.Paths {
			run.accounted(string(path))
			r.Damaged(string(path), d.Reason)
		}
		return false, nil
	case dataplane.FrameReadDone:
		var rd dataplane.ReadDone
		if err := dataplane.DecodeJSON(typ, p, dataplane.FrameReadDone, &rd); err != nil {
			return false, err
		}
		if run.pending > 0 {
			reason := fmt.Sprintf("the storage node sent neither its records nor a reason (of %d entries asked it read %d and named %d lost)",
				len(s.cur.Entries), rd.Entries, rd.Lost)
			s.log.Error("the storage node left entries of a read unaccounted for", "session", s.cur.SessionID, "entries", run.pending, "reason", reason)
			for _, e := range s.cur.Entries {
				if run.want[string(e.Path)] {
					r.Damaged(string(e.Path), reason)
				}
			}
		}
		run.want, run.pending, s.cur = nil, 0, nil
		s.reads++
		return false, nil
	case dataplane.FrameEnd:
		var end dataplane.RestoreEnd
		if err := dataplane.DecodeJSON(typ, p, dataplane.FrameEnd, &end); err != nil {
			return false, err
		}
		if s.cur != nil {
			return false, wire.Errorf(wire.CodeIO, "check the storage node's log", "restore stream: it ends inside the read of session %s", s.cur.SessionID)
		}
		if end.Reads != s.reads || end.Entries != run.asked {
			// The node's count of its plan and what it streamed differ:
			// entries may be missing that nothing named.
			return false, wire.Errorf(wire.CodeIO, "check the storage node's log; rerun the restore",
				"restore stream: the storage node counts %d reads with %d entries in the plan, and %d reads with %d entries came", end.Reads, end.Entries, s.reads, run.asked)
		}
		return true, nil
	}
	return false, dataplane.DecodeJSON(typ, p, dataplane.FrameEnd, &dataplane.RestoreEnd{})
}

type metrics struct {
	jobs  *prometheus.CounterVec
	bytes *prometheus.CounterVec
	files *prometheus.CounterVec
	nats  wire.ConnCollector
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_agent_jobs_total", Help: "Jobs this agent ran, by type and outcome.",
		}, []string{"type", "outcome"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_agent_bytes_total", Help: "Content bytes this agent read for backups or wrote for restores.",
		}, []string{"type"}),
		files: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_agent_files_total", Help: "Files this agent backed up or restored.",
		}, []string{"type"}),
	}
	if reg != nil {
		reg.MustRegister(m.jobs, m.bytes, m.files, &m.nats)
	}
	return m
}
