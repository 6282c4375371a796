package agent

import (
	"crypto/sha256"
	"encoding"
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/chunk"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/dropbehind"
	"github.com/cairnbackup/cairn/media/volume"
)

// sendBlocks sends a large file by content-defined blocks (package chunk):
// the blocks its base version holds by reference (where they lie), the
// others as Data records, each block starting a record of its own so the
// storage node can place it; the block list goes in the FileEnd. The
// whole file is still read and hashed: the digest of the whole content is
// what a restore checks the assembled file against.
//
// A file with holes is sent by its data runs (runs not nil): each run is
// cut on its own, so that no block crosses a hole and a block always lies
// in one piece of the file, in this version and in every later one that
// keeps it; the holes are neither read nor sent, and the list records the
// runs so that a restore leaves them holes.
func (s *Source) sendBlocks(fd int, e *fileindex.Entry, base *fileindex.BlockList, runs []fileindex.Run) error {
	data := e.Size
	whole := []fileindex.Run{{Len: uint64(e.Size)}}
	if runs != nil {
		data = 0
		for _, r := range runs {
			data += int64(r.Len)
		}
		whole = runs
	}
	s.changed = false
	bits := blockClass(data, len(runs), base)
	known := map[[32]byte]int{}
	if base != nil && int(base.Bits) == bits {
		for i := range base.Blocks {
			known[base.Blocks[i].Hash] = i
		}
	}
	bl := &fileindex.BlockList{Bits: uint8(bits)}
	sessions := map[[16]byte]uint32{}
	// What a file that could not be read whole keeps: the runs up to
	// what was read, which is what a restore rebuilds.
	read := func(k int, y int64) {
		if runs != nil {
			bl.Runs = append(runs[:k:k], fileindex.Run{Off: runs[k].Off, Len: uint64(y) - runs[k].Off})
			if y == int64(runs[k].Off) {
				bl.Runs = bl.Runs[:k]
			}
		}
		s.blockList = bl
	}
	for k, run := range whole {
		y, err := s.sendRun(fd, int64(run.Off), int64(run.Off+run.Len), bits, base, known, bl, sessions)
		if err != nil {
			if re := (*readError)(nil); errors.As(err, &re) {
				read(k, y)
			}
			return err
		}
	}
	bl.Runs = runs
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		s.blockList = bl
		return &readError{fmt.Errorf("fstat: %w", err)}
	}
	s.blockList = bl
	switch {
	case st.Size > e.Size:
		return &readError{ErrFileGrew}
	case st.Size < e.Size:
		return &readError{ErrFileShrank}
	case s.changed:
		return &readError{ErrFileChanged}
	}
	return nil
}

// maxRuns bounds the data runs of a file with holes sent by blocks, so
// that its block list (a run costs a block more at most, and a few bytes)
// still fits one FileEnd record. A file in more pieces is sent by its
// data regions whole, as before blocks: it is a file of many small
// extents, whose blocks would be as small.
const maxRuns = 1024

// dataRuns maps the data regions of [0, size) of the file with
// SEEK_DATA and SEEK_HOLE, and returns them if the file is to be sent by
// blocks: at least chunk.Threshold bytes of data in at most maxRuns runs.
// Otherwise it returns nil.
func dataRuns(fd int, size int64) ([]fileindex.Run, error) {
	var runs []fileindex.Run
	var data int64
	for off := int64(0); off < size; {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // a hole up to the end
		}
		if err != nil {
			return nil, &readError{fmt.Errorf("seek data at offset %d: %w", off, err)}
		}
		if start >= size {
			break
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			return nil, &readError{fmt.Errorf("seek hole at offset %d: %w", start, err)}
		}
		end = min(end, size)
		if len(runs) == maxRuns {
			return nil, nil
		}
		runs = append(runs, fileindex.Run{Off: uint64(start), Len: uint64(end - start)})
		data += end - start
		off = end
	}
	if data < chunk.Threshold {
		return nil, nil
	}
	return runs, nil
}

// blockClass is the size class of a file of data bytes in runs data runs
// (0: read whole): its base version's while that keeps it within
// chunk.MaxBlocks, the smallest that does otherwise. Each run may end
// with a block shorter than the class's smallest, so runs count as a
// block each.
func blockClass(data int64, runs int, base *fileindex.BlockList) int {
	fits := func(class int) bool {
		return chunk.Keep(data, class) && data>>(class-chunk.Gear-1)+int64(runs) < chunk.MaxBlocks
	}
	bits := chunk.Bits(data)
	for runs > 0 && bits < chunk.Gear+chunk.MaxBits && !fits(bits) {
		bits++
	}
	if base != nil && fits(int(base.Bits)) {
		bits = int(base.Bits) // the same cuts as last time, or nothing matches
	}
	return bits
}

