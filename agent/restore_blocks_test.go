package agent

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cairnbackup/cairn/assemble/assembletest"
	"github.com/cairnbackup/cairn/media/volume"
)

// TestRestoreAssemblesBlocks: a large file whose version kept a block of
// an earlier session (twice) is assembled whichever comes first, that
// block's read or the entry's, and checked against its digest: a block
// that does not come, or comes wrong, loses the file, named.
func TestRestoreAssemblesBlocks(t *testing.T) {
	f := assembletest.Sample()
	want := f.Content
	block := func(data string) []byte {
		b := volume.AppendBlockStart(nil, &volume.BlockStart{Path: f.Entry.Path, Len: uint64(len(f.Kept)), At: f.At})
		return append(b, f.BlockData([]byte(data))...)
	}
	entry := f.EntryRecords()
	for _, c := range []struct {
		name    string
		frames  [][]byte
		damaged bool
	}{
		{"block first", [][]byte{block("abcd"), entry}, false},
		{"entry first", [][]byte{entry, block("abcd")}, false},
		{"block missing", [][]byte{entry}, true},
		{"block wrong", [][]byte{block("abcX"), entry}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "to")
			r, err := NewRestorer(RestoreOptions{Root: root})
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range c.frames {
				if err := r.Records(f); err != nil {
					t.Fatal(err)
				}
			}
			st, err := r.Finish()
			if err != nil {
				t.Fatal(err)
			}
			got, rerr := os.ReadFile(filepath.Join(root, "db"))
			if c.damaged {
				if st.DamagedCount != 1 || rerr == nil {
					t.Fatalf("stats %+v; file read %v", st, rerr)
				}
				left, _ := os.ReadDir(root)
				if len(left) != 0 {
					t.Fatalf("left behind: %v", left)
				}
				return
			}
			if rerr != nil || string(got) != string(want) || st.Files != 1 || st.DamagedCount != 0 {
				t.Fatalf("restored %q (%v), stats %+v", got, rerr, st)
			}
			if fi, _ := os.Stat(filepath.Join(root, "db")); fi.Mode().Perm() != 0o640 {
				t.Fatalf("mode %v", fi.Mode())
			}
		})
	}
}
