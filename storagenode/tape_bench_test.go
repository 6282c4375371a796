package storagenode

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/storagenode/library"
	"github.com/cairnbackup/cairn/ticket"
)

// bench/tape.sh runs these; bench/README.md explains the figures.

func benchEnvInt(name string, def int64) int64 {
	if v, err := strconv.ParseInt(os.Getenv(name), 10, 64); err == nil && v > 0 {
		return v
	}
	return def
}

// streamRandom sends a backup of n files of size random bytes (which do
// not compress, so the drive gets what the client sends), at most rate
// bytes a second when rate > 0, and returns the wall time.
func (r *nodeTapeRig) streamRandom(b testing.TB, job uint64, n int, size int, rate int64) time.Duration {
	b.Helper()
	pace := newPacer(rate)
	conn, err := r.open(r.ticket(job, ticket.OpBackup))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	rnd := rand.NewChaCha8([32]byte{byte(job), byte(job >> 8)})
	content := make([]byte, 256<<10)
	var batch []byte
	flush := func() {
		if err := conn.WriteFrame(dataplane.FrameRecords, batch); err != nil {
			b.Fatal(err)
		}
		if err := pace.sent(len(batch)); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
	}
	for i := range n {
		batch = volume.AppendRecord(batch, volume.RecFileHeader, fileindex.AppendEntry(nil, &fileindex.Entry{Path: fmt.Sprintf("/data/f%06d", i), Type: fileindex.TypeFile, Size: int64(size)}))
		for off := 0; off < size; off += len(content) {
			c := content[:min(len(content), size-off)]
			rnd.Read(c)
			batch = volume.AppendDataRecord(batch, int64(off), c)
			if len(batch) >= 1<<20 {
				flush()
			}
		}
		batch = volume.AppendFileEnd(batch, volume.EndOK, nil)
	}
	flush()
	if _, err := endBackup(conn, n); err != nil {
		b.Fatal(err)
	}
	return pace.elapsed()
}

