package volume

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/google/uuid"
)

// Appender is a volume open for appending a session part: the plug-in
// point between the format and a medium (a disk file, an SFTP file, a tape
// positioned at end of data).
//
// Contract: Offset is the volume byte offset where the next Write lands
// and only Write moves it. Remaining is how many more bytes the medium
// accepts; the writer never writes more. Write writes all of p or returns
// an error that says why (the medium's own error wrapped, so errors.Is
// finds syscall.ENOSPC and the like). Sync returns once everything
// written is durable. BlockSize is the volume's label block size: parts
// start on multiples of it, unless the Appender is a PartAligner. An Appender is used by one goroutine at a time.
type Appender interface {
	VolumeID() uuid.UUID
	BlockSize() int
	Offset() int64
	Remaining() int64
	Write(p []byte) (int, error)
	Sync() error
}

// PartAligner is an Appender on a volume whose parts start on multiples
// of PartAlign rather than of BlockSize (format 2: a disk volume, where
// a tiny session then takes a few KiB, not a whole block). An Appender
// that is not one starts parts on BlockSize multiples (format 1: tape,
// where a part must fill whole records).
type PartAligner interface {
	PartAlign() int
}

// Labeled is an Appender that knows its volume's label, as written on the
// volume. The writer puts on a volume only what its format version holds.
// An Appender that is not one is taken to be of the newest version, so
// every medium that appends to volumes older programs labeled must be one.
type Labeled interface {
	Label() Label
}

// FormatOf is the format version of a's volume.
func FormatOf(a Appender) int {
	if l, ok := a.(Labeled); ok {
		return l.Label().FormatVersion
	}
	return FormatVersion
}

// codecOn is the codec a session that asks for codec writes on a's volume.
func codecOn(a Appender, codec string) string {
	if codec == CompressionS2 && FormatOf(a) < FormatS2 {
		return CompressionZstd
	}
	if codec == "" {
		return CompressionNone
	}
	return codec
}

// PartAlignOf is the multiple a part on a's volume starts on.
func PartAlignOf(a Appender) int {
	if pa, ok := a.(PartAligner); ok && pa.PartAlign() > 0 {
		return pa.PartAlign()
	}
	return a.BlockSize()
}

// MaxBlockBytes is the longest block a writer writes: a header and the
// largest payload.
const MaxBlockBytes = HeaderSize + maxPayload

// RecoverableAppender is an Appender on a medium that can fail in the
// middle of a part and keep what it took before (a tape: the records the
// drive accepted stay on it). When its Write or Sync fails with an error
// that errors.Is finds ErrMediumLost in, the SessionWriter ends the part
// on it at the last block that is wholly durable, reports it through
// WriterOptions.Lost, and writes the blocks it lost again on the volume
// WriterOptions.Next gives.
//
// Contract: Durable is the volume offset up to which every byte written
// is on the medium; it never moves back, and after a Sync that leaves
// Offset on a multiple of BlockSize it is Offset. After the failure, the
// bytes past it are not on the medium (or not for sure). ReadBack copies
// into p the bytes written at volume offset off; at rest (after a Sync
// returned, or after a Write or Sync failed: never while an Appender
// that writes behind its caller, such as the storage node's spool, may
// still be writing) it serves any range from Durable() - MaxBlockBytes
// (but not before the first byte this Appender wrote) to Offset(), so
// the writer can send again a block whose start is on the medium and
// whose end is not. volumetest's Recoverable subtest holds an
// implementation to this.
type RecoverableAppender interface {
	Appender
	Durable() int64
	ReadBack(p []byte, off int64) error
}

