package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/loopfs"
)

// chattr sets inode flags on p, as chattr(1) does.
func chattr(t *testing.T, p string, flags uint32) {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	mustDo(t, err)
	defer unix.Close(fd)
	cur, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	mustDo(t, err)
	mustDo(t, unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(cur|flags)))
}

// lsattr reads the kept inode flags of p.
func lsattr(t *testing.T, p string) uint32 {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	mustDo(t, err)
	defer unix.Close(fd)
	f, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	mustDo(t, err)
	return f & fileindex.FlagsKept
}

// Inode flags come back, set last: an immutable file keeps its content,
// xattrs and times, an immutable directory its children, an append-only
// file with a second name its link, a directory with noatime and nodump
// its flags.
func TestInodeFlagsRoundTrip(t *testing.T) {
	fs := loopfs.Ext4(t, 256<<20)
	src := filepath.Join(fs, "src")
	mustWrite(t, filepath.Join(src, "immutable"), []byte("cannot change\n"), 0o640)
	mustDo(t, unix.Setxattr(filepath.Join(src, "immutable"), "user.note", []byte("kept"), 0))
	mustDo(t, unix.UtimesNano(filepath.Join(src, "immutable"), []unix.Timespec{{Sec: 1600000000}, {Sec: 1500000000, Nsec: 5}}))
	mustWrite(t, filepath.Join(src, "log"), []byte("appended\n"), 0o644)
	mustDo(t, os.Link(filepath.Join(src, "log"), filepath.Join(src, "log.link")))
	mustWrite(t, filepath.Join(src, "frozen", "child"), []byte("in an immutable directory\n"), 0o644)
	mustWrite(t, filepath.Join(src, "quiet", "x"), []byte("x"), 0o644)
	mustWrite(t, filepath.Join(src, "plain"), []byte("no flags\n"), 0o644)
	flags := map[string]uint32{
		"immutable": fileindex.FlagImmutable | fileindex.FlagNodump,
		"log":       fileindex.FlagAppend,
		"frozen":    fileindex.FlagImmutable,
		"quiet":     fileindex.FlagNoatime | fileindex.FlagNodump | fileindex.FlagSync,
	}
	for name, f := range flags {
		chattr(t, filepath.Join(src, name), f)
	}
	stream, st := runSource(t, SourceOptions{Walk: WalkOptions{Paths: []string{src}}})
	if st.WarningCount != 0 {
		t.Fatalf("backup warnings %+v", st.Warnings)
	}
	for _, se := range entriesOf(t, stream) {
		want := flags[filepath.Base(se.e.Path)]
		if se.e.Type == fileindex.TypeHardlink {
			want = 0 // a further name: the inode's flags go with the first
		}
		if se.e.Flags != want {
			t.Errorf("%s: backed up with flags %q, want %q", se.e.Path, fileindex.FlagString(se.e.Flags), fileindex.FlagString(want))
		}
	}
	dst := filepath.Join(fs, "dst")
	rst := restoreStream(t, stream, RestoreOptions{Root: dst})
	if rst.WarningCount != 0 || rst.Refused != 0 || rst.DamagedCount != 0 {
		t.Fatalf("restore %+v", rst)
	}
	for name, want := range flags {
		if got := lsattr(t, dst+src+"/"+name); got != want {
			t.Errorf("%s: restored with flags %q, want %q", name, fileindex.FlagString(got), fileindex.FlagString(want))
		}
	}
	if got := lsattr(t, dst+src+"/plain"); got != 0 {
		t.Errorf("plain: restored with flags %q", fileindex.FlagString(got))
	}
	// Everything else came first: the metadata of the tree is the
	// source's (sameTree walks both and compares every field).
	sameTree(t, src, dst+src)
}

// A forced restore over an immutable file in the target leaves it as it
// is, and says so and what to do: the restore changes no flag of an inode
// it did not create. The other entries are restored.
func TestForcedRestoreOverAnImmutableFile(t *testing.T) {
	fs := loopfs.Ext4(t, 256<<20)
	src := filepath.Join(fs, "src")
	mustWrite(t, filepath.Join(src, "locked"), []byte("from the backup\n"), 0o644)
	mustWrite(t, filepath.Join(src, "other"), []byte("restored\n"), 0o644)
	stream, _ := runSource(t, SourceOptions{Walk: WalkOptions{Paths: []string{src}}})
	dst := filepath.Join(fs, "dst")
	mustWrite(t, dst+src+"/locked", []byte("in the target\n"), 0o600)
	chattr(t, dst+src+"/locked", fileindex.FlagImmutable)
	rst := restoreStream(t, stream, RestoreOptions{Root: dst, Force: true})
	if rst.Refused != 1 || len(rst.Warnings) != 1 || !strings.Contains(rst.Warnings[0].Err, "immutable (chattr +i)") ||
		!strings.Contains(rst.Warnings[0].Err, "chattr -i") {
		t.Fatalf("restore over an immutable file: %+v", rst)
	}
	if b, _ := os.ReadFile(dst + src + "/locked"); string(b) != "in the target\n" || lsattr(t, dst+src+"/locked") != fileindex.FlagImmutable {
		t.Fatalf("the immutable file in the target was changed: %q", b)
	}
	if b, _ := os.ReadFile(dst + src + "/other"); string(b) != "restored\n" {
		t.Fatalf("the other file: %q", b)
	}
	// No temporary file left beside it.
	names, _ := os.ReadDir(dst + src)
	if len(names) != 2 {
		t.Fatalf("target holds %v", names)
	}
}

