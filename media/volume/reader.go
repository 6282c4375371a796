package volume

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/varint"
)

// PartRef is what a reader needs to know about one part of a session:
// the catalog keeps it, or PartInfo.Ref derives it from the volume.
type PartRef struct {
	VolumeID uuid.UUID
	// VolumeStart is the offset of the part's PartHeader, 0 when unknown.
	// When known, the key is checked against the PartHeader before any
	// data is read (with CheckKeyLazily, when a block does not decrypt).
	VolumeStart int64
	DataStart   int64
	StreamStart uint64
	StreamEnd   uint64
}

// Opener opens a volume for reading. A ReaderAt that is also an io.Closer
// is closed by SessionReader.Close.
type Opener func(volumeID uuid.UUID) (io.ReaderAt, error)

// ReaderOptions tune a SessionReader.
type ReaderOptions struct {
	// Workers decrypt and decompress blocks while the next ones are
	// read; 0 means 2.
	Workers int
	// SeekGap: when the next wanted entry starts more than this many
	// stream bytes past the reading position, the reader seeks instead of
	// reading through. 0 means DefaultSeekGap. A tape, where a seek costs
	// seconds, wants far more than a disk.
	SeekGap int64
	// CheckKeyLazily: the key is checked against a PartHeader only when a
	// block does not decrypt, to tell a wrong key from an altered block,
	// instead of before any data is read. On tape the header is a locate
	// (or a read through the session) away from the data wanted; a wrong
	// key still fails on the first block, before any record is passed on.
	CheckKeyLazily bool
}

// DefaultSeekGap is about where reading through costs a disk as much as a seek.
const DefaultSeekGap = 8 << 20

// ErrBadLocation: a location given to ReadEntries does not point at a
// FileHeader of this session: the index and the session do not match.
var ErrBadLocation = errors.New("location does not point at an entry of this session")

// SessionReader reads the records of one session from the volumes that
// hold its parts. It only reads. Its methods are not safe for concurrent use.
type SessionReader struct {
	session uuid.UUID
	key     *Key
	parts   []PartRef
	open    Opener
	opts    ReaderOptions

	vols     map[uuid.UUID]io.ReaderAt
	volsMu   sync.Mutex
	prepared error // from checking the part table and the key's presence
	ready    bool
	keyOK    bool // the key is known to be right: later GCM failures are damage
	keyID    string
	// passed, when set, are the ranges of data blocks ReadAdjacent may
	// pass on as stored, ascending: the workers only decrypt those.
	passed seqRanges
	// follows is ReadAdjacent's, for the read under way.
	follows []bool
}

type seqRange struct{ lo, hi uint64 }

// seqRanges are ranges of blocks, ascending and apart.
type seqRanges []seqRange

func (s seqRanges) has(seq uint64) bool {
	i, _ := slices.BinarySearchFunc(s, seq, func(r seqRange, seq uint64) int { return cmp.Compare(r.hi, seq) })
	return i < len(s) && s[i].lo <= seq
}

// NewSessionReader returns a reader of the session whose parts are given
// (in any order; together they must cover its stream without gaps).
func NewSessionReader(sessionID uuid.UUID, key *Key, parts []PartRef, open Opener, opts ReaderOptions) *SessionReader {
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	if opts.SeekGap <= 0 {
		opts.SeekGap = DefaultSeekGap
	}
	ps := slices.Clone(parts)
	slices.SortFunc(ps, func(a, b PartRef) int { return cmp.Compare(a.StreamStart, b.StreamStart) })
	r := &SessionReader{session: sessionID, key: key, parts: ps, open: open, opts: opts, vols: map[uuid.UUID]io.ReaderAt{}}
	if key != nil {
		r.keyID = key.ID
	}
	return r
}

// Close closes the volumes the reader opened.
func (r *SessionReader) Close() error {
	r.volsMu.Lock()
	defer r.volsMu.Unlock()
	var errs []error
	for id, ra := range r.vols {
		if c, ok := ra.(io.Closer); ok {
			errs = append(errs, c.Close())
		}
		delete(r.vols, id)
	}
	return errors.Join(errs...)
}

func (r *SessionReader) volume(id uuid.UUID) (io.ReaderAt, error) {
	r.volsMu.Lock()
	defer r.volsMu.Unlock()
	if ra, ok := r.vols[id]; ok {
		return ra, nil
	}
	ra, err := r.open(id)
	if err != nil {
		return nil, fmt.Errorf("session %s: open volume %s: %w", r.session, id, err)
	}
	r.vols[id] = ra
	return ra, nil
}

// prepare checks the part table and the key, against the PartHeader of
// the part where reading starts when its offset is known: that volume is
// opened anyway, and no other is opened only to check a key.
func (r *SessionReader) prepare(stream uint64) error {
	if !r.ready {
		r.ready = true
		r.prepared = r.checkParts()
	}
	if r.prepared != nil || r.keyOK {
		return r.prepared
	}
	if r.opts.CheckKeyLazily {
		return nil
	}
	return r.checkKey(r.parts[min(r.partAt(stream), len(r.parts)-1)])
}

// checkKey checks the key against part p's PartHeader, when its offset is
// known; a key that passes is right, so a block it does not decrypt later
// was altered.
func (r *SessionReader) checkKey(p PartRef) error {
	if p.VolumeStart <= 0 {
		return nil
	}
	h, err := r.partHeader(p)
	if err != nil {
		return err
	}
	r.keyID = h.KeyID
	if err := h.CheckKey(r.key); err != nil {
		return err
	}
	r.keyOK = true
	return nil
}

