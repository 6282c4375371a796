package agent

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/assemble/assembletest"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/sample"
)

func restoreStream(t testing.TB, stream []byte, opts RestoreOptions) RestoreStats {
	t.Helper()
	r, err := NewRestorer(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Records(stream); err != nil {
		t.Fatalf("restore: %v", err)
	}
	st, err := r.Finish()
	if err != nil {
		t.Fatalf("finish: %v", err)
	}
	return st
}

// posixACL encodes a POSIX ACL as the kernel's system.posix_acl_* xattr:
// version 2, then (tag, perm, id) entries.
func posixACL(entries ...[3]uint32) []byte {
	b := []byte{2, 0, 0, 0}
	for _, e := range entries {
		b = append(b, byte(e[0]), byte(e[0]>>8), byte(e[1]), byte(e[1]>>8))
		b = append(b, byte(e[2]), byte(e[2]>>8), byte(e[2]>>16), byte(e[2]>>24))
	}
	return b
}

const aclUndefinedID = 0xffffffff

// addExtras puts into dir what sample.Generate does not: raw setuid,
// setgid and sticky bits, ACLs, devices, xattrs on a directory and a
// symlink, a 200 MiB file with two data regions, a file and a fifo owned by
// another user with setuid and setgid (which their chown would clear if it
// came after the chmod).
func addExtras(t *testing.T, dir string) {
	x := filepath.Join(dir, "extra")
	mustWrite(t, filepath.Join(x, "setuid"), []byte("#!/bin/true\n"), 0o4755)
	mustDo(t, os.MkdirAll(filepath.Join(x, "sticky", "setgid"), 0o755))
	mustDo(t, unix.Chmod(filepath.Join(x, "sticky"), 0o1777))
	mustDo(t, unix.Chmod(filepath.Join(x, "sticky", "setgid"), 0o2775))
	owned := filepath.Join(x, "owned", "by-1234")
	mustWrite(t, owned, []byte("theirs\n"), 0o644)
	mustDo(t, os.Lchown(owned, 1234, 5678))
	mustDo(t, unix.Chmod(owned, 0o6750))
	ownedFifo := filepath.Join(x, "owned", "fifo")
	mustDo(t, unix.Mkfifo(ownedFifo, 0o600))
	mustDo(t, os.Lchown(ownedFifo, 1234, 5678))
	mustDo(t, unix.Chmod(ownedFifo, 0o6640))
	mustDo(t, unix.Setxattr(ownedFifo, "trusted.fifo", []byte("on a fifo"), 0))
	mustDo(t, os.Lchown(filepath.Dir(owned), 1234, 5678))
	acl := filepath.Join(x, "acl")
	mustWrite(t, acl, []byte("acl'd\n"), 0o640)
	mustDo(t, unix.Setxattr(acl, "system.posix_acl_access", posixACL(
		[3]uint32{0x01, 6, aclUndefinedID}, [3]uint32{0x02, 4, 1234}, [3]uint32{0x04, 4, aclUndefinedID},
		[3]uint32{0x10, 4, aclUndefinedID}, [3]uint32{0x20, 0, aclUndefinedID}), 0))
	mustDo(t, unix.Setxattr(filepath.Join(x, "sticky"), "system.posix_acl_default", posixACL(
		[3]uint32{0x01, 7, aclUndefinedID}, [3]uint32{0x04, 5, aclUndefinedID}, [3]uint32{0x20, 5, aclUndefinedID}), 0))
	mustDo(t, unix.Setxattr(filepath.Join(x, "sticky"), "user.dir", []byte("on a directory"), 0))
	mustDo(t, os.Symlink("setuid", filepath.Join(x, "link-with-xattr")))
	mustDo(t, unix.Lsetxattr(filepath.Join(x, "link-with-xattr"), "trusted.cairn", []byte("on a symlink"), 0))
	mustDo(t, unix.Mknod(filepath.Join(x, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	mustDo(t, unix.Mknod(filepath.Join(x, "loop"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 200))))
	makeSparse(t, filepath.Join(x, "sparse-200m"), 200<<20, randomBytes(9, 300<<10), 10<<20, 120<<20+5)
	mustDo(t, unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(x, "sparse-200m"),
		[]unix.Timespec{{Sec: 1234567890, Nsec: 1}, {Sec: 1334567890, Nsec: 999999999}}, 0))
}

// sameTree compares every metadata field the walk sees of two trees, by
// path relative to their roots.
func sameTree(t *testing.T, want, got string) {
	t.Helper()
	index := func(root string) map[string]fileindex.Entry {
		m := map[string]fileindex.Entry{}
		for _, e := range walkAll(t, WalkOptions{Paths: []string{root}}) {
			rel := strings.TrimPrefix(e.Path, root)
			if e.Type == fileindex.TypeHardlink {
				e.Target = strings.TrimPrefix(e.Target, root)
			}
			slices.SortFunc(e.Xattrs, func(a, b fileindex.Xattr) int { return strings.Compare(a.Name, b.Name) })
			m[rel] = e
		}
		return m
	}
	w, g := index(want), index(got)
	if len(w) != len(g) {
		t.Errorf("%d entries restored, want %d", len(g), len(w))
	}
	for rel, we := range w {
		ge, ok := g[rel]
		if !ok {
			t.Errorf("%q not restored", rel)
			continue
		}
		check := func(field string, gv, wv any) {
			if fmt.Sprint(gv) != fmt.Sprint(wv) {
				t.Errorf("%q: %s %v, want %v", rel, field, gv, wv)
			}
		}
		check("type", ge.Type, we.Type)
		check("mode", fmt.Sprintf("%o", ge.Mode), fmt.Sprintf("%o", we.Mode))
		check("owner", fmt.Sprint(ge.UID, ge.GID, ge.User, ge.Group), fmt.Sprint(we.UID, we.GID, we.User, we.Group))
		check("size", ge.Size, we.Size)
		check("mtime", ge.MTime, we.MTime)
		if we.Type == fileindex.TypeFile || we.Type == fileindex.TypeHardlink || we.Type == fileindex.TypeFifo {
			// Directories and symlinks get their atime moved by the
			// walk that reads them.
			check("atime", ge.ATime, we.ATime)
		}
		check("target", ge.Target, we.Target)
		check("rdev", ge.Rdev, we.Rdev)
		check("nlink", ge.NLink, we.NLink)
		check("xattrs", fmt.Sprintf("%q", ge.Xattrs), fmt.Sprintf("%q", we.Xattrs))
	}
}

func TestRoundTrip(t *testing.T) { eachTempKind(t, testRoundTrip) }

func testRoundTrip(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	mustDo(t, os.Mkdir(src, 0o755))
	mustDo(t, sample.Generate(src, sample.Spec{TextFiles: 60, RandomFiles: 20, MaxFileSize: 300 << 10, SparseSize: 64 << 20, Seed: 3}))
	addExtras(t, src)
	want, err := sample.Snapshot(src)
	mustDo(t, err)

	stream, bst := runSource(t, SourceOptions{Walk: WalkOptions{Paths: []string{src}}})
	if bst.WarningCount != 0 {
		t.Fatalf("backup warnings: %+v", bst.Warnings)
	}
	after, err := sample.Snapshot(src)
	mustDo(t, err)
	if d := sample.Compare(want, after); len(d) > 0 {
		t.Fatalf("the backup changed its source:\n%s", strings.Join(d, "\n"))
	}

	dst := filepath.Join(t.TempDir(), "restore")
	rst := restoreStream(t, stream, RestoreOptions{Root: dst, Devices: true})
	if rst.WarningCount != 0 || rst.DamagedCount != 0 || rst.Refused != 0 {
		t.Fatalf("restore warnings %+v, damaged %+v", rst.Warnings, rst.Damaged)
	}
	got, err := sample.Snapshot(dst + src)
	mustDo(t, err)
	if d := sample.Compare(want, got); len(d) > 0 {
		t.Fatalf("restored tree differs:\n%s", strings.Join(d, "\n"))
	}
	sameTree(t, src, dst+src)
	if b := blocksOf(t, dst+src+"/extra/sparse-200m"); b*512 > 2<<20 {
		t.Fatalf("restored sparse file allocates %d bytes: holes were filled", b*512)
	}
	if rst.Files != int64(bst.Files) || rst.Dirs != bst.Dirs || rst.Bytes != bst.Bytes || rst.Links != 4+2+1 || rst.Specials != 4 {
		t.Fatalf("restore stats %+v, backup stats %+v", rst, bst)
	}
	// Nothing left behind: no temporary files.
	filepath.Walk(dst, func(p string, _ os.FileInfo, _ error) error {
		if strings.Contains(filepath.Base(p), ".cairn-restore-") {
			t.Errorf("temporary file left: %s", p)
		}
		return nil
	})
}

// entryRecords splits a stream into the records of each entry.
func entryRecords(t *testing.T, stream []byte) (paths []string, recs [][]record) {
	for _, r := range parseStream(t, stream) {
		if r.t == volume.RecFileHeader {
			e, err := fileindex.DecodeEntry(r.body)
			mustDo(t, err)
			paths = append(paths, e.Path)
			recs = append(recs, nil)
		}
		recs[len(recs)-1] = append(recs[len(recs)-1], r)
	}
	return paths, recs
}

func entriesIn(t *testing.T, stream []byte) []fileindex.Entry {
	var out []fileindex.Entry
	for _, se := range entriesOf(t, stream) {
		out = append(out, se.e)
	}
	return out
}

// A full and an incremental, restored as a chain the way the servers plan
// it (each path from the newest backup that holds it, tombstones removing
// paths), give exactly the tree at the incremental.
func TestChainRestore(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	mustDo(t, os.Mkdir(src, 0o755))
	mustDo(t, sample.Generate(src, sample.Spec{TextFiles: 40, RandomFiles: 10, MaxFileSize: 64 << 10, SparseSize: 16 << 20, Seed: 5}))
	opts := WalkOptions{Paths: []string{src}}
	full, _ := runSource(t, SourceOptions{Walk: opts})
	fullIdx := entriesIn(t, full)
	mustDo(t, sample.Change(src, 6))
	want, err := sample.Snapshot(src)
	mustDo(t, err)
	inc, ist := runSource(t, SourceOptions{Walk: opts, Base: fileindex.SliceIterator(fullIdx)})
	if ist.Unchanged == 0 || ist.Deleted == 0 || ist.Entries >= int64(len(fullIdx)) {
		t.Fatalf("incremental stats %+v", ist)
	}
	m := fileindex.Merge(fileindex.SliceIterator(fullIdx), fileindex.SliceIterator(entriesIn(t, inc)))
	wanted := []map[string]bool{{}, {}}
	for {
		e, ok := m.Next()
		if !ok {
			break
		}
		wanted[m.Layer()][e.Path] = true
	}
	mustDo(t, m.Err())

	dst := filepath.Join(t.TempDir(), "restore")
	r, err := NewRestorer(RestoreOptions{Root: dst})
	mustDo(t, err)
	for layer, stream := range [][]byte{full, inc} {
		ps, recs := entryRecords(t, stream)
		for i, p := range ps {
			if !wanted[layer][p] {
				continue
			}
			for _, rec := range recs[i] {
				mustDo(t, r.Record(rec.t, rec.body))
			}
		}
	}
	st, err := r.Finish()
	mustDo(t, err)
	if st.WarningCount != 0 || st.DamagedCount != 0 {
		t.Fatalf("warnings %+v damaged %+v", st.Warnings, st.Damaged)
	}
	got, err := sample.Snapshot(dst + src)
	mustDo(t, err)
	if d := sample.Compare(want, got); len(d) > 0 {
		t.Fatalf("chain restore differs from the tree at the incremental:\n%s", strings.Join(d, "\n"))
	}
}

func TestRestoreTarget(t *testing.T) {
	dir := t.TempDir()
	full := filepath.Join(dir, "full")
	mustWrite(t, filepath.Join(full, "something"), nil, 0o644)
	_, err := NewRestorer(RestoreOptions{Root: full})
	var ne *TargetNotEmptyError
	if !errors.As(err, &ne) || err.Error() != "restore target "+full+" is not empty; choose an empty directory or pass --force" {
		t.Fatalf("non-empty target: %v", err)
	}
	if _, err := NewRestorer(RestoreOptions{Root: full, Force: true}); err != nil {
		t.Fatalf("forced: %v", err)
	}
	if _, err := NewRestorer(RestoreOptions{Root: filepath.Join(full, "something")}); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("file as target: %v", err)
	}
	empty := filepath.Join(dir, "empty")
	mustDo(t, os.Mkdir(empty, 0o755))
	if _, err := NewRestorer(RestoreOptions{Root: empty}); err != nil {
		t.Fatalf("empty target: %v", err)
	}

	// The target appears with the first entry, not before: a restore
	// that fails first (a wrong key) leaves nothing.
	lazy := filepath.Join(dir, "lazy", "deeper")
	r, err := NewRestorer(RestoreOptions{Root: lazy})
	mustDo(t, err)
	tomb := fileindex.Entry{Path: "/gone", Type: fileindex.TypeDeleted}
	mustDo(t, r.Record(volume.RecFileHeader, fileindex.AppendEntry(nil, &tomb)))
	mustDo(t, r.Record(volume.RecFileEnd, []byte{volume.EndOK}))
	if exists(filepath.Join(dir, "lazy")) {
		t.Fatal("target created before any entry")
	}
	r2, err := NewRestorer(RestoreOptions{Root: lazy})
	mustDo(t, err)
	if _, err := r2.Finish(); err != nil || exists(filepath.Join(dir, "lazy")) {
		t.Fatalf("empty restore: %v, target exists %v", err, exists(lazy))
	}
	f := fileindex.Entry{Path: "/f", Type: fileindex.TypeFile, Mode: 0o644}
	mustDo(t, r.Record(volume.RecFileHeader, fileindex.AppendEntry(nil, &f)))
	if !exists(lazy) {
		t.Fatal("target not created by the first entry")
	}
}

// streamOf backs up files made by mk and returns the stream.
func streamOf(t *testing.T, mk func(dir string)) (string, []byte) {
	dir := t.TempDir()
	mk(dir)
	s, _ := runSource(t, SourceOptions{Walk: WalkOptions{Paths: []string{dir}}})
	return dir, s
}

func TestRestoreDamage(t *testing.T) { eachTempKind(t, testRestoreDamage) }

func testRestoreDamage(t *testing.T) {
	src, stream := streamOf(t, func(dir string) {
		for _, n := range []string{"a-cut", "b-ok", "c-corrupt", "d-no-end", "e-ok"} {
			mustWrite(t, filepath.Join(dir, n), randomBytes(uint64(len(n)), 700<<10), 0o644)
		}
	})
	ps, recs := entryRecords(t, stream)
	dst := filepath.Join(t.TempDir(), "r")
	r, err := NewRestorer(RestoreOptions{Root: dst})
	mustDo(t, err)
	tmpFiles := func() int { return len(filesUnderWay(t, dst+src)) }
	for i, p := range ps {
		for j, rec := range recs[i] {
			switch base := filepath.Base(p); {
			case base == "a-cut" && j == 2:
				if under := filesUnderWay(t, dst+src); len(under) != 1 {
					t.Fatal("no temporary file while a file is written")
				} else if unnamed := strings.HasPrefix(under[0], "#"); unnamed != preferUnnamedFiles {
					t.Fatalf("the file under way is %s, unnamed wanted: %v", under[0], preferUnnamedFiles)
				}
				r.Damaged(p, "block 7 of volume V1: checksum mismatch")
				r.wk.settle() // its worker removes it
				if tmpFiles() != 0 {
					t.Fatal("the damaged file's partial content was kept")
				}
			case base == "c-corrupt" && j == 1:
				rec.body = bytes.Clone(rec.body)
				rec.body[100] ^= 1
			case base == "d-no-end" && rec.t == volume.RecFileEnd:
				continue // lost: the next FileHeader comes instead
			}
			mustDo(t, r.Record(rec.t, rec.body))
		}
	}
	st, err := r.Finish()
	mustDo(t, err)
	var damaged []string
	for _, d := range st.Damaged {
		damaged = append(damaged, filepath.Base(d.Path)+": "+d.Reason)
	}
	// In the order found: a worker finds a digest that does not match
	// while the stream goes on.
	slices.Sort(damaged)
	if len(damaged) != 3 || !strings.Contains(damaged[0], "a-cut: block 7") ||
		!strings.Contains(damaged[1], "c-corrupt: content does not match its SHA-256") ||
		!strings.Contains(damaged[2], "d-no-end: its FileEnd was lost") {
		t.Fatalf("damaged: %q", damaged)
	}
	for _, n := range []string{"a-cut", "c-corrupt", "d-no-end"} {
		if exists(dst + src + "/" + n) {
			t.Errorf("damaged %s was restored", n)
		}
	}
	for _, n := range []string{"b-ok", "e-ok"} {
		a, _ := os.ReadFile(src + "/" + n)
		b, _ := os.ReadFile(dst + src + "/" + n)
		if !bytes.Equal(a, b) {
			t.Errorf("%s not restored intact", n)
		}
	}
	if tmpFiles() != 0 {
		t.Fatal("temporary files left")
	}
}

// A filesystem without O_TMPFILE (vfat, NFS) gets its files under
// temporary names from its first file on, and the restore is whole.
func TestRestoreWithoutUnnamedFiles(t *testing.T) {
	src, stream := streamOf(t, func(dir string) {
		for i := range 5 {
			mustWrite(t, filepath.Join(dir, fmt.Sprint("f", i)), randomBytes(uint64(i), 10<<10), 0o640)
		}
	})
	tries := 0
	saved := openUnnamed
	openUnnamed = func(int, uint32) (int, error) { tries++; return -1, unix.EOPNOTSUPP }
	defer func() { openUnnamed = saved }()
	dst := t.TempDir()
	st := restoreStream(t, stream, RestoreOptions{Root: dst, Force: true})
	if st.WarningCount != 0 || st.Files != 5 {
		t.Fatalf("stats %+v", st)
	}
	if tries != 1 {
		t.Fatalf("an unnamed file was tried %d times, want once", tries)
	}
	sameTree(t, src, dst+src)
	if under := filesUnderWay(t, dst+src); len(under) != 0 {
		t.Fatalf("left behind: %q", under)
	}
}

// eachTempKind runs f with the restore's files created unnamed and with
// them created under temporary names, as on a filesystem without O_TMPFILE.
func eachTempKind(t *testing.T, f func(t *testing.T)) {
	for _, unnamed := range []bool{true, false} {
		name := "unnamed"
		if !unnamed {
			name = "named"
		}
		t.Run(name, func(t *testing.T) {
			preferUnnamedFiles = unnamed
			defer func() { preferUnnamedFiles = true }()
			f(t)
		})
	}
}

// filesUnderWay lists the files a restore in this process has under way in
// dir: those under temporary names, and the unnamed ones it holds open
// there (a descriptor's link reads "dir/#inode (deleted)").
func filesUnderWay(t *testing.T, dir string) []string {
	var out []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".cairn-restore-") {
			out = append(out, e.Name())
		}
	}
	fds, err := os.ReadDir("/proc/self/fd")
	mustDo(t, err)
	for _, fd := range fds {
		target, err := os.Readlink("/proc/self/fd/" + fd.Name())
		if err != nil {
			continue // closed meanwhile, or the directory's own descriptor
		}
		if p, ok := strings.CutSuffix(target, " (deleted)"); ok && filepath.Dir(p) == dir && strings.HasPrefix(filepath.Base(p), "#") {
			out = append(out, filepath.Base(p))
		}
	}
	return out
}

