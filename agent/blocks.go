package agent

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/chunk"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/volume"
)

// sendBlocks sends a large file by content-defined blocks (package chunk):
// the blocks its base version holds by reference (where they lie), the
// others as Data records, each block starting a record of its own so the
// storage node can place it; the block list goes in the FileEnd. The
// whole file is still read and hashed: the digest of the whole content is
// what a restore checks the assembled file against.
func (s *Source) sendBlocks(fd int, e *fileindex.Entry, base *fileindex.BlockList) error {
	bits := chunk.Bits(e.Size)
	if base != nil && chunk.Keep(e.Size, int(base.Bits)) {
		bits = int(base.Bits) // the same cuts as last time, or nothing matches
	}
	known := map[[32]byte]int{}
	if base != nil && int(base.Bits) == bits {
		for i := range base.Blocks {
			known[base.Blocks[i].Hash] = i
		}
	}
	bl := &fileindex.BlockList{Bits: uint8(bits)}
	sessions := map[[16]byte]uint32{}
	rd := &fdReader{s: s, fd: fd, end: e.Size}
	// The read and the cut run ahead on the Stream's goroutine while this
	// one hashes the whole content and frames the blocks; Stop before the
	// caller closes fd.
	if err := s.split.Start(rd, bits); err != nil {
		return err
	}
	defer s.split.Stop()
	var y int64
	for {
		blk, err := s.split.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if cerr := s.ctx.Err(); cerr != nil {
				return cerr
			}
			if re := (*readError)(nil); errors.As(err, &re) {
				s.blockList = bl // what was read is what a restore rebuilds
				return err
			}
			return &readError{err}
		}
		data, h := blk.Data, blk.Hash
		s.sum.Write(data)
		b := fileindex.Block{Hash: h, Loc: fileindex.Location{Len: uint64(len(data))}}
		if i, ok := known[h]; ok && base.Blocks[i].Loc.Len == uint64(len(data)) {
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
				y += int64(len(data))
				s.reused.Add(int64(len(data)))
				continue
			}
		}
		for off := 0; off < len(data); {
			n := min(len(data)-off, volume.MaxDataBody)
			if err := s.reserve(volume.MaxDataHeader + n); err != nil {
				return err
			}
			s.batch = volume.AppendDataRecord(s.batch, y+int64(off), data[off:off+n])
			off += n
		}
		s.bytes.Add(int64(len(data)))
		bl.Blocks = append(bl.Blocks, b)
		y += int64(len(data))
	}
	s.sent = y
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		s.blockList = bl
		return &readError{fmt.Errorf("fstat: %w", err)}
	}
	if st.Size > e.Size {
		s.blockList = bl
		return &readError{ErrFileGrew}
	}
	s.blockList = bl
	return nil
}

// fdReader reads [0, end) of a file for the block splitter: a file that
// ends early shrank while it was read.
type fdReader struct {
	s   *Source
	fd  int
	off int64
	end int64
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
	r.off += int64(got)
	switch {
	case err != nil:
		return got, &readError{fmt.Errorf("read at offset %d: %w", r.off, err)}
	case got < len(p):
		return got, &readError{ErrFileShrank}
	}
	return got, nil
}
