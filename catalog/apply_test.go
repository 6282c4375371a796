package catalog

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/fileindex"
)

func TestClientsNodesPoolsKeys(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()

	cl, err := c.s.Client("web1")
	if err != nil {
		t.Fatal(err)
	}
	if cl.Hostname != "web1.example" || cl.Registered.IsZero() || !cl.Registered.Equal(cl.LastSeen) {
		t.Fatalf("client %+v", cl)
	}
	first := cl.Registered
	c.must(&Command{Op: OpRegisterClient, Client: &Client{Name: "web1", Hostname: "web1.new", DefaultPool: "disk1"}})
	c.must(&Command{Op: OpRegisterClient, Client: &Client{Name: "web1", Hostname: "web1.new"}})
	cl, _ = c.s.Client("web1")
	if !cl.Registered.Equal(first) || !cl.LastSeen.After(first) || cl.Hostname != "web1.new" || cl.DefaultPool != "disk1" {
		t.Fatalf("re-registered client %+v", cl)
	}

	p, err := c.s.Pool("disk1")
	if err != nil {
		t.Fatal(err)
	}
	if p.Type != PoolTypeDisk || p.BlockSize != DefaultBlockSize || p.LabelPrefix != "disk1" || p.NextVolume != 1 || p.KeyID != "k1" || !slices.Equal(p.Nodes, []string{"sn1"}) {
		t.Fatalf("pool %+v", p)
	}
	// A node announcing a pool the catalog lacks creates it with defaults.
	c.must(&Command{Op: OpRegisterNode, Node: &StorageNode{ID: "sn2", DataAddr: "b:2", Pools: []NodePool{{Name: "disk2", Dir: "/x", MaxVolumeBytes: 1 << 20}}}})
	p2, err := c.s.Pool("disk2")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p2.Nodes, []string{"sn2"}) || p2.MaxVolumeBytes != 1<<20 || p2.BlockRawSize != DefaultBlockRawSize || !p2.Compression {
		t.Fatalf("announced pool %+v", p2)
	}
	// Another node joins it, with volumes of its own.
	c.must(&Command{Op: OpRegisterNode, Node: &StorageNode{ID: "sn1", DataAddr: "a:1", Pools: []NodePool{{Name: "disk1", Dir: "/srv/cairn"}, {Name: "disk2", Dir: "/y"}}}})
	if p2, _ = c.s.Pool("disk2"); !slices.Equal(p2.Nodes, []string{"sn2", "sn1"}) {
		t.Fatalf("pool after a second node joined: %+v", p2)
	}
	c.refused(CodeAlreadyExists, &Command{Op: OpCreatePool, Pool: &Pool{Name: "disk1"}})
	c.refused(CodeNotFound, &Command{Op: OpCreatePool, Pool: &Pool{Name: "disk9", KeyID: "nokey"}})
	c.refused(CodeInvalidArgument, &Command{Op: OpCreatePool, Pool: &Pool{Name: "tape", Type: "lto"}})
	c.refused(CodeInvalidArgument, &Command{Op: OpRegisterClient, Client: &Client{Name: "a\x00b"}})
	c.refused(CodeInvalidArgument, &Command{Op: OpRegisterClient, Client: &Client{}})

	nodes, err := c.s.Nodes()
	if err != nil || len(nodes) != 2 || nodes[0].ID != "sn1" || nodes[0].Pools[0].Dir != "/srv/cairn" {
		t.Fatalf("nodes %+v %v", nodes, err)
	}
	if pools, _ := c.s.Pools(); len(pools) != 2 {
		t.Fatalf("pools %+v", pools)
	}

	k, err := c.s.Key("k1")
	if err != nil || string(k.Wrapped) != "wrapped-key-material" || k.Pool != "disk1" {
		t.Fatalf("key %+v %v", k, err)
	}
	// The same key again is a retry; other material under the same id is not.
	c.must(&Command{Op: OpPutKey, Key: &Key{ID: "k1", Pool: "disk1", Wrapped: []byte("wrapped-key-material")}})
	c.refused(CodeAlreadyExists, &Command{Op: OpPutKey, Key: &Key{ID: "k1", Pool: "disk1", Wrapped: []byte("other")}})
	if keys, _ := c.s.Keys(); len(keys) != 1 {
		t.Fatalf("keys %+v", keys)
	}

	for _, err := range []error{
		second(c.s.Client("nobody")), second(c.s.Node("x")), second(c.s.Pool("x")), second(c.s.Key("x")),
		second(c.s.Volume(uuid.New())), second(c.s.VolumeByName("x")), second(c.s.Job(99)), second(c.s.Backup(99)),
	} {
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("missing thing: %v, want ErrNotFound", err)
		}
	}
}

func second[T any](_ T, err error) error { return err }

func TestRefusalChangesNothingButTheIndex(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	before := dump(t, c.s)
	// RegisterNode with a pool given twice: the new pool must not be
	// created either.
	c.refused(CodeInvalidArgument, &Command{Op: OpRegisterNode, Node: &StorageNode{ID: "sn9", Pools: []NodePool{{Name: "fresh"}, {Name: "fresh"}}}})
	c.refused(CodeUnknownClient, &Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: "ghost", Pool: "disk1", Paths: []fileindex.Path{"/"}}})
	c.refused(CodeNotFound, &Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: "web1", Pool: "nopool", Paths: []fileindex.Path{"/"}}})
	idx, _ := c.s.AppliedIndex()
	if idx != c.index {
		t.Fatalf("applied index %d after refusals, want %d", idx, c.index)
	}
	if after := dump(t, c.s); before != after {
		t.Fatalf("a refused command changed the catalog:\n%s\n---\n%s", before, after)
	}
	if _, err := c.s.Pool("fresh"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("pool of a refused registration exists: %v", err)
	}
	if _, err := c.s.Job(1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused job took id 1: %v", err)
	}
}