func header(e fileindex.Entry) []byte { return fileindex.AppendEntry(nil, &e) }

// A stream cannot write outside the target: unclean paths are refused,
// and a restored symlink is never followed by a later entry.
func TestRestoreStaysInsideTarget(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(dir, "outside")
	mustDo(t, os.Mkdir(outside, 0o755))
	dst := filepath.Join(dir, "restore")
	r, err := NewRestorer(RestoreOptions{Root: dst})
	mustDo(t, err)
	feed := func(e fileindex.Entry, data string) {
		mustDo(t, r.Record(volume.RecFileHeader, header(e)))
		if data != "" {
			mustDo(t, r.Record(volume.RecData, volume.AppendDataRecord(nil, 0, []byte(data))[2:]))
		}
		mustDo(t, r.Record(volume.RecFileEnd, []byte{volume.EndOK}))
	}
	for _, p := range []string{"/../outside/x", "/a/../../outside/x", "relative", "/a//b", "/a/", "/a/."} {
		feed(fileindex.Entry{Path: p, Type: fileindex.TypeFile, Mode: 0o644, Size: 4}, "evil")
	}
	feed(fileindex.Entry{Path: "/link", Type: fileindex.TypeSymlink, Target: outside}, "")
	feed(fileindex.Entry{Path: "/link/x", Type: fileindex.TypeFile, Mode: 0o644, Size: 4}, "evil")
	feed(fileindex.Entry{Path: "/link/d", Type: fileindex.TypeDir, Mode: 0o755}, "")
	feed(fileindex.Entry{Path: "/hl", Type: fileindex.TypeHardlink, Target: "/link/../../outside/secret"}, "")
	feed(fileindex.Entry{Path: "/hl2", Type: fileindex.TypeHardlink, Target: "/link/secret"}, "")
	st, err := r.Finish()
	mustDo(t, err)
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("the restore wrote outside its target: %v", ents)
	}
	if st.WarningCount != 10 || st.Refused != 10 || st.Links != 1 {
		t.Fatalf("stats %+v", st)
	}
	if target, err := os.Readlink(dst + "/link"); err != nil || target != outside {
		t.Fatalf("the absolute symlink itself is restored: %q %v", target, err)
	}
}

