package volume

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/tmpfile"
)

// spill keeps a session's index entries on disk until Close, when their
// stream offsets are known: a session of millions of files must not hold
// them in memory for hours.
type spill struct {
	mu  sync.Mutex // Abort may close it from another goroutine
	f   *os.File
	w   *bufio.Writer
	buf []byte
}

func newSpill(dir string) (*spill, error) {
	// Without a name: the open file is all we need, and a crash leaves
	// nothing behind to clean up.
	f, err := tmpfile.Open(dir, "cairn-index-*.spill", "index spill file")
	if err != nil {
		return nil, err
	}
	return &spill{f: f, w: bufio.NewWriterSize(f, 256<<10)}, nil
}

var errSpillClosed = errors.New("index spill file is closed")

func (s *spill) add(e *fileindex.Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return errSpillClosed
	}
	s.buf = fileindex.AppendEntry(s.buf[:0], e)
	var l [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(l[:], uint64(len(s.buf)))
	if _, err := s.w.Write(l[:n]); err != nil {
		return fmt.Errorf("spill index entry: %w", err)
	}
	if _, err := s.w.Write(s.buf); err != nil {
		return fmt.Errorf("spill index entry: %w", err)
	}
	return nil
}

// entries flushes what was added and returns an iterator over it, in the
// order added.
func (s *spill) entries() (func() (fileindex.Entry, bool, error), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil, errSpillClosed
	}
	if err := s.w.Flush(); err != nil {
		return nil, fmt.Errorf("spill index entries: %w", err)
	}
	size, err := s.f.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, err
	}
	r := bufio.NewReaderSize(io.NewSectionReader(s.f, 0, size), 256<<10)
	var buf []byte
	return func() (fileindex.Entry, bool, error) {
		l, err := binary.ReadUvarint(r)
		if err == io.EOF {
			return fileindex.Entry{}, false, nil
		}
		if err != nil || l > 2*MaxHeaderBody {
			return fileindex.Entry{}, false, fmt.Errorf("read index spill file: bad length (%v)", err)
		}
		if cap(buf) < int(l) {
			buf = make([]byte, l)
		}
		buf = buf[:l]
		if _, err := io.ReadFull(r, buf); err != nil {
			return fileindex.Entry{}, false, fmt.Errorf("read index spill file: %w", err)
		}
		e, err := fileindex.DecodeEntry(buf)
		return e, err == nil, err
	}, nil
}

func (s *spill) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
}
