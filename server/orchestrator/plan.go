package orchestrator

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"sync"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/wire"
)

// maxPageBytes caps a page of a list that grows with the data (a restore
// plan, a base tree, a listing) whatever the NATS servers allow: the
// storage node sends the entries of each of a page's reads on to the agent
// in one data-plane frame (dataplane.MaxFrame, 8 MiB), and a MiB already
// makes the round trip per page negligible.
const maxPageBytes = 1 << 20

// PageBytes is what one page may fill, given the connection's max_payload
// (0 when unknown): an eighth below the smaller of the two, a margin for the
// envelope and the fields around the list that the pagers do not count.
// Pages are paged by encoded size, not by entries, because an entry's size
// ranges from tens of bytes to several KiB (a 4,000-byte path).
//
// A restore plan's pages must come out the same on every server, since a new
// leader replays the passes to the cursor the agent holds; the servers of a
// group therefore need the same max_payload, which NATS needs anyway to pass
// a message between them.
func PageBytes(maxPayload int64) int {
	limit := int64(maxPageBytes)
	if maxPayload > 0 && maxPayload < limit {
		limit = maxPayload
	}
	return int(limit - limit/8)
}

// planner hands out a restore's reads page by page without holding the whole
// plan: it walks the merged tree of the chain once per backup of the chain,
// keeping the entries that backup stored, so each page reads one session in
// stream order. Hard links whose first name lies outside the chosen paths
// pull that name in, in a last round of passes.
//
// The directories on the way to each chosen path come too, marked as
// ancestors (wire.ReadLoc.Ancestor), so that a file or subtree restored
// alone gets parents with the mode, owner and times they had (a ~/.ssh
// restored alone must not sit in a 0755 root-owned home); the agent creates
// those that are missing with that metadata and leaves alone those that
// exist. So do the directories on the way to a hard link's first name
// pulled in.
type planner struct {
	store *catalog.Store
	chain []catalog.Backup
	roots []string
	// ancestors are the directories above the roots that lie in no root.
	ancestors map[string]bool
	bytes     int // what one page may fill

	mu      sync.Mutex
	parts   map[int][]wire.ReadPart // by layer
	heads   map[int]int             // by layer: the encoded size of its read request without locs
	order   []int                   // the layers in the order they are read
	layer   int                     // index into order
	links   bool                    // in the passes for hard-link targets
	targets map[string]bool
	// targetAncestors are the directories above the targets, in no root
	// and above no root, computed when the hard-link passes start.
	targetAncestors map[string]bool
	it              *fileindex.Selection
	held            *planLoc              // read from it, left for the next page when this one was full
	pending         []wire.ReadLoc        // the blocks of the last entry read that this pass still owes
	served          int                   // pages handed out
	last            *wire.RestorePlanResp // the last page, for a retried request
	done            bool
}

func newPlanner(store *catalog.Store, chain []catalog.Backup, roots []string, pageBytes int) *planner {
	p := &planner{store: store, chain: chain, roots: roots, bytes: pageBytes, parts: map[int][]wire.ReadPart{}, heads: map[int]int{}, targets: map[string]bool{}}
	p.order = readOrder(store, chain)
	p.ancestors = ancestorsOf(roots, nil, roots)
	return p
}

