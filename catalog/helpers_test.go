package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/fileindex"
)

// testCatalog is a store in a temp dir with a Raft index counter, so tests
// read like a command log.
type testCatalog struct {
	t     testing.TB
	s     *Store
	index uint64
	clock time.Time
}

func newTestCatalog(t testing.TB) *testCatalog {
	t.Helper()
	return openTestCatalog(t, filepath.Join(t.TempDir(), "catalog.db"))
}

// openTestCatalog is newTestCatalog in a file of the test's choosing.
func openTestCatalog(t testing.TB, file string) *testCatalog {
	t.Helper()
	s, err := Open(file)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &testCatalog{t: t, s: s, clock: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)}
}

// noSync trades durability for speed in tests that apply thousands of
// commands; nothing here survives a crash anyway.
func (c *testCatalog) noSync() {
	c.s.mu.RLock()
	c.s.db.NoSync = true
	c.s.mu.RUnlock()
}

// try applies a command at the next index and returns the result.
func (c *testCatalog) try(cmd *Command) ApplyResult {
	c.t.Helper()
	c.index++
	c.clock = c.clock.Add(time.Minute)
	if cmd.Time.IsZero() {
		cmd.Time = c.clock
	}
	return c.s.Apply(c.index, cmd)
}

// must applies a command that must succeed.
func (c *testCatalog) must(cmd *Command) ApplyResult {
	c.t.Helper()
	res := c.try(cmd)
	if res.Err != nil {
		c.t.Fatalf("apply %s: %v", cmd.Op, res.Err)
	}
	return res
}

// refused applies a command that must be refused with code.
func (c *testCatalog) refused(code string, cmd *Command) *Error {
	c.t.Helper()
	res := c.try(cmd)
	var e *Error
	if !errors.As(res.Err, &e) {
		c.t.Fatalf("apply %s: got %v, want a refusal %s", cmd.Op, res.Err, code)
	}
	if e.Code != code {
		c.t.Fatalf("apply %s: refused with %s (%s), want %s", cmd.Op, e.Code, e.Msg, code)
	}
	return e
}

// setup registers a client, a storage node with pool "disk1" and a key.
func (c *testCatalog) setup() {
	c.t.Helper()
	c.must(&Command{Op: OpRegisterClient, Client: &Client{Name: "web1", Hostname: "web1.example", OS: "linux", Arch: "amd64", Version: "0.1"}})
	c.must(&Command{Op: OpPutKey, Key: &Key{ID: "k1", Pool: "disk1", Wrapped: []byte("wrapped-key-material")}})
	c.must(&Command{Op: OpCreatePool, Pool: &Pool{Name: "disk1", Nodes: []string{"sn1"}, MaxVolumeBytes: 1 << 30, KeyID: "k1", Compression: true}})
	c.must(&Command{Op: OpRegisterNode, Node: &StorageNode{ID: "sn1", DataAddr: "127.0.0.1:7020", Pools: []NodePool{{Name: "disk1", Dir: "/srv/cairn"}}}})
}

// startBackup creates and starts a backup job to pool disk1 and returns its id.
func (c *testCatalog) startBackup(level Level, paths ...string) uint64 {
	c.t.Helper()
	return c.startBackupIn("disk1", level, paths...)
}

// startBackupIn creates and starts a backup job to pool and returns its id.
func (c *testCatalog) startBackupIn(pool string, level Level, paths ...string) uint64 {
	c.t.Helper()
	if len(paths) == 0 {
		paths = []string{"/srv"}
	}
	res := c.must(&Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: "web1", Level: level, Pool: pool, Paths: fileindex.Paths(paths)}})
	c.must(&Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: res.JobID, Node: "sn1"}})
	return res.JobID
}

