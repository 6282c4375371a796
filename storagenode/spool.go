package storagenode

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/media/volume"
)

// DefaultSpoolChunkBytes is the spool chunk of a tape pool that names a
// spool directory and no chunk size: 10 s of an LTO-9 drive, so a chunk
// keeps it streaming that long however slowly the client sends.
const DefaultSpoolChunkBytes = 4 << 30

// spool is a volume.Appender that stages a session's bytes in a disk
// spool on their way to a tape: the session writer fills a chunk file
// while a despooler goroutine writes the previous one to the tape at disk
// speed, so the drive streams instead of stopping whenever the client is
// slow. At most two chunks are on disk: one filling, one despooling; the
// writer waits when both are busy.
//
// The tape sees early warning up to two chunks after the writer sent
// them. Remaining turns 0 when the despooler has seen it, and the bytes
// already spooled, then the part's end, go into the early warning zone:
// the node checks that two chunks fit the zone of an emulated cartridge
// (Config.Validate). Where the zone is unknown (real drives) and the
// chunks overrun it, the tape's end of medium comes back as
// errSpoolOverrun, which the session writer takes as a lost medium: the
// part ends at its last block on the tape, the rest goes to the next tape,
// and the node reports the tape full, not bad.
//
// A medium error in the despooler comes back from the next Write or Sync;
// the spool is then a volume.RecoverableAppender over the tape's: what the
// tape did not take is read back from the chunk files, or from the tape
// Appender's last records.
type spool struct {
	tape  volume.RecoverableAppender
	dir   string
	chunk int64

	id      uuid.UUID
	bs      int
	label   volume.Label // the tape's, for the writer (volume.Labeled)
	off     int64        // volume offset of the next byte
	trailer bool         // the last block written is an Index block (see Remaining)
	fill    *spoolChunk
	busy    *spoolChunk // despooling, or done and not yet waited for
	err     error       // a despool failure, returned from then on
	closed  bool

	// Set by the despooler, read by the writer.
	durable atomic.Int64
	full    atomic.Bool // the tape is past early warning
	stop    atomic.Bool

	mu     sync.Mutex
	chunks int   // chunks despooled
	peak   int   // most chunk files on disk at once
	onDisk int   // chunk files on disk now
	bytes  int64 // bytes spooled
}

// spoolChunk is one chunk file: the writer's Writes, in order, from volume
// offset start.
type spoolChunk struct {
	f      *os.File
	start  int64
	n      int64
	writes []int // lengths of the writer's Writes, replayed as they came
	done   chan struct{}
	err    error
}

// errSpoolOverrun: the spooled chunks did not fit the early warning zone.
type errSpoolOverrun struct{ err error }

func (e *errSpoolOverrun) Error() string {
	return fmt.Sprintf("the spooled data overran the cartridge's early warning zone (use smaller spool chunks): %v", e.err)
}
func (e *errSpoolOverrun) Is(target error) bool { return target == volume.ErrMediumLost }
func (e *errSpoolOverrun) Unwrap() error        { return e.err }

func newSpool(t volume.RecoverableAppender, dir string, chunk int64) (*spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool directory: %w", err)
	}
	s := &spool{tape: t, dir: dir, chunk: chunk, id: t.VolumeID(), bs: t.BlockSize(), off: t.Offset()}
	s.label = volume.Label{FormatVersion: volume.FormatVersion, VolumeID: s.id, BlockSize: s.bs}
	if l, ok := t.(volume.Labeled); ok {
		s.label = l.Label()
	}
	s.durable.Store(t.Durable())
	s.full.Store(t.Remaining() == 0)
	return s, nil
}

func (s *spool) VolumeID() uuid.UUID { return s.id }
func (s *spool) BlockSize() int      { return s.bs }
func (s *spool) Label() volume.Label { return s.label }
func (s *spool) Offset() int64       { return s.off }
func (s *spool) Durable() int64      { return s.durable.Load() }