func TestAppliedIndexSkipsReplays(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	id := c.startBackup(LevelFull)
	at := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	logCmd := &Command{Op: OpAppendJobLog, Time: at, JobLog: &JobLog{JobID: id, Lines: []LogLine{{Level: "info", Msg: "once"}}}}
	next := c.index + 5
	if res := c.s.Apply(next, logCmd); res.Err != nil || res.Skipped {
		t.Fatalf("first apply: %+v", res)
	}
	if res := c.s.Apply(next, logCmd); res.Err != nil || !res.Skipped {
		t.Fatalf("second apply of the same index: %+v", res)
	}
	if res := c.s.Apply(next-1, logCmd); !res.Skipped {
		t.Fatalf("an older index: %+v", res)
	}
	j, _ := c.s.Job(id)
	n := 0
	for _, l := range j.Log {
		if l.Msg == "once" {
			n++
			if !l.Time.Equal(at) {
				t.Errorf("line time %v, want the command's %v", l.Time, at)
			}
		}
	}
	if n != 1 {
		t.Fatalf("log holds the line %d times, want 1", n)
	}
}

func TestJobLifecycleAndLog(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	res := c.must(&Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: "web1", Level: LevelFull, Pool: "disk1", Paths: []fileindex.Path{"/etc"}}})
	if res.JobID != 1 {
		t.Fatalf("first job id %d", res.JobID)
	}
	j, _ := c.s.Job(1)
	if j.State != JobQueued || j.BackupID != 1 || j.Node != "" || j.Created.IsZero() {
		t.Fatalf("job %+v", j)
	}
	c.refused(CodeWrongState, &Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: 1, State: JobSuccess}})
	c.must(&Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: 1, State: JobRunning, Files: 5}})
	c.refused(CodeWrongState, &Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: 1, State: JobQueued}})
	j, _ = c.s.Job(1)
	b, _ := c.s.Backup(1)
	if j.State != JobRunning || j.Started.IsZero() || j.Files != 5 || !b.StartTime.Equal(j.Started) {
		t.Fatalf("running job %+v, backup start %v", j, b.StartTime)
	}

	lines := make([]LogLine, MaxJobLogLines+5)
	for i := range lines {
		lines[i] = LogLine{Level: "info", Msg: fmt.Sprintf("line %d", i)}
	}
	c.must(&Command{Op: OpAppendJobLog, JobLog: &JobLog{JobID: 1, Lines: lines[:10]}})
	c.must(&Command{Op: OpAppendJobLog, JobLog: &JobLog{JobID: 1, Lines: lines[10:]}})
	j, _ = c.s.Job(1)
	if len(j.Log) != MaxJobLogLines || j.LogLines != MaxJobLogLines+5 || j.Log[0].Msg != "line 5" || j.Log[len(j.Log)-1].Msg != fmt.Sprintf("line %d", MaxJobLogLines+4) {
		t.Fatalf("log: %d lines of %d, first %q", len(j.Log), j.LogLines, j.Log[0].Msg)
	}

	// Failing a backup job through UpdateJob drops its half-written backup.
	c.writeIndex(1, []fileindex.Entry{dir("/etc"), file("/etc/hosts", 10)}, 0)
	c.must(&Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: 1, State: JobCanceled, Error: "canceled by admin"}})
	j, _ = c.s.Job(1)
	b, _ = c.s.Backup(1)
	if j.State != JobCanceled || j.Ended.IsZero() || b.State != BackupAborted || b.Segments != 0 {
		t.Fatalf("canceled job %+v, backup %+v", j, b)
	}
	if infos, _ := c.s.SegmentInfos(1); len(infos) != 0 {
		t.Fatalf("segments of a canceled backup remain: %+v", infos)
	}
	c.refused(CodeWrongState, &Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: 1, State: JobRunning}})
	// Logging after the end is allowed: the end is worth explaining.
	c.must(&Command{Op: OpAppendJobLog, JobLog: &JobLog{JobID: 1, Lines: lines[:1]}})
	c.refused(CodeNotFound, &Command{Op: OpAppendJobLog, JobLog: &JobLog{JobID: 42, Lines: lines[:1]}})
	c.refused(CodeNotFound, &Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: 42, State: JobFailed}})
	c.refused(CodeInvalidArgument, &Command{Op: OpCreateJob, Job: &Job{Type: "scrub", Client: "web1"}})
	c.refused(CodeInvalidArgument, &Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: "web1", Pool: "disk1", Level: "weekly", Paths: []fileindex.Path{"/"}}})
}

