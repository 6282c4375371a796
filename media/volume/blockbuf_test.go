package volume

import (
	"context"
	"runtime"
	"runtime/metrics"
	"slices"
	"testing"
)

// heapAllocs is the bytes the process has allocated on the heap so far.
func heapAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestBlockBuffersAreShared: sessions written and read one after another,
// as a storage node writes backups and serves a restore with a reader per
// read request, take their block buffers from those the last one gave
// back. With a pool per writer and per reader each started with fresh
// megabyte buffers (a reader with about sixteen of them), and a restore's
// readers left the garbage collector two to three times what was in
// flight. What a reader or writer allocates beyond its first is bounded
// by a few blocks, not by what it reads or writes.
func TestBlockBuffersAreShared(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector drops a quarter of what goes back to a sync.Pool")
	}
	key := testKey("pool-Default-1")
	files := makeTree(7, 40, []int{700000}) // a third random, stored raw
	content := 0
	for _, f := range files {
		content += len(f.content)
	}
	info := sessionInfo()
	info.BlockRawSize = DefaultBlockRawSize
	const sessions = 4
	vols := make([]*memVolume, sessions)
	results := make([]*SessionResult, sessions)
	var written []uint64
	for i := range sessions {
		info := info
		info.SessionID = [16]byte{byte(i + 1)}
		vols[i] = newMemVolume(t, DefaultBlockSize, 0)
		vols[i].buf = slices.Grow(vols[i].buf, 32<<20) // the test's medium, not the writer's
		runtime.GC()                                   // none during the phase: it would empty the pool
		before := heapAllocs()
		results[i] = writeSession(t, key, info, vols[i], WriterOptions{TempDir: t.TempDir()}, files, 256<<10)
		written = append(written, heapAllocs()-before)
	}
	blocks := results[0].Blocks
	if blocks < 16 {
		t.Fatalf("a session of %d blocks is too short to tell", blocks)
	}
	var read []uint64
	for i := range sessions {
		sr := NewSessionReader([16]byte{byte(i + 1)}, key, results[i].Refs(), memOpener(vols[i]), ReaderOptions{})
		n := 0
		runtime.GC()
		before := heapAllocs()
		err := sr.ReadAll(context.Background(), func(t RecordType, body []byte) error { n += len(body); return nil }, nil)
		read = append(read, heapAllocs()-before)
		sr.Close()
		if err != nil || n < content {
			t.Fatalf("read %d bytes: %v", n, err)
		}
	}
	t.Logf("%d blocks a session: allocated writing %v, reading %v bytes", blocks, written, read)
	// The first of each warms the pool. After it, a session allocated
	// 13-17 MB writing or reading with a pool of its own, and 2-5 MB
	// (the test's records among it) with the shared one: a few buffers
	// more when more are in flight at once than in the sessions before.
	limit := uint64(6 * blockBufCap)
	for i := 1; i < sessions; i++ {
		if written[i] > limit {
			t.Errorf("session %d allocated %d bytes writing %d blocks, more than %d", i, written[i], blocks, limit)
		}
		if read[i] > limit {
			t.Errorf("session %d allocated %d bytes reading %d blocks, more than %d", i, read[i], blocks, limit)
		}
	}
}
