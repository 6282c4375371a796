package storagenode

import (
	"fmt"
	"runtime"
	rtmetrics "runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/wire"
)

// heapFigures are the process's live heap as of the last collection and
// the bytes it allocated so far.
func heapFigures() (live, allocs uint64) {
	s := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/heap/allocs:bytes"}}
	rtmetrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64()
}

// TestRestoreOfManyFilesKeepsItsMemoryBounded: a restore holds the blocks
// in flight, not what it restored. 3,000 small files and a few large
// ones (56 MB) come back through the data port in 60 read requests (a
// session reader and a cursor each, as a plan of many sessions or pages
// gives), while the test follows the live heap after every collection
// and counts what the restore allocated: a node that kept a read's
// records, its readers or its buffers live would grow with the restore,
// and one that handed its block buffers to the collector instead of the
// shared pool would allocate megabytes a read.
func TestRestoreOfManyFilesKeepsItsMemoryBounded(t *testing.T) {
	r := newMediaRig(t, mediaCases[0])
	files := randomFiles(21, 3000, 12<<10)
	files = append(files, randomFiles(22, 5, 4<<20)...)
	for i := range files[3000:] {
		files[3000+i].path = fmt.Sprintf("/data/z%d", i) // index order
	}
	total := 0
	for _, f := range files {
		total += len(f.content)
	}
	if _, err := r.sendFiles(1, files, sendOpts{batch: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	all := r.fake.readRequest(t, 1)
	var reads []wire.ReadRequest
	const perRead = 51
	for i := 0; i < len(all.Locs); i += perRead {
		rr := all
		rr.Locs = all.Locs[i:min(i+perRead, len(all.Locs))]
		reads = append(reads, rr)
	}

	// A first restore warms the pool and the connections' buffers.
	restoreAll := func(job uint64) {
		conn := r.restoreConn(job, reads...)
		defer conn.Close()
		got, err := drain(conn)
		if err != nil {
			t.Fatal(err)
		}
		if got < int64(total) {
			t.Fatalf("%d record bytes restored, want at least %d", got, total)
		}
	}
	restoreAll(2)

	runtime.GC()
	base, allocs0 := heapFigures()
	var peak uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			live, _ := heapFigures()
			peak = max(peak, live)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	restoreAll(3)
	close(stop)
	wg.Wait()
	_, allocs1 := heapFigures()
	grew, allocated := int64(peak)-int64(base), allocs1-allocs0
	t.Logf("restored %d MB in %d reads: live heap %d MB at the start, at most %+d MB during it; %.1f MB allocated",
		total>>20, len(reads), base>>20, grew>>20, float64(allocated)/1e6)
	// The window of a session reader is about 2 × Workers + 4 blocks of
	// the pool's size, each with a decoded copy when it compresses; the
	// client's side (TLS, a frame) adds a few more.
	if limit := int64(24 * volumeBlockBufCap()); grew > limit {
		t.Errorf("the live heap grew by %d bytes during a restore of %d, more than %d", grew, total, limit)
	}
	if !raceEnabled {
		// Records batched and frames: a few bytes a restored byte, not a
		// block buffer a read.
		if limit := uint64(total) / 2; allocated > limit {
			t.Errorf("a restore of %d bytes in %d reads allocated %d bytes, more than %d", total, len(reads), allocated, limit)
		}
	}
}

// volumeBlockBufCap is about the size of a buffer of the volume package's
// pool: a block of the default size and its header.
func volumeBlockBufCap() int { return volume.DefaultBlockRawSize + 64<<10 }
