package assemble

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairnbackup/cairn/fileindex"
)

// TestBlockGoesWhereItBelongs: a block whose bytes the file holds twice is
// written at both offsets, record by record, from its offsets in the
// version that stored it; a record past its end or before its start is
// counted and not written; the digest of the file covers a hole at its
// end as zeros. On a file open by descriptor (the agent's) and an
// *os.File (the storage node's).
func TestBlockGoesWhereItBelongs(t *testing.T) {
	open := map[string]func(f *os.File) interface {
		WriteAt([]byte, int64) (int, error)
		ReadAt([]byte, int64) (int, error)
	}{
		"fd": func(f *os.File) interface {
			WriteAt([]byte, int64) (int, error)
			ReadAt([]byte, int64) (int, error)
		} {
			return FD(f.Fd())
		},
		"file": func(f *os.File) interface {
			WriteAt([]byte, int64) (int, error)
			ReadAt([]byte, int64) (int, error)
		} {
			return f
		},
	}
	for name, wrap := range open {
		t.Run(name, func(t *testing.T) {
			f, err := os.Create(filepath.Join(t.TempDir(), "f"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			w := wrap(f)
			b := NewBlock([]int64{0, 8}, 4)
			// The block lay at offset 100 of its version, in two records.
			for _, r := range []struct {
				off  int64
				data string
			}{{100, "ab"}, {102, "cd"}} {
				n, err := b.Write(w, r.off, []byte(r.data))
				if err != nil || n != 4 {
					t.Fatalf("record at %d: wrote %d, %v", r.off, n, err)
				}
			}
			if !b.Done() || b.Left() != 0 {
				t.Fatalf("left %d after the whole block", b.Left())
			}
			if _, err := w.WriteAt([]byte("efgh"), 4); err != nil {
				t.Fatal(err)
			}
			want := append([]byte("abcdefghabcd"), 0, 0, 0, 0)
			sum, err := HashFile(w, int64(len(want)))
			if h := sha256.Sum256(want); err != nil || !bytes.Equal(sum, h[:]) {
				t.Fatalf("digest %x (%v), want %x: the hole at the end is zeros", sum, err, h)
			}
			got := make([]byte, 12)
			if _, err := w.ReadAt(got, 0); err != nil || string(got) != "abcdefghabcd" {
				t.Fatalf("file %q (%v)", got, err)
			}

			over := NewBlock([]int64{0}, 4)
			if _, err := over.Write(w, 10, []byte("xyz")); err != nil {
				t.Fatal(err)
			}
			if n, err := over.Write(w, 13, []byte("xy")); !errors.Is(err, ErrOverrun) || n != 0 {
				t.Fatalf("a record past the block's end: wrote %d, %v", n, err)
			}
			back := NewBlock([]int64{0}, 4)
			_, _ = back.Write(nil, 10, []byte("x"))
			if _, err := back.Write(w, 9, []byte("x")); !errors.Is(err, ErrOverrun) {
				t.Fatalf("a record before the block's start: %v", err)
			}
			if back.Done() {
				t.Fatal("a block with bytes missing is done")
			}
		})
	}
}

type readWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

func TestKeptCountsOtherSessions(t *testing.T) {
	bl := &fileindex.BlockList{Sessions: [][16]byte{{1}}, Blocks: []fileindex.Block{
		{Session: 1, Loc: fileindex.Location{Len: 4}}, {Loc: fileindex.Location{Len: 5}}, {Session: 1, Loc: fileindex.Location{Len: 4}},
	}}
	if n := Kept(bl); n != 8 {
		t.Fatalf("kept %d bytes, want 8", n)
	}
}
