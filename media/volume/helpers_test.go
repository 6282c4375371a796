package volume

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/google/uuid"
)

// memVolume is a volume in memory: an Appender and an io.ReaderAt.
type memVolume struct {
	id    uuid.UUID
	bs    int
	buf   []byte
	max   int64 // 0: unlimited
	syncs int
	err   error // returned by Write once set
	// align, when set, makes the volume a PartAligner: format 2, parts
	// on multiples of it.
	align int
}

func (v *memVolume) PartAlign() int { return v.align }

func newMemVolume(t testing.TB, bs int, max int64) *memVolume {
	t.Helper()
	v := &memVolume{id: uuid.New(), bs: bs, max: max}
	lbl, err := EncodeLabel(Label{VolumeID: v.id, Name: "mem", Pool: "test", BlockSize: bs, Created: time.Unix(1700000000, 0).UTC(), MediaType: "memory"})
	if err != nil {
		t.Fatal(err)
	}
	v.buf = lbl
	return v
}

func (v *memVolume) VolumeID() uuid.UUID { return v.id }
func (v *memVolume) BlockSize() int      { return v.bs }
func (v *memVolume) Offset() int64       { return int64(len(v.buf)) }
func (v *memVolume) Remaining() int64 {
	if v.max == 0 {
		return math.MaxInt64 - int64(len(v.buf))
	}
	return v.max - int64(len(v.buf))
}
func (v *memVolume) Write(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	if int64(len(p)) > v.Remaining() {
		return 0, fmt.Errorf("memVolume: write of %d bytes past the limit", len(p))
	}
	v.buf = append(v.buf, p...)
	return len(p), nil
}
func (v *memVolume) Sync() error { v.syncs++; return nil }
func (v *memVolume) ReadAt(p []byte, off int64) (int, error) {
	return bytes.NewReader(v.buf).ReadAt(p, off)
}
func (v *memVolume) size() int64 { return int64(len(v.buf)) }

// discardAppender takes everything and keeps nothing.
type discardAppender struct {
	id  uuid.UUID
	off int64
}

func (d *discardAppender) VolumeID() uuid.UUID         { return d.id }
func (d *discardAppender) BlockSize() int              { return DefaultBlockSize }
func (d *discardAppender) Offset() int64               { return d.off }
func (d *discardAppender) Remaining() int64            { return math.MaxInt64 - d.off }
func (d *discardAppender) Write(p []byte) (int, error) { d.off += int64(len(p)); return len(p), nil }
func (d *discardAppender) Sync() error                 { return nil }

func testKey(id string) *Key {
	m := sha256.Sum256([]byte(id))
	return &Key{ID: id, Material: m[:]}
}

// tfile is an entry of a test session and the content it carries.
type tfile struct {
	e       fileindex.Entry
	content []byte
}

// appendEntryRecords appends the records the agent sends for f, content
// in Data records of chunk bytes.
func appendEntryRecords(dst []byte, f *tfile, chunk int) []byte {
	e := f.e
	e.Hash, e.Loc = nil, fileindex.Location{}
	dst = AppendRecord(dst, RecFileHeader, fileindex.AppendEntry(nil, &e))
	for off := 0; off < len(f.content); off += chunk {
		dst = AppendDataRecord(dst, int64(off), f.content[off:min(off+chunk, len(f.content))])
	}
	var hash []byte
	if f.e.Type == fileindex.TypeFile {
		h := sha256.Sum256(f.content)
		hash = h[:]
	}
	return AppendFileEnd(dst, EndOK, hash)
}

// makeTree returns n entries in index order: directories and files of
// sizes drawn from sizes, content text-like or random.
func makeTree(seed uint64, n int, sizes []int) []tfile {
	rnd := rand.New(rand.NewPCG(seed, 1))
	var out []tfile
	out = append(out, tfile{e: fileindex.Entry{Path: "/", Type: fileindex.TypeDir, Mode: 0o755}})
	dir := 0
	for i := 1; i < n; i++ {
		if i%50 == 1 {
			dir++
			out = append(out, tfile{e: fileindex.Entry{Path: fmt.Sprintf("/d%04d", dir), Type: fileindex.TypeDir, Mode: 0o755}})
			continue
		}
		size := sizes[rnd.IntN(len(sizes))]
		content := make([]byte, size)
		if i%3 == 0 {
			var seed [32]byte
			binary.LittleEndian.PutUint64(seed[:], rnd.Uint64())
			rand.NewChaCha8(seed).Read(content)
		} else {
			copy(content, textLike(rnd, size))
		}
		out = append(out, tfile{
			e:       fileindex.Entry{Path: fmt.Sprintf("/d%04d/f%06d", dir, i), Type: fileindex.TypeFile, Mode: 0o644, Size: int64(size), MTime: int64(i) * 1e9},
			content: content,
		})
	}
	return out
}

var (
	logLevels = []string{"INFO", "INFO", "INFO", "INFO", "DEBUG", "DEBUG", "WARN", "ERROR"}
	logHosts  = []string{"web-01", "web-02", "web-03", "db-01", "db-02", "cache-01", "worker-07", "worker-12"}
	logSvcs   = []string{"nginx", "api", "postgres", "redis", "scheduler", "auth", "billing"}
	logMsgs   = []string{
		"GET /api/v1/orders/%d HTTP/1.1 200 %dms",
		"POST /api/v1/login user=%d status=401 latency=%dms",
		"checkpoint complete: wrote %d buffers (%d.%d%%)",
		"connection from 10.%d.%d.%d:%d accepted",
		"job %d finished in %d.%03ds, %d rows",
		"cache miss key=session:%x ttl=%d",
		"slow query (%d ms): SELECT * FROM events WHERE id > %d",
		"retrying request id=%08x attempt=%d backoff=%dms",
	}
)

