package agent

import (
	"crypto/sha256"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/volume"
)

func headerRecord(e fileindex.Entry) []byte {
	return volume.AppendRecord(nil, volume.RecFileHeader, fileindex.AppendEntry(nil, &e))
}

// restoreSeed is the stream of a small tree: a directory, a file with its
// data and hash, a symlink, a hard link and a fifo.
func restoreSeed() []byte {
	content := []byte("hello, restore\n")
	sum := sha256.Sum256(content)
	var s []byte
	s = append(s, headerRecord(fileindex.Entry{Path: "/srv", Type: fileindex.TypeDir, Mode: 0o755})...)
	s = append(s, headerRecord(fileindex.Entry{Path: "/srv/a", Type: fileindex.TypeFile, Mode: 0o640, Size: int64(len(content)),
		Xattrs: []fileindex.Xattr{{Name: "user.k", Value: []byte("v")}}})...)
	s = volume.AppendDataRecord(s, 0, content)
	s = volume.AppendFileEnd(s, 0, sum[:])
	s = append(s, headerRecord(fileindex.Entry{Path: "/srv/l", Type: fileindex.TypeSymlink, Target: "a"})...)
	s = volume.AppendFileEnd(s, 0, nil)
	s = append(s, headerRecord(fileindex.Entry{Path: "/srv/h", Type: fileindex.TypeHardlink, Target: "/srv/a"})...)
	s = volume.AppendFileEnd(s, 0, nil)
	s = append(s, headerRecord(fileindex.Entry{Path: "/srv/p", Type: fileindex.TypeFifo, Mode: 0o600})...)
	return volume.AppendFileEnd(s, 0, nil)
}

// flagsSeed is the stream of a file with holes (hash kind 1) and inode
// flags, an immutable file in an append-only directory, and a file whose
// digest is of a kind to come.
func flagsSeed() []byte {
	var s []byte
	s = append(s, headerRecord(fileindex.Entry{Path: "/srv", Type: fileindex.TypeDir, Mode: 0o755, Flags: fileindex.FlagAppend | fileindex.FlagNoatime})...)
	s = volume.AppendFileEnd(s, 0, nil)
	h := fileindex.NewSparseHash()
	s = append(s, headerRecord(fileindex.Entry{Path: "/srv/disk.img", Type: fileindex.TypeFile, Mode: 0o600, Size: 1 << 40,
		HashKind: fileindex.HashSparseSHA256, Flags: fileindex.FlagNodump | fileindex.FlagNoCOW})...)
	for _, off := range []int64{4096, 4099, 1 << 30} {
		s = volume.AppendDataRecord(s, off, []byte("abc"))
		h.Add(off, []byte("abc"))
	}
	s = volume.AppendFileEnd(s, 0, h.Sum(nil, 1<<40))
	content := []byte("cannot change\n")
	sum := sha256.Sum256(content)
	s = append(s, headerRecord(fileindex.Entry{Path: "/srv/immutable", Type: fileindex.TypeFile, Mode: 0o644, Size: int64(len(content)),
		Flags: fileindex.FlagImmutable})...)
	s = volume.AppendDataRecord(s, 0, content)
	s = volume.AppendFileEnd(s, 0, sum[:])
	s = append(s, headerRecord(fileindex.Entry{Path: "/srv/later", Type: fileindex.TypeFile, Mode: 0o644, Size: 3, HashKind: 2})...)
	s = volume.AppendDataRecord(s, 0, []byte("new"))
	return volume.AppendFileEnd(s, 0, make([]byte, 32))
}

// unlock clears the immutable and append-only flags of what a restore made
// below root, which RemoveAll could not remove otherwise.
func unlock(root string) {
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&(fs.ModeSymlink|fs.ModeDevice|fs.ModeCharDevice) != 0 {
			return nil
		}
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil
		}
		defer unix.Close(fd)
		const locked = fileindex.FlagImmutable | fileindex.FlagAppend
		if f, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS); err == nil && f&locked != 0 {
			_ = unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(f&^locked))
		}
		return nil
	})
}