func (r *SessionReader) checkParts() error {
	if len(r.parts) == 0 {
		return fmt.Errorf("session %s: no parts to read", r.session)
	}
	for i := 1; i < len(r.parts); i++ {
		if r.parts[i].StreamStart != r.parts[i-1].StreamEnd {
			return fmt.Errorf("session %s: the parts given leave stream bytes [%d, %d) on no volume", r.session, r.parts[i-1].StreamEnd, r.parts[i].StreamStart)
		}
	}
	if r.key == nil {
		// Name the key the session needs, if a part header says.
		for _, p := range r.parts {
			if p.VolumeStart > 0 {
				if h, err := r.partHeader(p); err == nil {
					return h.CheckKey(nil)
				}
			}
		}
		return &KeyError{SessionID: r.session, Reason: "no key given"}
	}
	if err := r.key.validate(); err != nil {
		return &KeyError{KeyID: r.key.ID, SessionID: r.session, Reason: err.Error()}
	}
	return nil
}

func (r *SessionReader) partHeader(p PartRef) (*PartHeader, error) {
	ra, err := r.volume(p.VolumeID)
	if err != nil {
		return nil, err
	}
	h, payload, err := readControlBlock(ra, p.VolumeStart)
	if err != nil {
		return nil, fmt.Errorf("session %s: part header on volume %s: %w", r.session, p.VolumeID, err)
	}
	ph, err := decodeJSON[PartHeader](KindPartHeader, p.VolumeStart, payload)
	if err != nil {
		return nil, fmt.Errorf("session %s: volume %s: %w", r.session, p.VolumeID, err)
	}
	if h.Kind != KindPartHeader || ph.SessionID != r.session {
		return nil, fmt.Errorf("session %s: volume %s offset %d holds a %s block of session %s, not this session's part header", r.session, p.VolumeID, p.VolumeStart, h.Kind, ph.SessionID)
	}
	return &ph, nil
}