// textLike returns n bytes of log-like lines: timestamps, levels, hosts,
// services and templated messages with varying numbers.
func textLike(rnd *rand.Rand, n int) []byte {
	b := make([]byte, 0, n+200)
	ts := time.Date(2026, 3, 14, 8, 0, 0, 0, time.UTC)
	for len(b) < n {
		ts = ts.Add(time.Duration(rnd.IntN(2000)) * time.Millisecond)
		b = ts.AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
		b = fmt.Appendf(b, " %-5s %s %s[%d]: ", logLevels[rnd.IntN(len(logLevels))], logHosts[rnd.IntN(len(logHosts))], logSvcs[rnd.IntN(len(logSvcs))], 1000+rnd.IntN(30000))
		m := logMsgs[rnd.IntN(len(logMsgs))]
		b = fmt.Appendf(b, m, rnd.IntN(100000), rnd.IntN(1000), rnd.IntN(100), rnd.IntN(256))
		b = append(b, '\n')
	}
	return b[:n]
}

// writeSession writes files as one session on first (and the volumes Next
// returns) and returns the result.
func writeSession(t testing.TB, key *Key, info SessionInfo, first Appender, opts WriterOptions, files []tfile, chunk int) *SessionResult {
	t.Helper()
	w, err := NewSessionWriter(info, key, first, opts)
	if err != nil {
		t.Fatal(err)
	}
	var buf []byte
	for i := range files {
		buf = appendEntryRecords(buf[:0], &files[i], chunk)
		if err := w.Write(buf); err != nil {
			w.Abort()
			t.Fatal(err)
		}
	}
	res, err := w.Close()
	if res != nil {
		t.Cleanup(func() { res.Index.Close() })
	}
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// readBack collects, per path, what ReadEntries/ReadAll hands out.
type readBack struct {
	t       testing.TB
	cur     *fileindex.Entry
	got     map[string][]byte
	ended   map[string]bool
	order   []string
	damages []*CorruptBlockError
}

func newReadBack(t testing.TB) *readBack {
	return &readBack{t: t, got: map[string][]byte{}, ended: map[string]bool{}}
}

func (rb *readBack) fn(rt RecordType, body []byte) error {
	switch rt {
	case RecFileHeader:
		e, err := fileindex.DecodeEntry(body)
		if err != nil {
			return err
		}
		rb.cur = &e
		rb.order = append(rb.order, e.Path)
		rb.got[e.Path] = []byte{}
	case RecData:
		off, data, err := DecodeData(body)
		if err != nil {
			return err
		}
		c := rb.got[rb.cur.Path]
		if int(off)+len(data) > len(c) {
			c = append(c, make([]byte, int(off)+len(data)-len(c))...)
		}
		copy(c[off:], data)
		rb.got[rb.cur.Path] = c
	case RecFileEnd:
		_, hash, _, err := DecodeFileEnd(body)
		if err != nil {
			return err
		}
		if rb.cur.Type == fileindex.TypeFile {
			h := sha256.Sum256(rb.got[rb.cur.Path])
			rb.ended[rb.cur.Path] = bytes.Equal(h[:], hash)
		} else {
			rb.ended[rb.cur.Path] = true
		}
	}
	return nil
}

func (rb *readBack) damaged(d *CorruptBlockError) error {
	rb.damages = append(rb.damages, d)
	return nil
}

// opener returns an Opener over the given memory volumes.
func memOpener(vols ...*memVolume) Opener {
	return func(id uuid.UUID) (io.ReaderAt, error) {
		for _, v := range vols {
			if v.id == id {
				return v, nil
			}
		}
		return nil, fmt.Errorf("volume %s is not loaded", id)
	}
}

func indexEntries(t testing.TB, res *SessionResult) []fileindex.Entry {
	t.Helper()
	var all []fileindex.Entry
	for _, s := range segmentsOf(t, res) {
		es, err := fileindex.DecodeSegment(s.Data)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, es...)
	}
	return all
}

// segmentsOf reads a closed session's index segments.
func segmentsOf(t testing.TB, res *SessionResult) []fileindex.Segment {
	t.Helper()
	segs, err := res.Index.All()
	if err != nil {
		t.Fatal(err)
	}
	return segs
}

func fileEntry(path string, size int) fileindex.Entry {
	return fileindex.Entry{Path: path, Type: fileindex.TypeFile, Mode: 0o644, Size: int64(size)}
}

// lostOf returns the entries err names lost, by location: err must be nil
// or a *LostEntriesError.
func lostOf(t testing.TB, err error) map[fileindex.Location]LostEntry {
	t.Helper()
	out := map[fileindex.Location]LostEntry{}
	if err == nil {
		return out
	}
	var le *LostEntriesError
	if !errors.As(err, &le) {
		t.Fatalf("err = %v, want nil or a *LostEntriesError", err)
	}
	for _, l := range le.Lost {
		if _, dup := out[l.Loc]; dup {
			t.Fatalf("%+v is named lost twice", l.Loc)
		}
		out[l.Loc] = l
	}
	return out
}
