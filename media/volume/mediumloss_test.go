package volume

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/google/uuid"
)

// lossyVolume is a RecoverableAppender in memory that behaves like a tape:
// it takes whole records of the block size, and the record failAt (counted
// from the volume's start, the label being record 0) fails with a medium
// error, after which nothing more is taken. syncFail makes the Sync with
// that number (1-based) fail instead.
type lossyVolume struct {
	id       uuid.UUID
	bs       int
	all      []byte // everything written
	durable  int    // bytes of all in whole records taken
	max      int64
	failAt   int
	syncFail int
	syncs    int
	err      error
}

var errTestMedium = fmt.Errorf("test medium error: %w", ErrMediumLost)

func newLossyVolume(t *testing.T, bs int, max int64, failAt int) *lossyVolume {
	t.Helper()
	v := &lossyVolume{id: uuid.New(), bs: bs, max: max, failAt: failAt}
	lbl, err := EncodeLabel(Label{VolumeID: v.id, Name: "lossy", Pool: "test", BlockSize: bs, MediaType: "memory"})
	if err != nil {
		t.Fatal(err)
	}
	v.all, v.durable = lbl, len(lbl)
	return v
}

func (v *lossyVolume) VolumeID() uuid.UUID { return v.id }
func (v *lossyVolume) BlockSize() int      { return v.bs }
func (v *lossyVolume) Offset() int64       { return int64(len(v.all)) }
func (v *lossyVolume) Durable() int64      { return int64(v.durable) }
func (v *lossyVolume) Remaining() int64 {
	if v.max == 0 {
		return math.MaxInt64 - v.Offset()
	}
	return v.max - v.Offset()
}

func (v *lossyVolume) Write(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	v.all = append(v.all, p...)
	for len(v.all)-v.durable >= v.bs {
		if v.durable/v.bs == v.failAt {
			v.err = fmt.Errorf("volume %s record %d: %w", v.id, v.failAt, errTestMedium)
			return len(p), v.err
		}
		v.durable += v.bs
	}
	return len(p), nil
}

func (v *lossyVolume) Sync() error {
	if v.err != nil {
		return v.err
	}
	v.syncs++
	if v.syncs == v.syncFail {
		v.err = fmt.Errorf("volume %s sync %d: %w", v.id, v.syncs, errTestMedium)
		return v.err
	}
	if v.durable != len(v.all) {
		return fmt.Errorf("sync at offset %d, not on a record boundary", len(v.all))
	}
	return nil
}

func (v *lossyVolume) ReadBack(p []byte, off int64) error {
	if off+int64(len(p)) > int64(len(v.all)) {
		return fmt.Errorf("read back past the end")
	}
	copy(p, v.all[off:])
	return nil
}

// onMedium is what the medium holds: the durable bytes.
func (v *lossyVolume) onMedium() *memVolume {
	return &memVolume{id: v.id, bs: v.bs, buf: v.all[:v.durable]}
}

// A medium error anywhere in a session (a PartHeader, a data block, the
// PartEnd of a part that spans, the trailer, the final Sync) moves the
// rest to the next volume: every file reads back, the parts tile the
// stream, and the lost volume alone shows the part as torn, ending where
// the result says.
func TestMediumLossMovesTheSessionOn(t *testing.T) {
	key := testKey("pool-Tape-1")
	files := makeTree(7, 40, []int{100, 30000, 200000})
	bs := MinBlockSize
	run := func(t *testing.T, failAt, syncFail int) {
		info := sessionInfo()
		info.SessionID = uuid.New()
		info.BlockRawSize = MinBlockRawSize
		// The first volume fills about half way, so the session spans
		// even with no medium error.
		first := newLossyVolume(t, bs, 14*int64(bs), failAt)
		first.syncFail = syncFail
		vols := []*lossyVolume{first}
		var lost []Appender
		opts := WriterOptions{TempDir: t.TempDir(),
			Next: func(full Appender) (Appender, error) {
				fail := -1
				if len(vols) == 1 && failAt > 0 {
					fail = 3 // the next one fails too, early
				}
				v := newLossyVolume(t, bs, 0, fail)
				vols = append(vols, v)
				return v, nil
			},
			Lost: func(a Appender, cause error) {
				if !errors.Is(cause, ErrMediumLost) {
					t.Errorf("lost %s for %v", a.VolumeID(), cause)
				}
				lost = append(lost, a)
			},
		}
		res := writeSession(t, key, info, first, opts, files, 16<<10)
		if (failAt > 0 || syncFail > 0) && len(lost) == 0 {
			t.Fatalf("no volume lost; parts %+v", res.Parts)
		}
		var stream uint64
		var seq uint64
		for i, p := range res.Parts {
			if p.StreamStart != stream || p.FirstSeq != seq {
				t.Fatalf("part %d %+v does not follow stream %d seq %d; parts %+v", i, p, stream, seq, res.Parts)
			}
			stream, seq = p.StreamEnd, p.LastSeq+1
			if p.Final != (i == len(res.Parts)-1) {
				t.Fatalf("part %d final %v", i, p.Final)
			}
		}
		var media []*memVolume
		for _, v := range vols {
			media = append(media, v.onMedium())
		}
		r := NewSessionReader(info.SessionID, key, res.Refs(), memOpener(media...), ReaderOptions{})
		defer r.Close()
		rb := newReadBack(t)
		if err := r.ReadAll(context.Background(), rb.fn, rb.damaged); err != nil {
			t.Fatal(err)
		}
		checkAll(t, rb, files)
		if len(rb.damages) > 0 {
			t.Fatalf("damaged blocks %v", rb.damages[0])
		}
		// Without a catalog: each lost volume ends in a part that starts
		// where the result's part does and holds at least its blocks (a
		// lost trailer's durable index blocks stay on it too). It is torn,
		// unless only the Sync after its PartEnd failed.
		for _, p := range res.Parts {
			if !p.Torn {
				continue
			}
			m := media[slicesIndex(vols, p.VolumeID)]
			vol, err := OpenVolume(m, m.size())
			if err != nil {
				t.Fatal(err)
			}
			parts, err := vol.Parts()
			if err != nil {
				t.Fatal(err)
			}
			last := parts[len(parts)-1]
			if last.Torn != (syncFail == 0) || last.VolumeStart != p.VolumeStart || last.Ref().StreamStart != p.StreamStart || last.Ref().StreamEnd < p.StreamEnd {
				t.Fatalf("volume %s alone: last part %+v, the writer says %+v", p.VolumeID, last, p)
			}
		}
	}
	// A run with no fault tells how many records the first volume takes.
	t.Run("none", func(t *testing.T) { run(t, -1, 0) })
	for failAt := 1; failAt <= 14; failAt++ {
		t.Run(fmt.Sprintf("record%d", failAt), func(t *testing.T) { run(t, failAt, 0) })
	}
	t.Run("sync", func(t *testing.T) { run(t, -1, 1) })
}