func TestBackupCommitAndVolumes(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	id := c.startBackup(LevelFull, "/srv", "/etc")
	vol1 := uuid.New()
	res := c.must(&Command{Op: OpCreateVolume, Volume: &Volume{ID: vol1, Pool: "disk1", WriterJob: id}})
	if res.VolumeID != vol1 || res.VolumeName != "disk1-0001" {
		t.Fatalf("create volume: %+v", res)
	}
	v, _ := c.s.VolumeByName("disk1-0001")
	if v.ID != vol1 || v.State != VolumeLabeling || v.Node != "sn1" || v.MediaType != "disk" || v.WriterJob != id {
		t.Fatalf("new volume %+v", v)
	}
	label := int64(DefaultBlockSize)
	c.must(&Command{Op: OpUpdateVolume, VolumeUpdate: &VolumeUpdate{ID: vol1, State: VolumeAppend, Bytes: &label}})

	// A second job may not take a volume the first holds.
	other := c.startBackup(LevelFull, "/home")
	c.refused(CodeWrongState, &Command{Op: OpUpdateVolume, VolumeUpdate: &VolumeUpdate{ID: vol1, WriterJob: &other}})
	vol2 := uuid.New()
	if res := c.must(&Command{Op: OpCreateVolume, Volume: &Volume{ID: vol2, Pool: "disk1", WriterJob: id}}); res.VolumeName != "disk1-0002" {
		t.Fatalf("second volume named %s", res.VolumeName)
	}
	c.refused(CodeAlreadyExists, &Command{Op: OpCreateVolume, Volume: &Volume{ID: vol2, Pool: "disk1"}})
	c.refused(CodeNotFound, &Command{Op: OpCreateVolume, Volume: &Volume{ID: uuid.New(), Pool: "nopool"}})
	c.refused(CodeInvalidArgument, &Command{Op: OpCreateVolume, Volume: &Volume{Pool: "disk1"}})

	entries := []fileindex.Entry{dir("/etc"), file("/etc/hosts", 1), dir("/srv"), file("/srv/a", 2)}
	c.refused(CodeInvalidArgument, &Command{Op: OpAddIndexSegment, Segment: &IndexSegment{BackupID: id, No: 1, First: "/a", Last: "/b", Count: 1, Data: []byte{1}}})
	segs := c.writeIndex(id, entries, 40) // tiny segments: several of them
	if segs < 2 {
		t.Fatalf("want several segments, got %d", segs)
	}
	// A resent segment is accepted once more and changes nothing.
	infos, _ := c.s.SegmentInfos(id)
	built, _ := segmentsOf(t, entries, 40)
	seg0 := built[0].Data
	c.must(&Command{Op: OpAddIndexSegment, Segment: &IndexSegment{BackupID: id, No: 0, First: fileindex.Path(infos[0].First), Last: fileindex.Path(infos[0].Last), Count: infos[0].Count, Data: seg0}})
	c.refused(CodeAlreadyExists, &Command{Op: OpAddIndexSegment, Segment: &IndexSegment{BackupID: id, No: 0, First: "/0", Last: "/1", Count: 1, Data: seg0}})
	c.refused(CodeInvalidArgument, &Command{Op: OpAddIndexSegment, Segment: &IndexSegment{BackupID: id, No: segs, First: "/a", Last: "/b", Count: 1, Data: seg0}})

	sess := uuid.New()
	commit := &BackupCommit{
		BackupID: id, SessionID: sess, Segments: segs, Entries: 4, Files: 2, Bytes: 3, StoredBytes: 4096, Warnings: 1,
		Parts: []Part{
			{VolumeID: vol2, Part: 2, VolumeStart: 0, DataStart: 512, End: 9000, StreamStart: 100, StreamEnd: 200, Final: true},
			{VolumeID: vol1, Part: 1, VolumeStart: label, DataStart: label + 512, End: 1 << 20, StreamEnd: 100},
		},
		Full:    []uuid.UUID{vol1},
		EndTime: c.clock.Add(time.Hour),
	}
	c.refused(CodeInvalidArgument, &Command{Op: OpCommitBackup, Commit: &BackupCommit{BackupID: id, SessionID: sess, Segments: segs + 1, Parts: commit.Parts}})
	c.must(&Command{Op: OpCommitBackup, Commit: commit})
	c.must(&Command{Op: OpCommitBackup, Commit: commit}) // a retry

	b, _ := c.s.Backup(id)
	if b.State != BackupComplete || b.SessionID != sess || b.Entries != 4 || b.Files != 2 || b.Segments != segs ||
		len(b.Parts) != 2 || b.Parts[0].VolumeID != vol1 || !b.EndTime.Equal(commit.EndTime) || b.KeyID != "k1" {
		t.Fatalf("committed backup %+v", b)
	}
	j, _ := c.s.Job(id)
	if j.State != JobWarning || j.Files != 2 || j.StoredBytes != 4096 || !j.Ended.Equal(commit.EndTime) {
		t.Fatalf("committed job %+v", j)
	}
	v1, _ := c.s.Volume(vol1)
	v2, _ := c.s.Volume(vol2)
	if v1.State != VolumeFull || v1.Bytes != 1<<20 || v1.Sessions != 1 || v1.WriterJob != 0 || !v1.LastWritten.Equal(commit.EndTime) {
		t.Fatalf("volume 1 after commit %+v", v1)
	}
	if v2.State != VolumeAppend || v2.Bytes != 9000 || v2.Sessions != 1 || v2.WriterJob != 0 {
		t.Fatalf("volume 2 after commit %+v", v2)
	}
	back := int64(10)
	c.refused(CodeWrongState, &Command{Op: OpUpdateVolume, VolumeUpdate: &VolumeUpdate{ID: vol2, Bytes: &back}})
	c.refused(CodeWrongState, &Command{Op: OpUpdateVolume, VolumeUpdate: &VolumeUpdate{ID: vol1, WriterJob: &other}})
	c.must(&Command{Op: OpUpdateVolume, VolumeUpdate: &VolumeUpdate{ID: vol2, WriterJob: &other}})
	c.refused(CodeWrongState, &Command{Op: OpAddIndexSegment, Segment: &IndexSegment{BackupID: id, No: segs, First: "/x", Last: "/y", Count: 1, Data: seg0}})
	c.refused(CodeWrongState, &Command{Op: OpAbortBackup, Abort: &BackupAbort{BackupID: id, Code: "x", Msg: "y"}})

	// Abort of the other job's backup releases its volume and fails it.
	c.writeIndex(other, []fileindex.Entry{dir("/home")}, 0)
	c.must(&Command{Op: OpAbortBackup, Abort: &BackupAbort{BackupID: other, Code: "io_error", Msg: "disk gone"}})
	c.must(&Command{Op: OpAbortBackup, Abort: &BackupAbort{BackupID: other, Code: "io_error", Msg: "disk gone"}})
	ob, _ := c.s.Backup(other)
	oj, _ := c.s.Job(other)
	v2, _ = c.s.Volume(vol2)
	if ob.State != BackupAborted || oj.State != JobFailed || oj.ErrorCode != "io_error" || oj.Error != "disk gone" || v2.WriterJob != 0 {
		t.Fatalf("aborted: backup %+v job %+v volume %+v", ob, oj, v2)
	}
	if entries, err := fileindex.Collect(c.s.Index(other)); err != nil || len(entries) != 0 {
		t.Fatalf("aborted backup's index: %v %v", entries, err)
	}
	// Ended jobs hold nothing and cannot start holding.
	c.refused(CodeWrongState, &Command{Op: OpUpdateVolume, VolumeUpdate: &VolumeUpdate{ID: vol2, WriterJob: &other}})
	third := c.startBackup(LevelFull, "/opt")
	c.must(&Command{Op: OpUpdateVolume, VolumeUpdate: &VolumeUpdate{ID: vol2, WriterJob: &third}})
	zero := uint64(0)
	c.must(&Command{Op: OpUpdateVolume, VolumeUpdate: &VolumeUpdate{ID: vol2, WriterJob: &zero, State: VolumeError, Error: "bad label"}})
	v2, _ = c.s.Volume(vol2)
	if v2.State != VolumeError || v2.Error != "bad label" || v2.WriterJob != 0 {
		t.Fatalf("errored volume %+v", v2)
	}

	vols, _ := c.s.Volumes(VolumeFilter{Pool: "disk1"})
	if len(vols) != 2 || vols[0].Name != "disk1-0001" {
		t.Fatalf("volumes %+v", vols)
	}
	if vols, _ := c.s.Volumes(VolumeFilter{State: VolumeFull}); len(vols) != 1 || vols[0].ID != vol1 {
		t.Fatalf("full volumes %+v", vols)
	}
	if vols, _ := c.s.Volumes(VolumeFilter{Node: "sn2"}); len(vols) != 0 {
		t.Fatalf("volumes of sn2 %+v", vols)
	}
}

