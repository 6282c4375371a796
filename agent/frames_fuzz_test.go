package agent

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/wire"
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

// packedStarts is frames with each ReadStart packed, as a storage node
// sends them to an agent that asks for the packed form.
func packedStarts(t testing.TB, frames [][]byte) [][]byte {
	out := make([][]byte, len(frames))
	for i, f := range frames {
		out[i] = f
		if f[0] == dataplane.FrameReadStart {
			var rs dataplane.ReadStart
			if err := json.Unmarshal(f[1:], &rs); err != nil {
				t.Fatal(err)
			}
			out[i] = append([]byte{dataplane.FrameReadStartPacked}, dataplane.PackReadStart(&rs)...)
		}
	}
	return out
}

// storedBlocks is frames with each Records frame sent as a StoredBlock of
// the codec (volume.FlagZstd or FlagS2), as a storage node sends a block
// wholly inside an adjacent read.
func storedBlocks(t testing.TB, frames [][]byte, codec volume.Flags) [][]byte {
	out := make([][]byte, len(frames))
	for i, f := range frames {
		out[i] = f
		if f[0] == dataplane.FrameRecords {
			var c []byte
			if codec == volume.FlagS2 {
				c = s2.Encode(nil, f[1:])
			} else {
				enc, err := zstd.NewWriter(nil)
				if err != nil {
					t.Fatal(err)
				}
				c = enc.EncodeAll(f[1:], nil)
			}
			out[i] = append(dataplane.AppendStoredHead([]byte{dataplane.FrameStoredBlock}, uint16(codec), len(f)-1), c...)
		}
	}
	return out
}

// A restore stream reads the same with its ReadStarts in JSON and packed:
// the file of the first read restored, the entry of the second named
// lost, and the stream ended by End. A packed ReadStart that does not
// decode ends the restore, saying so.
func TestRestoreFramesTakeBothFormsOfReadStart(t *testing.T) {
	for name, frames := range map[string][][]byte{"json": framesSeed(), "packed": packedStarts(t, framesSeed()),
		"stored zstd": storedBlocks(t, framesSeed(), volume.FlagZstd), "stored s2": storedBlocks(t, packedStarts(t, framesSeed()), volume.FlagS2)} {
		t.Run(name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "target")
			run := &restoreRun{}
			r, err := NewRestorer(RestoreOptions{Root: root, OnEntry: run.arrived})
			if err != nil {
				t.Fatal(err)
			}
			st := &restoreFrames{log: slog.New(slog.DiscardHandler), r: r, run: run}
			for i, f := range frames {
				done, err := st.frame(f[0], f[1:])
				if err != nil || done != (i == len(frames)-1) {
					t.Fatalf("frame %d (type %d): done %v, %v", i, f[0], done, err)
				}
			}
			stats, err := r.Finish()
			if err != nil {
				t.Fatal(err)
			}
			if got, err := os.ReadFile(filepath.Join(root, "srv", "a")); err != nil || string(got) != "hello" {
				t.Fatalf("/srv/a restored as %q, %v", got, err)
			}
			if run.asked != 3 || len(stats.Damaged) != 1 || stats.Damaged[0].Path != "/srv/b" {
				t.Fatalf("asked %d, damaged %+v", run.asked, stats.Damaged)
			}
		})
	}
	r, err := NewRestorer(RestoreOptions{Root: filepath.Join(t.TempDir(), "target")})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Finish()
	st := &restoreFrames{log: slog.New(slog.DiscardHandler), r: r, run: &restoreRun{}}
	bad := packedStarts(t, framesSeed())[0]
	bad = bad[:len(bad)-1] // cut short
	if _, err := st.frame(bad[0], bad[1:]); err == nil || !strings.Contains(err.Error(), "malformed packed read start") {
		t.Fatalf("a packed read start cut short: %v", err)
	}
}

// An entry the read did not name ends the restore, whether it comes in a
// Records frame or in a stored block, and nothing is written from then on:
// a node that sends what was not asked for could write outside the paths
// chosen.
func TestRestoreFramesRefuseAnEntryTheReadDidNotName(t *testing.T) {
	sess := uuid.MustParse("6f1c1a5e-0000-4000-8000-000000000002")
	start := jsonFrame(dataplane.FrameReadStart, dataplane.ReadStart{SessionID: sess, Entries: []dataplane.ReadEntry{{Path: "/srv", Ancestor: true}, {Path: "/srv/a"}}})
	// The records of /srv and /srv/a, then of /etc, which the read did
	// not name, in one frame.
	records := slices.Clone(framesSeed()[1])
	records = append(records, headerRecord(fileindex.Entry{Path: "/etc", Type: fileindex.TypeDir, Mode: 0o755})...)
	records = volume.AppendFileEnd(records, 0, nil)
	frames := map[string][]byte{"records": records, "stored": storedBlocks(t, [][]byte{records}, volume.FlagZstd)[0]}
	for name, frame := range frames {
		t.Run(name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "target")
			run := &restoreRun{ctx: t.Context(), recheck: time.Hour}
			r, err := NewRestorer(RestoreOptions{Root: root, OnEntry: run.arrived, Admit: run.admit})
			if err != nil {
				t.Fatal(err)
			}
			st := &restoreFrames{log: slog.New(slog.DiscardHandler), r: r, run: run}
			if _, err := st.frame(start[0], start[1:]); err != nil {
				t.Fatal(err)
			}
			_, err = st.frame(frame[0], frame[1:])
			var we *wire.Error
			if !errors.As(err, &we) || !strings.Contains(we.Message, `"/etc", which its read did not name`) {
				t.Fatalf("an entry not named: %v", err)
			}
			r.Finish()
			if _, err := os.Stat(filepath.Join(root, "etc")); err == nil {
				t.Fatal("/etc was made")
			}
		})
	}
}

