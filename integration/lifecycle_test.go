package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/poll"

	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/wire"
)

// TestBackupChangeRestore is the life of a client's backups: a full, a day
// of changes, an incremental, then both points in time restored (by backup
// id and by time), one file and one subtree restored alone, every restore
// checked against a snapshot of the tree as it was. The catalog commands
// and every role's metrics report what happened.
func TestBackupChangeRestore(t *testing.T) {
	s := newStack(t, stackOpts{})
	src := makeTree(t, smallSpec(1))
	snapFull := snapshot(t, src)

	full := s.backup("full", src)
	if full.Level != "full" || full.Files == 0 || full.Bytes == 0 || len(full.Volumes) == 0 {
		t.Fatalf("full backup job: %+v", full)
	}
	// A time between the two backups, for --at. The clock is the one the
	// server stamps backups with: all processes run on this machine.
	between := time.Now()
	poll.Until(t, 5*time.Second, func() error {
		if !time.Now().After(between) {
			return fmt.Errorf("clock has not moved")
		}
		return nil
	})
	if err := sample.Change(src, 2); err != nil {
		t.Fatal(err)
	}
	snapIncr := snapshot(t, src)
	incr := s.backup("incremental", src)
	if incr.Level != "incremental" || incr.Files == 0 || incr.Files >= full.Files {
		t.Fatalf("incremental backup job should hold only the changed files (%d), the full held %d: %+v", incr.Files, full.Files, incr)
	}

	// backup list: both complete, the incremental based on the full.
	var backups []wire.BackupInfo
	s.json(&backups, "backup", "list", "--client", s.client)
	byID := map[uint64]wire.BackupInfo{}
	for _, b := range backups {
		byID[b.ID] = b
	}
	if b := byID[full.BackupID]; b.State != "complete" || b.Level != "full" {
		t.Errorf("full backup in the list: %+v", b)
	}
	if b := byID[incr.BackupID]; b.State != "complete" || b.Level != "incremental" || b.Parent != full.BackupID {
		t.Errorf("incremental backup in the list: %+v (want parent %d)", b, full.BackupID)
	}

	// Both points in time, by id and by time.
	dir := t.TempDir()
	r1 := s.restore(filepath.Join(dir, "full-by-id"), "--backup", strconv.FormatUint(full.BackupID, 10))
	checkRestored(t, snapFull, filepath.Join(dir, "full-by-id"), src)
	s.restore(filepath.Join(dir, "full-by-time"), "--at", between.Format(time.RFC3339Nano))
	checkRestored(t, snapFull, filepath.Join(dir, "full-by-time"), src)
	s.restore(filepath.Join(dir, "incr-by-id"), "--backup", strconv.FormatUint(incr.BackupID, 10))
	checkRestored(t, snapIncr, filepath.Join(dir, "incr-by-id"), src)
	s.restore(filepath.Join(dir, "latest"))
	checkRestored(t, snapIncr, filepath.Join(dir, "latest"), src)

	// One file of the full backup alone: only it comes back.
	one := filepath.Join(src, "deep", "a", "b", "c", "d", "e", "f", "g", "bottom.txt")
	oneTo := filepath.Join(dir, "one")
	s.restore(oneTo, "--backup", strconv.FormatUint(full.BackupID, 10), one)
	if got, err := os.ReadFile(filepath.Join(oneTo, one)); err != nil || string(got) != "the bottom of a deep tree\n" {
		t.Errorf("single-file restore brought back %q, %v", got, err)
	}
	var files []string
	filepath.Walk(oneTo, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != 1 {
		t.Errorf("single-file restore wrote %d files, want 1: %v", len(files), files)
	}
	// A subtree of the incremental, as it was then.
	subTo := filepath.Join(dir, "subtree")
	s.restore(subTo, filepath.Join(src, "logs"))
	checkRestored(t, snapIncr.Sub("logs"), subTo, filepath.Join(src, "logs"))
	if _, err := os.Stat(filepath.Join(subTo, src, "data")); !os.IsNotExist(err) {
		t.Errorf("a subtree restore of logs/ also restored data/ (%v)", err)
	}

	// cairn ls: the entries of a directory with their sizes and times.
	var ls struct {
		Backup  wire.BackupInfo  `json:"backup"`
		Entries []wire.EntryInfo `json:"entries"`
	}
	s.json(&ls, "ls", "--client", s.client, "--backup", strconv.FormatUint(full.BackupID, 10), filepath.Join(src, "data"))
	if ls.Backup.ID != full.BackupID || len(ls.Entries) == 0 {
		t.Fatalf("ls of the full backup: %+v", ls)
	}
	for _, e := range ls.Entries {
		rel, _ := filepath.Rel(src, string(e.Path))
		it, ok := snapFull.Items[rel]
		if !ok {
			t.Errorf("ls lists %s, which the tree did not hold", e.Path)
			continue
		}
		if it.Type == "file" && e.Size != it.Size {
			t.Errorf("ls: %s has size %d, the file had %d", e.Path, e.Size, it.Size)
		}
		if e.MTime.UnixNano() != it.MTime {
			t.Errorf("ls: %s modified %s, the file was %s", e.Path, e.MTime, time.Unix(0, it.MTime))
		}
	}
	human := s.ok("ls", "--client", s.client, filepath.Join(src, "data"))
	big := snapIncr.Items["data/big.bin"]
	for _, w := range []string{"SIZE", "MODIFIED", "big.bin", "4.0 MiB", time.Unix(0, big.MTime).Local().Format("2006-01-02 15:04:05")} {
		if !strings.Contains(human.stdout, w) {
			t.Errorf("cairn ls should show %q:\n%s", w, human.stdout)
		}
	}
	// In the incremental, the files deleted by the change are gone.
	s.json(&ls, "ls", "--client", s.client, "-R", src)
	for _, e := range ls.Entries {
		if strings.Contains(string(e.Path), "/data/set-3/") {
			t.Errorf("ls of the latest backup lists %s, deleted before it", e.Path)
		}
	}

	// job list and job show report what happened.
	var jobs []wire.JobInfo
	s.json(&jobs, "job", "list", "--client", s.client)
	if len(jobs) != 8 {
		t.Errorf("job list: %d jobs, want 2 backups and 6 restores", len(jobs))
	}
	for _, j := range jobs {
		if j.State != "success" {
			t.Errorf("job %d (%s) ended %s: %s", j.ID, j.Type, j.State, j.Error)
		}
	}
	shown := s.job(full.ID)
	if shown.Type != "backup" || shown.Level != "full" || shown.State != "success" || shown.Files != full.Files ||
		shown.Bytes != full.Bytes || shown.StoredBytes == 0 || len(shown.Log) == 0 || shown.Ended.IsZero() {
		t.Errorf("job show of the full backup: %+v", shown)
	}
	if shown := s.job(r1.ID); shown.Type != "restore" || shown.BackupID != full.BackupID || shown.Files != distinctFiles(snapFull) || shown.Files != full.Files {
		t.Errorf("job show of the restore of the full backup: want %d files from backup %d: %+v", distinctFiles(snapFull), full.BackupID, shown)
	}

	// client, pool and volume lists.
	var clients []wire.ClientInfo
	s.json(&clients, "client", "list")
	if len(clients) != 1 || clients[0].Name != s.client || !clients[0].Online || clients[0].Backups != 2 {
		t.Errorf("client list: %+v", clients)
	}
	if r := s.ok("client", "list"); !strings.Contains(r.stdout, s.client) || !strings.Contains(r.stdout, "online") {
		t.Errorf("client list table:\n%s", r.stdout)
	}
	var pools []wire.PoolInfo
	s.json(&pools, "pool", "list")
	if len(pools) != 1 || pools[0].Name != s.pool || len(pools[0].Nodes) != 1 || pools[0].Nodes[0].Name != s.node || !pools[0].Nodes[0].Online ||
		pools[0].Volumes != 1 || pools[0].UsedBytes == 0 || pools[0].FreeBytes == 0 || pools[0].Nodes[0].Dir != s.poolDir {
		t.Errorf("pool list: %+v", pools)
	}
	vols := s.volumes()
	if len(vols) != 1 || vols[0].Sessions != 2 || vols[0].Pool != s.pool {
		t.Fatalf("volume list: %+v", vols)
	}
	if st, err := os.Stat(vols[0].Path); err != nil || st.Size() < vols[0].Bytes {
		t.Errorf("volume %s: file %s: %v (catalog has %d bytes)", vols[0].Name, vols[0].Path, err, vols[0].Bytes)
	}
	if r := s.ok("volume", "list"); !strings.Contains(r.stdout, vols[0].Name) {
		t.Errorf("volume list table:\n%s", r.stdout)
	}

	// Each role's /metrics serves its cairn_* metrics.
	for role, want := range map[string][]string{
		"server":      {`cairn_jobs_total{client="web01",state="success",type="backup"} 2`, `cairn_jobs_total{client="web01",state="success",type="restore"} 6`, `cairn_raft_state{state="Leader"} 1`},
		"storagenode": {`cairn_node_streams_total{op="backup",outcome="success"} 2`, `cairn_node_streams_total{op="restore",outcome="success"} 6`},
		"agent":       {`cairn_agent_jobs_total{outcome="success",type="backup"} 2`, `cairn_agent_jobs_total{outcome="success",type="restore"} 6`},
	} {
		text, err := s.metricsText(role)
		if err != nil {
			t.Errorf("metrics of %s: %v", role, err)
			continue
		}
		for _, w := range want {
			if !strings.Contains(text, w) {
				t.Errorf("metrics of %s lack %s:\n%s", role, w, grepLines(text, "cairn_"))
			}
		}
	}
}

// distinctFiles counts regular files, a hard-link group once.
func distinctFiles(m *sample.Manifest) int64 {
	var n int64
	for p, it := range m.Items {
		if it.Type == "file" && (it.Link == "" || it.Link == p) {
			n++
		}
	}
	return n
}

// grepLines returns the lines of s that start with prefix.
func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