// A finished backup is fenced against a commit of another session: a
// storage node whose session outlived its attempt, or a second node given
// the same job, must not have its commit taken for a retry of the first.
// The retry of the same session is accepted and changes nothing.
func TestSecondCommitOfAFinishedBackupIsRefused(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	id := c.startBackup(LevelFull, "/srv")
	segs := c.writeIndex(id, []fileindex.Entry{dir("/srv"), file("/srv/a", 2)}, 0)
	vol := c.volumeFor(id)
	label := int64(DefaultBlockSize)
	first := &BackupCommit{
		BackupID: id, SessionID: uuid.New(), Segments: segs, Entries: 2, Files: 1, Bytes: 2, StoredBytes: 4096,
		Parts: []Part{{VolumeID: vol, Part: 1, VolumeStart: label, DataStart: label + 512, End: 1 << 20, Final: true}},
	}
	c.must(&Command{Op: OpCommitBackup, Commit: first})
	before := dump(t, c.s)

	other := *first
	other.SessionID = uuid.New()
	other.Files, other.Bytes = 7, 70
	other.Parts = []Part{{VolumeID: vol, Part: 1, VolumeStart: 1 << 20, DataStart: 1<<20 + 512, End: 2 << 20, Final: true}}
	e := c.refused(CodeWrongState, &Command{Op: OpCommitBackup, Commit: &other})
	if !strings.Contains(e.Msg, fmt.Sprint(id)) {
		t.Fatalf("refusal %q does not name backup %d", e.Msg, id)
	}
	if after := dump(t, c.s); after != before {
		t.Fatalf("a refused second commit changed the catalog:\n%s\n---\n%s", before, after)
	}
	b, _ := c.s.Backup(id)
	v, _ := c.s.Volume(vol)
	if b.SessionID != first.SessionID || b.Files != 1 || v.Bytes != 1<<20 || v.Sessions != 1 {
		t.Fatalf("after a second session's commit: backup %+v volume %+v", b, v)
	}

	c.must(&Command{Op: OpCommitBackup, Commit: first}) // the first session's retry
	if after := dump(t, c.s); after != before {
		t.Fatalf("a retried commit changed the catalog:\n%s\n---\n%s", before, after)
	}
}

// A volume marked error while the session wrote to it (a medium error
// after its part was written; the session went on elsewhere) keeps its
// part for restores, and stays error though the commit names it full.
func TestCommitKeepsAVolumeMarkedError(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	id := c.startBackup(LevelFull, "/srv")
	segs := c.writeIndex(id, []fileindex.Entry{dir("/srv"), file("/srv/a", 2)}, 0)
	bad, next := c.volumeFor(id), c.volumeFor(id)
	zero := uint64(0)
	c.must(&Command{Op: OpUpdateVolume, VolumeUpdate: &VolumeUpdate{ID: bad, State: VolumeError, Error: "medium error at block 22", WriterJob: &zero}})
	label := int64(DefaultBlockSize)
	c.must(&Command{Op: OpCommitBackup, Commit: &BackupCommit{
		BackupID: id, SessionID: uuid.New(), Segments: segs, Entries: 2, Files: 1,
		Parts: []Part{
			{VolumeID: bad, Part: 1, VolumeStart: label, DataStart: label + 512, End: 5 << 20, StreamEnd: 100},
			{VolumeID: next, Part: 2, VolumeStart: label, DataStart: label + 512, End: 3 << 20, StreamStart: 100, StreamEnd: 200, Final: true},
		},
		Full: []uuid.UUID{bad},
	}})
	v, _ := c.s.Volume(bad)
	if v.State != VolumeError || v.Error != "medium error at block 22" || v.Bytes != 5<<20 || v.Sessions != 1 {
		t.Fatalf("the bad volume after the commit: %+v", v)
	}
	if b, _ := c.s.Backup(id); len(b.Parts) != 2 || b.Parts[0].VolumeID != bad {
		t.Fatalf("parts %+v", b.Parts)
	}
}