// SessionInfo describes the session a SessionWriter writes; it goes into
// every PartHeader.
type SessionInfo struct {
	// SessionID must be fresh for every SessionWriter, even when a failed
	// session is retried: it salts the session's encryption key, and the
	// same id under the same data key would reuse GCM nonces.
	SessionID uuid.UUID
	JobID     uint64
	BackupID  uint64
	// ParentBackup is the backup this one builds on (0 for a full), and
	// Chain where the sessions of its chain lie (PartHeader.Chain; the
	// newest MaxChainParts are kept).
	ParentBackup uint64
	Chain        []ChainPart
	Client       string
	Level        string
	Pool         string
	Created      time.Time
	// Compression is the codec of data blocks (a block is stored as it
	// is when compressing does not pay): CompressionZstd, CompressionS2,
	// or CompressionNone ("" too). S2 goes only on volumes of format 5
	// and later; the parts on older volumes are zstd.
	Compression string
	// BlockRawSize is the plaintext per data block; 0 means
	// DefaultBlockRawSize.
	BlockRawSize int
}

// WriterOptions tune a SessionWriter.
type WriterOptions struct {
	// Workers is the number of goroutines that compress and encrypt
	// blocks; 0 means 2. A session holds about 2*Workers+3 blocks in
	// flight, each up to twice the block raw size (plaintext and sealed).
	Workers int
	// TempDir holds the spill file of the session's index segments, so
	// memory stays bounded while the session is written however many
	// files it holds; "" means os.TempDir().
	TempDir string
	// Segment, when set, is given each segment of the session's file
	// index, in order, as soon as every block its entries point into is
	// written: so the index can be recorded while the session is still
	// being written. It is called from the writer's own goroutines, one
	// call at a time, the last one from Close before the trailer is
	// written. It may block, holding the writer back, but must not wait
	// for the writer; an error fails the session with it.
	Segment func(fileindex.Segment) error
	// Next is called, from the writer's own goroutine, when a block does
	// not fit the current volume, after the writer has closed its part
	// there (PartEnd with final=false) and synced it. The session goes on
	// with a new part on the volume Next returns. Nil means a full volume
	// fails the session with ErrVolumeFull.
	Next func(full Appender) (Appender, error)
	// Lost, when set, is told of a volume the session gave up after a
	// medium error (ErrMediumLost from a RecoverableAppender), before
	// Next is asked for the volume that takes the rest: the caller marks
	// it bad. The volume keeps the session's part up to its last durable
	// block, with no PartEnd (PartResult.Torn).
	Lost func(lost Appender, cause error)
}

// Progress counts what a session has taken in and written so far.
type Progress struct {
	Entries      int64 // entries closed by their FileEnd
	Files        int64 // of those, regular files (entries that carry content)
	ContentBytes int64 // file content in Data records
	StreamBytes  int64 // record bytes accepted by Write (plaintext)
	StoredBytes  int64 // bytes written to volumes: every block, header and padding
	Blocks       int64 // data and index blocks written
}

// PartResult is where one part of a session lies on its volume.
type PartResult struct {
	VolumeID    uuid.UUID
	Part        int
	VolumeStart int64 // offset of the PartHeader block
	DataStart   int64 // offset of the first data block, right after the PartHeader
	End         int64 // offset after the padding: where the next part may start
	StreamStart uint64
	StreamEnd   uint64
	FirstSeq    uint64 // first data or index block of the part
	LastSeq     uint64 // last data or index block of the part; meaningless if Blocks is 0
	Blocks      int64
	Final       bool
	// Torn: the medium failed in this part; it holds its blocks up to
	// StreamEnd and no PartEnd, and the session goes on in the next part,
	// on another volume, from StreamEnd.
	Torn bool
}

// Ref is what a SessionReader needs to know about the part.
func (p PartResult) Ref() PartRef {
	return PartRef{VolumeID: p.VolumeID, VolumeStart: p.VolumeStart, DataStart: p.DataStart, StreamStart: p.StreamStart, StreamEnd: p.StreamEnd}
}

// SessionResult is what a closed session wrote.
type SessionResult struct {
	Parts []PartResult
	// Index is the session's file index, as written in its trailer. The
	// caller closes it.
	Index        *IndexSegments
	Entries      int64
	Files        int64
	ContentBytes int64
	StreamBytes  int64
	StoredBytes  int64
	Blocks       int64
}

