package catalog

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/bbolt"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/scalebench"
	"github.com/cairnbackup/cairn/retention"
)

// The catalog at scale (issue 13): CAIRN_SCALE_CLIENTS clients, each under
// one of the policies of 100 clients of scalePolicy, with CAIRN_SCALE_DAYS
// days (default 1826, five years) of the backups its schedule makes (a
// full on the first Sunday of the month, a differential on the other
// Sundays, an incremental every other day), each complete on a volume of
// its client and month. The catalog is written straight into the bbolt
// file through the applier's own puts (putBackup keeps every index), one
// transaction per week of every client, without fsync: through Raft, 18
// million backups would take hours. Backups have no index segments and no
// job records (the expiry pass reads neither); each client's last run is
// recorded, as the scheduler reads it.
//
// The benchmarks share the file at CAIRN_SCALE_DIR/catalog.db, so that
// bench/catalogscale.sh builds it once and measures the scheduler on it
// (server/scheduler's BenchmarkScaleTick) before the expiry pass changes
// it:
//
//	BenchmarkScaleBuild   builds the file (or keeps the one there)
//	BenchmarkScaleReads   what a scheduler decision and a client list read
//	BenchmarkScaleExpiry  the first expiry pass, one more day, the next
//	                      pass, and the file's size before, after and
//	                      compacted
//
// Without CAIRN_SCALE_DIR they skip: 'make test' never builds gigabytes.
// The figures are in bench/README.md.

// scaleSchedule is the policies' schedule, their retention the issue's.
const scaleSchedule = "Sun 1st 02:00 full\nSun 2nd-5th 02:00 differential\nMon-Sat 21:00 incremental"

var scaleStart = scalebench.Start

func scaleClient(i int) string { return fmt.Sprintf("c%05d", i) }

func scalePolicy(i, clients int) Policy {
	p := Policy{Name: fmt.Sprintf("p%03d", i), Paths: []string{"/srv"}, Pool: "Default", TimeZone: "UTC",
		Schedule: scaleSchedule, MaxFullAge: 40 * 24 * time.Hour,
		Retention: PolicyRetention{All: KeepRules{Daily: 14, Weekly: 8, Monthly: 12, Yearly: 5}}}
	for c := i * 100; c < min(clients, (i+1)*100); c++ {
		p.Clients = append(p.Clients, scaleClient(c))
	}
	return p
}

// scaleEnv is the benchmark's catalog (scalebench.Env).
type scaleEnv struct {
	dir           string
	clients, days int
}

func scaleSetup(b *testing.B) scaleEnv {
	dir, clients, days := scalebench.Env(b)
	return scaleEnv{dir: dir, clients: clients, days: days}
}

func (e scaleEnv) path() string { return filepath.Join(e.dir, "catalog.db") }