func TestRestoreHardLinkTargetInLaterSession(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "r")
	r, err := NewRestorer(RestoreOptions{Root: dst})
	mustDo(t, err)
	rec := func(t2 volume.RecordType, body []byte) { mustDo(t, r.Record(t2, body)) }
	// Session 2 of a chain (read first here) holds the new name.
	rec(volume.RecFileHeader, header(fileindex.Entry{Path: "/d/b", Type: fileindex.TypeHardlink, Target: "/d/a", NLink: 2}))
	rec(volume.RecFileEnd, []byte{volume.EndOK})
	rec(volume.RecFileHeader, header(fileindex.Entry{Path: "/d/orphan", Type: fileindex.TypeHardlink, Target: "/d/never", NLink: 2}))
	rec(volume.RecFileEnd, []byte{volume.EndOK})
	// Session 1 holds the content.
	rec(volume.RecFileHeader, header(fileindex.Entry{Path: "/d/a", Type: fileindex.TypeFile, Mode: 0o640, Size: 5, NLink: 2}))
	rec(volume.RecData, volume.AppendDataRecord(nil, 0, []byte("hello"))[2:])
	rec(volume.RecFileEnd, []byte{volume.EndOK})
	st, err := r.Finish()
	mustDo(t, err)
	var a, b unix.Stat_t
	mustDo(t, unix.Lstat(dst+"/d/a", &a))
	mustDo(t, unix.Lstat(dst+"/d/b", &b))
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Fatalf("not linked: inodes %d %d, nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	if st.WarningCount != 1 || st.Refused != 1 || !strings.Contains(st.Warnings[0].Err, "target /d/never was not restored") || st.Links != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A file that grew during the backup comes back as what was read, with a
// warning.
func TestRestoreIncompleteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "growing")
	content := randomBytes(11, 2<<20)
	mustWrite(t, p, content, 0o644)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	mustDo(t, err)
	defer f.Close()
	stream, _ := runSource(t, SourceOptions{Walk: WalkOptions{Paths: []string{dir}}, Emit: func([]byte) error {
		_, err := f.Write([]byte("appended"))
		return err
	}})
	dst := filepath.Join(t.TempDir(), "r")
	st := restoreStream(t, stream, RestoreOptions{Root: dst})
	got, err := os.ReadFile(dst + p)
	mustDo(t, err)
	if !bytes.Equal(got, content) || st.WarningCount != 1 || !strings.Contains(st.Warnings[0].Err, "incomplete") || st.DamagedCount != 0 || st.Refused != 0 {
		t.Fatalf("restored %d bytes of %d, stats %+v", len(got), len(content), st)
	}
}