// item is one block, or one report, on its way from the volume to the
// consumer, in stream order.
type item struct {
	vol    uuid.UUID
	off    int64  // volume offset
	stream uint64 // stream offset
	h      BlockHeader
	raw    []byte
	plain  []byte
	// held is the raw buffer plain lies in, for a block stored
	// uncompressed: it was decrypted in place rather than copied out, and
	// goes back to the pool once plain is consumed.
	held []byte
	// stored is the compressed plaintext of a block decrypted only, for
	// ReadAdjacent to pass on as it is; it lies in held.
	stored []byte
	err    error // from decoding
	damage *CorruptBlockError
	fatal  error
	// partEnd marks the end of a part: the producer goes on to the next
	// volume only when the consumer reads past it, so a read that ends on
	// this volume never opens (or, on tape, mounts) the next one.
	partEnd bool
	ready   chan struct{}
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// cursor streams the session's blocks from one stream offset on, reading
// ahead and decoding in parallel.
type cursor struct {
	cancel context.CancelFunc
	order  chan *item
	more   chan struct{} // the consumer read a partEnd marker
	wg     sync.WaitGroup
	pos    uint64 // stream offset of the block after the last one delivered
}

func (c *cursor) stop() {
	if c == nil {
		return
	}
	c.cancel()
	c.wg.Wait()
	// What was read ahead and not taken goes back for the next cursor:
	// a restore seeks from entry to entry and stops one cursor a seek.
	for it := range c.order {
		it.release()
	}
}

// next returns the next item, nil at the end of the session's stream.
func (c *cursor) next(ctx context.Context) (*item, error) {
	for {
		it, err := c.receive(ctx)
		if it == nil || !it.partEnd {
			return it, err
		}
		select {
		case c.more <- struct{}{}:
		default:
		}
	}
}

func (c *cursor) receive(ctx context.Context) (*item, error) {
	select {
	case it, ok := <-c.order:
		if !ok {
			return nil, nil
		}
		select {
		case <-it.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if it.damage == nil && it.fatal == nil && !it.partEnd {
			c.pos = it.stream + uint64(it.h.Size())
		}
		return it, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// start opens a cursor at stream offset from, where block seq is expected.
// It reads no further than the block lastSeq: what is read ahead past the
// last block wanted is read for nothing, and on tape that is time.
func (r *SessionReader) start(ctx context.Context, from, seq, lastSeq uint64, exact bool) *cursor {
	ctx, cancel := context.WithCancel(ctx)
	c := &cursor{cancel: cancel, order: make(chan *item, 2*r.opts.Workers+2), more: make(chan struct{}, 1), pos: from}
	work := make(chan *item, r.opts.Workers)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(c.order)
		defer close(work)
		r.produce(ctx, from, seq, lastSeq, exact, c.order, work, c.more)
	}()
	for range r.opts.Workers {
		op, err := newOpener(r.key, r.session)
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			for it := range work {
				if err != nil {
					it.err = err
				} else {
					r.decode(op, it)
				}
				close(it.ready)
			}
		}()
	}
	return c
}

// decode turns it.raw into it.plain. A block stored uncompressed keeps
// its raw buffer, its plaintext decrypted in place: no copy.
func (r *SessionReader) decode(op *opener, it *item) {
	if it.h.Kind == KindData && it.h.Flags&(FlagZstd|FlagS2) != 0 && r.passed.has(it.h.Seq) {
		it.stored, it.err = op.decrypt(&it.h, it.raw)
		it.held, it.raw = it.raw, nil
		return
	}
	dst := r.getPlain()
	plain, inBlock, err := op.decode(dst, &it.h, it.raw)
	it.plain, it.err = plain, err
	if inBlock {
		it.held = it.raw
		putBlockBuf(dst)
	} else {
		putBlockBuf(it.raw)
	}
	it.raw = nil
}

// inflate decompresses a block the workers only decrypted, for a walk of
// its records after all. A failure is the block's, as it would have been
// the worker's.
func (r *SessionReader) inflate(it *item) {
	plain, err := decompress(r.getPlain(), it.h.Flags, it.h.RawLen, it.stored)
	if err != nil {
		it.err = err
		return
	}
	putBlockBuf(it.held)
	it.held, it.stored, it.plain = nil, nil, plain
}

// getRaw returns a buffer of n bytes, with room past them for the next
// block's header that the producer reads ahead.
func (r *SessionReader) getRaw(n int) []byte {
	return getBlockBuf(n + HeaderSize)[:n]
}

func (r *SessionReader) getPlain() []byte {
	return getBlockBuf(0)
}

// release gives the item's buffers back, decoded or not.
func (it *item) release() {
	if it.raw != nil {
		putBlockBuf(it.raw)
		it.raw = nil
	}
	switch {
	case it.held != nil:
		putBlockBuf(it.held)
		it.held, it.plain, it.stored = nil, nil, nil
	case it.plain != nil:
		putBlockBuf(it.plain)
		it.plain = nil
	}
}

func (r *SessionReader) partAt(stream uint64) int {
	i, _ := slices.BinarySearchFunc(r.parts, stream, func(p PartRef, s uint64) int {
		switch {
		case p.StreamEnd <= s:
			return -1
		case p.StreamStart > s:
			return 1
		}
		return 0
	})
	return i
}

// produce reads blocks from stream offset from on, checks their headers
// and CRCs, and sends them on in order: good blocks through work to be
// decoded, damage as reports. It resumes after damage at the next block
// it can verify. The first block must have seq, or when exact is false
// any seq from seq on. It stops after the first block at or past lastSeq.
func (r *SessionReader) produce(ctx context.Context, from, seq, lastSeq uint64, exact bool, order, work chan<- *item, more <-chan struct{}) {
	send := func(it *item) bool {
		select {
		case order <- it:
		case <-ctx.Done():
			return false
		}
		if it.ready == closedChan {
			return true
		}
		select {
		case work <- it:
			return true
		case <-ctx.Done():
			return false
		}
	}
	var pend *CorruptBlockError // damage whose extent the next good block tells
	flush := func(upTo uint64) bool {
		if pend == nil {
			return true
		}
		last := max(upTo, pend.Seq+1)
		for s := pend.Seq; s < last; s++ {
			d := *pend
			d.Seq = s
			if s > pend.Seq {
				d.Reason = "lost in the damaged region that starts at this offset"
			}
			if !send(&item{damage: &d, ready: closedChan}) {
				return false
			}
		}
		pend = nil
		return true
	}
	fatal := func(err error) { send(&item{fatal: err, ready: closedChan}) }

	stream := from
	first := r.partAt(from)
	for pi := first; pi < len(r.parts); pi++ {
		p := r.parts[pi]
		if pi > first {
			if !send(&item{partEnd: true, ready: closedChan}) {
				return
			}
			select {
			case <-more:
			case <-ctx.Done():
				return
			}
		}
		ra, err := r.volume(p.VolumeID)
		if err != nil {
			fatal(err)
			return
		}
		pos := p.DataStart + int64(stream-p.StreamStart)
		end := p.DataStart + int64(p.StreamEnd-p.StreamStart)
		// Blocks are read straight into their raw buffers: a header, then
		// the rest. A buffered reader would copy every byte once more.
		br := io.NewSectionReader(ra, pos, end-pos)
		damage := func(reason string) {
			if pend == nil {
				pend = &CorruptBlockError{VolumeID: p.VolumeID, SessionID: r.session, Seq: seq, Offset: pos, Reason: reason}
			}
		}
		// next is the header of the block after the last one, read with its
		// body: a block costs one read, not two.
		var next [HeaderSize]byte
		haveNext := false
		for pos < end {
			var hb [HeaderSize]byte
			if haveNext {
				hb, haveNext = next, false
			} else if _, err := io.ReadFull(br, hb[:]); err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					damage(fmt.Sprintf("the volume ends before offset %d, where the part ends: it was truncated", end))
					break
				}
				fatal(fmt.Errorf("session %s: read volume %s at offset %d: %w", r.session, p.VolumeID, pos, err))
				return
			}
			h, err := ParseBlockHeader(hb[:])
			reason := ""
			switch {
			case err != nil:
				reason = err.Error()
			case h.SessionID != r.session || h.VolumeID != p.VolumeID || (h.Kind != KindData && h.Kind != KindIndex) || h.Seq < seq || (h.Seq > seq && pend == nil && exact):
				reason = fmt.Sprintf("out of place: %s block of volume %s, session %s, seq %d", h.Kind, h.VolumeID, h.SessionID, h.Seq)
			case pos+h.Size() > end:
				reason = fmt.Sprintf("block of %d bytes runs past the end of its part at offset %d", h.Size(), end)
			}
			var raw []byte
			if reason == "" {
				raw = r.getRaw(int(h.Size()))
				copy(raw, hb[:])
				// Not past the last block wanted: on tape the header
				// could cost a record read for nothing.
				ahead := h.Seq < lastSeq && pos+h.Size()+HeaderSize <= end && cap(raw) >= len(raw)+HeaderSize
				body := raw[HeaderSize:]
				if ahead {
					body = raw[HeaderSize : len(raw)+HeaderSize]
				}
				n, err := io.ReadFull(br, body)
				if ahead && err != nil && n >= len(body)-HeaderSize && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
					// The block is whole and the volume ends after it,
					// before the part does: the next header's read says so.
					err, ahead = nil, false
				}
				if ahead {
					copy(next[:], raw[len(raw):len(raw)+HeaderSize])
					haveNext = true
				}
				if err != nil {
					if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
						damage(fmt.Sprintf("the volume ends inside the block, before offset %d, where the part ends: it was truncated", end))
						break
					}
					fatal(fmt.Errorf("session %s: read volume %s at offset %d: %w", r.session, p.VolumeID, pos, err))
					return
				}
				if blockCRC(raw[:HeaderSize], raw[HeaderSize:]) != h.CRC {
					reason = errCRC.Error()
				}
			}
			if reason == "" {
				if !flush(h.Seq) {
					return
				}
				it := &item{vol: p.VolumeID, off: pos, stream: p.StreamStart + uint64(pos-p.DataStart), h: h, raw: raw, ready: make(chan struct{})}
				if !send(it) || h.Seq >= lastSeq {
					return
				}
				pos += h.Size()
				seq = h.Seq + 1
				exact = true
				continue
			}
			if raw != nil {
				putBlockBuf(raw)
			}
			damage(reason)
			f, err := findBlock(ra, pos+1, end, func(c BlockHeader, _ int64) bool {
				return c.SessionID == r.session && c.VolumeID == p.VolumeID && c.Seq >= seq && (c.Kind == KindData || c.Kind == KindIndex)
			})
			if err != nil {
				fatal(fmt.Errorf("session %s: volume %s: %w", r.session, p.VolumeID, err))
				return
			}
			if !f.found {
				break
			}
			pos = f.off
			haveNext = false
			br = io.NewSectionReader(ra, pos, end-pos)
		}
		stream = p.StreamEnd
	}
	flush(0)
}