// ancestorsOf lists the directories above paths, "/" included, that lie in
// no root and are not in skip.
func ancestorsOf(paths []string, skip map[string]bool, roots []string) map[string]bool {
	out := map[string]bool{}
	inRoot := fileindex.WithinAny(roots)
	for _, p := range paths {
		for q := p; q != "/"; {
			q = path.Dir(q)
			if out[q] || skip[q] {
				break // and so is all above it
			}
			if !inRoot(&fileindex.Entry{Path: q}) {
				out[q] = true
			}
		}
	}
	return out
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
				if v, err := store.Volume(part.VolumeID); err == nil && v.MediaType.Sequential() {
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

// tree is the tree of the chain as the current pass reads it: the chosen
// subtrees and the directories above them, or, in the hard-link passes,
// the targets and the directories above them. It seeks from one to the
// next, so a pass costs what it reads, not the whole tree.
func (p *planner) tree() *fileindex.Selection {
	it := p.store.TreeOf(p.chain)
	if p.links {
		return fileindex.Select(it, nil, append(slices.Collect(maps.Keys(p.targets)), slices.Collect(maps.Keys(p.targetAncestors))...))
	}
	roots := p.roots
	if len(roots) == 0 {
		roots = []string{"/"}
	}
	return fileindex.Select(it, roots, slices.Collect(maps.Keys(p.ancestors)))
}

// TreeFrom is the tree of a chain from the first path at or after from on.
// Layer() is the position in chain.
func TreeFrom(store *catalog.Store, chain []catalog.Backup, from string) *fileindex.MergeIterator {
	it := store.TreeOf(chain)
	it.Seek(fileindex.From(from))
	return it
}

// restored is what the restore brings back: the chosen subtrees, without
// the directories above them.
func (p *planner) restored() fileindex.Iterator {
	return fileindex.Filter(p.tree(), fileindex.WithinAny(p.roots))
}

// empty reports whether the restore brings back nothing at all: its first
// entry is all it reads.
func (p *planner) empty() (bool, error) {
	sel := p.restored()
	_, ok := sel.Next()
	if err := sel.Err(); err != nil {
		return false, IndexError(err)
	}
	return !ok, nil
}

// count totals the entries and content bytes the restore will bring back,
// until ctx ends.
func (p *planner) count(ctx context.Context) (files, bytes int64, err error) {
	sel := p.restored()
	for {
		e, ok := sel.Next()
		if !ok {
			break
		}
		files++
		bytes += e.Size
		if files%4096 == 0 && ctx.Err() != nil {
			return 0, 0, ctx.Err()
		}
	}
	if err := sel.Err(); err != nil {
		return 0, 0, IndexError(err)
	}
	return files, bytes, nil
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
			StreamStart: part.StreamStart, StreamEnd: part.StreamEnd, MediaType: string(v.MediaType),
		}
		if v.MediaType.HasLibrary() {
			r.Barcode, r.Library = v.Barcode, v.Library
		}
		if v.MediaType.Sequential() {
			r.BlockSize, r.VolumeBytes = v.BlockSize, v.Bytes
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
	head, err := json.Marshal(wire.ReadRequest{SessionID: b.SessionID, KeyID: b.KeyID, Parts: rp, Adjacent: true})
	if err != nil {
		return nil, err
	}
	p.parts[layer], p.heads[layer] = rp, len(head)
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
		return wire.RestorePlanResp{}, errorf(ErrInvalidArgument, "", "restore plan page %d does not exist", cursor)
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
			return wire.RestorePlanResp{}, errorf(ErrInvalidArgument, "restart the restore", "restore plan page %d does not exist", cursor)
		}
	}
	return p.next()
}

func (p *planner) reset() {
	p.layer, p.links, p.it, p.held, p.pending, p.served, p.last, p.done = 0, false, nil, nil, nil, 0, nil, false
	p.targets, p.targetAncestors = map[string]bool{}, nil
}