// Remaining is 0 once the despooler met early warning, except in a trailer
// (as the tape Appender's, and for the same reason: a trailer started is
// finished on this volume).
func (s *spool) Remaining() int64 {
	if s.full.Load() && !s.trailer {
		return 0
	}
	return math.MaxInt64 - s.off
}

func (s *spool) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.closed {
		return 0, errors.New("spool is closed")
	}
	if h, err := volume.ParseBlockHeader(p); err == nil {
		s.trailer = h.Kind == volume.KindIndex
	}
	if s.fill == nil {
		f, err := os.CreateTemp(s.dir, "spool-*.chunk")
		if err != nil {
			return 0, fmt.Errorf("spool chunk: %w", err)
		}
		s.fill = &spoolChunk{f: f, start: s.off, done: make(chan struct{})}
		s.mu.Lock()
		s.onDisk++
		s.peak = max(s.peak, s.onDisk)
		s.mu.Unlock()
	}
	if _, err := s.fill.f.WriteAt(p, s.fill.n); err != nil {
		return 0, fmt.Errorf("spool chunk %s: %w", s.fill.f.Name(), err)
	}
	s.fill.n += int64(len(p))
	s.fill.writes = append(s.fill.writes, len(p))
	s.off += int64(len(p))
	s.mu.Lock()
	s.bytes += int64(len(p))
	s.mu.Unlock()
	if s.fill.n >= s.chunk {
		if err := s.handOff(); err != nil {
			return len(p), err
		}
	}
	return len(p), nil
}

// handOff waits for the despooler to finish the chunk before, then gives
// it the filled one.
func (s *spool) handOff() error {
	if err := s.wait(); err != nil {
		return err
	}
	if s.fill == nil {
		return nil
	}
	c := s.fill
	s.fill, s.busy = nil, c
	go s.despool(c)
	return nil
}

// wait waits for the chunk being despooled and returns its failure.
func (s *spool) wait() error {
	if s.busy == nil {
		return s.err
	}
	<-s.busy.done
	if s.busy.err != nil {
		// The chunk stays, for ReadBack, until Close.
		s.err = s.busy.err
		return s.err
	}
	s.removeChunk(s.busy)
	s.busy = nil
	return nil
}

func (s *spool) despool(c *spoolChunk) {
	defer close(c.done)
	buf := make([]byte, 0, volume.MaxBlockBytes)
	var pos int64
	for _, n := range c.writes {
		if s.stop.Load() {
			c.err = errors.New("spool closed before the despool finished")
			return
		}
		if cap(buf) < n {
			buf = make([]byte, 0, n)
		}
		b := buf[:n]
		if _, err := c.f.ReadAt(b, pos); err != nil {
			c.err = fmt.Errorf("read spool chunk %s: %w", c.f.Name(), err)
			return
		}
		_, err := s.tape.Write(b)
		s.durable.Store(s.tape.Durable())
		if err != nil {
			if errors.Is(err, tape.ErrEndOfMedium) {
				err = &errSpoolOverrun{err}
			}
			c.err = err
			return
		}
		s.full.Store(s.tape.Remaining() == 0)
		pos += int64(n)
	}
	s.mu.Lock()
	s.chunks++
	s.mu.Unlock()
}

func (s *spool) removeChunk(c *spoolChunk) {
	if c.f == nil {
		return
	}
	name := c.f.Name()
	c.f.Close()
	os.Remove(name)
	c.f = nil
	s.mu.Lock()
	s.onDisk--
	s.mu.Unlock()
}

// Sync despools everything spooled, then syncs the tape: at the end of a
// part, the file mark.
func (s *spool) Sync() error {
	if s.err != nil {
		return s.err
	}
	if err := s.handOff(); err != nil {
		return err
	}
	if err := s.wait(); err != nil {
		return err
	}
	err := s.tape.Sync()
	s.durable.Store(s.tape.Durable())
	s.full.Store(s.tape.Remaining() == 0)
	return err
}

