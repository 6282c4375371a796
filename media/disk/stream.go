package disk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/internal/readahead"
)

// A restore streams a volume from its first block wanted to its last, once.
// Read through the page cache, each of its bytes takes a page the kernel
// must find (evicting what the node's other work keeps there) and a copy;
// on a virtual machine whose freed memory goes back to its host, finding
// a page costs a fault on the host too, and reading a fresh volume cost
// several times the system time of the same read past the cache. So runs
// of reads in order are read ahead in chunks past the page cache
// (O_DIRECT), into buffers the stream keeps; reads out of order (a single
// file's blocks, a header) go through the cache, where the kernel's own
// read-ahead and any earlier read of them help.

// Stream read-ahead: 3 chunks of 1 MiB fetched past the one read, at most
// 5 MiB of buffers per open volume.
const (
	streamChunk = 1 << 20
	streamDepth = 3
)

// StreamReader reads a volume file for a restore stream. Its ReadAt may be
// called from several goroutines at once.
type StreamReader struct {
	f      *os.File
	size   int64
	ahead  *readahead.Reader // nil: the file system reads no file past its cache
	direct *os.File

	mu       sync.Mutex
	buffered bool // a read past the cache was refused: the cache serves all
}

// OpenStream opens volume name to be read as a restore reads it: runs of
// reads in order past the page cache, where the file system allows it.
func (p *Pool) OpenStream(name string) (*StreamReader, error) {
	f, size, err := p.OpenRead(name)
	if err != nil {
		return nil, err
	}
	s := &StreamReader{f: f, size: size}
	align, ok := directAlign(f)
	if !ok {
		return s, nil
	}
	path, _ := p.Path(name) // OpenRead checked it
	d, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT|unix.O_NOATIME, 0)
	if errors.Is(err, os.ErrPermission) {
		d, err = os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
	}
	if err != nil {
		// The cache still reads it, as every volume was read before.
		return s, nil
	}
	s.direct = d
	s.ahead = readahead.New(context.Background(), size, s.readChunk, s.readCached,
		readahead.Options{Chunk: streamChunk, Depth: streamDepth, Align: align})
	return s, nil
}

// directAlign is the alignment in memory and on file that f's file system
// needs of a read past the page cache, or false when it reads none.
func directAlign(f *os.File) (int, bool) {
	var st unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &st); err != nil {
		return 0, false
	}
	if st.Mask&unix.STATX_DIOALIGN == 0 || st.Dio_offset_align == 0 || st.Dio_mem_align == 0 {
		return 0, false
	}
	align := max(4096, int(st.Dio_offset_align), int(st.Dio_mem_align))
	if align&(align-1) != 0 || streamChunk%align != 0 {
		return 0, false
	}
	return align, true
}

// Size is the file's size when it was opened.
func (s *StreamReader) Size() int64 { return s.size }

// Direct says whether runs of reads in order go past the page cache.
func (s *StreamReader) Direct() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ahead != nil && !s.buffered
}

// ReadAt reads len(b) bytes at off.
func (s *StreamReader) ReadAt(b []byte, off int64) (int, error) {
	if s.ahead == nil {
		return s.f.ReadAt(b, off)
	}
	return s.ahead.ReadAt(b, off)
}

func (s *StreamReader) readCached(_ context.Context, b []byte, off int64) (int, error) {
	return s.f.ReadAt(b, off)
}

// readChunk reads a chunk past the cache. A file system may refuse that
// for a file it said it could (one on a device with larger sectors than
// it reported): the cache reads that chunk, and every one after it.
func (s *StreamReader) readChunk(_ context.Context, b []byte, off int64) (int, error) {
	s.mu.Lock()
	buffered := s.buffered
	s.mu.Unlock()
	if !buffered {
		n, err := s.direct.ReadAt(b, off)
		if !errors.Is(err, unix.EINVAL) {
			return n, err
		}
		s.mu.Lock()
		s.buffered = true
		s.mu.Unlock()
	}
	return s.f.ReadAt(b, off)
}

// Close stops the reads ahead and closes the file.
func (s *StreamReader) Close() error {
	if s.ahead != nil {
		s.ahead.Close()
		s.direct.Close()
	}
	if err := s.f.Close(); err != nil {
		return fmt.Errorf("close volume: %w", err)
	}
	return nil
}
