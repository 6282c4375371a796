package catalog

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/fileindex"
)

// The catalog at scale (BenchmarkCatalogScale): clients whose backups have
// the same shape, /home/uUU/pPP/sSS/fFF.dat, a full and nine incrementals
// each, the whole index applied through Store.Apply as a storage node's
// commands are (fsync on, Raft's own log write not included).
//
// CAIRN_CATALOG_SCALE=full (bench/catalog10m.sh) is the catalog:
// 50 users x 20 projects x 50 source directories x 20 files, so a full of
// 1,000,000 files in 51,051 directories and nine incrementals that each
// change 4% of the files, delete 0.5% and add a file to a tenth of the
// directories, with the directories they change: 1.78 million versions a
// client, seven clients, 12.45 million file versions. Without it, one client of 10 x 5 x 20 x 20 (about 30,000
// versions), which any test run can afford.
type scaleShape struct {
	users, projects, srcs, files int
	incrementals                 int
	clients                      int
}

func benchScaleShape() scaleShape {
	switch os.Getenv("CAIRN_CATALOG_SCALE") {
	case "full":
		return scaleShape{users: 50, projects: 20, srcs: 50, files: 20, incrementals: 9, clients: 7}
	case "client": // one client of the full size, to profile with
		return scaleShape{users: 50, projects: 20, srcs: 50, files: 20, incrementals: 9, clients: 1}
	}
	return scaleShape{users: 10, projects: 5, srcs: 20, files: 20, incrementals: 9, clients: 1}
}

func (sh scaleShape) leafDir(u, p, s int) string {
	return fmt.Sprintf("/home/u%02d/p%02d/s%02d", u, p, s)
}

// scaleEntry is a realistic version of a path: owner names, three times, a
// SHA-256, a location in the session stream.
func scaleEntry(p string, typ fileindex.Type, n, gen int) fileindex.Entry {
	e := fileindex.Entry{
		Path: p, Type: typ, Mode: 0o644, UID: 1000 + uint32(n%7), GID: 1000, User: "user", Group: "staff",
		MTime: 1_760_000_000_000_000_000 + int64(n)*1_000_003 + int64(gen)*86_400_000_000_000,
		ATime: 1_760_000_000_000_000_000 + int64(gen)*86_400_000_000_000,
		Dev:   2049, Inode: uint64(100000 + n), NLink: 1,
		Loc: fileindex.Location{Seq: uint64(n / 8), Off: uint64(n) * 40000, InBlock: uint32(n%8) * 4096, EndSeq: uint64(n / 8)},
	}
	e.CTime = e.MTime
	switch typ {
	case fileindex.TypeDir:
		e.Mode = 0o755
	case fileindex.TypeFile:
		e.Size = int64(n%65536)*37 + int64(gen)
		h := sha256.Sum256(binary.AppendUvarint(binary.AppendUvarint(nil, uint64(n)), uint64(gen)))
		e.Hash = h[:]
	case fileindex.TypeDeleted:
		return fileindex.Entry{Path: p, Type: fileindex.TypeDeleted}
	}
	return e
}

