package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/media/volume"
)

// readersTree holds what the readers take and what they leave to Run's
// goroutine, in many directories whose files have the same names: a
// reader that opened by a directory descriptor closed too early (and
// reused by the next directory's open) would find another file of the
// same name, and the stream would differ.
func readersTree(t *testing.T) string {
	dir := t.TempDir()
	for d := range 12 {
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", d))
		for f := range 20 {
			mustWrite(t, filepath.Join(sub, fmt.Sprintf("f%02d", f)), randomBytes(uint64(d*100+f), (d*7919+f*104729)%(40<<10)), 0o644)
		}
		mustWrite(t, filepath.Join(sub, "deep", "er", "f00"), randomBytes(uint64(d), 300), 0o600)
	}
	mustWrite(t, filepath.Join(dir, "big"), randomBytes(9, 3<<20), 0o644)
	mustWrite(t, filepath.Join(dir, "d03", "big"), randomBytes(10, 1<<20), 0o644) // chunk.Threshold: by blocks
	mustWrite(t, filepath.Join(dir, "d03", "just-below"), randomBytes(11, 1<<20-1), 0o644)
	mustWrite(t, filepath.Join(dir, "d04", "empty"), nil, 0o644)
	makeSparse(t, filepath.Join(dir, "d05", "holes"), 900<<10, randomBytes(12, 4096), 64<<10)
	mustDo(t, os.Symlink("f01", filepath.Join(dir, "d06", "link")))
	mustDo(t, os.Link(filepath.Join(dir, "d06", "f02"), filepath.Join(dir, "d07", "hard")))
	mustDo(t, unix.Mkfifo(filepath.Join(dir, "d08", "fifo"), 0o644))
	return dir
}

func withReaders(t *testing.T, n int) {
	old := fileReaders
	fileReaders = n
	t.Cleanup(func() { fileReaders = old })
}

// The readers change when a file is read, not what is sent: the stream,
// the stats and the warnings are those of reading each file when the
// stream reaches it, for a full and for an incremental.
func TestReadAheadSendsWhatOneGoroutineSends(t *testing.T) {
	dir := readersTree(t)
	run := func(readers int, base []fileindex.Entry) ([]byte, SourceStats) {
		withReaders(t, readers)
		opts := SourceOptions{Walk: WalkOptions{Paths: []string{dir}}}
		if base != nil {
			opts.Base = fileindex.SliceIterator(base)
		}
		return runSource(t, opts)
	}
	same := func(what string, base []fileindex.Entry) []byte {
		// The first walk of a directory changes its atime (relatime),
		// which the entries carry; the next ones do not.
		run(0, base)
		want, wantSt := run(0, base)
		got, gotSt := run(4, base)
		if !bytes.Equal(got, want) {
			g, w := entriesOf(t, got), entriesOf(t, want)
			for i := range min(len(g), len(w)) {
				if fmt.Sprint(g[i]) != fmt.Sprint(w[i]) {
					t.Fatalf("%s: entry %d differs with readers:\n got  %+v\n want %+v", what, i, g[i], w[i])
				}
			}
			t.Fatalf("%s: the stream differs with readers: %d entries, want %d", what, len(g), len(w))
		}
		if fmt.Sprint(gotSt) != fmt.Sprint(wantSt) {
			t.Fatalf("%s: stats with readers %+v, want %+v", what, gotSt, wantSt)
		}
		return got
	}
	full := same("full", nil)
	if n := len(entriesOf(t, full)); n < 12*24 {
		t.Fatalf("the full holds %d entries", n)
	}
	base := baseOf(t, full)
	for d := range 12 {
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", d))
		mustWrite(t, filepath.Join(sub, "f03"), []byte("changed"), 0o644)
		mustDo(t, os.Remove(filepath.Join(sub, "f04")))
		mustWrite(t, filepath.Join(sub, "new"), randomBytes(uint64(d), 5000), 0o644)
	}
	inc := same("incremental", base)
	if n := len(entriesOf(t, inc)); n < 12*3 {
		t.Fatalf("the incremental holds %d entries", n)
	}
}