func TestParentResolution(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	levelOf := func(id uint64) (Level, uint64, []LogLine) {
		t.Helper()
		j, err := c.s.Job(id)
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.s.Backup(id)
		if err != nil {
			t.Fatal(err)
		}
		if b.Level != j.Level {
			t.Fatalf("job %d level %s, backup level %s", id, j.Level, b.Level)
		}
		return b.Level, b.Parent, j.Log
	}
	some := []fileindex.Entry{dir("/srv"), file("/srv/a", 1)}

	// Nothing to build on: an incremental runs as a full, and says so.
	inc0 := c.backup(LevelIncremental, some)
	if l, p, log := levelOf(inc0); l != LevelFull || p != 0 || len(log) != 1 || log[0].Level != "info" {
		t.Fatalf("first incremental: %s parent %d log %+v", l, p, log)
	}
	full := inc0
	inc1 := c.backup(LevelIncremental, some)
	if l, p, _ := levelOf(inc1); l != LevelIncremental || p != full {
		t.Fatalf("incremental: %s parent %d, want parent %d", l, p, full)
	}
	inc2 := c.backup(LevelIncremental, some)
	if _, p, _ := levelOf(inc2); p != inc1 {
		t.Fatalf("second incremental parent %d, want %d", p, inc1)
	}
	diff := c.backup(LevelDifferential, some)
	if l, p, _ := levelOf(diff); l != LevelDifferential || p != full {
		t.Fatalf("differential: %s parent %d, want %d", l, p, full)
	}
	inc3 := c.backup(LevelIncremental, some)
	if _, p, _ := levelOf(inc3); p != diff {
		t.Fatalf("incremental after differential: parent %d, want %d", p, diff)
	}
	chain, err := c.s.Chain(inc3)
	if err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for _, b := range chain {
		ids = append(ids, b.ID)
	}
	if !slices.Equal(ids, []uint64{full, diff, inc3}) {
		t.Fatalf("chain %v", ids)
	}

	// Another file set has nothing to build on, and a writing or aborted
	// backup is never a base.
	other := c.startBackup(LevelDifferential, "/home")
	if l, p, _ := levelOf(other); l != LevelFull || p != 0 {
		t.Fatalf("differential of a new file set: %s parent %d", l, p)
	}
	c.must(&Command{Op: OpAbortBackup, Abort: &BackupAbort{BackupID: other, Code: "x", Msg: "y"}})
	again := c.startBackup(LevelIncremental, "/home")
	if l, _, _ := levelOf(again); l != LevelFull {
		t.Fatalf("incremental after an aborted full: %s", l)
	}
	// Path order does not change the file set.
	if FileSetOf([]string{"/a", "/b"}, []string{"x", "y"}) != FileSetOf([]string{"/b", "/a"}, []string{"y", "x"}) ||
		FileSetOf([]string{"/a"}, nil) == FileSetOf(nil, []string{"/a"}) {
		t.Fatal("FileSetOf is not a stable identity of sorted paths and excludes")
	}

	// Reads by client, file set and time.
	bs, _ := c.s.Backups(BackupFilter{Client: "web1", States: []BackupState{BackupComplete}})
	if len(bs) != 5 || bs[0].ID != inc3 || bs[4].ID != full {
		t.Fatalf("complete backups, newest first: %+v", bs)
	}
	if bs, _ := c.s.Backups(BackupFilter{FileSet: FileSetOf([]string{"/home"}, nil)}); len(bs) != 2 {
		t.Fatalf("backups of /home: %d", len(bs))
	}
	// Pages: the next backups after the second of the list, two at a time.
	for _, f := range []BackupFilter{{Client: "web1", States: []BackupState{BackupComplete}}, {States: []BackupState{BackupComplete}}} {
		f.Before, f.Limit = bs[1].ID, 2
		page, _ := c.s.Backups(f)
		if len(page) != 2 || page[0].ID != bs[2].ID || page[1].ID != bs[3].ID {
			t.Fatalf("Backups(%+v) = %+v, want backups %d and %d", f, page, bs[2].ID, bs[3].ID)
		}
	}
	d, _ := c.s.Backup(diff)
	at, err := c.s.BackupAt("web1", d.StartTime.Add(time.Second))
	if err != nil || at.ID != diff {
		t.Fatalf("backup at the differential's time: %+v %v", at, err)
	}
	f, _ := c.s.Backup(full)
	if _, err := c.s.BackupAt("web1", f.StartTime.Add(-time.Second)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("backup before the first: %v", err)
	}
}

// TestParentIsSoughtInTheSamePool: a backup's base is a backup of the same
// paths in the same pool, so each pool holds whole chains. The first backup
// of a file set to another pool (a tape pool, after a month of disk
// backups) runs as a full there and says why, as Bareos upgrades a job
// with no prior full; the disk chain goes on from its own last backup.
func TestParentIsSoughtInTheSamePool(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	pools := []NodePool{{Name: "disk1", Dir: "/srv/cairn"}}
	for _, name := range []string{"Weekly", "Monthly"} {
		c.must(&Command{Op: OpPutKey, Key: &Key{ID: "k-" + name, Pool: name, Wrapped: []byte("wrapped-key-material")}})
		c.must(&Command{Op: OpCreatePool, Pool: &Pool{Name: name, Nodes: []string{"sn1"}, KeyID: "k-" + name}})
		pools = append(pools, NodePool{Name: name, Dir: "/srv/" + name})
	}
	c.must(&Command{Op: OpRegisterNode, Node: &StorageNode{ID: "sn1", DataAddr: "127.0.0.1:7020", Pools: pools}})
	some := []fileindex.Entry{dir("/srv"), file("/srv/a", 1)}
	backup := func(pool string, level Level) (*Backup, *Job) {
		t.Helper()
		id := c.backupIn(pool, level, some)
		b, err := c.s.Backup(id)
		if err != nil {
			t.Fatal(err)
		}
		j, err := c.s.Job(id)
		if err != nil {
			t.Fatal(err)
		}
		return b, j
	}

	diskFull, _ := backup("disk1", LevelFull)
	diskInc, _ := backup("disk1", LevelIncremental)
	if diskInc.Level != LevelIncremental || diskInc.Parent != diskFull.ID {
		t.Fatalf("incremental on disk: %s on %d, want an incremental on %d", diskInc.Level, diskInc.Parent, diskFull.ID)
	}

	// The first incremental (the CLI's level when none is given) and the
	// first differential to a pool that holds no full of the file set.
	for _, first := range []struct {
		pool  string
		level Level
	}{{"Weekly", LevelIncremental}, {"Monthly", LevelDifferential}} {
		pool := first.pool
		base, job := backup(pool, first.level)
		if base.Level != LevelFull || base.Parent != 0 || job.Level != LevelFull {
			t.Fatalf("first %s to pool %s: backup %s on %d, job %s; want a full on nothing", first.level, pool, base.Level, base.Parent, job.Level)
		}
		if len(job.Log) != 1 || job.Log[0].Level != "info" ||
			!strings.HasPrefix(job.Log[0].Msg, "promoted to full: no full of this fileset yet in pool "+pool+" (") ||
			!strings.Contains(job.Log[0].Msg, "/srv") {
			t.Fatalf("job log of the first %s to pool %s: %+v", first.level, pool, job.Log)
		}
		inc, _ := backup(pool, LevelIncremental)
		if inc.Level != LevelIncremental || inc.Parent != base.ID {
			t.Fatalf("incremental to pool %s: %s on %d, want an incremental on %d", pool, inc.Level, inc.Parent, base.ID)
		}
		diff, _ := backup(pool, LevelDifferential)
		if diff.Level != LevelDifferential || diff.Parent != base.ID {
			t.Fatalf("differential to pool %s: %s on %d, want a differential on %d", pool, diff.Level, diff.Parent, base.ID)
		}
		chain, err := c.s.Chain(diff.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range chain {
			if b.Pool != pool {
				t.Fatalf("the chain of a %s backup holds backup %d of pool %s", pool, b.ID, b.Pool)
			}
		}
	}

	// The disk chain goes on from its own last backup, not from the later
	// backups in pool Weekly.
	diskNext, _ := backup("disk1", LevelIncremental)
	if diskNext.Parent != diskInc.ID {
		t.Fatalf("incremental on disk after the Weekly ones: on %d, want on %d", diskNext.Parent, diskInc.ID)
	}
	diskDiff, _ := backup("disk1", LevelDifferential)
	if diskDiff.Parent != diskFull.ID {
		t.Fatalf("differential on disk after the Weekly ones: on %d, want on the disk full %d", diskDiff.Parent, diskFull.ID)
	}
}

func TestJobsFilter(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	c.must(&Command{Op: OpRegisterClient, Client: &Client{Name: "db1"}})
	for i := 0; i < 6; i++ {
		client := "web1"
		if i%2 == 1 {
			client = "db1"
		}
		c.must(&Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: client, Level: LevelFull, Pool: "disk1", Paths: []fileindex.Path{fileindex.Path(fmt.Sprintf("/p%d", i))}}})
	}
	c.must(&Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: 2, State: JobRunning}})
	c.must(&Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: 3, State: JobFailed}})
	ids := func(f JobFilter) []uint64 {
		js, err := c.s.Jobs(f)
		if err != nil {
			t.Fatal(err)
		}
		var out []uint64
		for _, j := range js {
			out = append(out, j.ID)
		}
		return out
	}
	for _, tc := range []struct {
		f    JobFilter
		want []uint64
	}{
		{JobFilter{}, []uint64{6, 5, 4, 3, 2, 1}},
		{JobFilter{Limit: 2}, []uint64{6, 5}},
		{JobFilter{Client: "db1"}, []uint64{6, 4, 2}},
		{JobFilter{Client: "web1", Limit: 1}, []uint64{5}},
		{JobFilter{States: []JobState{JobQueued, JobRunning}}, []uint64{6, 5, 4, 2, 1}},
		{JobFilter{States: []JobState{JobRunning}}, []uint64{2}},
		{JobFilter{States: []JobState{JobFailed, JobRunning}}, []uint64{3, 2}},
		{JobFilter{Type: JobRestore}, nil},
		{JobFilter{Client: "nobody"}, nil},
		// The next page of a list that ended with job 5, or 3.
		{JobFilter{Before: 5, Limit: 2}, []uint64{4, 3}},
		{JobFilter{Client: "db1", Before: 6}, []uint64{4, 2}},
		{JobFilter{States: []JobState{JobQueued, JobRunning}, Before: 4}, []uint64{2, 1}},
		{JobFilter{Before: 1}, nil},
	} {
		if got := ids(tc.f); !slices.Equal(got, tc.want) {
			t.Errorf("Jobs(%+v) = %v, want %v", tc.f, got, tc.want)
		}
	}
	js, _ := c.s.Jobs(JobFilter{})
	for _, j := range js {
		if len(j.Log) != 0 {
			t.Fatalf("Jobs returned a log")
		}
	}
}

