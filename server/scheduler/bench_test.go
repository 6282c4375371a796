package scheduler

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/schedule"
)

// The scheduler's benchmarks run on one catalog built once, through the
// applier, of what a datacenter's leader holds after five years:
//
//   - benchClients clients, each under one of benchPolicies policies of
//     100 clients ("Sun 1st 02:00 full / Mon-Sat 21:00 incremental"), each
//     with its last run recorded;
//   - for benchHistory of them, five years of daily backups (1826, a full
//     on the first Sunday of each month, incrementals between) and their
//     runs, and one client whose only full is five years old, which is
//     the longest chain ChainOf can meet.
//
// Five years of daily backups for all 10,000 clients (18 million backups)
// would take hours to build here; what a decision reads grows with the
// client's chain (since its last full) and with the depth of the B-trees,
// not with other clients' backups, so a few clients with the whole history
// measure the decision, and 10,000 clients with their runs measure a tick.
//
// Measured on this project's 2-core machine, shared with other work (so the
// same code varied up to 2x between runs), catalog on tmpfs, no Raft; two
// runs of ChainOf decoding whole backups (before) and two decoding only the
// four fields it reads (after), alternating, -benchtime 300x:
//
//	                                 before         after
//	Decision/monthly_full        609, 272 µs    434, 252 µs   (chain of about 30 backups)
//	Decision/five_year_chain   124, 28.4 ms   25.8, 18.7 ms   (1826 backups since the full)
//	Decision/no_history          14, 8.7 µs      16, 13 µs
//	Tick (10,000 clients)       226, 130 ms    125, 148 ms    (13-23 µs a client)
//	RecordRun                   152, 51 µs      60, 67 µs
//	catalog                        32 MiB, built in 1.5-2.5 minutes
//
// A tick with nothing due costs a seek and a decode per client; a decision
// for a due run adds the chain, whose cost grows with the backups since the
// last full (the policy's MaxFullAge bounds it), not with history.
const (
	benchClients  = 10000
	benchPolicies = benchClients / 100
	benchHistory  = 1
	benchYears    = 5
)

var benchStart = time.Date(2021, 1, 1, 12, 0, 0, 0, time.UTC)

var benchWorld struct {
	once sync.Once
	w    *world
	dir  string
	err  error
	took time.Duration
}

// benchDir is a tmpfs when there is one: the catalog applies each
// command in a transaction of its own with an fsync, and building
// 50,000 commands on a disk would take minutes of fsyncs, not of the work
// measured.
func benchDir(b *testing.B) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "cairn-sched-bench-")
		if err == nil {
			return d
		}
	}
	d, err := os.MkdirTemp("", "cairn-sched-bench-")
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// TestMain removes the benchmarks' catalog, built once for all of them,
// when they are done: on tmpfs it would hold memory until a reboot.
func TestMain(m *testing.M) {
	code := m.Run()
	if w := benchWorld.w; w != nil {
		w.store.Close()
	}
	if benchWorld.dir != "" {
		os.RemoveAll(benchWorld.dir)
	}
	os.Exit(code)
}

func benchPolicy(i int) catalog.Policy {
	p := catalog.Policy{Name: fmt.Sprintf("p%03d", i), Paths: []string{"/srv"}, Pool: "Default", TimeZone: "UTC",
		Schedule: "Sun 1st 02:00 full\nMon-Sat 21:00 incremental", MaxFullAge: 40 * 24 * time.Hour,
		Retention: catalog.PolicyRetention{All: catalog.KeepRules{Daily: 30, Monthly: 60}}}
	for c := range 100 {
		p.Clients = append(p.Clients, benchClient(i*100+c))
	}
	return p
}

func benchClient(i int) string { return fmt.Sprintf("c%05d", i) }