// next produces the next page: the reads of one layer after another, until
// the next entry would take the page's encoded size over p.bytes. A page
// holds at least one entry, so an entry bigger than a page goes out alone.
func (p *planner) next() (wire.RestorePlanResp, error) {
	resp := wire.RestorePlanResp{Cursor: p.served + 1}
	size, full := 0, false
	for !p.done && !full {
		if p.it == nil {
			p.it = p.tree()
		}
		layer := p.order[p.layer]
		var locs []wire.ReadLoc
		var prev planLoc // the read's last location; none yet follows nothing
		for {
			loc, ok, err := p.nextLoc(layer)
			if err != nil {
				return resp, err
			}
			if !ok {
				p.it = nil
				break
			}
			add := loc.EncodedLen() + 1 // and a comma
			if len(locs) == 0 {
				if _, err := p.readParts(layer); err != nil {
					return resp, err
				}
				add += p.heads[layer] + 1
			}
			if size+add > p.bytes && (len(locs) > 0 || len(resp.Reads) > 0) {
				p.held, full = &loc, true
				break
			}
			// What the node may pass on as stored (wire.ReadLoc.Follows).
			loc.Follows = prev.entry && loc.entry && loc.pos == prev.pos+1
			locs = append(locs, loc.ReadLoc)
			prev = loc
			size += add
		}
		if len(locs) > 0 {
			b := p.chain[layer]
			resp.Reads = append(resp.Reads, wire.ReadRequest{SessionID: b.SessionID, KeyID: b.KeyID, Parts: p.parts[layer], Locs: locs, Adjacent: p.adjacent()})
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

// adjacent tells whether the current pass hands out every entry of its
// layer's index, in order: a whole restore of a chain of one backup (a
// full, or a synthetic full), where nothing is chosen, shadowed by a newer
// layer, deleted or pulled in as a hard link's target.
func (p *planner) adjacent() bool {
	if len(p.chain) != 1 || p.links {
		return false
	}
	for _, r := range p.roots {
		if r != "/" {
			return false
		}
	}
	return true
}

// planLoc is a read location as the pass found it: for an entry of the
// layer read (entry), its place in the layer's index.
type planLoc struct {
	wire.ReadLoc
	entry bool
	pos   uint64
}

// nextLoc returns the next entry of the current pass that layer stored: the
// one held back from the last page first.
func (p *planner) nextLoc(layer int) (planLoc, bool, error) {
	if p.held != nil {
		loc := *p.held
		p.held = nil
		return loc, true, nil
	}
	if len(p.pending) > 0 {
		loc := p.pending[0]
		p.pending = p.pending[1:]
		return planLoc{ReadLoc: loc}, true, nil
	}
	for {
		e, ok := p.it.Next()
		if !ok {
			if err := p.it.Err(); err != nil {
				return planLoc{}, false, IndexError(err)
			}
			return planLoc{}, false, nil
		}
		if p.it.Layer() != layer {
			// A large file whose entry lies in another layer may have
			// blocks in this one, which this pass reads.
			if e.Blocks == nil {
				continue
			}
			if sel, _ := p.selected(&e); !sel {
				continue
			}
			locs := blockReads(&e, p.chain[p.it.Layer()].SessionID, p.chain[layer].SessionID)
			if len(locs) == 0 {
				continue
			}
			p.pending = locs[1:]
			return planLoc{ReadLoc: locs[0]}, true, nil
		}
		sel, ancestor := p.selected(&e)
		if !sel {
			continue
		}
		if e.Type == fileindex.TypeHardlink && !p.links && !fileindex.WithinAny(p.roots)(&fileindex.Entry{Path: e.Target}) {
			p.targets[e.Target] = true
		}
		return planLoc{ReadLoc: wire.ReadLoc{Path: fileindex.Path(e.Path), Loc: e.Loc, Ancestor: ancestor}, entry: true, pos: p.it.Position()}, true, nil
	}
}

// blockReads are the reads of the blocks of e, whose entry lies in
// session own, that lie in session in: one per block, in file order, with
// every offset of the file that holds it.
func blockReads(e *fileindex.Entry, own, in uuid.UUID) []wire.ReadLoc {
	bl := e.Blocks
	var out []wire.ReadLoc
	at := map[[2]uint64]int{}
	offs := bl.Offsets()
	for i := range bl.Blocks {
		b := &bl.Blocks[i]
		off := offs[i]
		if b.Session == 0 || uuid.UUID(bl.SessionOf(i, own)) != in {
			continue
		}
		k := [2]uint64{b.Loc.Seq, uint64(b.Loc.InBlock)}
		if j, ok := at[k]; ok {
			out[j].Block.At = append(out[j].Block.At, off)
			continue
		}
		at[k] = len(out)
		out = append(out, wire.ReadLoc{Path: fileindex.Path(e.Path), Loc: b.Loc, Block: &wire.BlockRead{At: []int64{off}}})
	}
	return out
}

// selected tells whether the current pass reads e, and whether as an
// ancestor of what was chosen. Only a directory is an ancestor: a backup
// taken as the tree changed may hold something else at a path above
// another, which would replace the directory the restore needs there.
func (p *planner) selected(e *fileindex.Entry) (sel, ancestor bool) {
	if p.links {
		if p.targets[e.Path] {
			return true, false
		}
		return e.Type == fileindex.TypeDir && p.targetAncestors[e.Path], true
	}
	if fileindex.WithinAny(p.roots)(e) {
		return true, false
	}
	return e.Type == fileindex.TypeDir && p.ancestors[e.Path], true
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
		targets := make([]string, 0, len(p.targets))
		for t := range p.targets {
			targets = append(targets, t)
		}
		p.targetAncestors = ancestorsOf(targets, p.ancestors, p.roots)
		return
	}
	p.done = true
}

// treePager hands an agent the tree its incremental is compared against, in
// segments, keeping its place between pages.
type treePager struct {
	store  *catalog.Store
	backup uint64
	bytes  int // what one page may fill

	mu      sync.Mutex
	chain   []catalog.Backup
	it      *fileindex.MergeIterator
	last    string // path of the last entry handed out
	peek    *fileindex.Entry
	scratch []byte
}

// segmentBudget is the most raw (uncompressed) entry bytes a segment may
// hold so that it fits a page of pageBytes: the reply carries it in base64
// (4 bytes for 3), and data zstd cannot compress grows by up to a 256th
// plus a block header or so; a segment's own header is a few dozen bytes.
func segmentBudget(pageBytes int) int {
	b64 := pageBytes * 3 / 4
	return max(b64-b64/256-512, 1)
}

func (t *treePager) page(after string) ([]byte, bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.it == nil || after != t.last {
		// First page, or the agent retried or resumed: position after "after".
		chain, err := t.store.Chain(t.backup)
		if err != nil {
			return nil, false, CatalogError(err)
		}
		it := TreeFrom(t.store, chain, after)
		t.it, t.peek, t.chain = it, nil, chain
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
	budget := segmentBudget(t.bytes)
	b := fileindex.NewSegmentBuilder(budget)
	raw, done := 0, false
	for {
		var e fileindex.Entry
		if t.peek != nil {
			e, t.peek = *t.peek, nil
		} else {
			var ok bool
			if e, ok = t.it.Next(); !ok {
				done = true
				break
			}
		}
		// The agent compares metadata only; locations and attributes stay
		// here. A large file's block list goes along, its blocks named by
		// their sessions, so the agent sends only blocks it does not list.
		e.Loc, e.Xattrs, e.Hash = fileindex.Location{}, nil, nil
		if e.Blocks != nil { // a no-op on one rebased already (held over from the last page)
			e.Blocks = e.Blocks.Rebased(t.chain[t.it.Layer()].SessionID)
		}
		t.scratch = fileindex.AppendEntry(t.scratch[:0], &e)
		n := len(t.scratch) + binary.MaxVarintLen32 // and its length prefix
		if raw+n > budget && b.Len() > 0 {
			t.peek = &e
			break
		}
		if err := b.Add(&e); err != nil {
			return nil, false, err
		}
		raw += n
		t.last = e.Path
	}
	if err := t.it.Err(); err != nil {
		return nil, false, IndexError(err)
	}
	return b.Flush().Data, done, nil
}

// IndexError is the answer to a read of the catalog's file index that
// failed: a damaged index names its backup, and says that its volumes are
// not affected.
func IndexError(err error) error {
	var damaged *catalog.IndexDamagedError
	if errors.As(err, &damaged) {
		return errorf(ErrCorrupt, "the catalog's copy of the index is damaged, not the backup: its volumes hold their own index; "+
			"list and restore its files from them with 'cairn volume ls' and 'cairn volume extract' and the escrow key file",
			"%w", err)
	}
	return errorf(ErrCorrupt, "", "reading the catalog's file index: %w", err)
}