// With Force, restored entries replace what is in their way.
func TestRestoreForceReplaces(t *testing.T) { eachTempKind(t, testRestoreForceReplaces) }

func testRestoreForceReplaces(t *testing.T) {
	src, stream := streamOf(t, func(dir string) {
		mustWrite(t, filepath.Join(dir, "file"), []byte("new content"), 0o644)
		mustWrite(t, filepath.Join(dir, "file2"), []byte("where a directory was"), 0o640)
		mustDo(t, os.Symlink("file", filepath.Join(dir, "link")))
		mustDo(t, os.Mkdir(filepath.Join(dir, "dir"), 0o755))
	})
	dst := t.TempDir()
	mustWrite(t, dst+src+"/file", []byte("old"), 0o600)
	mustDo(t, os.Mkdir(dst+src+"/link", 0o755)) // an empty directory where the symlink goes
	mustDo(t, os.Mkdir(dst+src+"/file2", 0o755))
	mustWrite(t, dst+src+"/dir", []byte("a file where the directory goes"), 0o644)
	st := restoreStream(t, stream, RestoreOptions{Root: dst, Force: true})
	if st.WarningCount != 0 {
		t.Fatalf("warnings %+v", st.Warnings)
	}
	sameTree(t, src, dst+src)
}

func TestRestoreRejectsMalformedStream(t *testing.T) {
	r, err := NewRestorer(RestoreOptions{Root: filepath.Join(t.TempDir(), "r")})
	mustDo(t, err)
	if err := r.Record(volume.RecData, []byte{0, 1, 2}); !errors.Is(err, volume.ErrBadRecord) {
		t.Fatalf("Data first: %v", err)
	}
	if err := r.Record(volume.RecFileEnd, []byte{0}); !errors.Is(err, volume.ErrBadRecord) {
		t.Fatalf("FileEnd first: %v", err)
	}
	if err := r.Record(volume.RecFileHeader, []byte("junk")); !errors.Is(err, fileindex.ErrCorrupt) {
		t.Fatalf("bad header: %v", err)
	}
	if err := r.Records([]byte{byte(volume.RecFileHeader), 50, 1}); !errors.Is(err, volume.ErrShortRecord) {
		t.Fatalf("cut batch: %v", err)
	}
}