// checkDecoded turns a block's decoding failure into damage, or into a
// KeyError when no block has shown the key to be right.
func (r *SessionReader) checkDecoded(it *item) error {
	if it.err == nil {
		r.keyOK = true
		return nil
	}
	if errors.Is(it.err, errAuth) && !r.keyOK && r.opts.CheckKeyLazily {
		if err := r.checkKeyAt(it.vol); err != nil {
			return err
		}
	}
	if errors.Is(it.err, errAuth) && !r.keyOK {
		return &KeyError{KeyID: r.keyID, SessionID: r.session, Reason: fmt.Sprintf("key %q does not decrypt block seq %d: it is not the key the session was written with, or the data was altered", r.key.ID, it.h.Seq)}
	}
	if !errors.Is(it.err, errAuth) && !errors.Is(it.err, errDecode) {
		return fmt.Errorf("session %s: %w", r.session, it.err)
	}
	reason := it.err.Error()
	if errors.Is(it.err, errAuth) {
		reason = "AES-GCM authentication failed although the CRC holds: the block was altered"
	}
	it.damage = &CorruptBlockError{VolumeID: it.vol, SessionID: r.session, Seq: it.h.Seq, Offset: it.off, Reason: reason}
	return nil
}

// checkKeyAt checks the key at the PartHeader of the session's part on
// volume vol.
func (r *SessionReader) checkKeyAt(vol uuid.UUID) error {
	for _, p := range r.parts {
		if p.VolumeID == vol && p.VolumeStart > 0 {
			return r.checkKey(p)
		}
	}
	return nil
}

func reportDamage(damaged func(*CorruptBlockError) error, d *CorruptBlockError) error {
	if damaged == nil {
		return d
	}
	return damaged(d)
}

// ReadEntries reads, in stream order, the records of the entries whose
// FileHeader is at each location, and skips the others. Blocks that
// follow each other are read in one pass, decoded in parallel; a wanted
// entry far ahead is reached by a seek, never by reading from the start.
//
// A block that cannot be used is reported to damaged (nil damaged: the
// CorruptBlockError is returned) and reading goes on at the next good
// block. An entry whose records continue past the damage (its EndSeq
// says so) goes on with a hole, and its FileEnd's hash will not match;
// an entry whose FileEnd is lost gets none; an entry whose FileHeader is
// lost gets nothing. Damage in blocks that hold no wanted record is not
// reported.
//
// Every location asked for is accounted for: when any entry was not
// passed on whole, ReadEntries reads on to the end and then returns a
// *LostEntriesError naming each such location and the damage that lost
// it; every location it does not name was passed on whole.
func (r *SessionReader) ReadEntries(ctx context.Context, locs []fileindex.Location, fn func(t RecordType, body []byte) error, damaged func(*CorruptBlockError) error) error {
	return r.readEntries(ctx, locs, fn, nil, damaged)
}