func TestRestoreJob(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	full := c.backup(LevelFull, []fileindex.Entry{dir("/srv")})
	writing := c.startBackup(LevelIncremental)
	c.refused(CodeWrongState, &Command{Op: OpCreateJob, Job: &Job{Type: JobRestore, Client: "web1", BackupID: writing, Target: "/tmp/r"}})
	c.refused(CodeNotFound, &Command{Op: OpCreateJob, Job: &Job{Type: JobRestore, Client: "web1", BackupID: 99}})
	res := c.must(&Command{Op: OpCreateJob, Job: &Job{Type: JobRestore, Client: "web1", BackupID: full, Target: "/tmp/r", Paths: []fileindex.Path{"/srv"}}})
	j, _ := c.s.Job(res.JobID)
	if j.BackupID != full || j.Pool != "disk1" || j.Node != "sn1" || j.Target != "/tmp/r" {
		t.Fatalf("restore job %+v", j)
	}
	if _, err := c.s.Backup(res.JobID); !errors.Is(err, ErrNotFound) {
		t.Fatal("a restore job created a backup")
	}
	c.must(&Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: res.JobID, State: JobRunning}})
	c.must(&Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: res.JobID, State: JobSuccess, Files: 1, Bytes: 2}})
	j, _ = c.s.Job(res.JobID)
	if j.State != JobSuccess || j.Files != 1 || j.Ended.IsZero() {
		t.Fatalf("restore job %+v", j)
	}
}

func TestCounts(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	c.backup(LevelFull, []fileindex.Entry{dir("/srv"), file("/srv/a", 1)})
	running := c.startBackup(LevelIncremental)
	c.writeIndex(running, []fileindex.Entry{file("/srv/b", 2)}, 0)
	failed := c.startBackup(LevelIncremental, "/x")
	c.writeIndex(failed, []fileindex.Entry{file("/x/b", 2)}, 0)
	c.must(&Command{Op: OpAbortBackup, Abort: &BackupAbort{BackupID: failed}})
	n, err := c.s.Counts()
	if err != nil {
		t.Fatal(err)
	}
	if n.Clients != 1 || n.Nodes != 1 || n.Pools != 1 || n.Keys != 1 || n.AppliedIndex != c.index {
		t.Fatalf("counts %+v", n)
	}
	if n.Jobs[JobSuccess] != 1 || n.Jobs[JobRunning] != 1 || n.Jobs[JobFailed] != 1 || len(n.Jobs) != 3 {
		t.Fatalf("jobs by state %v", n.Jobs)
	}
	if n.Backups[BackupComplete] != 1 || n.Backups[BackupWriting] != 1 || n.Backups[BackupAborted] != 1 {
		t.Fatalf("backups by state %v", n.Backups)
	}
	if n.Volumes["disk1"][VolumeAppend] != 1 || n.PoolBytes["disk1"] != int64(DefaultBlockSize)+1<<20 {
		t.Fatalf("volumes %v bytes %v", n.Volumes, n.PoolBytes)
	}
	infos, _ := c.s.SegmentInfos(1)
	infos2, _ := c.s.SegmentInfos(running)
	var size int64
	for _, i := range append(infos, infos2...) {
		size += int64(i.Bytes)
	}
	if n.IndexSegments != len(infos)+len(infos2) || n.IndexBytes != size {
		t.Fatalf("index %d segments %d bytes, want %d, %d", n.IndexSegments, n.IndexBytes, len(infos)+len(infos2), size)
	}
}

