package agent

import (
	"encoding/binary"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/volume"
)

// fuzzFrames encodes frames for FuzzRestoreFrames: a type byte and a
// 3-byte length before each payload.
func fuzzFrames(frames ...[]byte) []byte {
	var out []byte
	for _, f := range frames {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(f)-1))
		out = append(append(append(out, f[0]), n[1:]...), f[1:]...)
	}
	return out
}

func jsonFrame(t byte, v any) []byte {
	b, _ := json.Marshal(v)
	return append([]byte{t}, b...)
}

// framesSeed is a restore stream of two reads as a storage node sends it:
// the first restores a directory (an ancestor) and a file, the second names
// its only entry lost.
func framesSeed() [][]byte {
	content := []byte("hello")
	s := headerRecord(fileindex.Entry{Path: "/srv", Type: fileindex.TypeDir, Mode: 0o755})
	s = volume.AppendFileEnd(s, 0, nil)
	s = append(s, headerRecord(fileindex.Entry{Path: "/srv/a", Type: fileindex.TypeFile, Mode: 0o640, Size: int64(len(content))})...)
	s = volume.AppendDataRecord(s, 0, content)
	s = volume.AppendFileEnd(s, 0, nil)
	sess := uuid.MustParse("6f1c1a5e-0000-4000-8000-000000000001")
	return [][]byte{
		jsonFrame(dataplane.FrameReadStart, dataplane.ReadStart{SessionID: sess, Entries: []dataplane.ReadEntry{{Path: "/srv", Ancestor: true}, {Path: "/srv/a"}}}),
		append([]byte{dataplane.FrameRecords}, s...),
		jsonFrame(dataplane.FrameReadDone, dataplane.ReadDone{SessionID: sess, Entries: 2, Asked: 2}),
		jsonFrame(dataplane.FrameReadStart, dataplane.ReadStart{SessionID: sess, Entries: []dataplane.ReadEntry{{Path: "/srv/b"}}}),
		jsonFrame(dataplane.FrameDamaged, dataplane.Damaged{SessionID: sess, Seq: 3, Reason: "bad block", Paths: []fileindex.Path{"/srv/b"}}),
		jsonFrame(dataplane.FrameReadDone, dataplane.ReadDone{SessionID: sess, Asked: 1, Lost: 1}),
		jsonFrame(dataplane.FrameEnd, dataplane.RestoreEnd{Reads: 2, Entries: 3}),
	}
}

// FuzzRestoreFrames feeds arbitrary frames to the agent's side of a restore
// stream, the frames a storage node sends: a malformed or out-of-order
// frame ends the restore with an error, never a panic; every entry a read
// named is, once its ReadDone came, restored or named lost; and End is
// taken only when the node's count of the plan is what came.
func FuzzRestoreFrames(f *testing.F) {
	seed := framesSeed()
	f.Add(fuzzFrames(seed...))
	f.Add(fuzzFrames(seed[:3]...))
	f.Add(fuzzFrames(append(seed[:1], seed[2:]...)...))                                                                     // records left out
	f.Add(fuzzFrames(seed[0], seed[1], seed[2], jsonFrame(dataplane.FrameEnd, dataplane.RestoreEnd{Reads: 1, Entries: 9}))) // a count that differs
	f.Add(fuzzFrames(seed[1]))                                                                                              // records outside a read
	f.Add(fuzzFrames(jsonFrame(dataplane.FrameError, map[string]string{"code": "io_error", "message": "x"})))
	sandbox := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		root := filepath.Join(sandbox, "target")
		defer func() {
			unlock(root)
			if err := os.RemoveAll(root); err != nil {
				t.Fatal(err)
			}
		}()
		came := map[string]bool{}
		r, err := NewRestorer(RestoreOptions{Root: root, OnEntry: func(p string) { came[p] = true }})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Finish()
		run := &restoreRun{}
		st := &restoreFrames{log: slog.New(slog.DiscardHandler), r: r, run: run}
		for len(data) >= 4 {
			typ, n := data[0], int(data[1])<<16|int(data[2])<<8|int(data[3])
			data = data[4:]
			if n > len(data) {
				return
			}
			p := data[:n]
			data = data[n:]
			if typ == dataplane.FrameRecords && claimsHugeFile(p) {
				return // hashing a terabyte of hole takes minutes by design (FuzzRestoreStream)
			}
			cur := st.cur
			done, err := st.frame(typ, p)
			if err != nil {
				return
			}
			if typ == dataplane.FrameReadDone {
				for _, e := range cur.Entries {
					if _, lost := r.damaged[string(e.Path)]; !lost && !came[string(e.Path)] {
						t.Fatalf("entry %q of a read done was neither restored nor named lost", e.Path)
					}
				}
			}
			if done {
				if st.cur != nil || int64(st.reads) < 0 || run.want != nil {
					t.Fatalf("the stream ended inside a read")
				}
				return
			}
		}
	})
}
