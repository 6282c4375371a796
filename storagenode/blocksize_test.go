package storagenode

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/wire"
)

// Two backups to one disk pool at once, granted new volumes of different
// block sizes (the pool's block size changed between the grants): each
// volume is labeled, and written, with its own grant's block size. The
// block size is the session's: once it was written into the pool the two
// shared, which -race reports and which labels a volume with the other
// session's block size.
func TestOverlappingBackupsKeepTheirBlockSizes(t *testing.T) {
	r := newRig(t, true)
	r.waitRegistered()
	sizes := map[uint64]int{1: volume.MinBlockSize, 2: 2 * volume.MinBlockSize}
	var mu sync.Mutex
	asked := map[uint64]bool{}
	both := make(chan struct{})
	r.fake.mu.Lock()
	r.fake.grant = func(req wire.VolumeAcquireReq) (wire.VolumeGrant, error) {
		// Both sessions get their grant at the same moment, so they label
		// and open their volumes side by side.
		mu.Lock()
		asked[req.JobID] = true
		if len(asked) == 2 {
			close(both)
		}
		mu.Unlock()
		select {
		case <-both:
		case <-time.After(10 * time.Second):
			return wire.VolumeGrant{}, errors.New("the other backup never asked for a volume")
		}
		bs := sizes[req.JobID]
		return wire.VolumeGrant{ID: uuid.New(), Name: fmt.Sprintf("Default-%04d", req.JobID), Pool: req.Pool, New: true,
			BlockSize: bs, BlockRawSize: volume.MinBlockRawSize, Compression: true, Codec: volume.CompressionZstd}, nil
	}
	r.fake.mu.Unlock()

	errs := make(chan error, 2)
	for job := range sizes {
		go func() {
			_, err := r.sendFiles(job, randomFiles(job, 4, 300<<10), sendOpts{})
			errs <- err
		}()
	}
	for range sizes {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for job, bs := range sizes {
		f, err := os.Open(filepath.Join(r.pool, fmt.Sprintf("Default-%04d.cvol", job)))
		if err != nil {
			t.Fatal(err)
		}
		l, err := volume.ReadLabel(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if l.BlockSize != bs {
			t.Errorf("the volume of job %d is labeled with block size %d; its grant said %d", job, l.BlockSize, bs)
		}
	}
	r.fake.mu.Lock()
	defer r.fake.mu.Unlock()
	if len(r.fake.commits) != 2 {
		t.Fatalf("%d commits, aborts %+v", len(r.fake.commits), r.fake.aborts)
	}
	for _, c := range r.fake.commits {
		for _, p := range c.Parts {
			if p.VolumeStart%int64(sizes[c.JobID]) != 0 {
				t.Errorf("job %d: part at %d, not on a block of %d", c.JobID, p.VolumeStart, sizes[c.JobID])
			}
		}
	}
}
