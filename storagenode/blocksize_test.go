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

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/wire"
)

// sendBackup streams fs as job's backup and returns the node's answer; it
// may run on any goroutine.
func (r *rig) sendBackup(job uint64, fs []testFile) error {
	conn, err := r.dial(r.ticket(job))
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, f := range fs {
		b := volume.AppendRecord(nil, volume.RecFileHeader, fileindex.AppendEntry(nil, &fileindex.Entry{Path: f.path, Type: fileindex.TypeFile, Size: int64(len(f.content))}))
		for off := 0; off < len(f.content); off += 256 << 10 {
			b = volume.AppendDataRecord(b, int64(off), f.content[off:min(off+256<<10, len(f.content))])
		}
		if err := conn.WriteFrame(dataplane.FrameRecords, volume.AppendFileEnd(b, volume.EndOK, nil)); err != nil {
			return err
		}
	}
	if err := conn.WriteJSON(dataplane.FrameEnd, dataplane.End{Entries: int64(len(fs))}); err != nil {
		return err
	}
	return conn.ReadJSON(dataplane.FrameResult, &dataplane.Result{})
}

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
			BlockSize: bs, BlockRawSize: volume.MinBlockRawSize, Compression: true}, nil
	}
	r.fake.mu.Unlock()

	errs := make(chan error, 2)
	for job := range sizes {
		go func() { errs <- r.sendBackup(job, randomFiles(job, 4, 300<<10)) }()
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
