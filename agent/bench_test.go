package agent

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/fileindex"
)

// benchTree is a tree for the benchmarks and its content bytes.
type benchTree struct {
	dir   string
	bytes int64
}

// smallTree is "many small files": 20,000 files of 1 to 32 KiB in 200
// directories, about 330 MB.
func smallTree(b *testing.B) benchTree {
	return filesTree(b, 42, 32, func(i int) string { return fmt.Sprintf("d%03d/f%05d", i%200, i) })
}

// smallDirsTree is bench/e2e.sh's small files in small: 20,000 files of
// 1-16 KiB in 1,000 directories of 20, two levels deep, where a
// directory's files are too few for a prefetch within it to run ahead.
func smallDirsTree(b *testing.B) benchTree {
	return filesTree(b, 44, 16, func(i int) string { return fmt.Sprintf("d%02d/e%02d/f%02d", i/1000, i/20%50, i%20) })
}

// filesTree writes 20,000 files of 1 to maxKiB KiB of random bytes (seed),
// file i at the relative path name gives it.
func filesTree(b *testing.B, seed uint64, maxKiB int, name func(i int) string) benchTree {
	dir := b.TempDir()
	data := randomBytes(seed, maxKiB<<10)
	var total int64
	for i := range 20000 {
		n := 1<<10 + (i*7919)%((maxKiB-1)<<10)
		p := filepath.Join(dir, name(i))
		mustDo(b, os.MkdirAll(filepath.Dir(p), 0o755))
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

// coldData makes a cold benchSource (emit nil) walk the tree's names and
// inodes back into the cache after dropping it, as the count that sizes a
// backup's progress does beside the backup's walk: only the files' content
// comes from the disk.
var coldData bool

// benchKnobs are the package's settings the benchmarks vary.
type benchKnobs struct {
	readers, policy, files int
	bytes                  int64
	coldData               bool
}

func benchKnobsNow() benchKnobs {
	return benchKnobs{fileReaders, prefetchPolicy, aheadFiles, aheadBytes, coldData}
}

func (k benchKnobs) set() {
	fileReaders, prefetchPolicy, aheadFiles, aheadBytes, coldData = k.readers, k.policy, k.files, k.bytes, k.coldData
}

func benchSource(b *testing.B, tree benchTree, emit func([]byte) error) {
	b.SetBytes(tree.bytes)
	b.ReportAllocs()
	cold := emit == nil
	if cold {
		emit = func([]byte) error { return nil }
	}
	var cpu, wall time.Duration
	for b.Loop() {
		if cold {
			b.StopTimer()
			dropCaches(b)
			if coldData {
				mustDo(b, walkSizes(context.Background(), WalkOptions{Paths: []string{tree.dir}}, func(*fileindex.Entry) error { return nil }))
			}
			b.StartTimer()
		}
		t0, c0 := time.Now(), cpuTime(b)
		s, err := NewSource(SourceOptions{Walk: WalkOptions{Paths: []string{tree.dir}}, Emit: emit})
		mustDo(b, err)
		mustDo(b, s.Run(context.Background()))
		wall += time.Since(t0)
		cpu += cpuTime(b) - c0
		if st := s.Stats(); st.Bytes != tree.bytes {
			b.Fatalf("read %d bytes of %d", st.Bytes, tree.bytes)
		}
	}
	b.ReportMetric(cpu.Seconds()/wall.Seconds(), "cores")
	b.ReportMetric(cpu.Seconds()/(float64(tree.bytes)*float64(b.N)/(1<<30)), "CPU-s/GiB")
}

func BenchmarkSource(b *testing.B) {
	for _, tc := range []struct {
		name string
		tree func(*testing.B) benchTree
	}{{"small-files", smallTree}, {"small-dirs", smallDirsTree}, {"large-files", largeTree}} {
		b.Run(tc.name, func(b *testing.B) {
			tree := tc.tree(b)
			b.Run("emit=discard", func(b *testing.B) { benchSource(b, tree, func([]byte) error { return nil }) })
			b.Run("emit=aes-gcm", func(b *testing.B) { benchSource(b, tree, sealEmit()) })
			// Cold: the page cache dropped before each pass, so the
			// files come from the disk (needs root).
			b.Run("emit=discard/cold", func(b *testing.B) { benchSource(b, tree, nil) })
			// with runs benchSource with the package's knobs set as k
			// says, and set back after; emit makes its Emit (nil: cold,
			// the page cache dropped).
			with := func(k benchKnobs, emit func() func([]byte) error) func(*testing.B) {
				return func(b *testing.B) {
					defer benchKnobsNow().set()
					k.set()
					var e func([]byte) error
					if emit != nil {
						e = emit()
					}
					benchSource(b, tree, e)
				}
			}
			// readers is the knobs as they are, but for the readers and
			// the prefetch.
			readers := func(n, policy int) benchKnobs {
				k := benchKnobsNow()
				k.readers, k.policy = n, policy
				return k
			}
			discard := func() func([]byte) error { return func([]byte) error { return nil } }
			if tc.name != "large-files" { // the readers take small files only
				// The content cold, names and inodes cached as in a
				// backup (coldData), with the readers' window as it is
				// and wider.
				for _, w := range []struct {
					readers, files int
					bytes          int64
				}{{4, 64, 4 << 20}, {4, 256, 16 << 20}, {8, 256, 16 << 20}, {16, 512, 16 << 20}} {
					k := readers(w.readers, prefetchAuto)
					k.files, k.bytes, k.coldData = w.files, w.bytes, true
					b.Run(fmt.Sprintf("emit=discard/cold-data/readers=%d/ahead=%d", w.readers, w.files), with(k, nil))
				}
			}
			// The readers against reading each file when the stream
			// reaches it (readers=0), with the prefetch as it decides.
			for _, n := range []int{0, 2, 4, 8} {
				b.Run(fmt.Sprintf("emit=aes-gcm/readers=%d", n), with(readers(n, prefetchAuto), sealEmit))
				b.Run(fmt.Sprintf("emit=discard/cold/readers=%d", n), with(readers(n, prefetchAuto), nil))
			}
			for _, pf := range []struct {
				name   string
				policy int
			}{{"never", prefetchNever}, {"always", prefetchAlways}} {
				b.Run("emit=discard/readers=0/prefetch="+pf.name, with(readers(0, pf.policy), discard))
				b.Run("emit=aes-gcm/readers=4/prefetch="+pf.name, with(readers(4, pf.policy), sealEmit))
				b.Run("emit=discard/cold/readers=4/prefetch="+pf.name, with(readers(4, pf.policy), nil))
				b.Run("emit=discard/cold/readers=0/prefetch="+pf.name, with(readers(0, pf.policy), nil))
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
	var cpu, wall time.Duration
	for b.Loop() {
		b.StopTimer()
		i++
		dst := filepath.Join(base, fmt.Sprint(i))
		unix.Sync() // each pass starts without the last one's dirty pages
		b.StartTimer()
		t0, c0 := time.Now(), cpuTime(b)
		r, err := NewRestorer(RestoreOptions{Root: dst})
		mustDo(b, err)
		for _, batch := range batches {
			mustDo(b, r.Records(batch))
		}
		st, err := r.Finish()
		mustDo(b, err)
		wall += time.Since(t0)
		cpu += cpuTime(b) - c0
		if st.Bytes != tree.bytes || st.WarningCount != 0 || st.DamagedCount != 0 {
			b.Fatalf("restore stats %+v", st)
		}
		b.StopTimer()
		mustDo(b, os.RemoveAll(dst))
		b.StartTimer()
	}
	b.ReportMetric(cpu.Seconds()/wall.Seconds(), "cores")
	b.ReportMetric(cpu.Seconds()/(float64(tree.bytes)*float64(b.N)/(1<<30)), "CPU-s/GiB")
}

func dropCaches(b *testing.B) {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		b.Fatalf("drop the page cache (needs root): %v", err)
	}
}

// BenchmarkSparseFile backs up and restores a 6 GiB file that holds 1 MiB
// of data, with each hash kind side by side: hash=sha256 is the SHA-256 of
// the whole content that every backup took before the sparse digest (its
// holes hashed as zeros, on both sides), hash=sparse-sha256 the digest of
// the data regions and their map that files with holes get now.
//
//	go test -run '^$' -bench BenchmarkSparseFile -benchtime 3x ./agent
func BenchmarkSparseFile(b *testing.B) {
	const size = 6 << 30
	src := filepath.Join(b.TempDir(), "disk.img")
	makeSparse(b, src, size, randomBytes(44, 256<<10), 0, 1<<30, 3<<30+4096, size-256<<10)
	for _, kind := range []fileindex.HashKind{fileindex.HashSHA256, fileindex.HashSparseSHA256} {
		b.Run("hash="+kind.String(), func(b *testing.B) {
			defer func(k fileindex.HashKind) { sparseHashing = k }(sparseHashing)
			sparseHashing = kind
			var stream []byte
			b.Run("backup", func(b *testing.B) {
				for b.Loop() {
					stream = stream[:0]
					s, err := NewSource(SourceOptions{Walk: WalkOptions{Paths: []string{src}}, Emit: func(batch []byte) error {
						stream = append(stream, batch...)
						return nil
					}})
					mustDo(b, err)
					mustDo(b, s.Run(context.Background()))
				}
			})
			b.Run("restore", func(b *testing.B) {
				base := b.TempDir()
				i := 0
				for b.Loop() {
					i++
					r, err := NewRestorer(RestoreOptions{Root: filepath.Join(base, fmt.Sprint(i))})
					mustDo(b, err)
					mustDo(b, r.Records(stream))
					st, err := r.Finish()
					mustDo(b, err)
					if st.Files != 1 || st.WarningCount != 0 || st.DamagedCount != 0 {
						b.Fatalf("restore stats %+v", st)
					}
				}
			})
		})
	}
}
