package catalog

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/fileindex"
)

// backupOfSet runs a whole backup of one file set (paths and excludes) to
// pool disk1, with command sources stored at sources, and returns it.
func (c *testCatalog) backupOfSet(level Level, paths, excludes []string, entries []fileindex.Entry, sources ...string) *Backup {
	c.t.Helper()
	var app Application
	for _, s := range sources {
		app.Sources = append(app.Sources, CommandSource{Path: fileindex.Path(s), Command: "pg_dump app"})
	}
	res := c.must(&Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: "web1", Level: level, Pool: "disk1",
		Paths: fileindex.Paths(paths), Excludes: fileindex.Paths(excludes), Application: app}})
	id := res.JobID
	c.must(&Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: id, Node: "sn1"}})
	c.commitSession(id, "disk1", entries)
	b, err := c.s.Backup(id)
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}

// Backups chain per file set, and the latest backup of a path is the
// latest of the file sets that hold it: after /srv is backed up, /etc's
// backup is still the one a browse or restore of /etc finds.
func TestLatestBackupPerFileSet(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	etc := []fileindex.Entry{dir("/etc"), file("/etc/hosts", 10), dir("/etc/ssl"), file("/etc/ssl/key.pem", 5)}
	srv := []fileindex.Entry{dir("/srv"), file("/srv/a", 1), dir("/srv/tmp"), file("/srv/tmp/x", 2)}

	// The first backup of each file set is a full, incremental asked or
	// not, and says why in the words of schedule.Promote.
	etcFull := c.backupOfSet(LevelIncremental, []string{"/etc"}, nil, etc)
	srvFull := c.backupOfSet(LevelIncremental, []string{"/srv"}, []string{"tmp/"}, srv)
	for _, b := range []*Backup{etcFull, srvFull} {
		j, err := c.s.Job(b.ID)
		if err != nil {
			t.Fatal(err)
		}
		if b.Level != LevelFull || b.Parent != 0 || len(j.Log) == 0 ||
			!strings.HasPrefix(j.Log[0].Msg, "promoted to full: no full of this fileset yet in pool disk1 (an incremental builds only on") ||
			!strings.Contains(j.Log[0].Msg, ShortFileSet(b.FileSet)+" ("+string(b.Paths[0])) {
			t.Fatalf("first incremental of %v: %s on %d, log %+v", b.Paths, b.Level, b.Parent, j.Log)
		}
	}
	// An incremental of /etc builds on /etc's full, not on the newer
	// backup of /srv; a full asked for says nothing of promotion.
	etcInc := c.backupOfSet(LevelIncremental, []string{"/etc"}, nil, etc[:2])
	if etcInc.Level != LevelIncremental || etcInc.Parent != etcFull.ID {
		t.Fatalf("incremental of /etc: %s on %d, want on %d", etcInc.Level, etcInc.Parent, etcFull.ID)
	}
	srvFull2 := c.backupOfSet(LevelFull, []string{"/srv"}, []string{"tmp/"}, srv)
	if j, _ := c.s.Job(srvFull2.ID); len(j.Log) != 0 {
		t.Fatalf("a full asked for logs %+v", j.Log)
	}

	latest := func(q BackupQuery) (uint64, error) {
		t.Helper()
		q.Client = "web1"
		b, err := c.s.LatestBackup(q)
		if err != nil {
			return 0, err
		}
		return b.ID, nil
	}
	for _, w := range []struct {
		q    BackupQuery
		want uint64
	}{
		{BackupQuery{}, srvFull2.ID},                                  // no path: the latest of any file set
		{BackupQuery{Paths: []string{"/"}}, srvFull2.ID},              // above every file set's paths
		{BackupQuery{Paths: []string{"/etc"}}, etcInc.ID},             // the latest of /etc's file set
		{BackupQuery{Paths: []string{"/etc/ssl/key.pem"}}, etcInc.ID}, // within it
		{BackupQuery{Paths: []string{"/srv/a"}}, srvFull2.ID},
		{BackupQuery{Paths: []string{"/etc/hosts"}, At: etcInc.StartTime.Add(-time.Second)}, etcFull.ID},
		{BackupQuery{Paths: []string{"/etc/hosts"}, At: srvFull2.StartTime}, etcInc.ID},
		{BackupQuery{FileSet: ShortFileSet(srvFull.FileSet)}, srvFull2.ID},
		{BackupQuery{FileSet: etcFull.FileSet, At: srvFull.StartTime}, etcFull.ID},
		{BackupQuery{FileSet: ShortFileSet(etcFull.FileSet), Paths: []string{"/etc/hosts"}}, etcInc.ID},
	} {
		if got, err := latest(w.q); err != nil || got != w.want {
			t.Errorf("LatestBackup(%+v) = %d, %v; want %d", w.q, got, err, w.want)
		}
	}

	// A path no file set holds, an excluded one, or one outside the file
	// set asked for: the error lists the client's file sets.
	for _, q := range []BackupQuery{
		{Paths: []string{"/home/alice"}},
		{Paths: []string{"/srv/tmp/x"}},
		{Paths: []string{"/etcetera"}},
		{Paths: []string{"/etc/hosts", "/srv/a"}},
		{FileSet: ShortFileSet(srvFull.FileSet), Paths: []string{"/etc/hosts"}},
		{FileSet: "ffffffff"},
		{Paths: []string{"/srv/a"}, At: srvFull.StartTime.Add(-time.Second)},
	} {
		_, err := latest(q)
		var ue *UncoveredError
		if !errors.As(err, &ue) || !errors.Is(err, ErrNotFound) {
			t.Errorf("LatestBackup(%+v) = %v, want an UncoveredError", q, err)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, "its file sets are ") || !strings.Contains(msg, ShortFileSet(etcFull.FileSet)+" (/etc)") {
			t.Errorf("LatestBackup(%+v): %q does not list /etc's file set", q, msg)
		}
		if q.At.IsZero() && !strings.Contains(msg, ShortFileSet(srvFull.FileSet)+" (/srv excluding tmp/)") {
			t.Errorf("LatestBackup(%+v): %q does not list /srv's file set", q, msg)
		}
		if q.FileSet == "ffffffff" && (!ue.UnknownFileSet || !strings.HasPrefix(msg, "client web1 has no file set ffffffff")) {
			t.Errorf("an unknown file set: %q", msg)
		}
	}
	// Before any backup there is nothing at all, which is not the same.
	if _, err := latest(BackupQuery{Paths: []string{"/etc"}, At: etcFull.StartTime.Add(-time.Second)}); !errors.Is(err, ErrNotFound) || errors.As(err, new(*UncoveredError)) {
		t.Errorf("before the first backup: %v", err)
	}
	// A command source's file is held by its backup, outside its paths.
	dump := c.backupOfSet(LevelFull, []string{"/var/lib/app"}, nil, []fileindex.Entry{dir("/db"), file("/db/app.sql", 9), dir("/var/lib/app")}, "/db/app.sql")
	for _, p := range []string{"/db/app.sql", "/db"} {
		if got, err := latest(BackupQuery{Paths: []string{p}}); err != nil || got != dump.ID {
			t.Errorf("LatestBackup of %s, a command source's file: %d, %v; want %d", p, got, err, dump.ID)
		}
	}
	if got, err := latest(BackupQuery{Paths: []string{"/etc/hosts"}}); err != nil || got != etcInc.ID {
		t.Errorf("LatestBackup of /etc/hosts after a backup with a command source: %d, %v", got, err)
	}

	sets, err := c.s.FileSets("web1")
	if err != nil || len(sets) != 3 || sets[0].ID != dump.FileSet || sets[1].ID != srvFull.FileSet || sets[1].Latest != srvFull2.ID || sets[1].Backups != 2 ||
		sets[2].ID != etcFull.FileSet || sets[2].Latest != etcInc.ID || sets[2].Backups != 2 {
		t.Fatalf("file sets %+v, %v", sets, err)
	}
}