// feedEntry restores one entry, with data as a regular file's content.
func feedEntry(t *testing.T, r *Restorer, e fileindex.Entry, data string) {
	t.Helper()
	if e.Type == fileindex.TypeFile {
		e.Size = int64(len(data))
	}
	mustDo(t, r.Record(volume.RecFileHeader, header(e)))
	if data != "" {
		mustDo(t, r.Record(volume.RecData, volume.AppendDataRecord(nil, 0, []byte(data))[2:]))
	}
	mustDo(t, r.Record(volume.RecFileEnd, []byte{volume.EndOK}))
}

// Device nodes come back only when asked: without Devices each is refused
// with a warning that names the flag, and counted, so the restore does not
// end as a success.
func TestRestoreDevicesOnlyWhenAsked(t *testing.T) {
	needRoot(t, "only root creates device nodes")
	src, stream := streamOf(t, func(dir string) {
		mustDo(t, unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		mustDo(t, unix.Mknod(filepath.Join(dir, "loop"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 200))))
		mustWrite(t, filepath.Join(dir, "file"), []byte("restored all the same\n"), 0o644)
	})
	dst := filepath.Join(t.TempDir(), "r")
	st := restoreStream(t, stream, RestoreOptions{Root: dst})
	if st.Refused != 2 || st.Specials != 0 || st.Files != 1 || st.WarningCount != 2 {
		t.Fatalf("without Devices: %+v", st)
	}
	for _, w := range st.Warnings {
		if b := filepath.Base(w.Path); (b != "null" && b != "loop") || !strings.Contains(w.Err, "pass --devices") {
			t.Errorf("warning %+v does not name the device and the flag", w)
		}
	}
	for _, n := range []string{"null", "loop"} {
		if exists(dst + src + "/" + n) {
			t.Errorf("device %s restored without Devices", n)
		}
	}
	if !exists(dst + src + "/file") {
		t.Error("the file beside the devices was not restored")
	}

	dst = filepath.Join(t.TempDir(), "r")
	st = restoreStream(t, stream, RestoreOptions{Root: dst, Devices: true})
	if st.Refused != 0 || st.Specials != 2 || st.WarningCount != 0 {
		t.Fatalf("with Devices: %+v", st)
	}
	sameTree(t, src, dst+src)
}