// StoredBlock is a data block ReadAdjacent passes on as the volume holds
// it, decrypted: every record in it, from its first byte to its last,
// belongs to the entries asked for. Payload and Begun are valid only during
// the call.
type StoredBlock struct {
	Seq uint64
	// Codec is FlagZstd or FlagS2 for a compressed block (Decompress
	// gives its records), 0 for a block stored uncompressed, whose
	// Payload is its records.
	Codec   Flags
	RawLen  int
	Payload []byte
	// Begun are the entries whose FileHeader lies in the block, by their
	// index in the locations given, in stream order.
	Begun []int
	// Open is the entry whose records go on past the block (by index),
	// -1 for none.
	Open int
}

// ReadAdjacent is ReadEntries for locations of which the index says which
// are consecutive entries: follows[i] says that locs[i] comes right after
// the location before it in the stream, nothing of the session between
// them (nil: every one does, a whole session restored a page at a time).
// A data block that lies wholly inside such a run holds nothing else, so
// it goes to stored as the volume holds it, decrypted and still
// compressed, rather than record by record to fn: whoever takes the
// records decompresses it, and the reader neither decompresses nor walks
// it. The blocks at either end of a run, the blocks after damage until an
// entry starts a block again, any block where the index disagrees with
// itself, and the blocks of reads by place (Len), which never follow,
// go to fn record by record. Locations without EndSeq are read as
// ReadEntries reads them.
//
// Only the index vouches for a stored block: the reader does not look
// inside it. A stored block whose records disagree with the index is for
// the taker of the records to refuse, as it refuses any malformed stream.
func (r *SessionReader) ReadAdjacent(ctx context.Context, locs []fileindex.Location, follows []bool, fn func(t RecordType, body []byte) error, stored func(*StoredBlock) error, damaged func(*CorruptBlockError) error) error {
	if follows != nil && len(follows) != len(locs) {
		return fmt.Errorf("session %s: %d locations and %d follows flags", r.session, len(locs), len(follows))
	}
	r.follows = follows
	defer func() { r.follows = nil }()
	return r.readEntries(ctx, locs, fn, stored, damaged)
}

// adjacentOrder is the order ReadAdjacent reads locs in, by index, and the
// ranges of data blocks that may lie wholly inside runs of them, each
// following the one before (follows, nil for all); ok is false when it
// cannot pass blocks on as stored (see ReadAdjacent).
func adjacentOrder(locs []fileindex.Location, follows []bool) (order []int, passed seqRanges, ok bool) {
	order = make([]int, len(locs))
	for i, l := range locs {
		if l.EndSeq < l.Seq {
			return nil, nil, false
		}
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return cmp.Or(cmp.Compare(locs[a].Seq, locs[b].Seq), cmp.Compare(locs[a].InBlock, locs[b].InBlock))
	})
	for k := 1; k < len(order); k++ {
		if a, b := locs[order[k-1]], locs[order[k]]; a.Seq == b.Seq && a.InBlock == b.InBlock {
			return nil, nil, false
		}
	}
	// A run's blocks go from the first that its first entry starts, or
	// the one after, to the one before its last entry's FileEnd: that
	// block holds what comes after the run too.
	for k := 0; k < len(order); {
		first := locs[order[k]]
		k++
		if first.Len > 0 {
			continue
		}
		for k < len(order) && locs[order[k]].Len == 0 && (follows == nil || follows[order[k]]) {
			k++
		}
		last := locs[order[k-1]]
		lo := first.Seq
		if first.InBlock != 0 {
			lo++
		}
		if last.EndSeq > 0 && lo <= last.EndSeq-1 {
			passed = append(passed, seqRange{lo: lo, hi: last.EndSeq - 1})
		}
	}
	return order, passed, true
}