// sendRun cuts [off, end) of the file into blocks and adds them to bl,
// sending those that known (the base version's, by hash) does not hold.
// It returns the offset the blocks listed reach.
//
// A block larger than chunk.PieceSize comes from the cut in pieces, so
// that no whole one is held in memory. When nothing is known every piece
// is sent as it comes. Otherwise the pieces are only hashed: whether the
// block is sent is known at its last piece, and one that is sent is read
// again (resend), most often from the page cache.
func (s *Source) sendRun(fd int, off, end int64, bits int, base *fileindex.BlockList, known map[[32]byte]int, bl *fileindex.BlockList, sessions map[[16]byte]uint32) (int64, error) {
	rd := &fdReader{s: s, fd: fd, off: off, end: end}
	if len(known) == 0 && dropbehind.Cold(fd, off, end) {
		// Read once and sent as it is read: its pages go back behind the
		// read. A file the client had in its cache keeps it.
		rd.drop = dropbehind.NewWindow(off)
		defer rd.drop.Done(fd, end) // after the cut stopped reading
	}
	// The read and the cut run ahead on the Stream's goroutine while this
	// one hashes the whole content and frames the blocks; Stop before the
	// caller closes fd.
	if err := s.split.Start(rd, bits); err != nil {
		return off, err
	}
	defer s.split.Stop()
	y := off                // the end of the blocks listed
	at := off               // the end of what the cut gave
	send := len(known) == 0 // nothing to refer to: every piece goes as it comes
	for {
		blk, err := s.split.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if cerr := s.ctx.Err(); cerr != nil {
				return y, cerr
			}
			// The pieces of a block the error cut short are in the
			// file's digest: the list must cover them too.
			if at > y {
				if send {
					bl.Blocks = append(bl.Blocks, fileindex.Block{Hash: blk.Hash, Loc: fileindex.Location{Len: uint64(at - y)}})
					y = at
				} else {
					var rerr error
					if y, rerr = s.resend(fd, y, at, blk.Hash, bl); rerr != nil {
						return y, rerr
					}
				}
			}
			if re := (*readError)(nil); errors.As(err, &re) {
				return y, err
			}
			return y, &readError{err}
		}
		data, h := blk.Data, blk.Hash
		if !send && blk.More && at == y {
			// The first piece of a block held: what the digest was
			// before it, in case the block is sent other than read.
			if s.held, err = s.saveDigest(s.held[:0]); err != nil {
				return y, err
			}
		}
		if s.sparse {
			s.sparseSum.Add(at, data)
		} else {
			s.sum.Write(data)
		}
		piece := at
		at += int64(len(data))
		switch {
		case send:
			if err := s.appendData(piece, data); err != nil {
				return y, err
			}
			s.bytes.Add(int64(len(data)))
			s.sent = at
			if !blk.More {
				bl.Blocks = append(bl.Blocks, fileindex.Block{Hash: h, Loc: fileindex.Location{Len: uint64(at - y)}})
				y = at
			}
			continue
		case blk.More:
			continue // held until its hash says whether it is sent
		}
		size := at - y
		b := fileindex.Block{Hash: h, Loc: fileindex.Location{Len: uint64(size)}}
		if i, ok := known[h]; ok && base.Blocks[i].Loc.Len == uint64(size) {
			old := base.Blocks[i]
			sid := base.SessionOf(i, [16]byte{})
			if sid != ([16]byte{}) {
				n, ok := sessions[sid]
				if !ok {
					bl.Sessions = append(bl.Sessions, sid)
					n = uint32(len(bl.Sessions))
					sessions[sid] = n
				}
				b.Session, b.Loc = n, old.Loc
				bl.Blocks = append(bl.Blocks, b)
				y = at
				s.sent = y
				s.reused.Add(size)
				continue
			}
		}
		if size > int64(len(data)) {
			if y, err = s.resend(fd, y, at, h, bl); err != nil {
				return y, err
			}
			continue
		}
		if err := s.appendData(y, data); err != nil {
			return y, err
		}
		s.bytes.Add(size)
		bl.Blocks = append(bl.Blocks, b)
		y = at
		s.sent = y
	}
	if at != y || y != end {
		// The list must tile the run: a cut that ended inside a block,
		// or short of the run with no error, would store a version
		// whose list does not hold its digest's content.
		return y, fmt.Errorf("the cut of [%d, %d) ended at %d with blocks listed to %d", off, end, at, y)
	}
	return y, nil
}

// appendData adds the Data records of data, the content at off.
func (s *Source) appendData(off int64, data []byte) error {
	for k := 0; k < len(data); {
		n := min(len(data)-k, volume.MaxDataBody)
		if err := s.reserve(volume.MaxDataHeader + n); err != nil {
			return err
		}
		s.batch = volume.AppendDataRecord(s.batch, off+int64(k), data[k:k+n])
		k += n
	}
	return nil
}

