package server

import (
	"cmp"
	"fmt"
	"slices"
	"sync"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/wire"
)

// planPageEntries bounds one page of a restore plan or base tree, so that a
// page stays well inside one NATS message.
const planPageEntries = 4000

// planner hands out a restore's reads page by page without holding the whole
// plan: it walks the merged tree of the chain once per backup of the chain,
// keeping the entries that backup stored, so each page reads one session in
// stream order. Hard links whose first name lies outside the chosen paths
// pull that name in, in a last round of passes.
type planner struct {
	store *catalog.Store
	chain []catalog.Backup
	roots []string

	mu      sync.Mutex
	parts   map[int][]wire.ReadPart // by layer
	order   []int                   // the layers in the order they are read
	layer   int                     // index into order
	links   bool                    // in the passes for hard-link targets
	targets map[string]bool
	it      *fileindex.MergeIterator
	served  int                   // pages handed out
	last    *wire.RestorePlanResp // the last page, for a retried request
	done    bool
}

func newPlanner(store *catalog.Store, chain []catalog.Backup, roots []string) *planner {
	p := &planner{store: store, chain: chain, roots: roots, parts: map[int][]wire.ReadPart{}, targets: map[string]bool{}}
	p.order = readOrder(store, chain)
	return p
}

// readOrder orders the layers of a chain so that each tape is needed once
// and read in order of position: layers are grouped by the tape their
// session starts on (tapes in the order the chain first wrote them), by
// position on it, and a session that goes on to another tape comes last in
// its group, so the next group starts on the tape it left loaded. A restore
// takes every entry from exactly one layer and makes hard links at the
// end, so the order of the layers is free. Disk chains keep their order.
func readOrder(store *catalog.Store, chain []catalog.Backup) []int {
	order := make([]int, len(chain))
	for i := range order {
		order[i] = i
	}
	rank := map[uuid.UUID]int{}
	tape := false
	for _, b := range chain {
		for _, part := range b.Parts {
			if _, ok := rank[part.VolumeID]; !ok {
				rank[part.VolumeID] = len(rank)
				if v, err := store.Volume(part.VolumeID); err == nil && v.MediaType == catalog.PoolTypeTape {
					tape = true
				}
			}
		}
	}
	if !tape {
		return order
	}
	type key struct {
		first    int
		spanning bool
		start    int64
	}
	keys := make([]key, len(chain))
	for i, b := range chain {
		if len(b.Parts) == 0 {
			continue
		}
		parts := slices.Clone(b.Parts)
		slices.SortFunc(parts, func(x, y catalog.Part) int { return x.Part - y.Part })
		first, last := parts[0], parts[len(parts)-1]
		keys[i] = key{first: rank[first.VolumeID], spanning: first.VolumeID != last.VolumeID, start: first.VolumeStart}
	}
	slices.SortStableFunc(order, func(x, y int) int {
		a, b := keys[x], keys[y]
		switch {
		case a.first != b.first:
			return a.first - b.first
		case a.spanning != b.spanning:
			if a.spanning {
				return 1
			}
			return -1
		}
		return cmp.Compare(a.start, b.start)
	})
	return order
}

func (p *planner) tree() (*fileindex.MergeIterator, error) {
	layers := make([]fileindex.Iterator, len(p.chain))
	for i, b := range p.chain {
		layers[i] = fileindex.SegmentIterator(p.store.Segments(b.ID))
	}
	return fileindex.Merge(layers...), nil
}

// count totals the entries and content bytes the restore will bring back.
func (p *planner) count() (files, bytes int64, err error) {
	it, err := p.tree()
	if err != nil {
		return 0, 0, err
	}
	sel := fileindex.Filter(it, fileindex.WithinAny(p.roots))
	for {
		e, ok := sel.Next()
		if !ok {
			break
		}
		files++
		bytes += e.Size
	}
	return files, bytes, sel.Err()
}

func (p *planner) readParts(layer int) ([]wire.ReadPart, error) {
	if rp, ok := p.parts[layer]; ok {
		return rp, nil
	}
	b := p.chain[layer]
	var rp []wire.ReadPart
	for _, part := range b.Parts {
		v, err := p.store.Volume(part.VolumeID)
		if err != nil {
			return nil, fmt.Errorf("backup %d: volume %s: %w", b.ID, part.VolumeID, err)
		}
		r := wire.ReadPart{
			VolumeID: v.ID, Volume: v.Name, Pool: v.Pool, VolumeStart: part.VolumeStart, DataStart: part.DataStart,
			StreamStart: part.StreamStart, StreamEnd: part.StreamEnd,
		}
		if v.MediaType == catalog.PoolTypeTape {
			r.MediaType, r.Barcode, r.Library, r.BlockSize, r.VolumeBytes = v.MediaType, v.Barcode, v.Library, v.BlockSize, v.Bytes
			// The starts of the parts before this one, and its own: what
			// maps its offsets to blocks.
			for _, st := range v.PartStarts {
				if st <= part.VolumeStart {
					r.PartStarts = append(r.PartStarts, st)
				}
			}
		}
		rp = append(rp, r)
	}
	p.parts[layer] = rp
	return rp, nil
}