// A StoredBlock that does not decode (cut short, another length than it
// claims, a codec no volume uses) ends the restore saying so, and writes
// nothing of it.
func TestRestoreFramesRefuseABadStoredBlock(t *testing.T) {
	good := storedBlocks(t, framesSeed(), volume.FlagZstd)
	block := good[1]
	codec, n, data, err := dataplane.ParseStoredBlock(block[1:])
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string][]byte{
		"cut short":     block[1 : len(block)-3],
		"longer":        append(dataplane.AppendStoredHead(nil, codec, n+1), data...),
		"shorter":       append(dataplane.AppendStoredHead(nil, codec, n-1), data...),
		"codec 2":       append(dataplane.AppendStoredHead(nil, 2, n), data...),
		"s2, not zstd":  append(dataplane.AppendStoredHead(nil, uint16(volume.FlagS2), n), data...),
		"over 4 MiB":    append(dataplane.AppendStoredHead(nil, codec, volume.MaxBlockRawSize+1), data...),
		"version later": append([]byte{2}, block[2:]...),
	} {
		t.Run(name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "target")
			r, err := NewRestorer(RestoreOptions{Root: root})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Finish()
			st := &restoreFrames{log: slog.New(slog.DiscardHandler), r: r, run: &restoreRun{}}
			if _, err := st.frame(good[0][0], good[0][1:]); err != nil {
				t.Fatal(err)
			}
			_, err = st.frame(dataplane.FrameStoredBlock, p)
			var we *wire.Error
			if !errors.As(err, &we) || !strings.Contains(we.Message, "stored block") || !strings.Contains(we.Hint, "storage node") {
				t.Fatalf("err = %v", err)
			}
			if _, err := os.Stat(filepath.Join(root, "srv", "a")); err == nil {
				t.Fatal("/srv/a restored from a block that did not decode")
			}
		})
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
	f.Add(fuzzFrames(packedStarts(f, seed)...))
	f.Add(fuzzFrames(storedBlocks(f, seed, volume.FlagZstd)...))
	f.Add(fuzzFrames(storedBlocks(f, seed, volume.FlagS2)...))
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

// readFrames hands a restore stream's frames on in order, over a real
// connection with read-ahead: Records frames as they came, StoredBlocks
// decompressed into Records, the others copied (valid after the next
// read); a StoredBlock that does not decode ends it with an error saying
// so, the last thing it sends; and it stops when told to while a frame
// waits, giving back what it held.
func TestReadFramesDecompressesInOrder(t *testing.T) {
	seed := framesSeed()
	stored := storedBlocks(t, seed, volume.FlagZstd)
	bad := slices.Clone(stored[1])
	bad = bad[:len(bad)-2]
	for name, tc := range map[string]struct {
		send    [][]byte
		want    [][]byte // as the reader hands them on, the type byte first
		wantErr string
	}{
		"stored":  {send: stored, want: seed},
		"records": {send: seed, want: seed},
		"bad":     {send: append([][]byte{stored[0], bad}, stored[2:]...), want: seed[:1], wantErr: "stored block"},
	} {
		t.Run(name, func(t *testing.T) {
			a, b := net.Pipe()
			defer b.Close()
			go func() {
				defer a.Close() // the reader then sees the end, whatever it expects
				w := dataplane.NewConn(a)
				for _, f := range tc.send {
					if err := w.WriteFrame(f[0], f[1:]); err != nil {
						return
					}
				}
				_ = w.Flush()
			}()
			conn := dataplane.NewConn(b)
			conn.ReadAhead(2)
			stop := make(chan struct{})
			defer close(stop)
			var got []lentFrame
			for f := range readFrames(conn, stop) {
				got = append(got, f)
				if f.err != nil || len(got) == len(tc.want) && tc.wantErr == "" {
					break
				}
			}
			if tc.wantErr != "" {
				last := got[len(got)-1]
				if last.err == nil || !strings.Contains(last.err.Error(), tc.wantErr) {
					t.Fatalf("the stream ended with %v, want an error saying %q", last.err, tc.wantErr)
				}
				got = got[:len(got)-1]
			}
			if len(got) != len(tc.want) {
				t.Fatalf("%d frames, want %d", len(got), len(tc.want))
			}
			for i, f := range got {
				if f.err != nil || f.t != tc.want[i][0] || !bytes.Equal(f.p, tc.want[i][1:]) {
					t.Fatalf("frame %d: type %d, %d bytes, %v; want type %d, %d bytes", i, f.t, len(f.p), f.err, tc.want[i][0], len(tc.want[i])-1)
				}
			}
		})
	}
}