// ReadBack reads from the chunk files still on disk, and before them from
// the tape Appender's last records. The despooler is idle when the writer
// calls it: the failure it recovers from came from wait.
func (s *spool) ReadBack(p []byte, off int64) error {
	for len(p) > 0 {
		var n int
		var c *spoolChunk
		for _, k := range []*spoolChunk{s.busy, s.fill} {
			if k != nil && k.f != nil && off >= k.start && off < k.start+k.n {
				c = k
			}
		}
		if c == nil {
			for _, k := range []*spoolChunk{s.busy, s.fill} {
				if k != nil && k.f != nil && off < k.start {
					// Before the chunks: the tape Appender has it.
					m := min(int64(len(p)), k.start-off)
					if err := s.tape.ReadBack(p[:m], off); err != nil {
						return err
					}
					n = int(m)
					break
				}
			}
			if n == 0 {
				if err := s.tape.ReadBack(p, off); err != nil {
					return err
				}
				return nil
			}
		} else {
			m := min(int64(len(p)), c.start+c.n-off)
			if _, err := c.f.ReadAt(p[:m], off-c.start); err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("read back spool chunk %s: %w", c.f.Name(), err)
			}
			n = int(m)
		}
		p = p[n:]
		off += int64(n)
	}
	return nil
}

// spoolStats are a spool's figures.
type spoolStats struct {
	Chunks, Peak int
	Bytes        int64
}

func (s *spool) stats() spoolStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return spoolStats{Chunks: s.chunks, Peak: s.peak, Bytes: s.bytes}
}

// Close stops the despooler (a chunk it is writing is cut short: Close
// after a failure) and removes the chunk files. After a successful Sync
// there is nothing left to despool.
func (s *spool) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.stop.Store(true)
	if s.busy != nil {
		<-s.busy.done
		s.removeChunk(s.busy)
		s.busy = nil
	}
	s.err = errors.New("spool is closed")
	if s.fill != nil {
		s.removeChunk(s.fill)
		s.fill = nil
	}
	return nil
}

// spoolLockName is the file a storage node holds an exclusive flock on
// while it owns a spool directory: the sweep of orphaned chunks at start
// must never remove the chunks of another node that spools there.
const spoolLockName = "cairn-spool.lock"

// spoolJobDir matches the directory a session spools in (job-<id>).
var spoolJobDir = regexp.MustCompile(`^job-[0-9]+$`)

// claimSpoolDir takes dir for this node and removes the spool chunks a
// node killed mid-backup left there: at start no session of this node is
// running, and a session never resumes from its chunks (a requeued backup
// starts over), so every chunk found is garbage, tens of gigabytes of it
// on a busy node. Only the session directories and chunk files the spool
// itself makes are touched. The returned file holds the lock; closing it
// releases the directory.
func claimSpoolDir(dir string) (lock *os.File, removed int, bytes int64, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, 0, 0, fmt.Errorf("spool directory: %w", err)
	}
	lock, err = os.OpenFile(filepath.Join(dir, spoolLockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("spool directory: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, 0, 0, fmt.Errorf("spool directory %s is in use by another storage node: give each node a spool directory of its own", dir)
		}
		return nil, 0, 0, fmt.Errorf("lock spool directory %s: %w", dir, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		lock.Close()
		return nil, 0, 0, fmt.Errorf("spool directory: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() || !spoolJobDir.MatchString(e.Name()) {
			continue
		}
		jobDir := filepath.Join(dir, e.Name())
		chunks, err := filepath.Glob(filepath.Join(jobDir, "spool-*.chunk"))
		if err != nil {
			continue
		}
		for _, c := range chunks {
			fi, err := os.Lstat(c)
			if err != nil || !fi.Mode().IsRegular() {
				continue
			}
			if err := os.Remove(c); err != nil {
				lock.Close()
				return nil, 0, 0, fmt.Errorf("remove orphaned spool chunk %s: %w", c, err)
			}
			removed++
			bytes += fi.Size()
		}
		_ = os.Remove(jobDir) // only if empty: anything else in it is not ours
	}
	return lock, removed, bytes, nil
}