func (r *SessionReader) readEntries(ctx context.Context, locs []fileindex.Location, fn func(t RecordType, body []byte) error, stored func(*StoredBlock) error, damaged func(*CorruptBlockError) error) error {
	if len(locs) == 0 {
		return nil
	}
	var order []int
	if stored != nil {
		var ok bool
		if order, r.passed, ok = adjacentOrder(locs, r.follows); !ok {
			stored = nil
		}
		// After the cursors stop (defers run last to first).
		defer func() { r.passed = nil }()
	}
	ls := slices.Clone(locs)
	// A block read by its location (Len set) is announced to fn by a
	// RecBlockStart whose body is its index in locs (BlockIndex).
	type at struct {
		seq uint64
		in  uint32
	}
	index := map[at]int{}
	for i, l := range locs {
		if _, ok := index[at{l.Seq, l.InBlock}]; !ok && l.Len > 0 {
			index[at{l.Seq, l.InBlock}] = i
		}
	}
	slices.SortFunc(ls, func(a, b fileindex.Location) int {
		return cmp.Or(cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.InBlock, b.InBlock))
	})
	if err := r.prepare(ls[0].Off); err != nil {
		return err
	}
	ls = slices.CompactFunc(ls, func(a, b fileindex.Location) bool { return a.Seq == b.Seq && a.InBlock == b.InBlock })
	streamEnd := r.parts[len(r.parts)-1].StreamEnd
	// The last block any wanted entry needs, when the index says for each.
	lastSeq := uint64(0)
	for _, l := range ls {
		if l.EndSeq == 0 || l.EndSeq < l.Seq {
			lastSeq = math.MaxUint64 // an index without EndSeq: read on to the end
			break
		}
		lastSeq = max(lastSeq, l.EndSeq)
	}

	var c *cursor
	defer func() { c.stop() }()
	w := &wanted{ls: ls, order: order, follows: r.follows, seen: map[uint64]*CorruptBlockError{}}
	w.index = func(l *fileindex.Location) int { return index[at{l.Seq, l.InBlock}] }
	for w.i < len(ls) && ls[w.i].Off < r.parts[0].StreamStart {
		// A volume read without the catalog whose part lost its header
		// and first blocks starts after these.
		w.lose(ls[w.i], nil, "its block lies before the first part given: on a volume not given, or lost with the start of the part")
		w.i++
	}
	for w.i < len(ls) || w.in != nil {
		if w.in == nil {
			if l := ls[w.i]; c == nil || l.Off > c.pos+uint64(r.opts.SeekGap) {
				if l.Off >= streamEnd {
					return fmt.Errorf("session %s: %w: seq %d at stream offset %d is past the end of the session's stream (%d)", r.session, ErrBadLocation, l.Seq, l.Off, streamEnd)
				}
				c.stop()
				c = r.start(ctx, l.Off, l.Seq, lastSeq, true)
			}
		}
		it, err := c.next(ctx)
		if err != nil {
			return err
		}
		if it == nil {
			// The stream ended: what is left was lost to reported damage,
			// or lies past the end.
			for _, l := range ls[w.i:] {
				if l.Off >= streamEnd {
					return fmt.Errorf("session %s: %w: seq %d at stream offset %d is past the end of the session's stream (%d)", r.session, ErrBadLocation, l.Seq, l.Off, streamEnd)
				}
			}
			if w.in != nil {
				w.loseIn(cmp.Or(w.cut, w.last), dataEndsEarly)
			}
			for ; w.i < len(ls); w.i++ {
				w.lose(ls[w.i], w.damageAt(ls[w.i].Seq), dataEndsEarly)
			}
			return w.err(r.session)
		}
		if it.fatal != nil {
			return it.fatal
		}
		// Whether the block goes on as stored is decided once, here: for
		// a block passable allows, nothing below changes the account it
		// looked at before the block is passed.
		var end int
		var open, pass bool
		if it.damage == nil {
			if stored != nil && r.passed.has(it.h.Seq) && it.h.Kind == KindData {
				end, open, pass = w.passable(it.h.Seq)
			}
			if it.stored != nil && it.err == nil && !pass {
				r.inflate(it)
			}
			if err := r.checkDecoded(it); err != nil {
				return err
			}
		}
		if d := it.damage; d != nil {
			w.last = d
			w.seen[d.Seq] = d
			if w.in != nil || (w.i < len(ls) && ls[w.i].Seq <= d.Seq) {
				if err := reportDamage(damaged, d); err != nil {
					return err
				}
			}
			if in := w.in; in != nil {
				if in.EndSeq < in.Seq || d.Seq >= in.EndSeq {
					w.loseIn(d, "")
				} else if w.cut == nil {
					w.cut = d // the entry goes on with a hole
				}
			}
			it.release()
			continue
		}
		if in := w.in; in != nil && ((in.EndSeq >= in.Seq && it.h.Seq > in.EndSeq) || it.h.Kind != KindData) {
			w.loseIn(cmp.Or(w.cut, w.last), "its FileEnd is not where the index puts it") // the rest of the entry was lost with the damage
		}
		for w.in == nil && w.i < len(ls) && ls[w.i].Seq < it.h.Seq {
			// Its FileHeader was lost with the damage.
			w.lose(ls[w.i], w.damageAt(ls[w.i].Seq), "its block is not where the index puts it")
			w.i++
		}
		if pass {
			if err := stored(w.pass(it, end, open)); err != nil {
				return err
			}
			it.release()
			continue
		}
		if err := r.walkBlock(it, w, fn); err != nil {
			return err
		}
		it.release()
	}
	return w.err(r.session)
}

const dataEndsEarly = "the session's data on the volumes given ends before the entry does: the part is torn, or the session goes on on a volume not given"

// wanted is ReadEntries' account of the locations asked for: the next one
// to come, the one being passed on, and those lost.
type wanted struct {
	ls   []fileindex.Location
	i    int                 // ls[i] is the next entry to begin
	in   *fileindex.Location // the entry being passed on: its FileEnd has not come
	cut  *CorruptBlockError  // damage that made a hole in in
	last *CorruptBlockError  // the latest damage met
	seen map[uint64]*CorruptBlockError
	lost []LostEntry
	// left is what the block being passed on (in, with Len) still holds.
	left  uint64
	index func(*fileindex.Location) int
	// order maps ls to the locations given, by index: set by ReadAdjacent,
	// with follows, by the locations given (nil: all follow).
	order   []int
	follows []bool
}

// follow tells whether ls[i] comes right after ls[i-1], nothing between:
// as the caller of ReadAdjacent says, and never a read by place.
func (w *wanted) follow(i int) bool {
	return w.ls[i].Len == 0 && (i == 0 || w.ls[i-1].Len == 0) && (w.follows == nil || w.follows[w.order[i]])
}

