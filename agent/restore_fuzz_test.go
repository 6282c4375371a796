package agent

import (
	"crypto/sha256"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

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
