package agent

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// benchTree is a tree for the benchmarks and its content bytes.
type benchTree struct {
	dir   string
	bytes int64
}

// smallTree is "many small files": 20,000 files of 1 to 32 KiB in 200
// directories, about 330 MB.
func smallTree(b *testing.B) benchTree {
	dir := b.TempDir()
	data := randomBytes(42, 32<<10)
	var total int64
	for i := range 20000 {
		n := 1<<10 + (i*7919)%(31<<10)
		p := filepath.Join(dir, fmt.Sprintf("d%03d", i%200), fmt.Sprintf("f%05d", i))
		if i < 200 {
			mustDo(b, os.MkdirAll(filepath.Dir(p), 0o755))
		}
		mustDo(b, os.WriteFile(p, data[:n], 0o644))
		total += int64(n)
	}
	return benchTree{dir, total}
}

// largeTree is "a few large files": 4 files of 64 MiB.
func largeTree(b *testing.B) benchTree {
	dir := b.TempDir()
	data := randomBytes(43, 64<<20)
	for i := range 4 {
		mustDo(b, os.WriteFile(filepath.Join(dir, fmt.Sprintf("big%d", i)), data, 0o644))
	}
	return benchTree{dir, 4 * 64 << 20}
}

// sealEmit stands for the data port's TLS: AES-GCM over every batch, the
// work a real Emit adds on the same cores.
func sealEmit() func([]byte) error {
	block, _ := aes.NewCipher(make([]byte, 32))
	gcm, _ := cipher.NewGCM(block)
	nonce := make([]byte, gcm.NonceSize())
	out := make([]byte, 0, BatchSize+64)
	return func(batch []byte) error {
		out = gcm.Seal(out[:0], nonce, batch, nil)
		return nil
	}
}

func benchSource(b *testing.B, tree benchTree, emit func([]byte) error) {
	b.SetBytes(tree.bytes)
	b.ReportAllocs()
	cold := emit == nil
	if cold {
		emit = func([]byte) error { return nil }
	}
	for b.Loop() {
		if cold {
			b.StopTimer()
			dropCaches(b)
			b.StartTimer()
		}
		s, err := NewSource(SourceOptions{Walk: WalkOptions{Paths: []string{tree.dir}}, Emit: emit})
		mustDo(b, err)
		mustDo(b, s.Run(context.Background()))
		if st := s.Stats(); st.Bytes != tree.bytes {
			b.Fatalf("read %d bytes of %d", st.Bytes, tree.bytes)
		}
	}
}

func BenchmarkSource(b *testing.B) {
	for _, tc := range []struct {
		name string
		tree func(*testing.B) benchTree
	}{{"small-files", smallTree}, {"large-files", largeTree}} {
		b.Run(tc.name, func(b *testing.B) {
			tree := tc.tree(b)
			b.Run("emit=discard", func(b *testing.B) { benchSource(b, tree, func([]byte) error { return nil }) })
			b.Run("emit=aes-gcm", func(b *testing.B) { benchSource(b, tree, sealEmit()) })
			// Cold: the page cache dropped before each pass, so the
			// files come from the disk (needs root).
			b.Run("emit=discard/cold", func(b *testing.B) { benchSource(b, tree, nil) })
			for _, pf := range []struct {
				name   string
				policy int
			}{{"never", prefetchNever}, {"always", prefetchAlways}} {
				b.Run("emit=discard/prefetch="+pf.name, func(b *testing.B) {
					defer func(p int) { prefetchPolicy = p }(prefetchPolicy)
					prefetchPolicy = pf.policy
					benchSource(b, tree, func([]byte) error { return nil })
				})
				b.Run("emit=discard/cold/prefetch="+pf.name, func(b *testing.B) {
					defer func(p int) { prefetchPolicy = p }(prefetchPolicy)
					prefetchPolicy = pf.policy
					benchSource(b, tree, nil)
				})
			}
		})
	}
}

func BenchmarkRestore(b *testing.B) {
	for _, tc := range []struct {
		name string
		tree func(*testing.B) benchTree
	}{{"small-files", smallTree}, {"large-files", largeTree}} {
		b.Run(tc.name, func(b *testing.B) {
			tree := tc.tree(b)
			var batches [][]byte
			s, err := NewSource(SourceOptions{Walk: WalkOptions{Paths: []string{tree.dir}}, Emit: func(batch []byte) error {
				batches = append(batches, append([]byte(nil), batch...))
				return nil
			}})
			mustDo(b, err)
			mustDo(b, s.Run(context.Background()))
			// ext4 measures the disk as much as the code; tmpfs, the code.
			b.Run("target=disk", func(b *testing.B) { benchRestore(b, tree, batches, b.TempDir()) })
			b.Run("target=tmpfs", func(b *testing.B) {
				base := b.TempDir()
				if err := unix.Mount("cairn-bench", base, "tmpfs", 0, "size=2g"); err != nil {
					b.Skipf("mount a tmpfs (needs CAP_SYS_ADMIN): %v", err)
				}
				defer unix.Unmount(base, unix.MNT_DETACH)
				benchRestore(b, tree, batches, base)
			})
		})
	}
}

func benchRestore(b *testing.B, tree benchTree, batches [][]byte, base string) {
	b.SetBytes(tree.bytes)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		dst := filepath.Join(base, fmt.Sprint(i))
		unix.Sync() // each pass starts without the last one's dirty pages
		b.StartTimer()
		r, err := NewRestorer(RestoreOptions{Root: dst})
		mustDo(b, err)
		for _, batch := range batches {
			mustDo(b, r.Records(batch))
		}
		st, err := r.Finish()
		mustDo(b, err)
		if st.Bytes != tree.bytes || st.WarningCount != 0 || st.DamagedCount != 0 {
			b.Fatalf("restore stats %+v", st)
		}
		b.StopTimer()
		mustDo(b, os.RemoveAll(dst))
		b.StartTimer()
	}
}

func dropCaches(b *testing.B) {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		b.Fatalf("drop the page cache (needs root): %v", err)
	}
}