// Refs are the session's parts as a SessionReader reads them back.
func (r *SessionResult) Refs() []PartRef {
	out := make([]PartRef, len(r.Parts))
	for i, p := range r.Parts {
		out[i] = p.Ref()
	}
	return out
}

// SessionWriter packs a session's records into blocks, compresses and
// encrypts them on worker goroutines, and writes them in order to one
// volume after another. Write and Close are called from one goroutine;
// Progress and Abort may be called from any.
type SessionWriter struct {
	info     SessionInfo
	key      *Key
	opts     WriterOptions
	blockRaw int

	// Packer state, owned by the goroutine calling Write and Close.
	cur      []byte
	curSeq   uint64
	open     *fileindex.Entry // entry whose FileEnd has not arrived
	placed   placements       // of open's Data records
	lastPath string
	anyEntry bool
	pending  pendingEntries
	index    *indexBuilder // the write loop's, then Close's
	closed   atomic.Bool

	jobs     chan *job // to the workers
	queue    chan *job // to the volume writer, in seq order
	done     chan struct{}
	doneOnce sync.Once
	errMu    sync.Mutex
	err      error
	wg       sync.WaitGroup
	curVol   atomic.Pointer[sealTarget] // volume blocks are being sealed for

	vw *volWriter

	entries, files, content, streamed atomic.Int64
	stored, blocks                    atomic.Int64
}

// sealTarget is the volume workers seal blocks for, and the codec it holds.
type sealTarget struct {
	id    uuid.UUID
	codec string
}

// sealFor makes a the volume the workers seal for.
func (w *SessionWriter) sealFor(a Appender) {
	w.curVol.Store(&sealTarget{id: a.VolumeID(), codec: codecOn(a, w.info.Compression)})
}

// job is one block on its way through the pipeline.
type job struct {
	h      BlockHeader
	plain  []byte
	out    []byte
	counts partCounts // session counts up to and including this block
	ready  chan struct{}
}

type partCounts struct{ entries, files, content int64 }

// NewSessionWriter starts a session on first. Nothing is written until the
// first block is ready; only after Close returns is the session durable.
func NewSessionWriter(info SessionInfo, key *Key, first Appender, opts WriterOptions) (*SessionWriter, error) {
	if key == nil {
		return nil, errors.New("new session writer: no data key: volume format 1 always encrypts")
	}
	if err := key.validate(); err != nil {
		return nil, fmt.Errorf("new session writer: %w", err)
	}
	if info.SessionID == uuid.Nil {
		return nil, errors.New("new session writer: no session id")
	}
	if first == nil {
		return nil, errors.New("new session writer: no volume to write to")
	}
	if info.BlockRawSize == 0 {
		info.BlockRawSize = DefaultBlockRawSize
	}
	if info.BlockRawSize < MinBlockRawSize || info.BlockRawSize > MaxBlockRawSize {
		return nil, fmt.Errorf("new session writer: block raw size %d is outside [%d, %d]", info.BlockRawSize, MinBlockRawSize, MaxBlockRawSize)
	}
	for name, v := range map[string]string{"client": info.Client, "level": info.Level, "pool": info.Pool, "key id": key.ID} {
		if len(v) > 1024 {
			return nil, fmt.Errorf("new session writer: %s is %d bytes long, the limit is 1024", name, len(v))
		}
	}
	if info.Created.IsZero() {
		info.Created = time.Now()
	}
	if info.Compression != "" {
		if err := CheckCompression(info.Compression); err != nil {
			return nil, fmt.Errorf("new session writer: %w", err)
		}
	}
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	sealers := make([]*sealer, opts.Workers)
	for i := range sealers {
		s, err := newSealer(key, info.SessionID, info.Compression)
		if err != nil {
			return nil, fmt.Errorf("new session writer: %w", err)
		}
		sealers[i] = s
	}
	sp, err := newSegmentSpill(opts.TempDir)
	if err != nil {
		return nil, fmt.Errorf("new session writer: %w", err)
	}
	w := &SessionWriter{
		info: info, key: key, opts: opts, blockRaw: info.BlockRawSize,
		jobs:  make(chan *job, opts.Workers),
		queue: make(chan *job, 2*opts.Workers+1),
		done:  make(chan struct{}),
	}
	w.index = &indexBuilder{w: w, b: fileindex.NewSegmentBuilder(w.segmentBytes()), spill: sp}
	w.vw = &volWriter{w: w, app: first}
	w.sealFor(first)
	w.cur = w.getPlain()
	for _, s := range sealers {
		w.wg.Add(1)
		go w.work(s)
	}
	w.wg.Add(1)
	go w.writeLoop()
	return w, nil
}