// writeIndex sends entries as segments of about segBytes each.
func (c *testCatalog) writeIndex(backup uint64, entries []fileindex.Entry, segBytes int) int {
	c.t.Helper()
	b := fileindex.NewSegmentBuilder(segBytes)
	no := 0
	send := func() {
		seg := b.Flush()
		if seg.Count == 0 {
			return
		}
		c.must(&Command{Op: OpAddIndexSegment, Segment: &IndexSegment{BackupID: backup, No: no, First: fileindex.Path(seg.First), Last: fileindex.Path(seg.Last), Count: seg.Count, Data: seg.Data}})
		no++
	}
	for i := range entries {
		if err := b.Add(&entries[i]); err != nil {
			c.t.Fatal(err)
		}
		if b.Full() {
			send()
		}
	}
	send()
	return no
}

// volumeFor creates a volume of pool disk1 held by job and labels it.
func (c *testCatalog) volumeFor(job uint64) uuid.UUID {
	c.t.Helper()
	return c.volumeIn("disk1", job)
}

// volumeIn creates a volume of pool held by job and labels it.
func (c *testCatalog) volumeIn(pool string, job uint64) uuid.UUID {
	c.t.Helper()
	id := uuid.New()
	c.must(&Command{Op: OpCreateVolume, Volume: &Volume{ID: id, Pool: pool, WriterJob: job}})
	bs := int64(DefaultBlockSize)
	c.must(&Command{Op: OpUpdateVolume, VolumeUpdate: &VolumeUpdate{ID: id, State: VolumeAppend, Bytes: &bs}})
	return id
}

// backup runs a whole backup of entries to pool disk1 and returns its id.
func (c *testCatalog) backup(level Level, entries []fileindex.Entry) uint64 {
	c.t.Helper()
	return c.backupIn("disk1", level, entries)
}

// backupIn runs a whole backup of entries to pool and returns its id.
func (c *testCatalog) backupIn(pool string, level Level, entries []fileindex.Entry) uint64 {
	c.t.Helper()
	id := c.startBackupIn(pool, level)
	c.commitSession(id, pool, entries)
	return id
}

// commitSession commits the session of running backup job id: its index
// of entries and one part on a new volume of pool.
func (c *testCatalog) commitSession(id uint64, pool string, entries []fileindex.Entry) {
	c.t.Helper()
	segs := c.writeIndex(id, entries, 4<<10)
	vol := c.volumeIn(pool, id)
	v, err := c.s.Volume(vol)
	if err != nil {
		c.t.Fatal(err)
	}
	c.must(&Command{Op: OpCommitBackup, Commit: &BackupCommit{
		BackupID: id, SessionID: uuid.New(), Segments: segs, Entries: int64(len(entries)), Files: int64(len(entries)),
		Parts: []Part{{VolumeID: vol, Part: 1, VolumeStart: v.Bytes, DataStart: v.Bytes + 4096, End: v.Bytes + 1<<20, Final: true}},
	}})
}

func file(p string, size int64) fileindex.Entry {
	return fileindex.Entry{Path: p, Type: fileindex.TypeFile, Mode: 0o644, Size: size, MTime: size * 1e9}
}

func dir(p string) fileindex.Entry {
	return fileindex.Entry{Path: p, Type: fileindex.TypeDir, Mode: 0o755}
}

func deleted(p string) fileindex.Entry {
	return fileindex.Entry{Path: p, Type: fileindex.TypeDeleted}
}

// dump reads everything a catalog answers, for comparing two catalogs.
func dump(t testing.TB, s *Store) string {
	t.Helper()
	var buf bytes.Buffer
	must := func(v any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		// JSON, not %+v, which prints pointers' addresses.
		js, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(append(js, '\n'))
	}
	must(s.Clients())
	must(s.Nodes())
	must(s.Pools())
	must(s.Keys())
	must(s.Volumes(VolumeFilter{}))
	counts, err := s.Counts()
	counts.AppliedIndex = 0 // compared by the callers that care
	must(counts, err)
	jobs, err := s.Jobs(JobFilter{})
	must(jobs, err)
	for _, j := range jobs {
		must(s.Job(j.ID))
	}
	backups, err := s.Backups(BackupFilter{})
	must(backups, err)
	for _, b := range backups {
		must(s.SegmentInfos(b.ID))
		entries, err := fileindex.Collect(s.Index(b.ID))
		must(entries, err)
		if b.State == BackupComplete {
			must(s.Chain(b.ID))
		}
	}
	return buf.String()
}