// A forced restore into an append-only directory of the target adds what
// is new there (a name linked in is what +a allows) and refuses, saying
// so, to replace what is there, leaving no temporary name behind. With
// named temporary files, which must be renamed out of the directory,
// both are refused.
func TestForcedRestoreIntoAnAppendOnlyDirectory(t *testing.T) {
	eachTempKind(t, func(t *testing.T) {
		fs := loopfs.Ext4(t, 256<<20)
		src := filepath.Join(fs, "src")
		mustWrite(t, filepath.Join(src, "new"), []byte("new in the target\n"), 0o644)
		mustWrite(t, filepath.Join(src, "old"), []byte("from the backup\n"), 0o644)
		stream, _ := runSource(t, SourceOptions{Walk: WalkOptions{Paths: []string{src}}})
		dst := filepath.Join(fs, "dst")
		mustWrite(t, dst+src+"/old", []byte("in the target\n"), 0o600)
		chattr(t, dst+src, fileindex.FlagAppend) // the file system goes with the test
		rst := restoreStream(t, stream, RestoreOptions{Root: dst, Force: true})
		refused := 1
		if !preferUnnamedFiles {
			refused = 2
		}
		if rst.Refused != int64(refused) {
			t.Fatalf("restore into an append-only directory: %+v", rst)
		}
		// The directory itself takes no owner, mode or times either:
		// warnings of its own.
		told := 0
		for _, w := range rst.Warnings {
			if !strings.HasSuffix(w.Path, "/old") && !strings.HasSuffix(w.Path, "/new") {
				continue
			}
			told++
			if !strings.Contains(w.Err, "append only (chattr +a)") || !strings.Contains(w.Err, "chattr -a") {
				t.Fatalf("warning %+v does not say why or what to do", w)
			}
		}
		if told != refused {
			t.Fatalf("%d warnings about files, want %d: %+v", told, refused, rst.Warnings)
		}
		if b, _ := os.ReadFile(dst + src + "/old"); string(b) != "in the target\n" {
			t.Fatalf("the file in the append-only directory was replaced: %q", b)
		}
		want := []string{"old"}
		if preferUnnamedFiles {
			want = []string{"new", "old"}
			if b, _ := os.ReadFile(dst + src + "/new"); string(b) != "new in the target\n" {
				t.Fatalf("the new file: %q", b)
			}
		}
		var names []string
		ents, _ := os.ReadDir(dst + src)
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if !slices.Equal(names, want) {
			t.Fatalf("the append-only directory holds %q, want %q", names, want)
		}
	})
}

// SkipNodump leaves out files and directories with the nodump flag, a
// directory with all it holds, counts them apart from warnings, and names
// them for the job log; without it they are backed up, flag and all.
func TestSkipNodump(t *testing.T) {
	fs := loopfs.Ext4(t, 256<<20)
	src := filepath.Join(fs, "src")
	mustWrite(t, filepath.Join(src, "keep"), []byte("k"), 0o644)
	mustWrite(t, filepath.Join(src, "scratch.iso"), []byte("s"), 0o644)
	mustWrite(t, filepath.Join(src, "cache", "a"), []byte("a"), 0o644)
	mustWrite(t, filepath.Join(src, "cache", "b"), []byte("b"), 0o644)
	mustWrite(t, filepath.Join(src, "dir", "nodump-inside"), []byte("n"), 0o644)
	chattr(t, filepath.Join(src, "scratch.iso"), fileindex.FlagNodump)
	chattr(t, filepath.Join(src, "cache"), fileindex.FlagNodump)
	chattr(t, filepath.Join(src, "dir", "nodump-inside"), fileindex.FlagNodump)

	stream, st := runSource(t, SourceOptions{Walk: WalkOptions{Paths: []string{src}, SkipNodump: true}})
	var got []string
	for _, se := range entriesOf(t, stream) {
		r, _ := filepath.Rel(src, se.e.Path)
		got = append(got, r)
	}
	if want := []string{".", "dir", "keep"}; !slices.Equal(got, want) {
		t.Fatalf("backed up %q, want %q", got, want)
	}
	if st.Nodump != 3 || st.WarningCount != 0 || len(st.NodumpPaths) != 3 {
		t.Fatalf("stats %+v", st)
	}
	notes := st.Notes()
	if len(notes) != 1 || !strings.HasPrefix(notes[0], "left out 3 entries with the nodump flag") || !strings.Contains(notes[0], filepath.Join(src, "cache")) {
		t.Fatalf("notes %q", notes)
	}

	stream, st = runSource(t, SourceOptions{Walk: WalkOptions{Paths: []string{src}}})
	if n := len(entriesOf(t, stream)); n != 8 || st.Nodump != 0 {
		t.Fatalf("without SkipNodump: %d entries, stats %+v", n, st)
	}
}
