package agent

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/media/disk"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/sample"
)

// mixedTree is bench/e2e.sh's tree in small: 40% log-like text in files of
// 1-8 MiB, 40% random bytes in files of 1-8 MiB, 20% in files of 1-16 KiB
// (half text, half random), CAIRN_BENCH_BACKUP_MB in all (default 256).
func mixedTree(b *testing.B) benchTree {
	total := int64(256 << 20)
	if v := os.Getenv("CAIRN_BENCH_BACKUP_MB"); v != "" {
		mb, err := strconv.Atoi(v)
		mustDo(b, err)
		total = int64(mb) << 20
	}
	dir := b.TempDir()
	r := rand.New(rand.NewPCG(14, 2))
	var sum int64
	write := func(p string, data []byte) {
		mustDo(b, os.MkdirAll(filepath.Dir(p), 0o755))
		mustDo(b, os.WriteFile(p, data, 0o644))
		sum += int64(len(data))
	}
	for i := 0; sum < total/5; i++ {
		n := 1<<10 + r.IntN(15<<10)
		p := filepath.Join(dir, "small", fmt.Sprintf("d%02d", i%20), fmt.Sprintf("f%05d", i))
		if i%2 == 0 {
			write(p, sample.LogText(r, n))
		} else {
			write(p, sample.RandomBytes(r, n))
		}
	}
	for i := 0; sum < total; i++ {
		n := int(min(int64(1<<20+r.IntN(7<<20)), total-sum))
		if i%2 == 0 {
			write(filepath.Join(dir, "logs", fmt.Sprintf("app-%03d.log", i)), sample.LogText(r, n))
		} else {
			write(filepath.Join(dir, "data", fmt.Sprintf("blob-%03d.bin", i)), sample.RandomBytes(r, n))
		}
	}
	return benchTree{dir, sum}
}

var benchVolume = uuid.New()

// cpuTime is the user and system time of the whole process so far.
func cpuTime(b *testing.B) time.Duration {
	var ru unix.Rusage
	mustDo(b, unix.Getrusage(unix.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkBackup is a full backup end to end in one process: the agent's
// Source reads the tree (page cache warm), the batches go as data frames
// over TLS on loopback, and the storage node's side of a session as
// storagenode/backup.go runs it (frames read on the goroutine that writes
// them into a volume.SessionWriter, whose workers compress with zstd and
// encrypt) writes a disk volume, on a tmpfs. path=serial is the agent as
// it was, Emit on the reading goroutine; path=pipelined sends from a
// goroutine of its own (sender); path=pipelined,codec=s2 is that with the
// pool's compression set to S2. cores is CPU time over wall time
// (getrusage) of the whole process, out of the machine's GOMAXPROCS;
// stored/raw is the volume's bytes over the tree's.
func BenchmarkBackup(b *testing.B) {
	tree := mixedTree(b)
	// The volume goes to a tmpfs: on the shared test disk an fsync'd
	// volume is written at 70-80 MB/s, which would measure the disk.
	pools := b.TempDir()
	if err := unix.Mount("cairn-bench", pools, "tmpfs", 0, "size=2g"); err != nil {
		b.Skipf("mount a tmpfs (needs CAP_SYS_ADMIN): %v", err)
	}
	defer unix.Unmount(pools, unix.MNT_DETACH)
	for _, path := range []struct {
		name   string
		inline bool
		codec  string
	}{{"serial", true, volume.CompressionZstd}, {"pipelined", false, volume.CompressionZstd}, {"pipelined,codec=s2", false, volume.CompressionS2}} {
		b.Run("path="+path.name, func(b *testing.B) {
			defer func(v bool) { emitInline = v }(emitInline)
			emitInline = path.inline
			b.SetBytes(tree.bytes)
			var cpu, wall time.Duration
			var stored int64
			for b.Loop() {
				b.StopTimer()
				dir, err := os.MkdirTemp(pools, "pool")
				mustDo(b, err)
				pool := &disk.Pool{Name: "bench", Dir: dir}
				mustDo(b, pool.Create("v1", volume.Label{VolumeID: benchVolume, BlockSize: volume.DefaultBlockSize}))
				b.StartTimer()
				t0, c0 := time.Now(), cpuTime(b)
				benchBackupOnce(b, tree, pool, path.codec)
				wall += time.Since(t0)
				cpu += cpuTime(b) - c0
				b.StopTimer()
				st, err := os.Stat(filepath.Join(dir, "v1"+disk.Ext))
				mustDo(b, err)
				stored = st.Size()
				mustDo(b, os.RemoveAll(dir))
				b.StartTimer()
			}
			b.ReportMetric(cpu.Seconds()/wall.Seconds(), "cores")
			b.ReportMetric(float64(stored)/float64(tree.bytes), "stored/raw")
			// What the backup costs whatever else runs on the machine:
			// the process's CPU seconds per GiB backed up.
			b.ReportMetric(cpu.Seconds()/(float64(tree.bytes)*float64(b.N)/(1<<30)), "CPU-s/GiB")
		})
	}
}

func benchBackupOnce(b *testing.B, tree benchTree, pool *disk.Pool, codec string) {
	l, fp := listenNode(b)
	node := make(chan error, 1)
	go func() { node <- benchNodeSession(l, pool, codec) }()
	conn, err := dataplane.Dial(context.Background(), l.Addr().String(), fp)
	mustDo(b, err)
	defer conn.Close()
	s, err := NewSource(SourceOptions{Walk: WalkOptions{Paths: []string{tree.dir}}, Emit: func(batch []byte) error {
		return conn.WriteFrame(dataplane.FrameRecords, batch)
	}})
	mustDo(b, err)
	mustDo(b, s.Run(context.Background()))
	mustDo(b, conn.WriteJSON(dataplane.FrameEnd, dataplane.End{}))
	mustDo(b, <-node)
	if st := s.Stats(); st.Bytes != tree.bytes {
		b.Fatalf("read %d bytes of %d", st.Bytes, tree.bytes)
	}
}

// benchNodeSession is the storage node's loop of a backup session
// (storagenode/backup.go) without the catalog: frames into a
// SessionWriter on a disk volume, closed (synced) at the end.
func benchNodeSession(l net.Listener, pool *disk.Pool, codec string) error {
	c, err := l.Accept()
	if err != nil {
		return err
	}
	conn := dataplane.NewConn(c)
	defer conn.Close()
	app, err := pool.OpenAppend("v1", benchVolume, volume.DefaultBlockSize)
	if err != nil {
		return err
	}
	defer app.Close()
	key := &volume.Key{ID: "bench", Material: make([]byte, 32)}
	w, err := volume.NewSessionWriter(volume.SessionInfo{SessionID: uuid.New(), Client: "bench", Level: "full", Pool: "bench", Created: time.Now(), Compression: codec},
		key, app, volume.WriterOptions{Workers: 2, TempDir: os.TempDir()})
	if err != nil {
		return err
	}
	defer w.Abort()
	for {
		typ, payload, err := conn.ReadFrame()
		if err != nil {
			return err
		}
		switch typ {
		case dataplane.FrameRecords:
			if err := w.Write(payload); err != nil {
				return err
			}
		case dataplane.FrameEnd:
			_, err := w.Close()
			return err
		default:
			return fmt.Errorf("unexpected frame %d", typ)
		}
	}
}