// TestGroupIdentity: the group's identity is written once; the same command
// again is a no-op, another group's is refused, and both leave the first.
func TestGroupIdentity(t *testing.T) {
	c := newTestCatalog(t)
	if g, err := c.s.Group(); err != nil || g != nil {
		t.Fatalf("a new catalog has group %+v, %v; want none", g, err)
	}
	key := bytes.Repeat([]byte{7}, 32)
	first := &Group{ID: "g1", KEKFingerprint: "kek1", TicketKeys: [][]byte{key}}
	c.must(&Command{Op: OpInitGroup, Group: first})
	c.must(&Command{Op: OpInitGroup, Group: first})
	c.refused(CodeAlreadyExists, &Command{Op: OpInitGroup, Group: &Group{ID: "g2", KEKFingerprint: "kek2", TicketKeys: [][]byte{key}}})
	c.refused(CodeInvalidArgument, &Command{Op: OpInitGroup, Group: &Group{ID: "g3", KEKFingerprint: "kek3", TicketKeys: [][]byte{{1, 2}}}})
	g, err := c.s.Group()
	if err != nil || g == nil || g.ID != "g1" || g.KEKFingerprint != "kek1" || len(g.TicketKeys) != 1 || !bytes.Equal(g.TicketKeys[0], key) || g.Created.IsZero() {
		t.Fatalf("group after the refusals: %+v, %v", g, err)
	}
}

// TestRotateSecrets: a rotation rewraps every data key and moves the
// group's KEK fingerprint and ticket keys in one transaction; one that
// misses a key added since, names a key the catalog lacks, or starts from
// another KEK than the group's is refused and changes nothing; the same
// command again is a no-op.
func TestRotateSecrets(t *testing.T) {
	c := newTestCatalog(t)
	oldTicket, newTicket := bytes.Repeat([]byte{7}, 32), bytes.Repeat([]byte{8}, 32)
	rotation := &SecretsRotation{FromKEK: "kek1", ToKEK: "kek2", TicketKey: newTicket,
		Keys: []RewrappedKey{{ID: "k1", Wrapped: []byte("k1 under kek2")}, {ID: "k2", Wrapped: []byte("k2 under kek2")}}}
	c.refused(CodeWrongState, &Command{Op: OpRotateSecrets, Rotation: rotation})
	c.must(&Command{Op: OpInitGroup, Group: &Group{ID: "g1", KEKFingerprint: "kek1", TicketKeys: [][]byte{oldTicket}}})
	c.must(&Command{Op: OpPutKey, Key: &Key{ID: "k1", Pool: "p1", Wrapped: []byte("k1 under kek1")}})
	c.must(&Command{Op: OpPutKey, Key: &Key{ID: "k2", Wrapped: []byte("k2 under kek1")}})
	c.must(&Command{Op: OpPutKey, Key: &Key{ID: "k3", Wrapped: []byte("k3 under kek1")}})

	unchanged := func() {
		t.Helper()
		g, _ := c.s.Group()
		k, _ := c.s.Key("k1")
		if g.KEKFingerprint != "kek1" || len(g.TicketKeys) != 1 || string(k.Wrapped) != "k1 under kek1" {
			t.Fatalf("a refused rotation changed the catalog: group %+v, key %s", g, k.Wrapped)
		}
	}
	c.refused(CodeWrongState, &Command{Op: OpRotateSecrets, Rotation: rotation}) // k3 is missing
	unchanged()
	rotation.Keys = append(rotation.Keys, RewrappedKey{ID: "k3", Wrapped: []byte("k3 under kek2")}, RewrappedKey{ID: "k4", Wrapped: []byte("x")})
	c.refused(CodeNotFound, &Command{Op: OpRotateSecrets, Rotation: rotation})
	unchanged()
	rotation.Keys = rotation.Keys[:3]
	other := *rotation
	other.FromKEK = "kek9"
	c.refused(CodeWrongState, &Command{Op: OpRotateSecrets, Rotation: &other})
	unchanged()
	c.refused(CodeInvalidArgument, &Command{Op: OpRotateSecrets, Rotation: &SecretsRotation{FromKEK: "kek1", ToKEK: "kek1", TicketKey: newTicket}})

	c.must(&Command{Op: OpRotateSecrets, Rotation: rotation})
	c.must(&Command{Op: OpRotateSecrets, Rotation: rotation}) // retried
	g, err := c.s.Group()
	if err != nil || g.ID != "g1" || g.KEKFingerprint != "kek2" || !slices.Equal(g.RetiredKEKFingerprints, []string{"kek1"}) || g.Rotated.IsZero() {
		t.Fatalf("group after the rotation: %+v, %v", g, err)
	}
	if len(g.TicketKeys) != 2 || !bytes.Equal(g.TicketKeys[0], newTicket) || !bytes.Equal(g.TicketKeys[1], oldTicket) {
		t.Errorf("ticket keys after the rotation: %x, want the new one first and the old one beside it", g.TicketKeys)
	}
	for _, id := range []string{"k1", "k2", "k3"} {
		k, err := c.s.Key(id)
		if err != nil || string(k.Wrapped) != id+" under kek2" {
			t.Errorf("key %s after the rotation: %+v, %v", id, k, err)
		}
	}
	if k, _ := c.s.Key("k1"); k.Pool != "p1" || k.Created.IsZero() {
		t.Errorf("the rotation lost key k1's pool or creation time: %+v", k)
	}
	// A second rotation keeps the ticket key before it, not every one.
	third := bytes.Repeat([]byte{9}, 32)
	c.must(&Command{Op: OpRotateSecrets, Rotation: &SecretsRotation{FromKEK: "kek2", ToKEK: "kek3", TicketKey: third,
		Keys: []RewrappedKey{{ID: "k1", Wrapped: []byte("a")}, {ID: "k2", Wrapped: []byte("b")}, {ID: "k3", Wrapped: []byte("c")}}}})
	g, _ = c.s.Group()
	if len(g.TicketKeys) != 2 || !bytes.Equal(g.TicketKeys[0], third) || !bytes.Equal(g.TicketKeys[1], newTicket) || !slices.Equal(g.RetiredKEKFingerprints, []string{"kek1", "kek2"}) {
		t.Errorf("after a second rotation: %+v", g)
	}
}