// The target is checked again when the first entry creates it: a symlink
// planted in its place after NewRestorer (in /tmp, by another user) is not
// followed, and a target that got content is refused unless forced.
func TestRestoreTargetReplacedAfterCheck(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(dir, "outside")
	mustDo(t, os.Mkdir(outside, 0o755))
	root := filepath.Join(dir, "target")
	r, err := NewRestorer(RestoreOptions{Root: root})
	mustDo(t, err)
	mustDo(t, os.Symlink(outside, root))
	err = r.Record(volume.RecFileHeader, header(fileindex.Entry{Path: "/f", Type: fileindex.TypeFile, Mode: 0o644}))
	if err == nil || !strings.Contains(err.Error(), "replaced by a symlink") {
		t.Errorf("target swapped for a symlink: %v", err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("the restore wrote through the symlink planted as its target: %v", ents)
	}
	r.Finish()

	root = filepath.Join(dir, "target2")
	r, err = NewRestorer(RestoreOptions{Root: root})
	mustDo(t, err)
	mustWrite(t, filepath.Join(root, "planted"), nil, 0o644)
	err = r.Record(volume.RecFileHeader, header(fileindex.Entry{Path: "/f", Type: fileindex.TypeFile, Mode: 0o644}))
	var ne *TargetNotEmptyError
	if !errors.As(err, &ne) {
		t.Errorf("target filled after the check: %v", err)
	}
	r.Finish()

	// A target given as a symlink to a directory is that directory.
	real := filepath.Join(dir, "real")
	mustDo(t, os.Mkdir(real, 0o755))
	mustDo(t, os.Symlink(real, filepath.Join(dir, "named")))
	r, err = NewRestorer(RestoreOptions{Root: filepath.Join(dir, "named")})
	mustDo(t, err)
	feedEntry(t, r, fileindex.Entry{Path: "/f", Type: fileindex.TypeFile, Mode: 0o644}, "x")
	if st, err := r.Finish(); err != nil || st.Files != 1 || !exists(filepath.Join(real, "f")) {
		t.Fatalf("restore through a symlinked target: %+v %v", st, err)
	}
}

// What Finish applies goes to the inodes the restore made, checked by
// device and inode number: a hard link's target replaced by a symlink or by
// another file is not linked, and a directory replaced by another gets
// nothing.
func TestRestoreFinishTouchesOnlyWhatItMade(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	mustWrite(t, secret, []byte("root's\n"), 0o600)
	dst := filepath.Join(dir, "r")
	r, err := NewRestorer(RestoreOptions{Root: dst})
	mustDo(t, err)
	feedEntry(t, r, fileindex.Entry{Path: "/a", Type: fileindex.TypeDir, Mode: 0o755}, "")
	feedEntry(t, r, fileindex.Entry{Path: "/a/f", Type: fileindex.TypeFile, Mode: 0o644, NLink: 2}, "f")
	feedEntry(t, r, fileindex.Entry{Path: "/a/g", Type: fileindex.TypeFile, Mode: 0o644, NLink: 2}, "g")
	feedEntry(t, r, fileindex.Entry{Path: "/a/hf", Type: fileindex.TypeHardlink, Target: "/a/f", NLink: 2}, "")
	feedEntry(t, r, fileindex.Entry{Path: "/a/hg", Type: fileindex.TypeHardlink, Target: "/a/g", NLink: 2}, "")
	feedEntry(t, r, fileindex.Entry{Path: "/b", Type: fileindex.TypeDir, Mode: 0o751,
		Xattrs: []fileindex.Xattr{{Name: "user.b", Value: []byte("b")}}}, "")
	r.wk.settle() // the files are in place: the workers are idle

	mustDo(t, os.Rename(dst+"/a/f", dst+"/a/f.moved"))
	mustDo(t, os.Symlink(secret, dst+"/a/f"))
	mustWrite(t, dst+"/a/other", []byte("other"), 0o644)
	mustDo(t, os.Rename(dst+"/a/other", dst+"/a/g"))
	mustDo(t, os.Rename(dst+"/b", dst+"/b.moved"))
	mustDo(t, os.Mkdir(dst+"/b", 0o700))

	st, err := r.Finish()
	mustDo(t, err)
	for _, n := range []string{"hf", "hg"} {
		if _, err := os.Lstat(dst + "/a/" + n); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("hard link %s made to a replaced target: %v", n, err)
		}
	}
	var s unix.Stat_t
	mustDo(t, unix.Stat(secret, &s))
	if s.Nlink != 1 {
		t.Errorf("the secret has %d links", s.Nlink)
	}
	mustDo(t, unix.Stat(dst+"/b", &s))
	if s.Mode&0o7777 != 0o700 {
		t.Errorf("the directory put in place of /b got mode %o", s.Mode&0o7777)
	}
	if _, err := unix.Getxattr(dst+"/b", "user.b", nil); err == nil {
		t.Error("the directory put in place of /b got /b's xattr")
	}
	if st.Refused != 2 || st.WarningCount != 3 {
		t.Fatalf("stats %+v", st)
	}
	for _, w := range st.Warnings {
		if !strings.Contains(w.Err, "replaced") {
			t.Errorf("warning %+v does not say the entry was replaced", w)
		}
	}
}