func slicesIndex(vols []*lossyVolume, id uuid.UUID) int {
	for i, v := range vols {
		if v.id == id {
			return i
		}
	}
	return -1
}

// The trailer never splits: a medium error under the index puts all of it,
// and the final PartEnd, on the next volume.
func TestMediumLossInTheTrailer(t *testing.T) {
	key := testKey("pool-Tape-1")
	files := makeTree(9, 400, []int{10, 100}) // a few data blocks, several index blocks
	bs := MinBlockSize
	// Find where the trailer lies with no fault, then fail each of its records.
	probe := newLossyVolume(t, bs, 0, -1)
	info := sessionInfo()
	info.BlockRawSize = MinBlockRawSize
	info.SessionID = uuid.New()
	res := writeSession(t, key, info, probe, WriterOptions{TempDir: t.TempDir()}, files, 16<<10)
	end := int(res.Parts[0].End) / bs
	for failAt := 1; failAt < end; failAt++ {
		t.Run(fmt.Sprintf("record%d", failAt), func(t *testing.T) {
			info.SessionID = uuid.New()
			first := newLossyVolume(t, bs, 0, failAt)
			var second *lossyVolume
			opts := WriterOptions{TempDir: t.TempDir(), Next: func(Appender) (Appender, error) {
				second = newLossyVolume(t, bs, 0, -1)
				return second, nil
			}}
			res := writeSession(t, key, info, first, opts, files, 16<<10)
			if second == nil || len(res.Parts) > 2 {
				t.Fatalf("parts %+v", res.Parts)
			}
			final := res.Parts[len(res.Parts)-1]
			vol, err := OpenVolume(second.onMedium(), int64(second.durable))
			if err != nil {
				t.Fatal(err)
			}
			parts, err := vol.Parts()
			if err != nil || len(parts) != 1 || parts[0].PartEnd == nil || parts[0].PartEnd.IndexBlocks == 0 {
				t.Fatalf("next volume's parts %+v, %v", parts, err)
			}
			it, err := ReadIndex(second.onMedium(), key, parts[0])
			if err != nil {
				t.Fatal(err)
			}
			idx, err := fileindex.Collect(it)
			if err != nil {
				t.Fatal(err)
			}
			n := len(idx)
			if n != len(files) || parts[0].Ref() != final.Ref() {
				t.Fatalf("index on the next volume has %d entries, want %d; part %+v, result %+v", n, len(files), parts[0].Ref(), final.Ref())
			}
			r := NewSessionReader(info.SessionID, key, res.Refs(), memOpener(first.onMedium(), second.onMedium()), ReaderOptions{})
			defer r.Close()
			rb := newReadBack(t)
			if err := r.ReadAll(context.Background(), rb.fn, rb.damaged); err != nil {
				t.Fatal(err)
			}
			checkAll(t, rb, files)
			if len(rb.damages) > 0 {
				t.Fatalf("damaged %v", rb.damages[0])
			}
		})
	}
}

// A medium that fails with no next volume to go on with fails the
// session with an error that keeps why the medium failed, and one whose
// next volume cannot be had keeps both causes.
func TestMediumLossKeepsItsCause(t *testing.T) {
	key := testKey("pool-Tape-1")
	files := makeTree(3, 40, []int{100, 20000})
	errNoScratch := errors.New("no scratch tape")
	for _, c := range []struct {
		name string
		next func(Appender) (Appender, error)
		want []error
	}{
		{"no next volume", nil, []error{ErrMediumLost}},
		{"next volume refused", func(Appender) (Appender, error) { return nil, errNoScratch }, []error{ErrMediumLost, errNoScratch}},
	} {
		t.Run(c.name, func(t *testing.T) {
			info := sessionInfo()
			info.BlockRawSize = MinBlockRawSize
			w, err := NewSessionWriter(info, key, newLossyVolume(t, MinBlockSize, 0, 2), WriterOptions{TempDir: t.TempDir(), Next: c.next})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Abort()
			var werr error
			for i := range files {
				if werr = w.Write(appendEntryRecords(nil, &files[i], 16<<10)); werr != nil {
					break
				}
			}
			if werr == nil {
				_, werr = w.Close()
			}
			for _, cause := range c.want {
				if !errors.Is(werr, cause) {
					t.Errorf("session error %v does not keep %v", werr, cause)
				}
			}
		})
	}
}
