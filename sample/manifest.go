package sample

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Item is everything checked of one path.
type Item struct {
	Type   string
	Mode   uint32 // permission and special bits
	UID    uint32
	GID    uint32
	Size   int64
	MTime  int64
	ATime  int64 // regular files only: reading a directory or a symlink moves its atime
	SHA256 string
	Target string            // symlink target
	Xattrs map[string]string // hex values
	// Link is the smallest path of the item's hard-link group, so that two
	// trees with the same grouping compare equal whatever their inodes.
	Link   string
	Blocks int64 // allocated 512-byte blocks, to check that holes stayed holes
}

// Manifest maps paths, relative to the snapshot's root, to items.
type Manifest struct {
	Root  string
	Items map[string]Item
	Bytes int64 // content bytes of regular files
}

// Snapshot records a tree. Files are read with O_NOATIME where the kernel
// allows, so taking a snapshot does not change what it records.
func Snapshot(root string) (*Manifest, error) {
	m := &Manifest{Root: root, Items: map[string]Item{}}
	groups := map[[2]uint64][]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("lstat %s: %w", p, err)
		}
		it := Item{
			Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid,
			MTime: st.Mtim.Nano(), ATime: st.Atim.Nano(), Blocks: st.Blocks,
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			it.Type, it.Size = "file", st.Size
			sum, err := hashFile(p)
			if err != nil {
				return err
			}
			it.SHA256 = sum
			m.Bytes += st.Size
			if st.Nlink > 1 {
				k := [2]uint64{st.Dev, st.Ino}
				groups[k] = append(groups[k], rel)
			}
		case unix.S_IFDIR:
			it.Type, it.ATime, it.Blocks = "dir", 0, 0
		case unix.S_IFLNK:
			it.Type, it.Blocks, it.ATime = "symlink", 0, 0
			if it.Target, err = os.Readlink(p); err != nil {
				return err
			}
		case unix.S_IFIFO:
			it.Type = "fifo"
		default:
			it.Type = fmt.Sprintf("other(%o)", st.Mode&unix.S_IFMT)
		}
		if it.Xattrs, err = xattrs(p); err != nil {
			return err
		}
		m.Items[rel] = it
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", root, err)
	}
	for _, names := range groups {
		sort.Strings(names)
		for _, n := range names {
			it := m.Items[n]
			it.Link = names[0]
			m.Items[n] = it
		}
	}
	return m, nil
}

// ReadFile reads a file of a tree as a snapshot does, without moving its
// access time where the kernel lets it: a test that reads a source file to
// compare it would otherwise change the atime the next backup records.
func ReadFile(p string) ([]byte, error) {
	f, err := openNoATime(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// openNoATime opens p with O_NOATIME, which needs the file's owner (or
// CAP_FOWNER); anyone else opens it plainly.
func openNoATime(p string) (*os.File, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOATIME, 0)
	if err != nil {
		f, err = os.Open(p)
	}
	return f, err
}

func hashFile(p string) (string, error) {
	f, err := openNoATime(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func xattrs(p string) (map[string]string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err == unix.ENOTSUP || n == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listxattr %s: %w", p, err)
	}
	out := map[string]string{}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		v := make([]byte, 64<<10)
		vn, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s %s: %w", p, name, err)
		}
		out[name] = hex.EncodeToString(v[:vn])
	}
	return out, nil
}

// Files counts the regular files.
func (m *Manifest) Files() int {
	n := 0
	for _, it := range m.Items {
		if it.Type == "file" {
			n++
		}
	}
	return n
}

// Compare lists every difference between the tree that was (want) and a
// restored one (got); empty means identical in content and metadata.
func Compare(want, got *Manifest) []string {
	var diffs []string
	add := func(format string, args ...any) {
		if len(diffs) < 200 {
			diffs = append(diffs, fmt.Sprintf(format, args...))
		}
	}
	paths := make([]string, 0, len(want.Items))
	for p := range want.Items {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		w := want.Items[p]
		g, ok := got.Items[p]
		if !ok {
			add("%s: missing (%s)", quote(p), w.Type)
			continue
		}
		if w.Type != g.Type {
			add("%s: type %s, want %s", quote(p), g.Type, w.Type)
			continue
		}
		check := func(field string, gv, wv any) {
			if fmt.Sprint(gv) != fmt.Sprint(wv) {
				add("%s: %s %v, want %v", quote(p), field, gv, wv)
			}
		}
		if w.Type != "symlink" {
			check("mode", fmt.Sprintf("%04o", g.Mode), fmt.Sprintf("%04o", w.Mode))
		}
		check("owner", fmt.Sprintf("%d:%d", g.UID, g.GID), fmt.Sprintf("%d:%d", w.UID, w.GID))
		check("size", g.Size, w.Size)
		check("content", g.SHA256, w.SHA256)
		check("mtime", g.MTime, w.MTime)
		check("atime", g.ATime, w.ATime)
		check("symlink target", g.Target, w.Target)
		check("hard link group", g.Link, w.Link)
		if !bytes.Equal([]byte(fmt.Sprint(g.Xattrs)), []byte(fmt.Sprint(w.Xattrs))) {
			add("%s: xattrs %v, want %v", quote(p), g.Xattrs, w.Xattrs)
		}
		// A restored sparse file may allocate a little more than the
		// original (filesystem granularity), never its whole size.
		if w.Type == "file" && w.Blocks*512 < w.Size/2 && g.Blocks > 2*w.Blocks+64 {
			add("%s: %d blocks allocated, the original had %d: holes were filled", quote(p), g.Blocks, w.Blocks)
		}
	}
	for p, g := range got.Items {
		if _, ok := want.Items[p]; !ok {
			add("%s: unexpected %s", quote(p), g.Type)
		}
	}
	sort.Strings(diffs)
	return diffs
}

func quote(p string) string {
	if strings.ContainsAny(p, "\n\t\"") {
		return fmt.Sprintf("%q", p)
	}
	return p
}

// Sub returns the manifest of the subtree at rel, with paths relative to it.
func (m *Manifest) Sub(rel string) *Manifest {
	out := &Manifest{Root: filepath.Join(m.Root, rel), Items: map[string]Item{}}
	for p, it := range m.Items {
		if r, err := filepath.Rel(rel, p); err == nil && !strings.HasPrefix(r, "..") && r != "." {
			if it.Link != "" {
				it.Link, _ = filepath.Rel(rel, it.Link)
			}
			out.Items[r] = it
			if it.Type == "file" {
				out.Bytes += it.Size
			}
		}
	}
	return out
}
