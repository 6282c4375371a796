package catalog

import (
	"slices"
	"testing"

	"github.com/cairnbackup/cairn/fileindex"
)

// consolidate makes the job of a synthetic full of the chain ending with
// tip, dispatches it and commits it with entries; it returns its id.
func (c *testCatalog) consolidate(tip uint64, pool string, entries []fileindex.Entry) uint64 {
	c.t.Helper()
	res := c.must(&Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: "web1", Level: LevelSyntheticFull, BackupID: tip, Pool: pool}})
	id := res.JobID
	c.must(&Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: id, Node: "sn1"}})
	c.commitSession(id, "disk1", entries)
	return id
}

// A synthetic full is a full at the point in time of the chain it folds,
// whatever time its job runs; the next incremental builds on it, a restore
// of it reads it alone, and the expiry treats it as a full: the backups it
// folded in then expire by retention alone, and it is kept while an
// incremental builds on it.
func TestSyntheticFullIsAFullAtItsChainsPointInTime(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	ids := c.chain(2)
	tip, err := c.s.Backup(ids[2])
	if err != nil {
		t.Fatal(err)
	}
	synth := c.consolidate(ids[2], "", []fileindex.Entry{dir("/srv"), file("/srv/a", 3)})
	b, err := c.s.Backup(synth)
	if err != nil {
		t.Fatal(err)
	}
	if b.Level != LevelFull || b.Parent != 0 || b.Consolidates != ids[2] || !b.StartTime.Equal(tip.StartTime) ||
		b.State != BackupComplete || b.Pool != "disk1" || b.FileSet != tip.FileSet || b.Node != "sn1" {
		t.Fatalf("synthetic full %+v, want a complete full of the file set at %s", b, tip.StartTime)
	}
	if chain, err := c.s.Chain(synth); err != nil || len(chain) != 1 {
		t.Fatalf("a restore of the synthetic full reads %d backups (%v)", len(chain), err)
	}
	// The latest point in time resolves to it, not to the chain it folded.
	at, err := c.s.BackupAt("web1", tip.StartTime)
	if err != nil || at.ID != synth {
		t.Fatalf("the backup at %s is %+v (%v), want the synthetic full %d", tip.StartTime, at, err, synth)
	}
	if ch, err := c.s.ChainOf("web1", tip.FileSet, nil); err != nil || ch.Length != 1 || !ch.LastFull.Equal(tip.StartTime) {
		t.Fatalf("the chain after the fold: %+v %v", ch, err)
	}
	incr := c.backup(LevelIncremental, []fileindex.Entry{file("/srv/a", 4)})
	if nb, _ := c.s.Backup(incr); nb.Parent != synth {
		t.Fatalf("the next incremental builds on %d, want %d", nb.Parent, synth)
	}
	if ch, _ := c.s.ChainOf("web1", tip.FileSet, nil); ch.Length != 2 {
		t.Fatalf("chain after the next incremental: %+v", ch)
	}

	// The folded backups expire; the synthetic full stays while the
	// incremental builds on it.
	res := c.must(expire("expiry pass", append(slices.Clone(ids), synth)...))
	if !slices.Equal(res.Expired, ids) || len(res.Kept) != 1 || res.Kept[0].ID != synth {
		t.Fatalf("expiry of the folded chain and the synthetic full: %+v", res)
	}
	got, err := c.s.Lookup(incr, []string{"/srv/a"})
	if err != nil || got["/srv/a"].Size != 4 {
		t.Fatalf("lookup after the folded chain expired: %+v %v", got, err)
	}
}

// What a synthetic full cannot be made of is refused, and records nothing;
// one that ends without a commit leaves no backup behind.
func TestSyntheticFullRefusalsAndFailure(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	job := func(tip uint64, pool string) *Command {
		return &Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: "web1", Level: LevelSyntheticFull, BackupID: tip, Pool: pool}}
	}
	c.refused(CodeNotFound, job(99, ""))
	full := c.backup(LevelFull, []fileindex.Entry{dir("/srv"), file("/srv/a", 1)})
	c.refused(CodeWrongState, job(full, ""))
	incr := c.backup(LevelIncremental, []fileindex.Entry{file("/srv/a", 2)})
	c.refused(CodeNotFound, job(incr, "nowhere"))
	c.must(&Command{Op: OpPutKey, Key: &Key{ID: "k2", Pool: "far", Wrapped: []byte("wrapped")}})
	c.must(&Command{Op: OpCreatePool, Pool: &Pool{Name: "far", Nodes: []string{"sn2"}, KeyID: "k2"}})
	if e := c.refused(CodeInvalidArgument, job(incr, "far")); e.Hint == "" {
		t.Fatalf("refusal without a hint: %v", e)
	}
	// Nothing recorded by the refusals: only the two backups.
	if bs, _ := c.s.Backups(BackupFilter{Client: "web1"}); len(bs) != 2 {
		t.Fatalf("backups after the refusals: %+v", bs)
	}

	res := c.must(job(incr, ""))
	c.must(&Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: res.JobID, Node: "sn1"}})
	c.must(&Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: res.JobID, State: JobFailed, ErrorCode: "io", Error: "volume disk1-0001 is missing"}})
	if b, _ := c.s.Backup(res.JobID); b.State != BackupAborted {
		t.Fatalf("a failed synthetic full left %+v", b)
	}
	if at, _ := c.s.BackupAt("web1", c.clock); at.ID != incr {
		t.Fatalf("the latest point in time after a failed fold is backup %d, want %d", at.ID, incr)
	}
}
