package agent

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/volume"
)

// checkedFile is the records of a regular file whose FileEnd carries the
// SHA-256 of its content, in Data records of at most volume.MaxDataBody.
func checkedFile(path string, content []byte) []byte {
	b := volume.AppendRecord(nil, volume.RecFileHeader, fileindex.AppendEntry(nil, &fileindex.Entry{Path: path, Type: fileindex.TypeFile, Mode: 0o644, Size: int64(len(content))}))
	for off := 0; off < len(content); off += volume.MaxDataBody {
		b = volume.AppendDataRecord(b, int64(off), content[off:min(off+volume.MaxDataBody, len(content))])
	}
	sum := sha256.Sum256(content)
	return volume.AppendFileEnd(b, volume.EndOK, sum[:])
}

func dirRecords(path string) []byte {
	b := volume.AppendRecord(nil, volume.RecFileHeader, fileindex.AppendEntry(nil, &fileindex.Entry{Path: path, Type: fileindex.TypeDir, Mode: 0o755}))
	return volume.AppendFileEnd(b, volume.EndOK, nil)
}

// The workers that write files leave the target as a restore that applied
// the stream in order would, also where one entry depends on another that
// a worker may still be writing: a path that comes twice (the last wins),
// a directory in place of a file, an entry below a file. Each large file
// comes first, so its worker is still writing it when the next entry
// arrives, in the same batch.
func TestRestoreWorkersKeepTheStreamsOrder(t *testing.T) {
	big := func(b byte) []byte { return bytes.Repeat([]byte{b}, 8<<20) }
	var stream []byte
	stream = append(stream, checkedFile("/twice", big('a'))...)
	stream = append(stream, checkedFile("/twice", []byte("second\n"))...)
	stream = append(stream, checkedFile("/becomes-dir", big('b'))...)
	stream = append(stream, dirRecords("/becomes-dir")...)
	stream = append(stream, checkedFile("/becomes-dir/in", []byte("inside\n"))...)
	stream = append(stream, checkedFile("/file", big('c'))...)
	stream = append(stream, checkedFile("/file/below", []byte("below a file\n"))...)
	want := map[string][]byte{"/twice": []byte("second\n"), "/becomes-dir/in": []byte("inside\n"), "/file": big('c')}
	for i := range 300 {
		p := fmt.Sprintf("/many/%03d", i)
		want[p] = bytes.Repeat([]byte{byte(i)}, 1+i*997)
		stream = append(stream, checkedFile(p, want[p])...)
	}
	dst := filepath.Join(t.TempDir(), "r")
	st := restoreStream(t, stream, RestoreOptions{Root: dst})
	for p, content := range want {
		got, err := os.ReadFile(dst + p)
		if err != nil || !bytes.Equal(got, content) {
			t.Errorf("%s: %d bytes, want %d (%v)", p, len(got), len(content), err)
		}
	}
	if fi, err := os.Stat(dst + "/becomes-dir"); err != nil || !fi.IsDir() {
		t.Errorf("/becomes-dir is not the directory that came last: %v", err)
	}
	if st.Files != 305 || st.Refused != 1 || st.DamagedCount != 0 {
		t.Fatalf("stats %+v, want 305 files (/twice and /becomes-dir placed and replaced) and /file/below refused", st)
	}
	if len(st.Warnings) != 1 || st.Warnings[0].Path != "/file/below" {
		t.Fatalf("warnings %+v", st.Warnings)
	}
	names, _ := os.ReadDir(dst)
	for _, n := range names {
		if n.Name()[0] == '.' {
			t.Errorf("a temporary file is left: %s", n.Name())
		}
	}
}

// Waiting for the workers (settle) in the middle of a file a worker has
// leaves that file with it, its digest so far included: the stream's
// goroutine settles whenever an entry may depend on a file still being
// written, and a Damaged report between two records can make it do so.
func TestSettlingKeepsTheFileUnderWay(t *testing.T) {
	content := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB, four Data records
	recs := checkedFile("/f", content)
	dst := filepath.Join(t.TempDir(), "r")
	r, err := NewRestorer(RestoreOptions{Root: dst})
	mustDo(t, err)
	n := 0
	for len(recs) > 0 {
		typ, body, k, err := volume.ParseRestoreRecord(recs)
		mustDo(t, err)
		mustDo(t, r.Record(typ, body))
		if n++; n == 3 { // the header and two Data records
			r.wk.settle()
			if !r.wk.inflight["/f"] {
				t.Fatal("after settling, the file under way is no longer known to be with a worker")
			}
		}
		recs = recs[k:]
	}
	st, err := r.Finish()
	mustDo(t, err)
	if st.Files != 1 || st.DamagedCount != 0 {
		t.Fatalf("stats %+v", st)
	}
	if got, err := os.ReadFile(dst + "/f"); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("restored %d bytes, %v", len(got), err)
	}
}

// Frames lent to the restorer (RecordsLent) come back once each, and only
// once no worker reads them any more: here each is scribbled over as it
// comes back, so a worker that wrote or hashed from one after that would
// leave a file that differs or is named lost.
func TestLentFramesComeBackOnceNoWorkerReadsThem(t *testing.T) {
	want := map[string][]byte{}
	var stream []byte
	for i := range 200 {
		p := fmt.Sprintf("/lent/%03d", i)
		want[p] = bytes.Repeat([]byte{byte(i)}, 1+i*3001%(600<<10))
		stream = append(stream, checkedFile(p, want[p])...)
	}
	dst := filepath.Join(t.TempDir(), "r")
	r, err := NewRestorer(RestoreOptions{Root: dst})
	mustDo(t, err)
	var mu sync.Mutex
	back := map[*byte]int{}
	lent := 0
	giveBack := func(b []byte) {
		for i := range b {
			b[i] = 0xff
		}
		mu.Lock()
		back[&b[0]]++
		mu.Unlock()
	}
	// Frames of whole records, about 256 KiB each, as a node batches them.
	for len(stream) > 0 {
		n := 0
		for n < len(stream) && n < 256<<10 {
			_, _, k, err := volume.ParseRestoreRecord(stream[n:])
			mustDo(t, err)
			n += k
		}
		frame := bytes.Clone(stream[:n])
		stream = stream[n:]
		lent++
		mustDo(t, r.RecordsLent(frame, giveBack))
	}
	st, err := r.Finish()
	mustDo(t, err)
	if st.Files != 200 || st.DamagedCount != 0 {
		t.Fatalf("stats %+v", st)
	}
	for p, content := range want {
		if got, err := os.ReadFile(dst + p); err != nil || !bytes.Equal(got, content) {
			t.Fatalf("%s: %d bytes, want %d (%v)", p, len(got), len(content), err)
		}
	}
	if len(back) != lent {
		t.Fatalf("%d of %d lent frames came back", len(back), lent)
	}
	for _, n := range back {
		if n != 1 {
			t.Fatalf("a lent frame came back %d times", n)
		}
	}
}
