package storagenode

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/cairnbackup/cairn/wire"
)

// planBook answers a storage node's restore.plan as the servers would:
// the reads a test set for a job, one per page so that paging runs. A page
// not set yet is waited for (a while), so a test can change the volumes
// between two reads of one stream.
type planBook struct {
	mu    sync.Mutex
	cond  *sync.Cond
	reads map[uint64][]wire.ReadRequest
	ended map[uint64]bool
	asked []wire.RestorePlanReq
	// packed, when set, packs every page in place of the servers.
	packed func(page *wire.RestorePlanResp, req wire.RestorePlanReq) error
}

// set gives job the plan reads, and no more, in place of what it had.
func (b *planBook) set(job uint64, reads ...wire.ReadRequest) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	b.reads[job] = reads
	b.ended[job] = true
	b.cond.Broadcast()
}

// add appends reads to job's plan.
func (b *planBook) add(job uint64, reads ...wire.ReadRequest) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	b.reads[job] = append(b.reads[job], reads...)
	b.cond.Broadcast()
}

// end says job's plan has no more reads.
func (b *planBook) end(job uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	b.ended[job] = true
	b.cond.Broadcast()
}

func (b *planBook) init() {
	if b.reads == nil {
		b.cond = sync.NewCond(&b.mu)
		b.reads, b.ended = map[uint64][]wire.ReadRequest{}, map[uint64]bool{}
	}
}

// requests is every restore.plan request the node sent.
func (b *planBook) requests() []wire.RestorePlanReq {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]wire.RestorePlanReq(nil), b.asked...)
}

func (b *planBook) page(body json.RawMessage) (any, error) {
	req, err := wire.Decode[wire.RestorePlanReq](body)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	b.asked = append(b.asked, req)
	// The wait is bounded: a node whose test is over must not hang on it.
	deadline := time.Now().Add(5 * time.Second)
	stop := time.AfterFunc(5*time.Second, func() {
		b.mu.Lock()
		b.cond.Broadcast()
		b.mu.Unlock()
	})
	defer stop.Stop()
	for len(b.reads[req.JobID]) <= req.Cursor && !b.ended[req.JobID] && time.Now().Before(deadline) {
		b.cond.Wait()
	}
	reads := b.reads[req.JobID]
	var page wire.RestorePlanResp
	switch {
	case req.Cursor < len(reads):
		page = wire.RestorePlanResp{Reads: reads[req.Cursor : req.Cursor+1], Cursor: req.Cursor + 1,
			Done: b.ended[req.JobID] && req.Cursor+1 == len(reads)}
	case b.ended[req.JobID]:
		page = wire.RestorePlanResp{Cursor: req.Cursor + 1, Done: true}
	default:
		return nil, wire.Errorf(wire.CodeNotFound, "", "job %d has no restore plan", req.JobID)
	}
	if b.packed != nil {
		return page, b.packed(&page, req)
	}
	// Every other page comes packed when asked, as the servers answer
	// now, the others in JSON, as a server older than packed pages does:
	// a node reads both.
	if req.Packed >= wire.PackedVersion && req.Cursor%2 == 1 {
		packed, err := wire.PackReads(page.Reads, wire.PackedVersion)
		if err != nil {
			return nil, err
		}
		page.Reads, page.Packed = nil, packed
	}
	return page, nil
}