// passable tells whether block seq holds only records of wanted entries by
// what the index says, the reader's account being whole: it starts inside
// the entry being passed on, or with the next entry's FileHeader; every
// entry that ends in it is followed by the next, which comes right after
// it; and the last record goes on into the next block, or the next entry,
// right after it, starts that block. If so, end is the next location to
// begin after the block, and open tells whether ls[end-1] goes on past it.
func (w *wanted) passable(seq uint64) (end int, open, ok bool) {
	if w.order == nil || w.cut != nil {
		return 0, false, false
	}
	i := w.i
	if w.in == nil {
		if i == len(w.ls) || w.ls[i].Seq != seq || w.ls[i].InBlock != 0 || w.ls[i].Len > 0 {
			return 0, false, false
		}
	} else if w.in.Len > 0 || w.in.EndSeq < seq {
		return 0, false, false
	}
	open = w.in != nil && w.in.EndSeq > seq
	for first := w.in == nil; i < len(w.ls) && w.ls[i].Seq == seq; i, first = i+1, false {
		if open {
			return 0, false, false // an entry begins before the one before it ends
		}
		// The first record of the block needs nothing before it.
		if !first && !w.follow(i) || w.ls[i].Len > 0 {
			return 0, false, false
		}
		open = w.ls[i].EndSeq > seq
	}
	if !open && (i == len(w.ls) || w.ls[i].Seq != seq+1 || w.ls[i].InBlock != 0 || !w.follow(i)) {
		return 0, false, false
	}
	return i, open, true
}

// pass accounts for block it as passed on whole, as passable found it
// (end, open), and describes it. The entry being passed on is always the
// last one begun (ls[i-1]), here as in walkBlock.
func (w *wanted) pass(it *item, end int, open bool) *StoredBlock {
	b := &StoredBlock{Seq: it.h.Seq, RawLen: int(it.h.RawLen), Payload: it.plain, Begun: w.order[w.i:end], Open: -1}
	if it.stored != nil {
		b.Codec, b.Payload = it.h.Flags&(FlagZstd|FlagS2), it.stored
	}
	w.i, w.in = end, nil
	if open {
		w.in, b.Open = &w.ls[end-1], w.order[end-1]
	}
	return b
}

func (w *wanted) lose(l fileindex.Location, d *CorruptBlockError, why string) {
	w.lost = append(w.lost, lostEntry(l, "", d, why))
}

func (w *wanted) loseIn(d *CorruptBlockError, why string) {
	w.lose(*w.in, d, why)
	w.in, w.cut = nil, nil
}

// damageAt is the damage that lost block seq, or the latest damage.
func (w *wanted) damageAt(seq uint64) *CorruptBlockError {
	if d := w.seen[seq]; d != nil {
		return d
	}
	return w.last
}

func (w *wanted) err(session uuid.UUID) error {
	if len(w.lost) == 0 {
		return nil
	}
	return &LostEntriesError{SessionID: session, Lost: w.lost}
}

func lostEntry(l fileindex.Location, path string, d *CorruptBlockError, why string) LostEntry {
	if d != nil {
		why = d.Error()
	}
	return LostEntry{Loc: l, Path: path, Damage: d, Reason: why}
}

// walkBlock passes on the wanted records of one block.
func (r *SessionReader) walkBlock(it *item, w *wanted, fn func(RecordType, []byte) error) error {
	plain := it.plain
	p := 0
	for p < len(plain) {
		if w.in == nil {
			if w.i == len(w.ls) || w.ls[w.i].Seq != it.h.Seq {
				return nil
			}
			l := &w.ls[w.i]
			if int(l.InBlock) < p {
				return fmt.Errorf("session %s: %w: seq %d in_block %d lies inside the previous entry", r.session, ErrBadLocation, l.Seq, l.InBlock)
			}
			p = int(l.InBlock)
			t, body, n, err := ParseRecord(plain[min(p, len(plain)):])
			if l.Len > 0 {
				if err != nil || t != RecData {
					return fmt.Errorf("session %s: %w: seq %d in_block %d is not a Data record", r.session, ErrBadLocation, l.Seq, l.InBlock)
				}
				w.in, w.left = l, l.Len
				w.i++
				if err := fn(RecBlockStart, binary.AppendUvarint(nil, uint64(w.index(l)))); err != nil {
					return err
				}
				continue // its first Data record is passed on below
			}
			if err != nil || t != RecFileHeader {
				return fmt.Errorf("session %s: %w: seq %d in_block %d is not a FileHeader record", r.session, ErrBadLocation, l.Seq, l.InBlock)
			}
			w.in = l
			w.i++
			if err := fn(t, body); err != nil {
				return err
			}
			p += n
			continue
		}
		t, body, n, err := ParseRecord(plain[p:])
		if err != nil {
			// CRC and GCM both hold, so this is a writer's bug, not the medium.
			return fmt.Errorf("session %s: block seq %d at offset %d on volume %s: record at %d: %w", r.session, it.h.Seq, it.off, it.vol, p, err)
		}
		if w.in.Len > 0 && t != RecData {
			w.loseIn(cmp.Or(w.cut, w.last), "its Data records end before the block does")
			continue
		}
		if t == RecFileHeader {
			// The entry's end was lost with damage; this is the next one.
			w.loseIn(cmp.Or(w.cut, w.last), "its FileEnd is missing: the next entry begins before it")
			continue
		}
		if err := fn(t, body); err != nil {
			return err
		}
		p += n
		if w.in.Len > 0 {
			_, data, err := DecodeData(body)
			if err != nil {
				return fmt.Errorf("session %s: block seq %d: %w", r.session, it.h.Seq, err)
			}
			w.left -= min(w.left, uint64(len(data)))
			if w.left == 0 {
				if w.cut != nil {
					w.loseIn(w.cut, "")
				}
				w.in = nil
			}
			continue
		}
		if t == RecFileEnd {
			if w.cut != nil {
				w.loseIn(w.cut, "")
			}
			w.in = nil
		}
	}
	return nil
}