// What happens to a small file between the walk and its read is sent as
// reading it at once would have found it: with a warning, an EndReadError
// and the digest of what was sent.
func TestReadAheadFileChangedBeforeItsRead(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(p string) error
		want   string
		sent   int
	}{
		{"replaced", func(p string) error {
			if err := os.WriteFile(p+".new", []byte("another file"), 0o644); err != nil {
				return err
			}
			return os.Rename(p+".new", p)
		}, ErrFileReplaced.Error(), 0},
		{"shrank", func(p string) error { return os.Truncate(p, 100) }, ErrFileShrank.Error(), 100},
		{"grew", func(p string) error {
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			_, err = f.WriteString("more")
			return errors.Join(err, f.Close())
		}, ErrFileGrew.Error(), 5000},
		{"removed", os.Remove, "content not backed up: open: no such file or directory", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			withReaders(t, 2)
			dir := t.TempDir()
			content := randomBytes(13, 5000)
			victim := filepath.Join(dir, "b")
			mustWrite(t, filepath.Join(dir, "a"), []byte("a"), 0o644)
			mustWrite(t, victim, content, 0o644)
			mustWrite(t, filepath.Join(dir, "c"), []byte("c"), 0o644)
			beforeRead = func(p string) {
				if p == victim {
					mustDo(t, tc.change(p))
				}
			}
			t.Cleanup(func() { beforeRead = nil })
			var warned []string
			stream, st := runSource(t, SourceOptions{Walk: WalkOptions{Paths: []string{dir}, Warn: func(p string, err error) {
				warned = append(warned, p+": "+err.Error())
			}}})
			es := entriesOf(t, stream)
			if len(es) != 4 || es[2].e.Path != victim {
				t.Fatalf("entries %+v", es)
			}
			fe := es[2]
			sum := sha256.Sum256(content[:tc.sent])
			if fe.status != volume.EndReadError || fe.data != int64(tc.sent) || !bytes.Equal(fe.hash, sum[:]) {
				t.Fatalf("status %d, %d bytes, hash %x; want EndReadError, %d bytes, %x", fe.status, fe.data, fe.hash, tc.sent, sum)
			}
			if es[1].status != volume.EndOK || es[3].status != volume.EndOK {
				t.Fatal("a file beside it was not sent whole")
			}
			if len(warned) != 1 || warned[0] != victim+": "+tc.want || st.Incomplete != 1 {
				t.Fatalf("warnings %q, stats %+v; want one: %s", warned, st, tc.want)
			}
		})
	}
}

// treeDescriptors lists this process's descriptors open on dir or below.
func treeDescriptors(t *testing.T, dir string) []string {
	fds, err := os.ReadDir("/proc/self/fd")
	mustDo(t, err)
	var open []string
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && (target == dir || strings.HasPrefix(target, dir+"/")) {
			open = append(open, fd.Name()+" -> "+target)
		}
	}
	return open
}

// Whichever way a backup ends, the descriptors the readers held (the
// directories' and the files') are closed, and no reader runs on.
func TestReadAheadClosesWhatItHeld(t *testing.T) {
	withReaders(t, 4)
	dir := readersTree(t)
	boom := errors.New("connection reset")
	for _, tc := range []struct {
		name string
		emit func(cancel func(), batches int) error
		want error
	}{
		{"done", func(func(), int) error { return nil }, nil},
		{"emit failed", func(_ func(), batches int) error {
			if batches == 2 {
				return boom
			}
			return nil
		}, boom},
		{"cancelled", func(cancel func(), _ int) error { cancel(); return nil }, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			batches := 0
			s, err := NewSource(SourceOptions{Walk: WalkOptions{Paths: []string{dir}}, Emit: func([]byte) error {
				batches++
				return tc.emit(cancel, batches)
			}})
			mustDo(t, err)
			if err := s.Run(ctx); !errors.Is(err, tc.want) {
				t.Fatalf("Run: %v, want %v", err, tc.want)
			}
			if open := treeDescriptors(t, dir); len(open) > 0 {
				t.Fatalf("still open after Run: %q", open)
			}
		})
	}
}

// A file that another user swaps for a fifo between the walk and its read
// is not opened in a way that waits for a writer: the backup would hang
// until one came, and any user may make a fifo in a directory of theirs.
// It is sent as replaced, small or large, read ahead or not.
func TestSourceFileSwappedForAFifo(t *testing.T) {
	for _, tc := range []struct {
		name    string
		size    int
		readers int
	}{
		{"small, readers", 5000, 4},
		{"small, no readers", 5000, 0},
		{"large", 3 << 20, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			withReaders(t, tc.readers)
			dir := t.TempDir()
			victim := filepath.Join(dir, "b")
			mustWrite(t, filepath.Join(dir, "a"), []byte("a"), 0o644)
			mustWrite(t, victim, randomBytes(14, tc.size), 0o644)
			beforeRead = func(p string) {
				if p == victim {
					mustDo(t, os.Remove(p))
					mustDo(t, unix.Mkfifo(p, 0o644))
				}
			}
			t.Cleanup(func() { beforeRead = nil })
			var warned []string
			var stream []byte
			s, err := NewSource(SourceOptions{
				Walk: WalkOptions{Paths: []string{dir}, Warn: func(p string, err error) { warned = append(warned, p+": "+err.Error()) }},
				Emit: func(b []byte) error { stream = append(stream, b...); return nil },
			})
			mustDo(t, err)
			done := make(chan error, 1)
			go func() { done <- s.Run(context.Background()) }()
			var runErr error
			if err := poll.Wait(20*time.Second, func() error {
				select {
				case runErr = <-done:
					return nil
				default:
					return errors.New("the backup waits on the fifo's open for a writer")
				}
			}); err != nil {
				// Release the open that waits, so the test ends.
				if fd, err := unix.Open(victim, unix.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
					unix.Close(fd)
				}
				<-done
				t.Fatal(err)
			}
			mustDo(t, runErr)
			es := entriesOf(t, stream)
			if len(es) != 3 || es[2].e.Path != victim || es[2].status != volume.EndReadError || es[2].data != 0 {
				t.Fatalf("entries %+v", es)
			}
			if len(warned) != 1 || warned[0] != victim+": "+ErrFileReplaced.Error() {
				t.Fatalf("warnings %q, want one: %v", warned, ErrFileReplaced)
			}
		})
	}
}