// scaleIndexes makes the indexes of one client's chain, in index order:
// gen 0 is the full, gen k the k-th incremental.
func scaleIndexes(sh scaleShape) [][]fileindex.Entry {
	nfiles := sh.users * sh.projects * sh.srcs * sh.files
	deleted := make([]bool, nfiles)
	added := make([]int, sh.users*sh.projects*sh.srcs) // new files per leaf, n00.dat on
	out := make([][]fileindex.Entry, sh.incrementals+1)
	for gen := 0; gen <= sh.incrementals; gen++ {
		rng := rand.New(rand.NewPCG(uint64(gen), 42))
		var idx []fileindex.Entry
		full := gen == 0
		if full {
			idx = append(idx, scaleEntry("/home", fileindex.TypeDir, 0, 0))
		}
		n, leaf := 0, 0
		for u := 0; u < sh.users; u++ {
			if full {
				idx = append(idx, scaleEntry(fmt.Sprintf("/home/u%02d", u), fileindex.TypeDir, u, 0))
			}
			for p := 0; p < sh.projects; p++ {
				if full {
					idx = append(idx, scaleEntry(fmt.Sprintf("/home/u%02d/p%02d", u, p), fileindex.TypeDir, p, 0))
				}
				for s := 0; s < sh.srcs; s++ {
					dir := sh.leafDir(u, p, s)
					var inDir []fileindex.Entry
					for f := 0; f < sh.files; f++ {
						fp := fmt.Sprintf("%s/f%02d.dat", dir, f)
						switch r := rng.IntN(1000); {
						case full:
							inDir = append(inDir, scaleEntry(fp, fileindex.TypeFile, n, 0))
						case deleted[n]:
						case r < 40:
							inDir = append(inDir, scaleEntry(fp, fileindex.TypeFile, n, gen))
						case r < 45:
							deleted[n] = true
							inDir = append(inDir, scaleEntry(fp, fileindex.TypeDeleted, n, gen))
						}
						n++
					}
					if !full && rng.IntN(10) == 0 {
						inDir = append(inDir, scaleEntry(fmt.Sprintf("%s/n%02d.dat", dir, added[leaf]), fileindex.TypeFile, nfiles+leaf*100+added[leaf], gen))
						added[leaf]++
					}
					if full || len(inDir) > 0 {
						idx = append(idx, scaleEntry(dir, fileindex.TypeDir, leaf, gen))
						idx = append(idx, inDir...)
					}
					leaf++
				}
			}
		}
		out[gen] = idx
	}
	return out
}

// scaleCatalog is the catalog of one BenchmarkCatalogScale run.
type scaleCatalog struct {
	c        *testCatalog
	path     string
	shape    scaleShape
	chains   [][]uint64 // by client: the backups of its chain, full first
	versions int64
	build    time.Duration // applying the segments and commits
	segments int
	extra    []fileindex.Segment // an incremental's segments, for the insert benchmark
}

func buildScaleCatalog(b *testing.B) *scaleCatalog {
	{
		sh := benchScaleShape()
		dir := b.TempDir()
		s, err := Open(filepath.Join(dir, "catalog.db"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		c := &testCatalog{t: b, s: s, clock: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)}
		sc := &scaleCatalog{c: c, path: filepath.Join(dir, "catalog.db"), shape: sh}
		c.setup()
		indexes := scaleIndexes(sh)
		segs := make([][]fileindex.Segment, len(indexes))
		for i, idx := range indexes {
			segs[i], _ = segmentsOf(b, idx, fileindex.DefaultSegmentBytes)
		}
		sc.extra = segs[1]
		for cl := 0; cl < sh.clients; cl++ {
			name := fmt.Sprintf("host%02d", cl)
			c.must(&Command{Op: OpRegisterClient, Client: &Client{Name: name, Hostname: name, OS: "linux", Arch: "amd64", Version: "0.1"}})
			var chain []uint64
			for gen, gs := range segs {
				level := LevelIncremental
				if gen == 0 {
					level = LevelFull
				}
				id := sc.runBackup(name, level, gs)
				chain = append(chain, id)
				sc.versions += int64(len(indexes[gen]))
			}
			sc.chains = append(sc.chains, chain)
		}
		return sc
	}
}

// runBackup writes one backup of client the way a storage node's session
// does: job, dispatch, volume, the index segments, the commit.
func (sc *scaleCatalog) runBackup(client string, level Level, segs []fileindex.Segment) uint64 {
	c := sc.c
	res := c.must(&Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: client, Level: level, Pool: "disk1", Paths: fileindex.Paths([]string{"/home"})}})
	id := res.JobID
	c.must(&Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: id, Node: "sn1"}})
	vol := c.volumeIn("disk1", id)
	start := time.Now()
	var entries int64
	for no, s := range segs {
		c.must(&Command{Op: OpAddIndexSegment, Segment: &IndexSegment{BackupID: id, No: no, First: fileindex.Path(s.First), Last: fileindex.Path(s.Last), Count: s.Count, Data: s.Data}})
		entries += int64(s.Count)
	}
	c.must(&Command{Op: OpCommitBackup, Commit: &BackupCommit{
		BackupID: id, SessionID: uuid.New(), Segments: len(segs), Entries: entries, Files: entries,
		Parts: []Part{{VolumeID: vol, Part: 1, VolumeStart: 4096, DataStart: 8192, End: 1 << 30, Final: true}},
	}})
	sc.build += time.Since(start)
	sc.segments += len(segs)
	return id
}