// BenchmarkTapeBackup backs up CAIRN_BENCH_TAPE_MB (default 1024) MiB of
// random data through the storage node to an emulated LTO-9 library on the
// real clock (400 MB/s, a 256 MiB buffer, a 2 s restart when it runs
// dry), spooling off and on (chunks of CAIRN_BENCH_SPOOL_MB, default
// 256), from a client that sends as fast as it can and from one paced to
// 100 MB/s. MB/s is the client's bytes over the wall time of the backup
// (the stream, the trailer, the file mark, the commit); stops/GiB is how
// often the drive ran dry; drive_MB/s is the drive's own rate while it
// wrote.
func BenchmarkTapeBackup(b *testing.B) {
	total := benchEnvInt("CAIRN_BENCH_TAPE_MB", 1024) << 20
	chunk := benchEnvInt("CAIRN_BENCH_SPOOL_MB", 256) << 20
	const fileSize = 8 << 20
	for _, client := range []struct {
		name string
		rate int64
	}{{"client=full", 0}, {"client=100MBps", 100_000_000}} {
		for _, spool := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/spool=%v", client.name, spool), func(b *testing.B) {
				var secs, stops, driveBytes, driveSecs float64
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					// Labeled on the virtual clock (the real one takes a minute
					// of robot and load times), then the drive on the real one.
					o := tapeRigOpts{tapes: 1, libDir: filepath.Join(b.TempDir(), "lib1")}
					r := newNodeTapeRig(b, o)
					r.stopNode()
					o.realClock, o.profile, o.spool, o.chunk = true, "lto9", spool, chunk
					r.startNode(b, o)
					// The mount (a 15 s load) is not the backup's.
					mt, err := r.lib.Mount(b.Context(), library.MountRequest{Job: 99, Barcode: "CRN001L9", Volume: r.fake.vols[0].id, Why: "warm up"})
					if err != nil {
						b.Fatal(err)
					}
					mt.Release(nil)
					b.StartTimer()
					d := r.streamRandom(b, uint64(i+1), int(total/fileSize), fileSize, client.rate)
					b.StopTimer()
					c := r.fake.commit(b, uint64(i+1))
					secs += d.Seconds()
					stops += float64(c.Tape.Stops)
					driveBytes += float64(c.Tape.DriveBytes)
					driveSecs += c.Tape.DriveSeconds
					r.stopNode()
				}
				b.ReportMetric(float64(total)*float64(b.N)/secs/1e6, "MB/s")
				b.ReportMetric(stops/(float64(total)*float64(b.N)/(1<<30)), "stops/GiB")
				if driveSecs > 0 {
					b.ReportMetric(driveBytes/driveSecs/1e6, "drive_MB/s")
				}
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// BenchmarkTapeRestoreOneFile fills one tape with sessions of 4 files of
// 1 MiB (on a virtual clock: filling is not what is measured), and after
// 10, 50 and 200 sessions (CAIRN_BENCH_TAPE_SESSIONS, the largest, scales
// them) restores one 1 MiB file of the middle session with the drive on
// the real clock and the LTO-9 profile, the tape already loaded: the time
// from the read request to the last record, the bytes the drive read and
// its locates.
func BenchmarkTapeRestoreOneFile(b *testing.B) {
	most := benchEnvInt("CAIRN_BENCH_TAPE_SESSIONS", 200)
	perSession := int(benchEnvInt("CAIRN_BENCH_TAPE_SESSION_MB", 40))
	marks := []int64{max(1, most/20), max(2, most/4), most}
	// A cartridge the sessions fill: each session is its files plus less
	// than a MiB of part header, index, trailer and file mark; what is
	// left is the early warning zone.
	const zone = 64 << 20
	cartridge := most*int64(perSession+1)<<20 + zone
	for i := 0; i < b.N; i++ {
		libDir := filepath.Join(b.TempDir(), "lib1")
		o := tapeRigOpts{tapes: 1, libDir: libDir, cartridge: cartridge, zone: zone}
		r := newNodeTapeRig(b, o)
		job := uint64(0)
		for _, mark := range marks {
			for ; job < uint64(mark); job++ {
				r.streamRandom(b, job+1, perSession, 1<<20, 0)
			}
			r.stopNode()
			real := o
			real.realClock, real.profile = true, "lto9"
			r.startNode(b, real)
			mt, err := r.lib.Mount(b.Context(), library.MountRequest{Job: 99, Barcode: "CRN001L9", Volume: r.fake.vols[0].id, Why: "warm up"})
			if err != nil {
				b.Fatal(err)
			}
			mt.Release(nil)
			want := uint64(mark/2 + 1)
			d := r.lib.EmulatedDrive(0)
			before := d.Stats()
			start := time.Now()
			got := r.restore(1000+want, r.fake.readRequest(b, want, "/data/f000002")).whole
			took := time.Since(start)
			after := d.Stats()
			if len(got["/data/f000002"]) != 1<<20 {
				b.Fatalf("restored %d bytes", len(got["/data/f000002"]))
			}
			r.fake.mu.Lock()
			onTape := r.fake.vols[0].end
			r.fake.mu.Unlock()
			read := after.BytesRead - before.BytesRead
			b.Logf("sessions=%d tape=%dMiB full=%.1f%% restore_s=%.2f read_MiB=%.2f read_pct=%.4f locates=%d",
				mark, onTape>>20, 100*float64(onTape)/float64(cartridge), took.Seconds(), float64(read)/(1<<20), 100*float64(read)/float64(onTape), after.Locates-before.Locates)
			b.ReportMetric(took.Seconds(), fmt.Sprintf("s@%d", mark))
			b.ReportMetric(float64(read)/(1<<20), fmt.Sprintf("readMiB@%d", mark))
			r.stopNode()
			r.startNode(b, o)
		}
	}
	b.ReportMetric(0, "ns/op")
}
