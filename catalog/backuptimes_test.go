package catalog

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/bbolt"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/retention"
)

var historyClients = []string{"db1", "mail1", "web1"}

// history runs days of nightly backups of every client of historyClients
// (registered here but web1), through the commands a backup's life
// applies: a full every seventh night, a differential every third, an
// incremental otherwise, each on a volume of its own. One night's backup of
// mail1 is aborted, and db1's last one is left running.
func (c *testCatalog) history(days int) {
	c.t.Helper()
	for _, name := range historyClients[:2] {
		c.must(&Command{Op: OpRegisterClient, Client: &Client{Name: name}})
	}
	start := time.Date(2026, 1, 4, 21, 0, 0, 0, time.UTC)
	for d := range days {
		for i, name := range historyClients {
			c.clock = start.AddDate(0, 0, d).Add(time.Duration(i) * time.Minute)
			level := LevelIncremental
			switch {
			case d%7 == 0:
				level = LevelFull
			case d%3 == 0:
				level = LevelDifferential
			}
			res := c.must(&Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: name, Level: level, Pool: "disk1", Paths: fileindex.Paths([]string{"/srv"})}})
			c.must(&Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: res.JobID, Node: "sn1"}})
			c.must(&Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: res.JobID, State: JobRunning}})
			switch {
			case name == "mail1" && d == days/2:
				c.must(&Command{Op: OpAbortBackup, Abort: &BackupAbort{BackupID: res.JobID, Msg: "agent went away"}})
				continue
			case name == "db1" && d == days-1:
				continue
			}
			vol := c.volumeFor(res.JobID)
			c.must(&Command{Op: OpCommitBackup, Commit: &BackupCommit{BackupID: res.JobID, SessionID: uuid.New(),
				Parts: []Part{{VolumeID: vol, Part: 1, VolumeStart: DefaultBlockSize, End: 1 << 20, Final: true}}}})
		}
	}
}

