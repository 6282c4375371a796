package agent

import (
	"crypto/sha256"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

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

// FuzzRestoreStream feeds arbitrary bytes to the agent's Restorer as a
// storage node's Records frames, in two frames split at split: malformed
// records end the restore with an error, entries that cannot be restored
// are warnings, and nothing is ever written outside the restore target,
// whatever the paths, links and targets say.
func FuzzRestoreStream(f *testing.F) {
	seed := restoreSeed()
	f.Add(seed, uint16(0))
	f.Add(seed, uint16(len(seed)/2))
	f.Add(append(headerRecord(fileindex.Entry{Path: "/../escape", Type: fileindex.TypeFile}), volume.AppendFileEnd(nil, 0, nil)...), uint16(0))
	f.Add(append(headerRecord(fileindex.Entry{Path: "/x", Type: fileindex.TypeSymlink, Target: "/"}), volume.AppendFileEnd(nil, 0, nil)...), uint16(0))
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

// claimsHugeFile reports whether a stream's FileHeaders give a file a size
// over 64 MiB.
func claimsHugeFile(stream []byte) bool {
	for len(stream) > 0 {
		typ, body, n, err := volume.ParseRecord(stream)
		if err != nil {
			return false
		}
		if typ == volume.RecFileHeader {
			if e, err := fileindex.DecodeEntry(body); err == nil && e.Size > 64<<20 {
				return true
			}
		}
		stream = stream[n:]
	}
	return false
}