func (w *SessionWriter) getPlain() []byte { return getBlockBuf(w.blockRaw) }

func (w *SessionWriter) getOut() []byte { return getBlockBuf(sealedCap(w.blockRaw)) }

// fail records the first error and stops the pipeline.
func (w *SessionWriter) fail(err error) error {
	w.errMu.Lock()
	if w.err == nil {
		w.err = err
	}
	err = w.err
	w.errMu.Unlock()
	w.doneOnce.Do(func() { close(w.done) })
	return err
}

func (w *SessionWriter) failure() error {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	return w.err
}

func (w *SessionWriter) work(s *sealer) {
	defer w.wg.Done()
	for {
		select {
		case j, ok := <-w.jobs:
			if !ok {
				return
			}
			t := w.curVol.Load()
			j.h.VolumeID, s.codec = t.id, t.codec
			j.out = s.seal(w.getOut(), j.h, j.plain)
			putBlockBuf(j.plain)
			j.plain = nil
			close(j.ready)
		case <-w.done:
			return
		}
	}
}

func (w *SessionWriter) writeLoop() {
	defer w.wg.Done()
	for {
		var j *job
		select {
		case j = <-w.queue:
			if j == nil {
				return // closed by Close: every block is written
			}
		case <-w.done:
			return
		}
		select {
		case <-j.ready:
		case <-w.done:
			return
		}
		err := w.vw.writeBlock(j.out, j.h.Kind, j.h.Seq, j.counts)
		putBlockBuf(j.out)
		if err == nil {
			err = w.index.written(j.h.Seq)
		}
		if err != nil {
			w.fail(err)
			return
		}
	}
}

// Write takes one or more whole records (see record.go). Blocks are sealed
// and written behind it; an error from that pipeline, such as the
// medium's ENOSPC, comes back from the next Write or Close. After an
// error the writer is stopped: call Abort.
func (w *SessionWriter) Write(records []byte) error {
	if w.closed.Load() {
		return ErrWriterClosed
	}
	if err := w.failure(); err != nil {
		return err
	}
	for len(records) > 0 {
		t, body, n, err := ParseRecord(records)
		if err != nil {
			if errors.Is(err, ErrShortRecord) {
				return w.fail(fmt.Errorf("session %s: %w: the %d bytes at the end of a Write are not a whole record; send whole records", w.info.SessionID, ErrBadStream, len(records)))
			}
			return w.fail(fmt.Errorf("session %s: %w: %w", w.info.SessionID, ErrBadStream, err))
		}
		rec := records[:n]
		switch t {
		case RecFileHeader:
			err = w.fileHeader(rec, body)
		case RecData:
			err = w.data(rec, body)
		case RecFileEnd:
			err = w.fileEnd(rec, body)
		}
		if err != nil {
			return w.fail(err)
		}
		w.streamed.Add(int64(n))
		records = records[n:]
	}
	return nil
}

func (w *SessionWriter) streamErr(format string, args ...any) error {
	return fmt.Errorf("session %s: %w: %s", w.info.SessionID, ErrBadStream, fmt.Sprintf(format, args...))
}