// FuzzRestoreStream feeds arbitrary bytes to the agent's Restorer as a
// storage node's Records frames, in two frames split at split: malformed
// records end the restore with an error, entries that cannot be restored
// are warnings, and nothing is ever written outside the restore target,
// whatever the paths, links and targets say.
func FuzzRestoreStream(f *testing.F) {
	seed := restoreSeed()
	f.Add(seed, uint16(0))
	f.Add(seed, uint16(len(seed)/2))
	f.Add(flagsSeed(), uint16(0))
	f.Add(append(headerRecord(fileindex.Entry{Path: "/../escape", Type: fileindex.TypeFile}), volume.AppendFileEnd(nil, 0, nil)...), uint16(0))
	f.Add(append(headerRecord(fileindex.Entry{Path: "/x", Type: fileindex.TypeSymlink, Target: "/"}), volume.AppendFileEnd(nil, 0, nil)...), uint16(0))
	// A large file assembled from a block of an earlier session (its
	// BlockStart first, as on disk) and one sent with its entry.
	blocks := volume.AppendBlockStart(nil, &volume.BlockStart{Path: "/db", Len: 4, At: []int64{0, 8}})
	blocks = volume.AppendDataRecord(blocks, 100, []byte("abcd"))
	blocks = append(blocks, headerRecord(fileindex.Entry{Path: "/db", Type: fileindex.TypeFile, Size: 12})...)
	blocks = volume.AppendDataRecord(blocks, 4, []byte("efgh"))
	sum := sha256.Sum256([]byte("abcdefghabcd"))
	f.Add(volume.AppendFileEndBlocks(blocks, 0, sum[:], &fileindex.BlockList{Bits: 20, Sessions: [][16]byte{{1}}, Blocks: []fileindex.Block{
		{Session: 1, Loc: fileindex.Location{Len: 4}}, {Loc: fileindex.Location{Len: 4}}, {Session: 1, Loc: fileindex.Location{Len: 4}},
	}}), uint16(0))
	f.Add(sparseBlocksSeed(), uint16(0))
	sandbox := f.TempDir()
	// Links that point out of the target, then entries through them: a
	// restorer that followed them would write into the sandbox.
	for _, target := range []string{"..", sandbox, "../target/../.."} {
		s := headerRecord(fileindex.Entry{Path: "/x", Type: fileindex.TypeSymlink, Target: target})
		s = volume.AppendFileEnd(s, 0, nil)
		s = append(s, headerRecord(fileindex.Entry{Path: "/x/escaped", Type: fileindex.TypeFile, Size: 1})...)
		s = volume.AppendDataRecord(s, 0, []byte("x"))
		s = volume.AppendFileEnd(s, 0, nil)
		s = append(s, headerRecord(fileindex.Entry{Path: "/x", Type: fileindex.TypeDir, Mode: 0o777})...)
		f.Add(volume.AppendFileEnd(s, 0, nil), uint16(0))
	}
	f.Fuzz(func(t *testing.T, stream []byte, split uint16) {
		if claimsHugeFile(stream) {
			// A file's trailing hole is hashed as the zeros it reads as,
			// as its backup hashed them: a terabyte of hole costs minutes
			// on both sides by design, and is no finding.
			return
		}
		root := filepath.Join(sandbox, "target")
		defer func() {
			unlock(root) // a stream sets the inode flags it gives
			if err := os.RemoveAll(root); err != nil {
				t.Fatal(err)
			}
		}()
		r, err := NewRestorer(RestoreOptions{Root: root})
		if err != nil {
			t.Fatal(err)
		}
		at := min(int(split), len(stream))
		if err := r.Records(stream[:at]); err == nil {
			_ = r.Records(stream[at:])
		}
		_, _ = r.Finish()
		// The target is the sandbox's only child, and nothing below the
		// sandbox is out of it.
		err = filepath.WalkDir(sandbox, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if p != sandbox && p != root && filepath.Dir(p) == sandbox {
				t.Fatalf("the restore wrote %s, outside its target", p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// TestRestoreRefusesDataPastTheSize: a Data record's offset comes from the
// stream. The restorer hashes the hole before it as zeros, so one record
// 200 TB past a 10-byte file's end (found by FuzzRestoreStream) kept it
// hashing for days. Data past the entry's size is damage, not a hole.
func TestRestoreRefusesDataPastTheSize(t *testing.T) {
	root := filepath.Join(t.TempDir(), "r")
	r, err := NewRestorer(RestoreOptions{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	s := headerRecord(fileindex.Entry{Path: "/f", Type: fileindex.TypeFile, Mode: 0o644, Size: 10})
	s = volume.AppendDataRecord(s, 0xc1bb76eddbb7, []byte("123456789"))
	s = volume.AppendFileEnd(s, 0, nil)
	done := make(chan error, 1)
	go func() { done <- r.Records(s) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the restorer is still at the record after 10s")
	}
	st, err := r.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Damaged) != 1 || st.Damaged[0].Path != "/f" {
		t.Fatalf("damage %+v, want /f", st.Damaged)
	}
	if _, err := os.Lstat(filepath.Join(root, "f")); !os.IsNotExist(err) {
		t.Fatalf("the damaged file was restored: %v", err)
	}
}

// A file whose digest is of a kind this program does not know is restored
// unchecked, with a warning, and without hashing anything: a hole of 8 TiB
// before its data took hours of hashing zeros for a digest nobody checked.
func TestRestoreOfAnUnknownHashKindHashesNothing(t *testing.T) {
	root := filepath.Join(t.TempDir(), "r")
	r, err := NewRestorer(RestoreOptions{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	const size = 8 << 40
	s := headerRecord(fileindex.Entry{Path: "/f", Type: fileindex.TypeFile, Mode: 0o644, Size: size, HashKind: 9})
	s = volume.AppendDataRecord(s, size-10, []byte("0123456789"))
	s = volume.AppendFileEnd(s, 0, make([]byte, 32))
	done := make(chan error, 1)
	var st RestoreStats
	go func() {
		if err := r.Records(s); err != nil {
			done <- err
			return
		}
		st, err = r.Finish()
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the restorer is still at the file after 10s")
	}
	if st.Files != 1 || len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0].Err, "restored unchecked") {
		t.Fatalf("stats %+v", st)
	}
	got := make([]byte, 10)
	f, err := os.Open(filepath.Join(root, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(got, size-10); err != nil || string(got) != "0123456789" {
		t.Fatalf("read back %q, %v", got, err)
	}
}

// claimsHugeFile reports whether a stream's FileHeaders give a file hashed
// whole (hash kind 0), whose holes are hashed as zeros, a size over 64 MiB.
func claimsHugeFile(stream []byte) bool {
	for len(stream) > 0 {
		typ, body, n, err := volume.ParseRecord(stream)
		if err != nil {
			return false
		}
		if typ == volume.RecFileHeader {
			if e, err := fileindex.DecodeEntry(body); err == nil && e.Size > 64<<20 && e.HashKind == fileindex.HashSHA256 {
				return true
			}
		}
		stream = stream[n:]
	}
	return false
}