// BenchmarkCatalogScale measures the catalog holding the shape above:
// applying index segments to it, listing one directory (benchLs, what
// 'cairn ls' asks the catalog), planning the restore of one file
// (benchPlan, the planner's reads) and what a file version costs on disk.
func BenchmarkCatalogScale(b *testing.B) {
	sc := buildScaleCatalog(b)
	sh := sc.shape
	chain := sc.chains[len(sc.chains)/2]
	latest, older := chain[len(chain)-1], chain[3]
	b.Logf("%d file versions in %d segments, %d clients; built in %s (segments and commits: %.0f versions/s)",
		sc.versions, sc.segments, sh.clients, sc.build.Round(time.Millisecond), float64(sc.versions)/sc.build.Seconds())

	b.Run("insert", func(b *testing.B) {
		name := "host00"
		sc.c.t = b
		var entries int
		b.ResetTimer()
		cpu := cpuTime(b)
		for i := 0; i < b.N; i++ {
			sc.runBackup(name, LevelIncremental, sc.extra)
			for _, s := range sc.extra {
				entries += s.Count
			}
		}
		cpu = cpuTime(b) - cpu
		b.ReportMetric(float64(entries)/b.Elapsed().Seconds(), "versions/s")
		// fsync waits take no CPU; the other builds on a shared machine
		// stretch the CPU-bound part of the wall time.
		b.ReportMetric(float64(cpu)/1e3/float64(entries), "cpu-us/version")
	})
	b.Run("bytes", func(b *testing.B) {
		var size, used int64
		for i := 0; i < b.N; i++ {
			st, err := os.Stat(sc.path)
			if err != nil {
				b.Fatal(err)
			}
			size, used = st.Size(), usedBytes(b, sc.c.s)
		}
		b.ReportMetric(float64(size)/float64(sc.versions), "file-bytes/version")
		b.ReportMetric(float64(used)/float64(sc.versions), "used-bytes/version")
	})
	rng := rand.New(rand.NewPCG(7, 7))
	leaf := func() string {
		return sh.leafDir(rng.IntN(sh.users), rng.IntN(sh.projects), rng.IntN(sh.srcs))
	}
	for _, tc := range []struct {
		name   string
		backup uint64
		dir    func() string
	}{
		{"ls-leaf-latest", latest, leaf},
		{"ls-leaf-older", older, leaf},
		{"ls-project-latest", latest, func() string { return fmt.Sprintf("/home/u%02d/p%02d", rng.IntN(sh.users), rng.IntN(sh.projects)) }},
		{"ls-user-latest", latest, func() string { return fmt.Sprintf("/home/u%02d", rng.IntN(sh.users)) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			timeEach(b, func() {
				n, err := benchLs(sc.c.s, tc.backup, tc.dir())
				if err != nil || n == 0 {
					b.Fatalf("listed %d entries: %v", n, err)
				}
			})
		})
	}
	b.Run("plan-file-latest", func(b *testing.B) {
		timeEach(b, func() {
			f := fmt.Sprintf("%s/f%02d.dat", leaf(), rng.IntN(sh.files))
			if _, err := benchPlan(sc.c.s, latest, []string{f}); err != nil {
				b.Fatal(err)
			}
		})
	})
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// timeEach runs op b.N times and reports the median and the slowest run
// besides the mean: on a shared machine the spread says as much.
func timeEach(b *testing.B, op func()) {
	d := make([]time.Duration, b.N)
	cpu := cpuTime(b)
	for i := range d {
		start := time.Now()
		op()
		d[i] = time.Since(start)
	}
	cpu = cpuTime(b) - cpu
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2])/1e6, "p50-ms")
	b.ReportMetric(float64(d[len(d)-1])/1e6, "max-ms")
	// What the process spent, GC included: the other builds on a shared
	// machine stretch the wall time, not this.
	b.ReportMetric(float64(cpu)/1e6/float64(b.N), "cpu-ms/op")
}