func (w *SessionWriter) fileHeader(rec, body []byte) error {
	if w.open != nil {
		return w.streamErr("FileHeader record while entry %q has no FileEnd yet", w.open.Path)
	}
	if len(body) > MaxHeaderBody {
		return w.streamErr("FileHeader record of %d bytes exceeds %d", len(body), MaxHeaderBody)
	}
	e, err := fileindex.DecodeEntry(body)
	if err != nil {
		return fmt.Errorf("session %s: %w: FileHeader record: %w", w.info.SessionID, ErrBadStream, err)
	}
	if w.anyEntry && fileindex.Compare(w.lastPath, e.Path) >= 0 {
		return fmt.Errorf("session %s: %w: entries must arrive in index order: %w", w.info.SessionID, ErrBadStream, &fileindex.OrderError{Prev: w.lastPath, Path: e.Path})
	}
	if err := w.place(rec); err != nil {
		return err
	}
	e.Loc = fileindex.Location{Seq: w.curSeq, InBlock: uint32(len(w.cur) - len(rec))}
	e.Hash, e.Blocks = nil, nil
	w.open = &e
	w.placed.reset()
	w.lastPath = e.Path
	w.anyEntry = true
	return nil
}

// minSplit is the least content worth a split Data record; below it the
// record goes whole into the next block.
const minSplit = 64

func (w *SessionWriter) data(rec, body []byte) error {
	if w.open == nil {
		return w.streamErr("Data record outside an entry")
	}
	if !w.open.Type.HasContent() {
		return w.streamErr("Data record in %s entry %q", w.open.Type, w.open.Path)
	}
	off, content, err := DecodeData(body)
	if err != nil {
		return fmt.Errorf("session %s: %w: entry %q: %w", w.info.SessionID, ErrBadStream, w.open.Path, err)
	}
	if len(rec) <= w.blockRaw-len(w.cur) {
		w.placed.add(off, len(content), w.curSeq, len(w.cur), 0)
		w.cur = append(w.cur, rec...)
		w.content.Add(int64(len(content)))
		return nil
	}
	// Fill the block with as much of the content as fits, so blocks stay
	// full and records still never span blocks.
	for {
		room := w.blockRaw - len(w.cur)
		if dataRecordLen(off, len(content)) <= room {
			w.placed.add(off, len(content), w.curSeq, len(w.cur), 0)
			w.cur = AppendDataRecord(w.cur, off, content)
			w.content.Add(int64(len(content)))
			return nil
		}
		if c := dataFit(off, room); c >= minSplit {
			w.placed.add(off, c, w.curSeq, len(w.cur), 0)
			w.cur = AppendDataRecord(w.cur, off, content[:c])
			w.content.Add(int64(c))
			off += int64(c)
			content = content[c:]
		}
		if err := w.flush(); err != nil {
			return err
		}
	}
}

func (w *SessionWriter) fileEnd(rec, body []byte) error {
	if w.open == nil {
		return w.streamErr("FileEnd record outside an entry")
	}
	status, hash, blocks, err := DecodeFileEnd(body)
	if err != nil {
		return fmt.Errorf("session %s: %w: entry %q: %w", w.info.SessionID, ErrBadStream, w.open.Path, err)
	}
	if blocks != nil {
		if w.open.Type != fileindex.TypeFile || blocks.End() > uint64(max(w.open.Size, 0)) {
			return w.streamErr("entry %q: a block list up to offset %d for a %s of %d", w.open.Path, blocks.End(), w.open.Type, w.open.Size)
		}
		if err := w.placed.locate(blocks); err != nil {
			return w.streamErr("entry %q: %v", w.open.Path, err)
		}
	}
	if err := w.place(rec); err != nil {
		return err
	}
	e := w.open
	e.Blocks = blocks
	e.Loc.EndSeq = w.curSeq
	// An entry whose content could not be read whole keeps no hash: the
	// index then says "no verified content" rather than vouching for it.
	if status == EndOK && len(hash) > 0 {
		e.Hash = append([]byte(nil), hash...)
	}
	w.pending.add(e)
	w.open = nil
	w.entries.Add(1)
	if e.Type.HasContent() {
		w.files.Add(1)
	}
	return nil
}