// needRoot stops a test that needs root: it fails under CAIRN_CI=1, where
// every test must run, and skips elsewhere.
func needRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CAIRN_CI") != "" {
		t.Fatalf("this test needs root (%s); under CAIRN_CI=1 it may not skip", why)
	}
	t.Skipf("SKIPPED: this test needs root (%s); it fails instead under CAIRN_CI=1", why)
}

// On kernels without fchmodat2 or utimensat(AT_EMPTY_PATH), and for hard
// links without CAP_DAC_READ_SEARCH, the restore reaches what it holds
// through /proc/self/fd: the same tree comes back.
func TestRestoreProcFallback(t *testing.T) {
	needRoot(t, "restoring owners and devices")
	src, stream := streamOf(t, func(dir string) {
		fifo := filepath.Join(dir, "fifo")
		mustDo(t, unix.Mkfifo(fifo, 0o600))
		mustDo(t, os.Lchown(fifo, 1234, 5678))
		mustDo(t, unix.Chmod(fifo, 0o6640))
		mustDo(t, unix.Setxattr(fifo, "trusted.fifo", []byte("on a fifo"), 0))
		mustDo(t, unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))))
		mustDo(t, unix.Chmod(filepath.Join(dir, "null"), 0o666))
		mustWrite(t, filepath.Join(dir, "file"), []byte("two names\n"), 0o640)
		mustDo(t, os.Link(filepath.Join(dir, "file"), filepath.Join(dir, "link")))
		mustDo(t, os.Symlink("file", filepath.Join(dir, "symlink")))
		mustDo(t, os.Lchown(filepath.Join(dir, "symlink"), 1234, 5678))
		mustDo(t, unix.Lsetxattr(filepath.Join(dir, "symlink"), "trusted.symlink", []byte("on a symlink"), 0))
		for _, n := range []string{"fifo", "null", "symlink"} {
			mustDo(t, unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(dir, n),
				[]unix.Timespec{{Sec: 1234567890, Nsec: 5}, {Sec: 1334567890, Nsec: 7}}, unix.AT_SYMLINK_NOFOLLOW))
		}
	})
	preferEmptyPathCalls = false
	defer func() { preferEmptyPathCalls = true }()
	dst := filepath.Join(t.TempDir(), "r")
	st := restoreStream(t, stream, RestoreOptions{Root: dst, Devices: true})
	if st.WarningCount != 0 || st.Refused != 0 || st.Links != 2 || st.Specials != 2 {
		t.Fatalf("stats %+v", st)
	}
	sameTree(t, src, dst+src)
}

// A restore whose target fills up stops with the write's error, names that
// error as why the file it was writing is not restored, and leaves no
// partial file behind.
func TestRestoreOntoAFullDiskSaysWhy(t *testing.T) {
	dst := t.TempDir()
	mountTmpfs(t, dst) // 1 MiB
	r, err := NewRestorer(RestoreOptions{Root: dst})
	mustDo(t, err)
	e := fileindex.Entry{Path: "/big", Type: fileindex.TypeFile, Mode: 0o644, Size: 4 << 20}
	mustDo(t, r.Record(volume.RecFileHeader, header(e)))
	chunk := bytes.Repeat([]byte("x"), 256<<10)
	var streamErr error
	for off := 0; off < 4<<20 && streamErr == nil; off += len(chunk) {
		streamErr = r.Record(volume.RecData, append(binary.AppendUvarint(nil, uint64(off)), chunk...))
		if streamErr == nil {
			r.wk.settle() // the worker has written what it was given
		}
	}
	if !errors.Is(streamErr, unix.ENOSPC) {
		t.Fatalf("the stream went on past a full disk: %v", streamErr)
	}
	st, err := r.Finish()
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("Finish: %v", err)
	}
	// Not restored, for the disk; its data is not lost.
	if st.DamagedCount != 0 || st.Refused != 1 || st.WarningCount != 1 || st.Warnings[0].Path != "/big" || !strings.Contains(st.Warnings[0].Err, "no space left on device") {
		t.Fatalf("what is said of the file: damaged %+v, refused %d, warnings %+v", st.Damaged, st.Refused, st.Warnings)
	}
	names, _ := os.ReadDir(dst)
	if len(names) != 0 {
		t.Fatalf("left in the target: %v", names)
	}
}