// page returns page number cursor. Pages come out in order and the same
// every time, so a retried request (the same cursor again) or a leader that
// took over mid-restore (a cursor ahead of a fresh planner) gets the right
// page by replaying the passes up to it.
func (p *planner) page(cursor int) (wire.RestorePlanResp, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cursor < 0 {
		return wire.RestorePlanResp{}, wire.Errorf(wire.CodeInvalidArgument, "", "restore plan page %d does not exist", cursor)
	}
	if cursor == p.served-1 && p.last != nil {
		return *p.last, nil
	}
	if cursor < p.served {
		p.reset()
	}
	for p.served < cursor {
		if _, err := p.next(); err != nil {
			return wire.RestorePlanResp{}, err
		}
		if p.done && p.served < cursor {
			return wire.RestorePlanResp{}, wire.Errorf(wire.CodeInvalidArgument, "restart the restore", "restore plan page %d does not exist", cursor)
		}
	}
	return p.next()
}

func (p *planner) reset() {
	p.layer, p.links, p.it, p.served, p.last, p.done = 0, false, nil, 0, nil, false
	p.targets = map[string]bool{}
}

// next produces the next page.
func (p *planner) next() (wire.RestorePlanResp, error) {
	resp := wire.RestorePlanResp{Cursor: p.served + 1}
	entries := 0
	for !p.done && entries < planPageEntries {
		if p.it == nil {
			it, err := p.tree()
			if err != nil {
				return resp, err
			}
			p.it = it
		}
		var locs []wire.ReadLoc
		for entries+len(locs) < planPageEntries {
			e, ok := p.it.Next()
			if !ok {
				if err := p.it.Err(); err != nil {
					return resp, wire.Errorf(wire.CodeCorrupt, "", "reading the catalog's file index: %v", err)
				}
				p.it = nil
				break
			}
			if p.it.Layer() != p.order[p.layer] || !p.selected(&e) {
				continue
			}
			if e.Type == fileindex.TypeHardlink && !p.links && !fileindex.WithinAny(p.roots)(&fileindex.Entry{Path: e.Target}) {
				p.targets[e.Target] = true
			}
			locs = append(locs, wire.ReadLoc{Path: e.Path, Loc: e.Loc})
		}
		if len(locs) > 0 {
			layer := p.order[p.layer]
			parts, err := p.readParts(layer)
			if err != nil {
				return resp, err
			}
			b := p.chain[layer]
			resp.Reads = append(resp.Reads, wire.ReadRequest{SessionID: b.SessionID, KeyID: b.KeyID, Parts: parts, Locs: locs})
			entries += len(locs)
		}
		if p.it == nil {
			p.advance()
		}
	}
	resp.Done = p.done
	p.served++
	p.last = &resp
	return resp, nil
}

func (p *planner) selected(e *fileindex.Entry) bool {
	if p.links {
		return p.targets[e.Path]
	}
	return fileindex.WithinAny(p.roots)(e)
}

// advance moves to the next layer's pass, then to the hard-link passes.
func (p *planner) advance() {
	p.layer++
	if p.layer < len(p.chain) {
		return
	}
	if !p.links && len(p.targets) > 0 {
		p.links = true
		p.layer = 0
		return
	}
	p.done = true
}

// treePager hands an agent the tree its incremental is compared against, in
// segments, keeping its place between pages.
type treePager struct {
	store  *catalog.Store
	backup uint64

	mu   sync.Mutex
	it   fileindex.Iterator
	last string // path of the last entry handed out
	peek *fileindex.Entry
}

func (t *treePager) page(after string) ([]byte, bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.it == nil || after != t.last {
		// First page, or the agent retried or resumed: position after "after".
		it, _, err := t.store.Tree(t.backup)
		if err != nil {
			return nil, false, catalogError(err)
		}
		t.it, t.peek = it, nil
		if after != "" {
			for {
				e, ok := it.Next()
				if !ok {
					break
				}
				if fileindex.Compare(e.Path, after) > 0 {
					t.peek = &e
					break
				}
			}
		}
	}
	b := fileindex.NewSegmentBuilder(0)
	for b.Len() < planPageEntries && !b.Full() {
		var e fileindex.Entry
		if t.peek != nil {
			e, t.peek = *t.peek, nil
		} else {
			var ok bool
			if e, ok = t.it.Next(); !ok {
				break
			}
		}
		// The agent compares metadata only; locations and attributes stay here.
		e.Loc, e.Xattrs, e.Hash = fileindex.Location{}, nil, nil
		if err := b.Add(&e); err != nil {
			return nil, false, err
		}
		t.last = e.Path
	}
	if err := t.it.Err(); err != nil {
		return nil, false, wire.Errorf(wire.CodeCorrupt, "", "reading the catalog's file index of backup %d: %v", t.backup, err)
	}
	done := b.Len() < planPageEntries && !b.Full()
	return b.Flush().Data, done, nil
}