// BlockIndex decodes the body of the RecBlockStart that ReadEntries
// passes before a block read by its location: the block's index in the
// locations it was given.
func BlockIndex(body []byte) (int, error) {
	i, n := varint.Uvarint(body)
	if n != len(body) || i > math.MaxInt32 {
		return 0, fmt.Errorf("%w: malformed BlockStart from the reader", ErrBadRecord)
	}
	return int(i), nil
}

// ReadAll reads every record of the session, in order: an extract with no
// index. After damage it resumes at the next FileHeader, so an entry cut
// by damage gets no FileEnd.
func (r *SessionReader) ReadAll(ctx context.Context, fn func(t RecordType, body []byte) error, damaged func(*CorruptBlockError) error) error {
	return r.walkAll(ctx, func(_ *item, _ int, t RecordType, body []byte) error { return fn(t, body) }, damaged, nil)
}

// RecoverIndex rebuilds the index of a session from its data blocks, for
// a session whose trailer is missing (a torn session) or damaged. fn gets
// every entry whose FileHeader and FileEnd were both read, Loc and Hash
// set, in index order. An entry whose FileHeader was read but whose
// records were cut by damage, or end with the data given, is not passed
// to fn: RecoverIndex reads on and then returns a *LostEntriesError
// naming each (Path and Loc set, Loc.EndSeq unknown). Entries whose
// FileHeader was in a damaged block cannot be named.
func (r *SessionReader) RecoverIndex(ctx context.Context, fn func(e fileindex.Entry) error, damaged func(*CorruptBlockError) error) error {
	var cur *fileindex.Entry
	var lost []LostEntry
	var placed placements
	err := r.walkAll(ctx, func(it *item, p int, t RecordType, body []byte) error {
		switch t {
		case RecData:
			if off, data, err := DecodeData(body); cur != nil && err == nil {
				placed.add(off, len(data), it.h.Seq, p, it.stream)
			}
		case RecFileHeader:
			e, err := fileindex.DecodeEntry(body)
			if err != nil {
				return fmt.Errorf("session %s: block seq %d: %w", r.session, it.h.Seq, err)
			}
			if cur != nil {
				lost = append(lost, lostEntry(cur.Loc, cur.Path, nil, "its FileEnd is missing: the next entry begins before it"))
			}
			e.Hash, e.Blocks = nil, nil
			e.Loc = fileindex.Location{Seq: it.h.Seq, Off: it.stream, InBlock: uint32(p)}
			cur = &e
			placed.reset()
		case RecFileEnd:
			if cur == nil {
				return nil
			}
			status, hash, blocks, err := DecodeFileEnd(body)
			if err != nil {
				return fmt.Errorf("session %s: block seq %d: %w", r.session, it.h.Seq, err)
			}
			if blocks != nil {
				if err := placed.locate(blocks); err != nil {
					return fmt.Errorf("session %s: block seq %d: entry %q: %w", r.session, it.h.Seq, cur.Path, err)
				}
				cur.Blocks = blocks
			}
			if status == EndOK && len(hash) > 0 {
				cur.Hash = append([]byte(nil), hash...)
			}
			cur.Loc.EndSeq = it.h.Seq
			e := *cur
			cur = nil
			return fn(e)
		}
		return nil
	}, damaged, func(d *CorruptBlockError) {
		if cur != nil {
			lost = append(lost, lostEntry(cur.Loc, cur.Path, d, dataEndsEarly))
		}
		cur = nil
	})
	if err != nil {
		return err
	}
	if len(lost) > 0 {
		return &LostEntriesError{SessionID: r.session, Lost: lost}
	}
	return nil
}

// walkAll passes every record of the session's data blocks to fn, with the
// block and the record's offset in it. cut is called with the damage when
// damage cuts the entry in progress, and with nil when the data ends.
func (r *SessionReader) walkAll(ctx context.Context, fn func(it *item, p int, t RecordType, body []byte) error, damaged func(*CorruptBlockError) error, cut func(*CorruptBlockError)) error {
	if err := r.prepare(0); err != nil {
		return err
	}
	// A session read from its first part starts at seq 0; one whose
	// first volumes are missing starts wherever its first block says.
	c := r.start(ctx, r.parts[0].StreamStart, 0, math.MaxUint64, r.parts[0].StreamStart == 0)
	defer c.stop()
	skip := false // after damage: until the next FileHeader
	for {
		it, err := c.next(ctx)
		if err != nil {
			return err
		}
		if it == nil || (it.damage == nil && it.fatal == nil && it.h.Kind != KindData) {
			// The end of the data given, or the trailer.
			if cut != nil {
				cut(nil)
			}
			return nil
		}
		if it.fatal != nil {
			return it.fatal
		}
		if it.damage == nil {
			if err := r.checkDecoded(it); err != nil {
				return err
			}
		}
		if it.damage != nil {
			if err := reportDamage(damaged, it.damage); err != nil {
				return err
			}
			skip = true
			if cut != nil {
				cut(it.damage)
			}
			continue
		}
		for p := 0; p < len(it.plain); {
			t, body, n, err := ParseRecord(it.plain[p:])
			if err != nil {
				return fmt.Errorf("session %s: block seq %d at offset %d on volume %s: record at %d: %w", r.session, it.h.Seq, it.off, it.vol, p, err)
			}
			if t == RecFileHeader {
				skip = false
			}
			if !skip {
				if err := fn(it, p, t, body); err != nil {
					return err
				}
			}
			p += n
		}
		it.release()
	}
}
