package storagenode

import (
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/ticket"
)

// BenchmarkRestoreFromDiskPool restores one large file from a disk pool
// through the data port, as an agent reads it (TLS, every frame taken,
// nothing written): the node's path from the volume read to the socket,
// for a file that does not compress (its blocks are stored as they are)
// and one that does. bench/restore-copies.sh runs it from this tree and
// from an older revision built out of git, side by side, for the copies
// that path used to take; storagenode/DESIGN.md has the figures.
// text,codec=s2 is the text written by a pool whose compression is S2.
// CAIRN_BENCH_RESTORE_MIB sets the file's size (default 64).
func BenchmarkRestoreFromDiskPool(b *testing.B) {
	size := int(benchEnvInt("CAIRN_BENCH_RESTORE_MIB", 64)) << 20
	for _, kind := range []struct {
		name  string
		make  func(*rand.Rand, int) []byte
		codec string
	}{{"random", sample.RandomBytes, ""}, {"text", sample.LogText, ""}, {"text,codec=s2", sample.LogText, volume.CompressionS2}} {
		b.Run(kind.name, func(b *testing.B) {
			mc := mediaCases[0]
			mc.servers.codec = kind.codec
			r := newMediaRig(b, mc)
			f := testFile{path: "/data/big", content: kind.make(rand.New(rand.NewPCG(1, 2)), size)}
			if err := r.backupLarge(1, f); err != nil {
				b.Fatal(err)
			}
			rr := r.fake.readRequest(b, 1)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for i := range b.N {
				job := uint64(100 + i)
				r.fake.plans.set(job, rr)
				conn, err := r.open(r.ticket(job, ticket.OpRestore, rr.SessionID.String()))
				if err != nil {
					b.Fatal(err)
				}
				got, err := drain(conn)
				conn.Close()
				if err != nil {
					b.Fatal(err)
				}
				if got < int64(size) {
					b.Fatalf("%d record bytes restored, want at least %d", got, size)
				}
			}
			b.StopTimer()
			// CPU time moves less than wall time on a machine others
			// share; the client's half (TLS, frames) is the same in both
			// builds.
			b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N)/float64(size>>20), "cpu-ns/MiB")
		})
	}
}

// cpuTime is the CPU time the process used so far, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// backupLarge streams f as job's backup, in frames of about a MiB.
func (r *nodeRig) backupLarge(job uint64, f testFile) error {
	conn, err := r.open(r.ticket(job, ticket.OpBackup))
	if err != nil {
		return err
	}
	defer conn.Close()
	b := volume.AppendRecord(nil, volume.RecFileHeader, fileindex.AppendEntry(nil, &fileindex.Entry{Path: f.path, Type: fileindex.TypeFile, Size: int64(len(f.content))}))
	for off := 0; off < len(f.content); off += 256 << 10 {
		b = volume.AppendDataRecord(b, int64(off), f.content[off:min(off+256<<10, len(f.content))])
		if len(b) >= 1<<20 {
			if err := conn.WriteFrame(dataplane.FrameRecords, b); err != nil {
				return err
			}
			b = b[:0]
		}
	}
	if err := conn.WriteFrame(dataplane.FrameRecords, volume.AppendFileEnd(b, volume.EndOK, nil)); err != nil {
		return err
	}
	_, err = endBackup(conn, 1)
	return err
}

// drain takes in a restore stream to its End and counts its record bytes.
func drain(conn *dataplane.Conn) (int64, error) {
	var n int64
	var buf []byte
	for {
		typ, p, err := conn.ReadFrame()
		if err != nil {
			return n, err
		}
		switch typ {
		case dataplane.FrameRecords:
			n += int64(len(p))
		case dataplane.FrameStoredBlock:
			// Decompressed, as the agent does: its share of the CPU.
			codec, raw, data, err := dataplane.ParseStoredBlock(p)
			if err != nil {
				return n, err
			}
			if buf, err = volume.Decompress(buf[:0], volume.Flags(codec), raw, data); err != nil {
				return n, err
			}
			n += int64(len(buf))
		case dataplane.FrameReadStart, dataplane.FrameReadStartPacked, dataplane.FrameReadDone:
		case dataplane.FrameEnd:
			return n, nil
		default:
			return n, fmt.Errorf("frame %d: %w", typ, dataplane.DecodeJSON(typ, p, dataplane.FrameEnd, nil))
		}
	}
}