// checkTimeIndex compares the index of backups by time and the counts of
// complete backups with what the backups themselves say.
func checkTimeIndex(t *testing.T, s *Store) {
	t.Helper()
	backups, err := s.Backups(BackupFilter{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	counts := map[string]uint64{}
	for i := range backups {
		b := &backups[i]
		want[string(backupTimeKey(b))] = string(backupTimeValue(b))
		if b.State == BackupComplete {
			counts[b.Client]++
		}
	}
	err = s.view(func(tx *bbolt.Tx) error {
		got := map[string]string{}
		if err := tx.Bucket(bBackupTimes).ForEach(func(k, v []byte) error {
			got[string(k)] = string(v)
			return nil
		}); err != nil {
			return err
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("index entry %x: %x, want %x", k, got[k], v)
			}
		}
		for k := range got {
			if _, ok := want[k]; !ok {
				t.Errorf("index entry %x names no backup", k)
			}
		}
		return tx.Bucket(bClientBackups).ForEach(func(k, v []byte) error {
			if n := getU64(tx.Bucket(bClientBackups), k); n != counts[string(k)] {
				t.Errorf("client %s: %d complete backups counted, %d there", k, n, counts[string(k)])
			}
			delete(counts, string(k))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	for c, n := range counts {
		t.Errorf("client %s: no count, %d complete backups", c, n)
	}
}

// TestTimeIndexAnswersAsTheBackupsDo: after backups that start, run (which
// moves their start), abort, complete and expire, the index says what the
// backups say, and every read that uses it answers as a reading of every
// backup does.
func TestTimeIndexAnswersAsTheBackupsDo(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	c.history(30)
	c.must(expire("expiry pass", 2, 3)) // some of the oldest
	checkTimeIndex(t, c.s)

	backups, err := c.s.Backups(BackupFilter{})
	if err != nil {
		t.Fatal(err)
	}
	fs := FileSetOf([]string{"/srv"}, nil)
	for _, name := range historyClients {
		var latest *Backup
		var complete int
		for i := range backups {
			b := &backups[i]
			if b.Client == name && b.State == BackupComplete {
				complete++
				if latest == nil || later(b.StartTime, b.ID, latest) {
					latest = b
				}
			}
		}
		got, err := c.s.LatestBackup(BackupQuery{Client: name, Paths: []string{"/srv/a"}})
		if err != nil || got.ID != latest.ID {
			t.Errorf("%s: latest backup %v, %v; want %d", name, got, err, latest.ID)
		}
		at, err := c.s.BackupAt(name, latest.StartTime.Add(-time.Second))
		if err != nil || !at.StartTime.Before(latest.StartTime) {
			t.Errorf("%s: backup before the latest: %v, %v", name, at, err)
		}
		sum, err := c.s.BackupSummary(name)
		if err != nil || sum.Complete != complete || !sum.Latest.Equal(latest.StartTime) {
			t.Errorf("%s: summary %+v, %v; want %d complete, latest %s", name, sum, err, complete, latest.StartTime)
		}
		// The chain: the newest complete full, and the newest complete
		// differential after it.
		var want struct{ full, diff time.Time }
		for i := range backups {
			b := &backups[i]
			if b.Client == name && b.State == BackupComplete && b.Level == LevelFull && b.StartTime.After(want.full) {
				want.full = b.StartTime
			}
		}
		for i := range backups {
			b := &backups[i]
			if b.Client == name && b.State == BackupComplete && b.Level == LevelDifferential && b.StartTime.After(want.full) && b.StartTime.After(want.diff) {
				want.diff = b.StartTime
			}
		}
		ch, err := c.s.ChainOf(name, fs, []string{"disk1"})
		if err != nil || !ch.LastFull.Equal(want.full) || !ch.LastDifferential.Equal(want.diff) {
			t.Errorf("%s: chain %+v, %v; want full %s, differential %s", name, ch, err, want.full, want.diff)
		}
		if ch, _ := c.s.ChainOf(name, fs, []string{"other"}); !ch.LastFull.IsZero() {
			t.Errorf("%s: a chain in a pool it is not in: %+v", name, ch)
		}
	}
}

// TestFormat5CatalogGetsTheTimeIndex: a catalog of format 5 is read as it
// is when opened read-only (a read that needs the index says so), and
// opened for writing gets the index and counts of its backups.
func TestFormat5CatalogGetsTheTimeIndex(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	c.history(10)
	fs := FileSetOf([]string{"/srv"}, nil)
	before, err := c.s.ChainOf("mail1", fs, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := c.s.Path()
	err = c.s.db.Update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bBackupTimes, bClientBackups} {
			if err := tx.DeleteBucket(b); err != nil {
				return err
			}
		}
		return tx.Bucket(bMeta).Put(keyFormat, u64(5))
	})
	if err != nil {
		t.Fatal(err)
	}
	c.s.Close()

	ro, err := OpenReadOnly(path)
	if err != nil {
		t.Fatalf("read-only open of format 5: %v", err)
	}
	if _, err := ro.ChainOf("mail1", fs, nil); !errors.Is(err, ErrNoTimeIndex) {
		t.Errorf("chain of a format 5 catalog read as is: %v, want ErrNoTimeIndex", err)
	}
	if bs, err := ro.Backups(BackupFilter{Client: "mail1"}); err != nil || len(bs) != 10 {
		t.Errorf("backups of a format 5 catalog: %d, %v", len(bs), err)
	}
	ro.Close()

	s, err := Open(filepath.Clean(path))
	if err != nil {
		t.Fatal(err)
	}
	c.s = s
	checkTimeIndex(t, s)
	if after, err := s.ChainOf("mail1", fs, nil); err != nil || after != before {
		t.Fatalf("chain after the upgrade %+v, %v; before %+v", after, err, before)
	}
	var f uint64
	s.view(func(tx *bbolt.Tx) error { f = getU64(tx.Bucket(bMeta), keyFormat); return nil })
	if f != storeFormat {
		t.Fatalf("format %d after the upgrade, want %d", f, storeFormat)
	}
}

// keep3 is the retention of the expiry tests below: three days.
func keep3(string, string) (*retention.Policy, bool) {
	return &retention.Policy{Rules: retention.Rules{Daily: 3}}, true
}

// expiryOutcome is what a pass left: the backups there are, and the
// history's backups and reasons.
func expiryOutcome(t *testing.T, s *Store) string {
	t.Helper()
	checkTimeIndex(t, s)
	backups, err := s.Backups(BackupFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for _, b := range backups {
		fmt.Fprintf(&out, "backup %d %s %s parent %d\n", b.ID, b.Client, b.State, b.Parent)
		if b.Parent != 0 {
			if _, err := s.Backup(b.Parent); err != nil {
				t.Errorf("backup %d stays, the backup %d it builds on went: %v", b.ID, b.Parent, err)
			}
		}
	}
	hist, err := s.Expiries(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(hist, func(x, y Expiry) int { return int(x.Backup) - int(y.Backup) })
	for _, e := range hist {
		fmt.Fprintf(&out, "expired %d %s: %s\n", e.Backup, e.Client, e.Reason)
	}
	return out.String()
}

// passInChunks runs an expiry pass as the server does, limit decisions
// planned at a time, n backups to a command; stop, when set, ends it
// after that many commands (a leader that lost its leadership).
func passInChunks(c *testCatalog, limit, n, stop int) int {
	c.t.Helper()
	commands := 0
	for after := ""; ; {
		plan, next, err := c.s.PlanExpiryFrom(after, limit, keep3, true)
		if err != nil {
			c.t.Fatal(err)
		}
		for _, e := range plan.Batches(n, "expiry pass") {
			if stop > 0 && commands == stop {
				return commands
			}
			c.must(&Command{Op: OpExpireBackups, Expire: e})
			commands++
		}
		if next == "" {
			return commands
		}
		after = next
	}
}

// TestExpiryInChunksIsOnePass: a pass planned a few clients at a time and
// applied a few backups to a command leaves the catalog as one plan in one
// command does.
func TestExpiryInChunksIsOnePass(t *testing.T) {
	var outcomes []string
	for _, size := range []struct{ limit, n int }{{0, 100_000}, {1, 3}, {5, 1}} {
		c := newTestCatalog(t)
		c.setup()
		c.history(21)
		c.must(&Command{Op: OpHold, Hold: &Hold{Backup: 8, Reason: "audit"}})
		commands := passInChunks(c, size.limit, size.n, 0)
		if size.limit == 0 && commands != 1 {
			t.Fatalf("the whole pass took %d commands", commands)
		}
		if size.limit != 0 && commands < 10 {
			t.Fatalf("a pass in chunks of %d, %d to a command, took %d commands", size.limit, size.n, commands)
		}
		outcomes = append(outcomes, expiryOutcome(t, c.s))
	}
	if !bytes.Contains([]byte(outcomes[0]), []byte("expired ")) {
		t.Fatalf("the pass expired nothing:\n%s", outcomes[0])
	}
	for i, o := range outcomes[1:] {
		if o != outcomes[0] {
			t.Errorf("pass %d differs from the pass in one command:\n%s\nwant\n%s", i+1, o, outcomes[0])
		}
	}
}

// TestExpiryAcrossALeaderChange: a leader that stops between two commands
// of its pass leaves a consistent catalog; the next leader's pass, from
// the catalog as it is then, finishes it, and the old leader's commands
// that still arrive later change nothing: the result is that of one pass.
func TestExpiryAcrossALeaderChange(t *testing.T) {
	one := newTestCatalog(t)
	one.setup()
	one.history(21)
	passInChunks(one, 0, 100_000, 0)
	want := expiryOutcome(t, one.s)

	c := newTestCatalog(t)
	c.setup()
	c.history(21)
	// The old leader's plan, made before it stopped.
	stale, _, err := c.s.PlanExpiryFrom("", 0, keep3, true)
	if err != nil {
		t.Fatal(err)
	}
	batches := stale.Batches(4, "expiry pass")
	if len(batches) < 4 {
		t.Fatalf("%d batches", len(batches))
	}
	for _, e := range batches[:2] {
		c.must(&Command{Op: OpExpireBackups, Expire: e})
	}
	expiryOutcome(t, c.s) // consistent between two commands
	passInChunks(c, 2, 4, 0)
	for _, e := range batches[2:] {
		if res := c.must(&Command{Op: OpExpireBackups, Expire: e}); len(res.Expired) != 0 {
			t.Fatalf("the old leader's late command expired %v", res.Expired)
		}
	}
	if got := expiryOutcome(t, c.s); got != want {
		t.Fatalf("after a leader change:\n%s\nwant\n%s", got, want)
	}
}