// TestPolicyRunChainsAcrossItsPools: a policy that sends fulls to one pool
// and incrementals to another chains its incrementals onto the fulls, as
// Bacula's Full and Incremental Backup Pools do; an ad hoc incremental to
// the incremental pool still finds no full there and is promoted.
func TestPolicyRunChainsAcrossItsPools(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	pools := []NodePool{{Name: "disk1", Dir: "/srv/cairn"}}
	for _, name := range []string{"Fulls", "Incrementals"} {
		c.must(&Command{Op: OpPutKey, Key: &Key{ID: "k-" + name, Pool: name, Wrapped: []byte("wrapped-key-material")}})
		c.must(&Command{Op: OpCreatePool, Pool: &Pool{Name: name, Nodes: []string{"sn1"}, KeyID: "k-" + name}})
		pools = append(pools, NodePool{Name: name, Dir: "/srv/" + name})
	}
	c.must(&Command{Op: OpRegisterNode, Node: &StorageNode{ID: "sn1", DataAddr: "127.0.0.1:7020", Pools: pools}})
	c.must(&Command{Op: OpPutPolicy, PolicyPut: &PolicyPut{Mode: PutCreate, Policy: Policy{
		Name: "split", Clients: []string{"web1"}, Paths: []string{"/srv"}, Schedule: "daily 02:00 incremental",
		Pool: "Incrementals", LevelPools: map[Level]string{LevelFull: "Fulls"},
		Retention: PolicyRetention{All: KeepRules{Last: 10}},
	}}})
	run := func(policy, pool string, level Level) *Backup {
		t.Helper()
		res := c.must(&Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: "web1", Level: level, Pool: pool, Paths: fileindex.Paths([]string{"/srv"}), Policy: policy}})
		id := res.JobID
		c.must(&Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: id, Node: "sn1"}})
		entries := []fileindex.Entry{dir("/srv"), file("/srv/a", 1)}
		segs := c.writeIndex(id, entries, 4<<10)
		vol := c.volumeIn(pool, id)
		v, err := c.s.Volume(vol)
		if err != nil {
			t.Fatal(err)
		}
		c.must(&Command{Op: OpCommitBackup, Commit: &BackupCommit{
			BackupID: id, SessionID: uuid.New(), Segments: segs, Entries: 2, Files: 2,
			Parts: []Part{{VolumeID: vol, Part: 1, VolumeStart: v.Bytes, DataStart: v.Bytes + 4096, End: v.Bytes + 1<<20, Final: true}},
		}})
		b, err := c.s.Backup(id)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	full := run("split", "Fulls", LevelFull)
	inc := run("split", "Incrementals", LevelIncremental)
	if inc.Level != LevelIncremental || inc.Parent != full.ID {
		t.Fatalf("the policy's incremental: %s on %d, want an incremental on the full %d in pool Fulls", inc.Level, inc.Parent, full.ID)
	}
	inc2 := run("split", "Incrementals", LevelIncremental)
	if inc2.Parent != inc.ID {
		t.Fatalf("the policy's second incremental: on %d, want on %d", inc2.Parent, inc.ID)
	}
	adhoc := run("", "Incrementals", LevelIncremental)
	if adhoc.Level != LevelFull {
		t.Fatalf("an ad hoc incremental to pool Incrementals: %s on %d, want a full (its chain is its own pool's)", adhoc.Level, adhoc.Parent)
	}
}

// The lines that say how a job ended are written in the change that ends
// it: a reader that sees a backup committed or a restore ended (`cairn
// backup --wait`, then `cairn job show`) sees them too.
func TestAJobsLastLinesComeWithItsEnd(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	id := c.startBackup(LevelFull, "/srv")
	segs := c.writeIndex(id, []fileindex.Entry{dir("/srv"), file("/srv/a", 2)}, 0)
	vol := c.volumeFor(id)
	c.must(&Command{Op: OpCommitBackup, Commit: &BackupCommit{
		BackupID: id, SessionID: uuid.New(), Segments: segs, Entries: 2, Files: 1,
		Parts: []Part{{VolumeID: vol, Part: 1, VolumeStart: 4096, DataStart: 8192, End: 1 << 20, Final: true}},
		Log:   []LogLine{{Level: "info", Msg: "backup committed: 2 entries"}},
	}})
	lastLine := func(id uint64) LogLine {
		t.Helper()
		j, err := c.s.Job(id)
		if err != nil || len(j.Log) == 0 {
			t.Fatalf("job %d: %+v %v", id, j, err)
		}
		return j.Log[len(j.Log)-1]
	}
	if j, _ := c.s.Job(id); j.State != JobSuccess {
		t.Fatalf("backup job %+v", j)
	}
	if l := lastLine(id); l.Msg != "backup committed: 2 entries" || l.Time.IsZero() {
		t.Fatalf("last line of the committed backup's job: %+v", l)
	}
	res := c.must(&Command{Op: OpCreateJob, Job: &Job{Type: JobRestore, Client: "web1", BackupID: id, Target: "/tmp/r"}})
	c.must(&Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: res.JobID, State: JobRunning}})
	c.must(&Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: res.JobID, State: JobSuccess, Files: 1,
		Log: []LogLine{{Level: "info", Msg: "restore ended: 2 of 2 entries restored"}}}})
	if l := lastLine(res.JobID); l.Msg != "restore ended: 2 of 2 entries restored" {
		t.Fatalf("last line of the ended restore's job: %+v", l)
	}
	// A refused end adds nothing.
	c.refused(CodeWrongState, &Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: res.JobID, State: JobFailed,
		Log: []LogLine{{Level: "error", Msg: "late"}}}})
	if l := lastLine(res.JobID); l.Msg == "late" {
		t.Fatal("a refused update wrote its log line")
	}
}