// buildBenchWorld makes the catalog above; it runs once per process.
func buildBenchWorld(b *testing.B) *world {
	benchWorld.once.Do(func() {
		started := time.Now()
		benchWorld.dir = benchDir(b)
		clients := make([]string, benchClients)
		for i := range clients {
			clients[i] = benchClient(i)
		}
		w := newWorldIn(b, benchWorld.dir, benchStart, clients...)
		ctx := context.Background()
		apply := func(c *catalog.Command) catalog.ApplyResult {
			res, err := w.orch.Apply(ctx, c)
			if err != nil {
				b.Fatalf("%s: %v", c.Op, err)
			}
			return res
		}
		for i := range benchPolicies {
			apply(&catalog.Command{Op: catalog.OpPutPolicy, PolicyPut: &catalog.PolicyPut{Policy: benchPolicy(i), Mode: catalog.PutCreate}})
		}
		// Five years of a schedule's runs, each a backup that completed.
		p0 := benchPolicy(0)
		sch, err := p0.ParsedSchedule()
		if err != nil {
			b.Fatal(err)
		}
		end := benchStart.AddDate(benchYears, 0, 0)
		runs := sch.Between(benchStart, end)
		for h := range benchHistory + 1 {
			client := benchClient(h)
			vol := uuid.New()
			bs := int64(catalog.DefaultBlockSize)
			apply(&catalog.Command{Op: catalog.OpCreateVolume, Volume: &catalog.Volume{ID: vol, Pool: "Default"}})
			apply(&catalog.Command{Op: catalog.OpUpdateVolume, VolumeUpdate: &catalog.VolumeUpdate{ID: vol, State: catalog.VolumeAppend, Bytes: &bs}})
			var recs []catalog.Run
			for i, r := range runs {
				level := catalog.Level(r.Level)
				if h == benchHistory && i > 0 {
					level = catalog.LevelIncremental // the long chain: one full, five years ago
				}
				res := apply(&catalog.Command{Op: catalog.OpCreateJob, Time: r.Time, Job: &catalog.Job{Type: catalog.JobBackup, Client: client,
					Level: level, State: catalog.JobRunning, Node: "sn1", Pool: "Default", Paths: []fileindex.Path{"/srv"}, Policy: "p000", Scheduled: r.Time}})
				apply(&catalog.Command{Op: catalog.OpCommitBackup, Time: r.Time.Add(time.Hour), Commit: &catalog.BackupCommit{BackupID: res.JobID, SessionID: uuid.New(),
					Parts: []catalog.Part{{VolumeID: vol, Part: 1, VolumeStart: bs, DataStart: bs + 4096, End: bs + 1<<20, Final: true}}}})
				bs += 1 << 20
				recs = append(recs, catalog.Run{Policy: "p000", Client: client, Scheduled: r.Time, Asked: level, Level: level, State: catalog.RunSkipped, Reason: "bench"})
			}
			apply(&catalog.Command{Op: catalog.OpRecordRuns, Runs: &catalog.RunsRecord{Runs: recs}})
		}
		// Every other client's last run, one record per policy.
		last := runs[len(runs)-1]
		for i := range benchPolicies {
			var recs []catalog.Run
			for c := range 100 {
				if n := i*100 + c; n > benchHistory {
					recs = append(recs, catalog.Run{Policy: fmt.Sprintf("p%03d", i), Client: benchClient(n), Scheduled: last.Time,
						Asked: catalog.Level(last.Level), Level: catalog.Level(last.Level), State: catalog.RunSkipped, Reason: "bench"})
				}
			}
			apply(&catalog.Command{Op: catalog.OpRecordRuns, Runs: &catalog.RunsRecord{Runs: recs}})
		}
		w.clock.Advance(last.Time.Add(time.Minute).Sub(w.clock.Now()))
		benchWorld.w, benchWorld.took = w, time.Since(started)
	})
	if benchWorld.w == nil {
		b.Fatal("the benchmark's catalog could not be built")
	}
	return benchWorld.w
}

// BenchmarkDecision is one decision for a client whose run is due: its
// last run, the catch-up, the overlap check, its chain and the promotion
// (Plan, which reads only; the record is BenchmarkRecordRun).
func BenchmarkDecision(b *testing.B) {
	w := buildBenchWorld(b)
	p, sch, due := nextDue(b, w)
	for _, c := range []struct{ name, client string }{
		{"monthly_full", benchClient(0)},
		{"five_year_chain", benchClient(benchHistory)},
		{"no_history", benchClient(50)},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				plan, err := w.sched.Plan(p, sch, c.client, due)
				if err != nil || plan.Start == nil {
					b.Fatalf("plan %+v, %v", plan, err)
				}
			}
		})
	}
}

// nextDue is policy p000, its schedule, and a minute after its next run
// from the world's clock: when that run is due.
func nextDue(b *testing.B, w *world) (*catalog.Policy, *schedule.Schedule, time.Time) {
	p, err := w.store.Policy("p000")
	if err != nil {
		b.Fatal(err)
	}
	sch, err := p.ParsedSchedule()
	if err != nil {
		b.Fatal(err)
	}
	next, _ := sch.Next(w.clock.Now())
	return p, sch, next.Time.Add(time.Minute)
}

// BenchmarkTick is one tick of the scheduler over every client of every
// policy when nothing is due, which is what almost every tick is.
func BenchmarkTick(b *testing.B) {
	w := buildBenchWorld(b)
	ctx := context.Background()
	for b.Loop() {
		if err := w.sched.Decide(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchClients, "ns/client")
	if st, err := os.Stat(w.store.Path()); err == nil {
		b.ReportMetric(float64(st.Size())/(1<<20), "catalog-MiB")
	}
	b.Logf("catalog built in %s", benchWorld.took.Round(time.Second))
}

// BenchmarkRecordRun is the record of one run, applied to the catalog
// (no Raft: on a real group, the Raft round trip comes on top).
func BenchmarkRecordRun(b *testing.B) {
	w := buildBenchWorld(b)
	ctx := context.Background()
	at := w.clock.Now()
	for b.Loop() {
		at = at.Add(time.Minute)
		if _, err := w.orch.Apply(ctx, &catalog.Command{Op: catalog.OpRecordRuns, Runs: &catalog.RunsRecord{Runs: []catalog.Run{
			{Policy: "p000", Client: benchClient(1), Scheduled: at, Asked: catalog.LevelIncremental, Level: catalog.LevelIncremental, State: catalog.RunStarting},
		}}}); err != nil {
			b.Fatal(err)
		}
	}
}
