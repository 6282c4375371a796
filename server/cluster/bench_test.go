package cluster

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
)

// benchSegments builds default-size index segments of a realistic tree: one
// directory of 1000 files after another, each file with owner, times, inode,
// SHA-256 and location.
func benchSegments(b *testing.B, dirs int) []fileindex.Segment {
	sb := fileindex.NewSegmentBuilder(fileindex.DefaultSegmentBytes)
	var segs []fileindex.Segment
	add := func(e *fileindex.Entry) {
		if err := sb.Add(e); err != nil {
			b.Fatal(err)
		}
		if sb.Full() {
			segs = append(segs, sb.Flush())
		}
	}
	add(&fileindex.Entry{Path: "/data", Type: fileindex.TypeDir, Mode: 0o755})
	for d := 0; d < dirs; d++ {
		dp := fmt.Sprintf("/data/d%04d", d)
		add(&fileindex.Entry{Path: dp, Type: fileindex.TypeDir, Mode: 0o755})
		for f := 0; f < 1000; f++ {
			n := d*1000 + f
			h := sha256.Sum256(binary.AppendUvarint(nil, uint64(n)))
			add(&fileindex.Entry{
				Path: fmt.Sprintf("%s/file-%05d.dat", dp, f), Type: fileindex.TypeFile, Mode: 0o644,
				UID: 1000, GID: 1000, User: "app", Group: "app", Size: int64(n%65536) * 37,
				MTime: 1_760_000_000_000_000_000 + int64(n)*1_000_003, CTime: 1_760_000_000_000_000_000 + int64(n)*1_000_003,
				ATime: 1_760_000_000_000_000_000, Dev: 2049, Inode: uint64(100000 + n), NLink: 1, Hash: h[:],
				Loc: fileindex.Location{Seq: uint64(n / 8), Off: uint64(n) * 40000, InBlock: uint32(n%8) * 4096, EndSeq: uint64(n / 8)},
			})
		}
	}
	if s := sb.Flush(); s.Count > 0 {
		segs = append(segs, s)
	}
	return segs
}

// BenchmarkIndexSegmentApply measures file index throughput through a
// one-voter Raft group on loopback: each op is one default-size segment
// (about 6,500 entries) proposed, logged, committed and applied, fsyncs
// included. "senders" backups send their segments at the same time.
func BenchmarkIndexSegmentApply(b *testing.B) {
	segs := benchSegments(b, 40)
	for _, senders := range []int{1, 4} {
		b.Run(fmt.Sprintf("senders=%d", senders), func(b *testing.B) {
			dir := b.TempDir()
			s := &server{t: b, dir: dir, cfg: testConfig("s1", dir, true), logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
			s.start()
			defer s.stop()
			s.waitLeader()
			s.apply(&catalog.Command{Op: catalog.OpRegisterClient, Client: &catalog.Client{Name: "web1"}})
			s.apply(&catalog.Command{Op: catalog.OpRegisterNode, Node: &catalog.StorageNode{ID: "sn1", Pools: []catalog.NodePool{{Name: "disk1", Dir: "/d"}}}})
			newBackup := func(i int) uint64 {
				res := s.apply(&catalog.Command{Op: catalog.OpCreateJob, Job: &catalog.Job{Type: catalog.JobBackup, Client: "web1",
					Level: catalog.LevelFull, Pool: "disk1", Paths: []string{fmt.Sprintf("/data%d", i)}}})
				return res.JobID
			}
			raftBefore := fileSize(filepath.Join(dir, "raft", "raft.db"))
			var mu sync.Mutex
			entries := 0
			per := (b.N + senders - 1) / senders
			b.ResetTimer()
			var wg sync.WaitGroup
			for w := 0; w < senders; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var backup uint64
					for i := 0; i < per; i++ {
						k := i % len(segs)
						if k == 0 {
							backup = newBackup(w*1000 + i)
						}
						seg := segs[k]
						s.apply(&catalog.Command{Op: catalog.OpAddIndexSegment, Segment: &catalog.IndexSegment{
							BackupID: backup, No: k, First: seg.First, Last: seg.Last, Count: seg.Count, Data: seg.Data}})
						mu.Lock()
						entries += seg.Count
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			counts, err := s.store.Counts()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(entries)/b.Elapsed().Seconds(), "entries/s")
			b.ReportMetric(float64(counts.IndexBytes)/float64(entries), "catalog-B/entry")
			b.ReportMetric(float64(fileSize(filepath.Join(dir, "raft", "raft.db"))-raftBefore)/float64(entries), "raftlog-B/entry")
		})
	}
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