// Files are made with the permissions they will have where the umask lets
// them, and the chown and chmod that would change nothing are left out:
// every mode and owner still comes out as it was, whatever the umask, the
// owner, special bits or an ACL.
func TestRestoreModesUnderEveryUmask(t *testing.T) {
	needRoot(t, "files owned by another user")
	src, stream := streamOf(t, func(dir string) {
		modes := []uint32{0o644, 0o600, 0o664, 0o666, 0o755, 0o777, 0o444, 0o000, 0o4755, 0o2755, 0o1644, 0o6711}
		for i, m := range modes {
			// Both ids the restore's own, one of them, neither.
			for _, owner := range [][2]int{{0, 0}, {1234, 0}, {0, 1235}, {1234, 1235}} {
				p := filepath.Join(dir, fmt.Sprintf("%04o-%d-%d", m, owner[0], owner[1]))
				mustWrite(t, p, randomBytes(uint64(i), 100+i), 0o600)
				mustDo(t, os.Lchown(p, owner[0], owner[1]))
				mustDo(t, unix.Chmod(p, m))
			}
		}
		acl := filepath.Join(dir, "acl-0640")
		mustWrite(t, acl, []byte("acl'd\n"), 0o640)
		mustDo(t, unix.Setxattr(acl, "system.posix_acl_access", posixACL(
			[3]uint32{0x01, 6, aclUndefinedID}, [3]uint32{0x02, 6, 1234}, [3]uint32{0x04, 4, aclUndefinedID},
			[3]uint32{0x10, 4, aclUndefinedID}, [3]uint32{0x20, 0, aclUndefinedID}), 0))
		sub := filepath.Join(dir, "setgid-dir")
		mustDo(t, os.Mkdir(sub, 0o755))
		mustDo(t, os.Lchown(sub, 0, 4321))
		mustDo(t, unix.Chmod(sub, 0o2775))
		mustWrite(t, filepath.Join(sub, "root-group"), []byte("group 0 in a setgid directory\n"), 0o644)
		mustWrite(t, filepath.Join(sub, "dir-group"), []byte("the directory's group\n"), 0o644)
		mustDo(t, os.Lchown(filepath.Join(sub, "dir-group"), 0, 4321))
	})
	for _, mask := range []int{0o022, 0o077, 0o002, 0o000} {
		t.Run(fmt.Sprintf("umask %03o", mask), func(t *testing.T) {
			eachTempKind(t, func(t *testing.T) {
				old := unix.Umask(mask)
				defer unix.Umask(old)
				dst := t.TempDir()
				st := restoreStream(t, stream, RestoreOptions{Root: dst})
				if st.WarningCount != 0 || st.DamagedCount != 0 || st.Refused != 0 {
					t.Fatalf("restore warnings %+v, damaged %+v", st.Warnings, st.Damaged)
				}
				sameTree(t, src, dst+src)
			})
		})
	}
	// Over a target whose setgid directory is there already, files are
	// made with its group: the one the directory's own file has, not the
	// one root's has.
	t.Run("into a setgid directory", func(t *testing.T) {
		eachTempKind(t, func(t *testing.T) {
			dst := t.TempDir()
			sub := dst + src + "/setgid-dir"
			mustDo(t, os.MkdirAll(sub, 0o755))
			mustDo(t, os.Lchown(sub, 0, 4321))
			mustDo(t, unix.Chmod(sub, 0o2775))
			st := restoreStream(t, stream, RestoreOptions{Root: dst, Force: true})
			if st.WarningCount != 0 || st.DamagedCount != 0 || st.Refused != 0 {
				t.Fatalf("restore warnings %+v, damaged %+v", st.Warnings, st.Damaged)
			}
			sameTree(t, src, dst+src)
		})
	})
}

// A large file whose blocks come in a later read, past the files the
// restore holds open unnamed (maxHeld 0 here), waits under a temporary
// name: private until it is checked, whatever mode it will have, though
// an unnamed file is made with that mode.
func TestAFileWaitingForBlocksIsPrivate(t *testing.T) {
	eachTempKind(t, func(t *testing.T) {
		f := assembletest.Sample()
		f.Entry.Mode = 0o644
		root := filepath.Join(t.TempDir(), "to")
		r, err := NewRestorer(RestoreOptions{Root: root})
		mustDo(t, err)
		r.maxHeld = 0
		mustDo(t, r.Records(f.EntryRecords()))
		r.wk.settle()
		var st unix.Stat_t
		mustDo(t, unix.Lstat(waitingTemp(t, root), &st))
		if st.Mode&0o7777 != 0o600 {
			t.Errorf("the file waiting for its blocks has mode %04o, want 0600", st.Mode&0o7777)
		}
		if _, err := r.Finish(); err != nil {
			t.Fatal(err)
		}
	})
}
