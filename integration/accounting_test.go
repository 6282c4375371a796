package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/sample"
)

// TestRestoreAccountsForATruncatedVolume cuts a volume file short in the
// middle of a data block and restores through the servers: every entry
// whose blocks reach the cut is named lost (the one running into it and
// every one after it), the summary and the job say how many were restored
// and how many lost, the output lists a bounded number of them and the
// job log all, the exit code says the restore failed, and everything
// before the cut comes back byte for byte.
func TestRestoreAccountsForATruncatedVolume(t *testing.T) {
	s := newStack(t, stackOpts{})
	src := makeTree(t, sample.Spec{TextFiles: 150, RandomFiles: 60, MaxFileSize: 96 << 10, SparseSize: 8 << 20, Seed: 11})
	snap := snapshot(t, src)
	volPath, _, entries := s.backupOnOneVolume(src)

	// Cut in the middle of the middle data block.
	blocks := dataBlocks(t, volPath)
	cut := blocks[len(blocks)/2]
	lost := map[string]bool{}
	planned := 0
	for _, e := range entries {
		if e.Type == fileindex.TypeDeleted {
			continue
		}
		planned++
		if e.Loc.EndSeq >= cut.seq {
			lost[e.Path] = true
		}
	}
	for _, e := range entries {
		if e.Type == fileindex.TypeHardlink && lost[e.Target] {
			lost[e.Path] = true // a link to a lost file cannot be made
		}
	}
	if len(lost) <= maxLostShownInTest || len(lost) == planned {
		t.Fatalf("the cut in block %d of %d loses %d of %d entries: want more than %d and not all", cut.seq, len(blocks), len(lost), planned, maxLostShownInTest)
	}
	if err := os.Truncate(volPath, cut.off+volume.HeaderSize+cut.storedLen/2); err != nil {
		t.Fatal(err)
	}
	t.Logf("volume cut in data block %d of %d: %d of %d entries lie at or past the cut", cut.seq, len(blocks), len(lost), planned)

	to := filepath.Join(t.TempDir(), "restore")
	r := s.cairn("restore", "--client", s.client, "--to", to)
	checkFailure(t, r, 1, fmt.Sprintf("%d of %d entries could not be restored", len(lost), planned))
	summary := fmt.Sprintf("%d of %d entries restored, %d lost", planned-len(lost), planned, len(lost))
	if !strings.Contains(r.stdout, summary) || strings.Contains(r.output(), "every other entry was restored") {
		t.Errorf("want the summary to say %q:\n%s", summary, r)
	}
	// The output names a bounded number, and how many more there are.
	shown := strings.Count(r.stdout, "\n  lost: ")
	more := fmt.Sprintf("... and %d more lost entries", len(lost)-maxLostShownInTest)
	if shown != maxLostShownInTest || !strings.Contains(r.stdout, more) {
		t.Errorf("want %d lost entries named and %q, got %d:\n%s", maxLostShownInTest, more, shown, r.stdout)
	}

	// The job says the same to a script, and its log names every one.
	var jobs []struct {
		ID uint64 `json:"id"`
	}
	s.json(&jobs, "job", "list", "--state", "failed")
	if len(jobs) != 1 {
		t.Fatalf("failed jobs: %+v", jobs)
	}
	j := s.job(jobs[0].ID)
	if j.Entries != int64(planned) || j.Lost != int64(len(lost)) || j.Restored != int64(planned-len(lost)) || j.State != "failed" {
		t.Errorf("job: %d asked, %d restored, %d lost, %s; want %d, %d, %d, failed", j.Entries, j.Restored, j.Lost, j.State, planned, planned-len(lost), len(lost))
	}
	named := map[string]string{}
	for _, l := range j.Log {
		if path, reason, ok := strings.Cut(strings.TrimPrefix(l.Msg, "lost: "), ": "); ok && strings.HasPrefix(l.Msg, "lost: ") {
			// The log shows a path in its escaped form (a tab as \t).
			raw, err := fileindex.Unescape(path)
			if err != nil {
				t.Errorf("the job log's lost entry %q does not unescape: %v", path, err)
				continue
			}
			named[raw] = reason
		}
	}
	for p := range lost {
		reason, ok := named[p]
		switch {
		case !ok:
			t.Errorf("the job log does not name lost entry %s", p)
		case !strings.Contains(reason, "truncated"):
			t.Errorf("lost entry %s: the reason %q does not say the volume was cut short", p, reason)
		}
	}
	for p := range named {
		if !lost[p] {
			t.Errorf("the job log names %s lost; it lies before the cut", p)
		}
	}

	// Everything before the cut came back byte for byte.
	rest := withoutPaths(snap, src, lost)
	got := withoutPaths(snapshot(t, filepath.Join(to, src)), src, lost)
	for _, m := range []*struct{ items map[string]sample.Item }{{rest.Items}, {got.Items}} {
		for p, it := range m.items {
			it.Link = "" // a file whose other name was lost has one name now
			m.items[p] = it
		}
	}
	if diffs := sample.Compare(rest, got); len(diffs) > 0 {
		t.Errorf("entries before the cut differ after the restore:\n  %s", strings.Join(diffs, "\n  "))
	}
	var wrong []string
	for p := range lost {
		rel, _ := filepath.Rel(src, p)
		if st, err := os.Lstat(filepath.Join(to, p)); err == nil && st.Mode().IsRegular() && snap.Items[rel].Type == "file" {
			wrong = append(wrong, p)
		}
	}
	sort.Strings(wrong)
	if len(wrong) > 0 {
		t.Errorf("lost files are in the target all the same: %v", wrong)
	}
}

// maxLostShownInTest is the number of lost entries the summary of
// 'cairn restore' names.
const maxLostShownInTest = 20
