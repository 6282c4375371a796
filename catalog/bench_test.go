package catalog

import (
	"testing"

	"go.etcd.io/bbolt"

	"github.com/cairnbackup/cairn/fileindex"
)

// segmentsOf cuts entries into segments the way a storage node does.
func segmentsOf(t testing.TB, entries []fileindex.Entry, segBytes int) (segs []fileindex.Segment, raw int) {
	b := fileindex.NewSegmentBuilder(segBytes)
	for i := range entries {
		raw += len(fileindex.AppendEntry(nil, &entries[i]))
		if err := b.Add(&entries[i]); err != nil {
			t.Fatal(err)
		}
		if b.Full() {
			segs = append(segs, b.Flush())
		}
	}
	if s := b.Flush(); s.Count > 0 {
		segs = append(segs, s)
	}
	return segs, raw
}

// TestIndexBytesPerEntry measures what a file version costs in the catalog,
// for DESIGN.md, and fails if that grows far beyond today's figure.
func TestIndexBytesPerEntry(t *testing.T) {
	c := newTestCatalog(t)
	c.noSync()
	c.setup()
	entries := bigTree(60, 1000) // 60,061 entries in 10 default segments: the same bytes per entry as 200,201, in a quarter of the race run
	segs, raw := segmentsOf(t, entries, fileindex.DefaultSegmentBytes)
	before := usedBytes(t, c.s)
	allocBefore := pageAlloc(c.s)
	id := c.startBackup(LevelFull, "/data")
	for i, s := range segs {
		c.must(&Command{Op: OpAddIndexSegment, Segment: &IndexSegment{BackupID: id, No: i, First: fileindex.Path(s.First), Last: fileindex.Path(s.Last), Count: s.Count, Data: s.Data}})
	}
	n, err := c.s.Counts()
	if err != nil {
		t.Fatal(err)
	}
	count := float64(len(entries))
	perWrite := float64(pageAlloc(c.s)-allocBefore) / count
	perRaw, perSeg, perFile := float64(raw)/count, float64(n.IndexBytes)/count, float64(usedBytes(t, c.s)-before)/count
	t.Logf("%d entries in %d segments (%d per segment, one Raft command each): bytes per entry: %.1f encoded, %.1f compressed, %.1f of catalog file, %.1f of pages written",
		len(entries), len(segs), len(entries)/len(segs), perRaw, perSeg, perFile, perWrite)
	if perSeg > 80 || perFile > 1.3*perSeg || perWrite > 1.5*perSeg {
		t.Fatalf("a file version costs %.1f bytes compressed, %.1f in the file, %.1f written; DESIGN.md says about 58, 59, 62",
			perSeg, perFile, perWrite)
	}
}

// BenchmarkApplyIndexSegment applies default-size index segments straight to
// the store, fsync included: the catalog's own ceiling, without Raft.
func BenchmarkApplyIndexSegment(b *testing.B) {
	c := newTestCatalog(b)
	c.setup()
	segs, _ := segmentsOf(b, bigTree(40, 1000), fileindex.DefaultSegmentBytes)
	var backup uint64
	entries := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := i % len(segs)
		if k == 0 {
			b.StopTimer()
			backup = c.startBackup(LevelFull, "/data")
			b.StartTimer()
		}
		s := segs[k]
		c.must(&Command{Op: OpAddIndexSegment, Segment: &IndexSegment{BackupID: backup, No: k, First: fileindex.Path(s.First), Last: fileindex.Path(s.Last), Count: s.Count, Data: s.Data}})
		entries += s.Count
	}
	b.ReportMetric(float64(entries)/b.Elapsed().Seconds(), "entries/s")
}

// usedBytes is the size of the catalog's pages in use: the file itself grows
// in 16 MiB steps.
func usedBytes(t testing.TB, s *Store) int64 {
	var n int64
	if err := s.view(func(tx *bbolt.Tx) error { n = tx.Size(); return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func pageAlloc(s *Store) int64 {
	st := s.db.Stats()
	return st.TxStats.GetPageAlloc()
}
