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

	"github.com/google/uuid"

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
					Level: catalog.LevelFull, Pool: "disk1", Paths: []fileindex.Path{fileindex.Path(fmt.Sprintf("/data%d", i))}}})
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
							BackupID: backup, No: k, First: fileindex.Path(seg.First), Last: fileindex.Path(seg.Last), Count: seg.Count, Data: seg.Data}})
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

// benchGroup starts a group of n voters on loopback with production Raft
// timeouts and returns its leader.
func benchGroup(b *testing.B, n int) *server {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	var servers []*server
	for i := 0; i < n; i++ {
		dir := b.TempDir()
		cfg := testConfig(fmt.Sprintf("s%d", i+1), dir, i == 0)
		d := DefaultConfig()
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout, cfg.CommitTimeout = d.HeartbeatTimeout, d.ElectionTimeout, d.LeaderLeaseTimeout, d.CommitTimeout
		s := &server{t: b, dir: dir, cfg: cfg, logger: logger}
		s.start()
		b.Cleanup(s.stop)
		servers = append(servers, s)
	}
	leader := servers[0]
	leader.waitLeader()
	for _, s := range servers[1:] {
		if err := leader.node.AddVoter(ctxT(b), s.cfg.ID, s.node.Addr()); err != nil {
			b.Fatal(err)
		}
	}
	return leader
}

// BenchmarkCatalogWrites compares catalog write throughput through Raft on
// one and three voters (every entry fsynced by a majority): file index
// entries per second, in default-size segments, and job and volume commands
// per second.
func BenchmarkCatalogWrites(b *testing.B) {
	segs := benchSegments(b, 20)
	for _, voters := range []int{1, 3} {
		b.Run(fmt.Sprintf("voters=%d/index", voters), func(b *testing.B) {
			s := benchGroup(b, voters)
			s.apply(&catalog.Command{Op: catalog.OpRegisterClient, Client: &catalog.Client{Name: "web1"}})
			s.apply(&catalog.Command{Op: catalog.OpRegisterNode, Node: &catalog.StorageNode{ID: "sn1", Pools: []catalog.NodePool{{Name: "disk1", Dir: "/d"}}}})
			entries := 0
			var backup uint64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				k := i % len(segs)
				if k == 0 {
					b.StopTimer()
					res := s.apply(&catalog.Command{Op: catalog.OpCreateJob, Job: &catalog.Job{Type: catalog.JobBackup, Client: "web1",
						Level: catalog.LevelFull, Pool: "disk1", Paths: []fileindex.Path{fileindex.Path(fmt.Sprintf("/data%d", i))}}})
					backup = res.JobID
					b.StartTimer()
				}
				seg := segs[k]
				s.apply(&catalog.Command{Op: catalog.OpAddIndexSegment, Segment: &catalog.IndexSegment{
					BackupID: backup, No: k, First: fileindex.Path(seg.First), Last: fileindex.Path(seg.Last), Count: seg.Count, Data: seg.Data}})
				entries += seg.Count
			}
			b.ReportMetric(float64(entries)/b.Elapsed().Seconds(), "entries/s")
		})
		b.Run(fmt.Sprintf("voters=%d/commands", voters), func(b *testing.B) {
			s := benchGroup(b, voters)
			s.apply(&catalog.Command{Op: catalog.OpRegisterClient, Client: &catalog.Client{Name: "web1"}})
			s.apply(&catalog.Command{Op: catalog.OpRegisterNode, Node: &catalog.StorageNode{ID: "sn1", Pools: []catalog.NodePool{{Name: "disk1", Dir: "/d"}}}})
			b.ResetTimer()
			// A job's life in commands: created, dispatched, a volume made
			// and labeled, a log line; each is one Raft round.
			for i := 0; i < b.N; i++ {
				switch i % 5 {
				case 0:
					s.apply(&catalog.Command{Op: catalog.OpCreateJob, Job: &catalog.Job{Type: catalog.JobBackup, Client: "web1",
						Level: catalog.LevelFull, Pool: "disk1", Paths: []fileindex.Path{fileindex.Path(fmt.Sprintf("/data%d", i))}}})
				case 1:
					s.apply(&catalog.Command{Op: catalog.OpDispatchJob, Dispatch: &catalog.JobDispatch{JobID: uint64(i/5 + 1), Node: "sn1"}})
				case 2:
					s.apply(&catalog.Command{Op: catalog.OpCreateVolume, Volume: &catalog.Volume{ID: uuidFor(i), Pool: "disk1", Node: "sn1", WriterJob: uint64(i/5 + 1)}})
				case 3:
					st := catalog.VolumeAppend
					s.apply(&catalog.Command{Op: catalog.OpUpdateVolume, VolumeUpdate: &catalog.VolumeUpdate{ID: uuidFor(i - 1), State: st}})
				case 4:
					s.apply(&catalog.Command{Op: catalog.OpAppendJobLog, JobLog: &catalog.JobLog{JobID: uint64(i/5 + 1), Lines: []catalog.LogLine{{Level: "info", Msg: "writing"}}}})
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commands/s")
		})
	}
}

func uuidFor(i int) uuid.UUID {
	var u uuid.UUID
	binary.BigEndian.PutUint64(u[8:], uint64(i))
	u[6] = 0x40
	return u
}