// The walk's directory descriptors stay few while a read waits at the
// head of the queue: in an incremental, the directories after a changed
// file are unchanged and queue nothing, so nothing sends that head until
// the end, and each would stay open till then (a large tree ran out of
// descriptors: "directory content not backed up: too many open files").
func TestReadAheadHoldsOnlyTheDirectoriesItReadsFrom(t *testing.T) {
	withReaders(t, 4)
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "a0"), []byte("v1"), 0o644)
	for i := range 300 {
		mustDo(t, os.MkdirAll(filepath.Join(dir, "b", fmt.Sprintf("d%04d", i)), 0o755))
	}
	opts := WalkOptions{Paths: []string{dir}}
	full, _ := runSource(t, SourceOptions{Walk: opts})
	base := baseOf(t, full)
	mustWrite(t, filepath.Join(dir, "a0"), []byte("v2, changed"), 0o644)

	fds, err := os.ReadDir("/proc/self/fd")
	mustDo(t, err)
	var old unix.Rlimit
	mustDo(t, unix.Getrlimit(unix.RLIMIT_NOFILE, &old))
	lim := old
	lim.Cur = uint64(len(fds) + 50) // the walk's depth and the readers' files, with room
	mustDo(t, unix.Setrlimit(unix.RLIMIT_NOFILE, &lim))
	defer unix.Setrlimit(unix.RLIMIT_NOFILE, &old)

	inc, st := runSource(t, SourceOptions{Walk: opts, Base: fileindex.SliceIterator(base)})
	if st.WarningCount != 0 || st.Files != 1 {
		t.Fatalf("stats %+v", st)
	}
	if es := entriesOf(t, inc); len(es) != 1 || es[0].e.Path != filepath.Join(dir, "a0") {
		t.Fatalf("incremental entries %+v, want a0 alone", es)
	}
}

// A file another process holds a lease on (Samba's oplocks, an NFS
// server's delegations) is read once the holder gives the lease up, as an
// open that waits would read it: the open that does not wait for a fifo
// must not take the lease for a failure.
func TestSourceWaitsForALeaseOnAFile(t *testing.T) {
	for _, readers := range []int{0, 4} {
		t.Run(fmt.Sprintf("readers=%d", readers), func(t *testing.T) {
			withReaders(t, readers)
			dir := t.TempDir()
			p := filepath.Join(dir, "leased")
			content := randomBytes(15, 5000)
			mustWrite(t, p, content, 0o644)
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			mustDo(t, err)
			defer f.Close()
			fd := int(f.Fd())
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_WRLCK); err != nil {
				t.Fatalf("take a write lease: %v", err)
			}
			released := make(chan error, 1)
			go func() {
				// The holder gives the lease up once the backup's open
				// asks for it, as a lease holder does.
				err := poll.Wait(20*time.Second, func() error {
					locks, err := os.ReadFile("/proc/locks")
					if err != nil || !bytes.Contains(locks, []byte("BREAKING")) {
						return fmt.Errorf("no open has asked for the lease (%v)", err)
					}
					return nil
				})
				_, uerr := unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_UNLCK)
				released <- errors.Join(err, uerr)
			}()
			stream, st := runSource(t, SourceOptions{Walk: WalkOptions{Paths: []string{dir}}})
			mustDo(t, <-released)
			es := entriesOf(t, stream)
			sum := sha256.Sum256(content)
			if len(es) != 2 || es[1].status != volume.EndOK || es[1].data != int64(len(content)) || !bytes.Equal(es[1].hash, sum[:]) || st.WarningCount != 0 {
				t.Fatalf("entries %+v, stats %+v", es, st)
			}
		})
	}
}