func (e scaleEnv) open(b *testing.B) *Store {
	s, err := Open(e.path())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// scaleRun is one day's backup of the schedule: when, at which level.
type scaleRun struct {
	at    time.Time
	level Level
}

func scaleRuns(b *testing.B, from, to int) []scaleRun {
	p := scalePolicy(0, 1)
	sch, err := p.ParsedSchedule()
	if err != nil {
		b.Fatal(err)
	}
	var out []scaleRun
	for _, r := range sch.Between(scaleStart.AddDate(0, 0, from), scaleStart.AddDate(0, 0, to)) {
		out = append(out, scaleRun{at: r.Time, level: Level(r.Level)})
	}
	return out
}

// scaleWriter writes backups of every client, day after day, keeping what
// each client's next backup builds on.
type scaleWriter struct {
	s       *Store
	clients int
	nextID  uint64
	lastAny []uint64 // per client: its newest backup
	lastFul []uint64 // per client: its newest full
	vols    map[string]uuid.UUID
}

func newScaleWriter(b *testing.B, s *Store, clients int) *scaleWriter {
	w := &scaleWriter{s: s, clients: clients, lastAny: make([]uint64, clients), lastFul: make([]uint64, clients), vols: map[string]uuid.UUID{}}
	err := s.view(func(tx *bbolt.Tx) error {
		w.nextID = max(getU64(tx.Bucket(bMeta), keyNextJob), 1)
		// Where an earlier build left off: each client's newest backups.
		for i := range clients {
			err := eachClientBackup(tx, scaleClient(i), func(bk *Backup) bool {
				if w.lastAny[i] == 0 {
					w.lastAny[i] = bk.ID
				}
				if bk.Level == LevelFull {
					w.lastFul[i] = bk.ID
					return false
				}
				return true
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return w
}

// write adds runs for every client, a week of runs to a transaction.
func (w *scaleWriter) write(b *testing.B, runs []scaleRun) {
	for len(runs) > 0 {
		week := runs[:min(7, len(runs))]
		runs = runs[len(week):]
		err := w.s.db.Update(func(tx *bbolt.Tx) error {
			// Pages filled as 'bbolt compact' leaves them where keys are
			// added at the end of a range: built one command at a time,
			// the file would be up to twice the size, and the issue's
			// catalog would not fit the disk it is built on. (Not
			// volume_backups: a new volume's keys go anywhere, and full
			// pages split into a full and an empty one.) By name, as a
			// baseline without format 6 has no backup_times.
			for _, name := range []string{"backups", "backups_by_client", "backup_times"} {
				if bk := tx.Bucket([]byte(name)); bk != nil {
					bk.FillPercent = 1
				}
			}
			var res ApplyResult
			for _, r := range week {
				a := &applier{tx: tx, now: r.at.Add(time.Hour), res: &res}
				for c := range w.clients {
					if err := w.backup(a, c, r); err != nil {
						return err
					}
				}
			}
			return tx.Bucket(bMeta).Put(keyNextJob, u64(w.nextID))
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

func (w *scaleWriter) backup(a *applier, c int, r scaleRun) error {
	name := scaleClient(c)
	month := name + r.at.Format("/2006-01")
	vol, ok := w.vols[month]
	if !ok {
		vol = uuid.New()
		w.vols[month] = vol
		v := &Volume{ID: vol, Name: fmt.Sprintf("%s-%s", name, r.at.Format("200601")), Pool: "Default", Node: "sn1",
			MediaType: "disk", State: VolumeAppend, BlockSize: DefaultBlockSize, Bytes: DefaultBlockSize, Created: r.at}
		if err := a.putVolume(nil, v); err != nil {
			return err
		}
	}
	id := w.nextID
	w.nextID++
	bk := &Backup{ID: id, Client: name, FileSet: FileSetOf([]string{"/srv"}, nil), Paths: []fileindex.Path{"/srv"}, Level: r.level,
		StartTime: r.at, EndTime: r.at.Add(time.Hour), SessionID: uuid.New(), KeyID: "k1", Pool: "Default", Node: "sn1",
		Parts:   []Part{{VolumeID: vol, Part: 1, VolumeStart: DefaultBlockSize, DataStart: DefaultBlockSize + 4096, End: 1 << 30, Final: true}},
		Entries: 1000, Files: 1000, Bytes: 64 << 20, StoredBytes: 60 << 20, State: BackupComplete}
	switch {
	case r.level == LevelIncremental && w.lastAny[c] != 0:
		bk.Parent = w.lastAny[c]
	case r.level == LevelDifferential && w.lastFul[c] != 0:
		bk.Parent = w.lastFul[c]
	default:
		bk.Level = LevelFull
	}
	w.lastAny[c] = id
	if bk.Level == LevelFull {
		w.lastFul[c] = id
	}
	return a.putBackup(nil, bk)
}

// BenchmarkScaleBuild builds the catalog, unless CAIRN_SCALE_DIR holds it.
func BenchmarkScaleBuild(b *testing.B) {
	env := scaleSetup(b)
	if _, err := os.Stat(env.path()); err == nil {
		b.Skipf("%s is there: it is measured as it is", env.path())
	}
	s := env.open(b)
	s.mu.RLock()
	s.db.NoSync = true
	s.mu.RUnlock()
	started := time.Now()
	var index uint64
	must := func(c *Command) {
		index++
		c.Time = scaleStart
		if res := s.Apply(index, c); res.Err != nil {
			b.Fatalf("%s: %v", c.Op, res.Err)
		}
	}
	must(&Command{Op: OpPutKey, Key: &Key{ID: "k1", Pool: "Default", Wrapped: []byte("wrapped")}})
	must(&Command{Op: OpCreatePool, Pool: &Pool{Name: "Default", Nodes: []string{"sn1"}, KeyID: "k1", BlockSize: 1 << 16, BlockRawSize: 1 << 20}})
	must(&Command{Op: OpRegisterNode, Node: &StorageNode{ID: "sn1", DataAddr: "127.0.0.1:7020", Pools: []NodePool{{Name: "Default", Dir: "/srv/pool"}}}})
	for i := range env.clients {
		must(&Command{Op: OpRegisterClient, Client: &Client{Name: scaleClient(i), Hostname: scaleClient(i) + ".example"}})
	}
	for i := 0; i*100 < env.clients; i++ {
		must(&Command{Op: OpPutPolicy, PolicyPut: &PolicyPut{Policy: scalePolicy(i, env.clients), Mode: PutCreate}})
	}
	runs := scaleRuns(b, 0, env.days)
	w := newScaleWriter(b, s, env.clients)
	w.write(b, runs)
	// Every client's last run, as the scheduler recorded it.
	last := runs[len(runs)-1]
	for i := 0; i*100 < env.clients; i++ {
		var recs []Run
		for _, c := range scalePolicy(i, env.clients).Clients {
			recs = append(recs, Run{Policy: fmt.Sprintf("p%03d", i), Client: c, Scheduled: last.at, Asked: last.level, Level: last.level, State: RunSkipped, Reason: "bench"})
		}
		must(&Command{Op: OpRecordRuns, Runs: &RunsRecord{Runs: recs}})
	}
	took := time.Since(started)
	n := env.clients * len(runs)
	b.Logf("built %d clients x %d days = %d backups in %s: %.1f MB", env.clients, len(runs), n, took.Round(time.Second), float64(fileBytes(b, s))/1e6)
	b.ReportMetric(took.Seconds(), "build-s")
	b.ReportMetric(float64(n), "backups")
	b.ReportMetric(float64(fileBytes(b, s))/1e6, "file-MB")
}

// errRollback undoes a transaction that measured a command.
var errRollback = errors.New("measured: roll back")

// BenchmarkScaleReads measures, on the built catalog, what a scheduler's
// decision reads of a client with five years of backups (ChainOf, the
// chain; then the job's creation, which resolves its parent, applied in a
// transaction that is rolled back), the latest backup a restore or 'cairn
// ls' picks, and what a client list reads of 1,000 clients.
func BenchmarkScaleReads(b *testing.B) {
	env := scaleSetup(b)
	s := env.open(b)
	fs := FileSetOf([]string{"/srv"}, nil)
	client := scaleClient(env.clients / 2)
	scalebench.Spread(b, "chain", 200, func() {
		if ch, err := s.ChainOf(client, fs, []string{"Default"}); err != nil || ch.LastFull.IsZero() {
			b.Fatalf("chain %+v, %v", ch, err)
		}
	})
	at := scaleStart.AddDate(0, 0, env.days+1).Add(21 * time.Hour)
	scalebench.Spread(b, "create-job", 50, func() {
		err := s.db.Update(func(tx *bbolt.Tx) error {
			a := &applier{tx: tx, now: at, res: &ApplyResult{}}
			if err := a.apply(&Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: client, Level: LevelIncremental, Pool: "Default",
				Paths: []fileindex.Path{"/srv"}, Policy: "p000"}}); err != nil {
				return err
			}
			return errRollback
		})
		if !errors.Is(err, errRollback) {
			b.Fatal(err)
		}
	})
	scalebench.Spread(b, "latest-backup", 50, func() {
		if _, err := s.LatestBackup(BackupQuery{Client: client, Paths: []string{"/srv/a"}}); err != nil {
			b.Fatal(err)
		}
	})
	n := min(1000, env.clients)
	scalebench.Spread(b, "client-list-1000", 3, func() {
		for i := range n {
			if sum, err := clientSummary(s, scaleClient(i)); err != nil || sum.Complete == 0 {
				b.Fatalf("%+v, %v", sum, err)
			}
		}
	})
}

// BenchmarkScaleExpiry runs the expiry pass as the leader does
// (expiryPass), fsync on: the first pass over the whole history, then one
// more day of backups of every client and the next day's pass. It reports
// each pass, its slowest command (what the Raft applier is held by), the
// file before and after, and the file compacted ('bbolt compact', which
// gives back the pages the pass freed; bbolt reuses them but never
// shrinks the file).
func BenchmarkScaleExpiry(b *testing.B) {
	env := scaleSetup(b)
	s := env.open(b)
	index, err := s.AppliedIndex()
	if err != nil {
		b.Fatal(err)
	}
	rf, err := scaleRetention(s)
	if err != nil {
		b.Fatal(err)
	}
	pass := func(name string, now time.Time) {
		before, inUse := fileBytes(b, s), liveBytes(b, s)
		t0 := time.Now()
		var slowest time.Duration
		var expired, kept, commands int
		apply := func(e *BackupsExpire) {
			index++
			c0 := time.Now()
			res := s.Apply(index, &Command{Op: OpExpireBackups, Time: now, Expire: e})
			if res.Err != nil {
				b.Fatal(res.Err)
			}
			slowest = max(slowest, time.Since(c0))
			expired, kept, commands = expired+len(res.Expired), kept+len(res.Kept), commands+1
			if commands%500 == 0 {
				// A long pass says how far it is, as it goes.
				fmt.Fprintf(os.Stderr, "%s pass: %d commands, %d expired, %s\n", name, commands, expired, time.Since(t0).Round(time.Second))
			}
		}
		if err := expiryPass(s, rf, apply); err != nil {
			b.Fatal(err)
		}
		took := time.Since(t0)
		after, inUseAfter := fileBytes(b, s), liveBytes(b, s)
		b.Logf("%s pass: %d expired (%d kept) in %d commands, %s (slowest command %s); file %.1f MB -> %.1f MB, in use %.1f MB -> %.1f MB",
			name, expired, kept, commands, took.Round(time.Millisecond), slowest.Round(time.Millisecond),
			float64(before)/1e6, float64(after)/1e6, float64(inUse)/1e6, float64(inUseAfter)/1e6)
		b.ReportMetric(took.Seconds(), name+"-pass-s")
		b.ReportMetric(float64(slowest.Milliseconds()), name+"-slowest-cmd-ms")
		b.ReportMetric(float64(expired), name+"-expired")
		b.ReportMetric(float64(before)/1e6, name+"-file-before-MB")
		b.ReportMetric(float64(after)/1e6, name+"-file-after-MB")
		b.ReportMetric(float64(inUseAfter)/1e6, name+"-inuse-after-MB")
	}
	pass("first", scaleStart.AddDate(0, 0, env.days))

	s.mu.RLock()
	s.db.NoSync = true
	s.mu.RUnlock()
	w := newScaleWriter(b, s, env.clients)
	w.write(b, scaleRuns(b, env.days, env.days+1))
	s.mu.RLock()
	s.db.NoSync = false
	s.mu.RUnlock()
	pass("next-day", scaleStart.AddDate(0, 0, env.days+1))

	// What an administrator does to give the space back: stop the server,
	// compact the file into a new one, put it in place.
	dst := filepath.Join(env.dir, "compacted.db")
	t0 := time.Now()
	s.mu.RLock()
	err = func() error {
		out, err := bbolt.Open(dst, 0o600, nil)
		if err != nil {
			return err
		}
		defer out.Close()
		return bbolt.Compact(out, s.db, 64<<20)
	}()
	s.mu.RUnlock()
	if err != nil {
		b.Fatal(err)
	}
	st, err := os.Stat(dst)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("compacted in %s: %.1f MB", time.Since(t0).Round(time.Millisecond), float64(st.Size())/1e6)
	b.ReportMetric(float64(st.Size())/1e6, "compacted-MB")
	os.Remove(dst)
}

// scaleRetention is the retention of each client's file set, read from
// the policies as the server does.
func scaleRetention(s *Store) (RetentionFor, error) {
	policies, err := s.Policies()
	if err != nil {
		return nil, err
	}
	rp, err := policies[0].RetentionPolicy()
	if err != nil {
		return nil, err
	}
	fs := policies[0].FileSet()
	return func(_, fileSet string) (*retention.Policy, bool) { return &rp, fileSet == fs }, nil
}

// liveBytes is the catalog's pages in use: the file's size less its free
// pages, which bbolt reuses but never gives back to the filesystem.
func liveBytes(b *testing.B, s *Store) int64 {
	var n int64
	err := s.view(func(tx *bbolt.Tx) error {
		st := s.db.Stats()
		n = tx.Size() - int64(st.FreePageN+st.PendingPageN)*int64(s.db.Info().PageSize)
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// fileBytes is the size of the catalog file.
func fileBytes(b *testing.B, s *Store) int64 {
	st, err := os.Stat(s.Path())
	if err != nil {
		b.Fatal(err)
	}
	return st.Size()
}