// place appends a record that must not be split, closing the block first
// when it does not fit.
func (w *SessionWriter) place(rec []byte) error {
	if len(rec) > w.blockRaw-len(w.cur) {
		if err := w.flush(); err != nil {
			return err
		}
	}
	w.cur = append(w.cur, rec...)
	return nil
}

// flush hands the current block to the pipeline.
func (w *SessionWriter) flush() error {
	if len(w.cur) == 0 {
		return nil
	}
	j := &job{
		h:      BlockHeader{Kind: KindData, SessionID: w.info.SessionID, Seq: w.curSeq},
		plain:  w.cur,
		counts: partCounts{w.entries.Load(), w.files.Load(), w.content.Load()},
		ready:  make(chan struct{}),
	}
	w.cur = w.getPlain()
	w.curSeq++
	select {
	case w.queue <- j:
	case <-w.done:
		return w.failure()
	}
	select {
	case w.jobs <- j:
	case <-w.done:
		return w.failure()
	}
	return nil
}

// Progress may be called at any time, from any goroutine.
func (w *SessionWriter) Progress() Progress {
	return Progress{
		Entries: w.entries.Load(), Files: w.files.Load(), ContentBytes: w.content.Load(),
		StreamBytes: w.streamed.Load(), StoredBytes: w.stored.Load(), Blocks: w.blocks.Load(),
	}
}

// Close writes the last data block, the index trailer and the final
// PartEnd, pads and syncs. Only after it returns is the session durable.
// On error the writer is aborted; the caller rolls the volumes back.
func (w *SessionWriter) Close() (*SessionResult, error) {
	if w.closed.Load() {
		return nil, ErrWriterClosed
	}
	res, err := w.close()
	if err != nil {
		w.fail(err)
		w.Abort()
		return nil, err
	}
	return res, nil
}

func (w *SessionWriter) close() (*SessionResult, error) {
	if err := w.failure(); err != nil {
		return nil, err
	}
	if w.open != nil {
		return nil, w.streamErr("entry %q has no FileEnd at Close", w.open.Path)
	}
	if err := w.flush(); err != nil {
		return nil, err
	}
	close(w.jobs)
	close(w.queue)
	w.wg.Wait()
	if err := w.failure(); err != nil {
		return nil, err
	}
	if err := w.index.finish(); err != nil {
		return nil, err
	}
	if err := w.vw.writeIndex(w.index.spill, partCounts{w.entries.Load(), w.files.Load(), w.content.Load()}); err != nil {
		return nil, err
	}
	if err := w.index.spill.handOver(); err != nil {
		return nil, fmt.Errorf("session %s: file index: %w", w.info.SessionID, err)
	}
	w.closed.Store(true)
	p := w.Progress()
	return &SessionResult{
		Parts: w.vw.parts, Index: &IndexSegments{spill: w.index.spill},
		Entries: p.Entries, Files: p.Files, ContentBytes: p.ContentBytes,
		StreamBytes: p.StreamBytes, StoredBytes: p.StoredBytes, Blocks: p.Blocks,
	}, nil
}

// segmentBytes sizes index segments so that one, whose last entry may
// overshoot by a whole FileHeader, still stays below the block raw size.
func (w *SessionWriter) segmentBytes() int {
	return min(fileindex.DefaultSegmentBytes, w.blockRaw-MaxHeaderBody-4096)
}

// Abort stops the workers and returns once nothing more will be written.
// What was written stays; the caller truncates it. Safe to call more than
// once and after Close. While Close writes the trailer, Abort waits for it
// (the trailer is read from the spill file, which Abort closes); a Close
// that has not yet handed the index over then fails.
func (w *SessionWriter) Abort() {
	w.doneOnce.Do(func() { close(w.done) })
	w.wg.Wait()
	w.closed.Store(true)
	w.index.spill.close()
}