// beforeResend, in tests, runs before a block is read again: what the
// file becomes between the two reads.
var beforeResend func()

// resend reads [start, end) of the file again, a block whose pieces were
// held, and sends it, adding it to bl. What it reads must hash to want,
// the hash of what the cut read: a file that changed in between is sent
// as it is now, listed by the hash of what was sent, and the file is named
// changed once sent whole (s.changed); the file's digest becomes that of
// what the list holds. It returns the offset the blocks listed reach.
func (s *Source) resend(fd int, start, end int64, want [32]byte, bl *fileindex.BlockList) (int64, error) {
	if beforeResend != nil {
		beforeResend()
	}
	if s.blockSum == nil {
		s.blockSum = sha256.New()
	}
	s.blockSum.Reset()
	// The digest took the block as the cut read it; alt takes it as it is
	// sent, from the state before it, and replaces the digest if the two
	// differ, so that the digest is always of what the list holds.
	alt, err := s.altDigest()
	if err != nil {
		return start, err
	}
	done := func(to int64, err error) (int64, error) {
		if to > start {
			bl.Blocks = append(bl.Blocks, fileindex.Block{Hash: [32]byte(s.blockSum.Sum(nil)), Loc: fileindex.Location{Len: uint64(to - start)}})
		}
		if err != nil || bl.Blocks[len(bl.Blocks)-1].Hash != want {
			s.useAltDigest()
			s.changed = s.changed || err == nil
		}
		s.sent = to
		return to, err
	}
	for off := start; off < end; {
		if err := s.ctx.Err(); err != nil {
			return start, err
		}
		n := int(min(end-off, volume.MaxDataBody))
		if err := s.reserve(volume.MaxDataHeader + n); err != nil {
			return start, err
		}
		data, got, err := s.readRecord(fd, off, n, n)
		if got > 0 {
			s.blockSum.Write(data)
			alt(off, data)
			s.bytes.Add(int64(got))
			off += int64(got)
		}
		switch {
		case err != nil:
			return done(off, &readError{fmt.Errorf("read at offset %d: %w", off, err)})
		case got < n:
			return done(off, &readError{ErrFileShrank})
		}
	}
	return done(end, nil)
}

// saveDigest appends the state of the whole-file digest to dst.
func (s *Source) saveDigest(dst []byte) ([]byte, error) {
	var m encoding.BinaryMarshaler = s.sparseSum
	if !s.sparse {
		m = s.sum.(encoding.BinaryMarshaler)
	}
	b, err := m.MarshalBinary()
	if err != nil {
		return dst, fmt.Errorf("save the file's digest: %w", err)
	}
	return append(dst, b...), nil
}

// altDigest sets the alternative digest to the state held and returns
// what feeds it.
func (s *Source) altDigest() (func(off int64, data []byte), error) {
	if s.sparse {
		if s.altSparse == nil {
			s.altSparse = fileindex.NewSparseHash()
		}
		if err := s.altSparse.UnmarshalBinary(s.held); err != nil {
			return nil, fmt.Errorf("take back the file's digest: %w", err)
		}
		return s.altSparse.Add, nil
	}
	if s.altSum == nil {
		s.altSum = sha256.New()
	}
	if err := s.altSum.(encoding.BinaryUnmarshaler).UnmarshalBinary(s.held); err != nil {
		return nil, fmt.Errorf("take back the file's digest: %w", err)
	}
	return func(_ int64, data []byte) { s.altSum.Write(data) }, nil
}

// useAltDigest makes the alternative digest the file's.
func (s *Source) useAltDigest() {
	if s.sparse {
		s.sparseSum, s.altSparse = s.altSparse, s.sparseSum
	} else {
		s.sum, s.altSum = s.altSum, s.sum
	}
}

// fdReader reads [0, end) of a file for the block splitter: a file that
// ends early shrank while it was read.
type fdReader struct {
	s   *Source
	fd  int
	off int64
	end int64
	// drop, when set, gives back the pages read behind the read.
	drop *dropbehind.Window
}

func (r *fdReader) Read(p []byte) (int, error) {
	if err := r.s.ctx.Err(); err != nil {
		return 0, err
	}
	if r.off >= r.end {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.end-r.off)]
	got, err := preadFull(r.fd, p, r.off, len(p))
	if r.drop != nil {
		r.drop.Read(r.fd, r.off, r.off+int64(got))
	}
	r.off += int64(got)
	switch {
	case err != nil:
		return got, &readError{fmt.Errorf("read at offset %d: %w", r.off, err)}
	case got < len(p):
		return got, &readError{ErrFileShrank}
	}
	return got, nil
}
