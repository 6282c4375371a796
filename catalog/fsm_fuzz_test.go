package catalog

import (
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"

	"github.com/cairnbackup/cairn/fileindex"
)

// fuzzCommands are commands about what fuzzCatalog holds, so that their
// mutations reach deep into Apply instead of stopping at "not found".
func fuzzCommands(c *testCatalog, job uint64, vol uuid.UUID) []*Command {
	at := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	b := fileindex.NewSegmentBuilder(0)
	for _, e := range []fileindex.Entry{dir("/srv"), file("/srv/a", 1), file("/srv/b", 2)} {
		if err := b.Add(&e); err != nil {
			c.t.Fatal(err)
		}
	}
	seg := b.Flush()
	bs := int64(1 << 20)
	return append(sampleCommands(),
		&Command{Op: OpAddIndexSegment, Time: at, Segment: &IndexSegment{BackupID: job, No: 0, First: fileindex.Path(seg.First), Last: fileindex.Path(seg.Last), Count: seg.Count, Data: seg.Data}},
		&Command{Op: OpUpdateVolume, Time: at, VolumeUpdate: &VolumeUpdate{ID: vol, Bytes: &bs}},
		&Command{Op: OpCommitBackup, Time: at, Commit: &BackupCommit{BackupID: job, SessionID: vol, Segments: 1, Entries: 3, Files: 2,
			Parts: []Part{{VolumeID: vol, Part: 1, VolumeStart: 4096, DataStart: 8192, End: 1 << 20, Final: true}}}},
		&Command{Op: OpUpdateJob, Time: at, JobUpdate: &JobUpdate{ID: job, State: JobRunning, Started: at}},
		&Command{Op: OpAbortBackup, Time: at, Abort: &BackupAbort{BackupID: job, Code: "io_error", Msg: "x"}},
		&Command{Op: OpRequeueJob, Time: at, Requeue: &JobRequeue{JobID: job, Reason: "node down"}},
		&Command{Op: OpCancelJob, Time: at, Cancel: &JobCancel{JobID: job, By: "alice", Reason: "wrong paths"}},
		&Command{Op: OpLabelTape, Time: at, TapeLabel: &TapeLabel{}},
		&Command{Op: OpMoveTape, Time: at, TapeMove: &TapeMove{}},
		&Command{Op: OpAssignTape, Time: at, TapeAssign: &TapeAssign{}},
		&Command{Op: OpCreateJob, Time: at, Request: &RequestKey{ID: "req-1", Digest: "d"},
			Job: &Job{Type: JobBackup, Client: "web1", Level: LevelFull, State: JobPending, Pool: "disk1", Paths: []fileindex.Path{"/srv"}}},
		&Command{Op: OpAcceptJob, Time: at, Accept: &JobAccept{JobID: job}},
		&Command{Op: OpVoidJobs, Time: at, Void: &JobsVoid{JobIDs: []uint64{job, job + 1}, CreatedBefore: at, Reason: "not confirmed"}},
		&Command{Op: OpForgetRequests, Time: at, Forget: &RequestsForget{Before: at}},
		&Command{Op: OpRecordRuns, Time: at, Runs: &RunsRecord{Runs: []Run{{Policy: "nightly", Client: "web1", Scheduled: at, Level: LevelFull, State: RunStarting}}}},
		&Command{Op: OpUpdateRun, Time: at, RunUpdate: &RunUpdate{Key: RunKey{Policy: "nightly", Client: "web1", Scheduled: at}, State: RunDispatched, JobID: job}},
		&Command{Op: OpRaiseAlert, Time: at, Alert: &AlertRaise{Condition: "rpo\x00web1\x00nightly", Kind: AlertRPOBreach, Event: []byte(`{"kind":"rpo_breach"}`)}},
		&Command{Op: OpAlertSent, Time: at, AlertSent: &AlertSent{Condition: "rpo\x00web1\x00nightly", Seq: 1}},
		&Command{Op: OpPruneJobs, Time: at, PruneJobs: &JobsPrune{IDs: []uint64{job, job + 1}, EndedBefore: at}},
		&Command{Op: OpSetPoolCompression, Time: at, PoolCompression: &PoolCompression{Pool: "disk1", Codec: "none"}},
		&Command{Op: OpRenewTape, Time: at, TapeRecycle: &TapeRecycle{VolumeID: vol, WriterJob: job, NewID: uuid.MustParse("0b8f6a1e-5c3d-4f2a-9e7b-1d2c3b4a5f60")}},
	)
}

// FuzzFSMApply hands the catalog's FSM arbitrary Raft command bytes, against
// a real bbolt catalog that holds a client, a node, a pool and a running
// backup. It never panics; bytes that are not a command stop the FSM with
// ErrBadCommand (the group must not diverge on them); a command is applied
// or refused, and either way the applied index moves and the catalog still
// reads.
func FuzzFSMApply(f *testing.F) {
	c := newTestCatalog(f)
	c.noSync()
	c.setup()
	job := c.startBackup(LevelFull)
	vol := c.volumeFor(job)
	for _, cmd := range fuzzCommands(c, job, vol) {
		b, err := EncodeCommand(cmd)
		if err != nil {
			f.Fatalf("%s: %v", cmd.Op, err)
		}
		f.Add(b)
	}
	f.Add([]byte{CommandVersion, 2, '{', '}'})
	f.Add([]byte{})
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		fsm := NewFSM(c.s, logger) // a new one: a bad command stops an FSM for good
		c.index++
		before, err := c.s.AppliedIndex()
		if err != nil {
			t.Fatal(err)
		}
		out := fsm.Apply(&raft.Log{Index: c.index, Type: raft.LogCommand, Data: data})
		res, ok := out.(ApplyResult)
		if !ok {
			t.Fatalf("Apply returned %T", out)
		}
		after, err := c.s.AppliedIndex()
		if err != nil {
			t.Fatalf("the catalog does not read after applying %q: %v", data, err)
		}
		if _, derr := DecodeCommand(data); derr != nil {
			if !errors.Is(res.Err, ErrBadCommand) || !errors.Is(res.Err, ErrFSMStopped) || fsm.Failed() == nil {
				t.Fatalf("bad command %q: %v", data, res.Err)
			}
			if after != before {
				t.Fatalf("a bad command moved the applied index from %d to %d", before, after)
			}
			return
		}
		var refusal *Error
		if res.Err != nil && !errors.As(res.Err, &refusal) {
			t.Fatalf("command %q failed the catalog: %v", data, res.Err)
		}
		if after != c.index {
			t.Fatalf("applied index %d after applying %d", after, c.index)
		}
		if _, err := c.s.Jobs(JobFilter{}); err != nil {
			t.Fatalf("jobs do not read after %q: %v", data, err)
		}
	})
}
