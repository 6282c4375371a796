package catalog

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/bbolt"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/retention"
)

// BenchmarkExpiryPass measures one expiry pass over a catalog of clients ×
// days of daily backups (a full every Sunday, incrementals between, one
// volume per client and month), built through the applier, under the
// issue's retention: keep-daily 14, keep-weekly 8, keep-monthly 12,
// keep-yearly 5. "first" is the first pass over the whole history, which
// expires most of it; "daily" is the pass after one more day of backups
// of every client, the steady state once the pass runs every day.
// Each pass plans with package retention (PlanExpiry) and applies the
// expiries in batches of 2000 backups per command through Store.Apply,
// fsync on; Raft's own log write per batch is not in it.
//
// CAIRN_EXPIRY_CLIENTS and CAIRN_EXPIRY_DAYS size the catalog (10000 and
// 1825: the 10,000 clients × 5 years, 18 million backups, about
// 25 GB of catalog). Run it as
//
//	CAIRN_EXPIRY_CLIENTS=1000 go test -run '^$' -bench ExpiryPass -benchtime 1x ./catalog
//
// It reports the catalog file before and after each pass.
func BenchmarkExpiryPass(b *testing.B) {
	clients := envInt(b, "CAIRN_EXPIRY_CLIENTS", 10000)
	days := envInt(b, "CAIRN_EXPIRY_DAYS", 1825)
	c := newTestCatalog(b)
	c.noSync()
	c.setup()
	// 2021-01-03 is a Sunday: a full.
	start := time.Date(2021, 1, 3, 21, 0, 0, 0, time.UTC)
	setup := time.Now()
	names := make([]string, clients)
	for i := range names {
		names[i] = fmt.Sprintf("client%05d", i)
		c.must(&Command{Op: OpRegisterClient, Client: &Client{Name: names[i]}})
	}
	w := &historyWriter{s: c.s, start: start}
	for _, name := range names {
		w.client(b, name, 0, days)
	}
	b.Logf("setup: %d clients × %d days = %d backups in %s through the applier", clients, days, clients*days, time.Since(setup).Round(time.Second))

	pol := &retention.Policy{Rules: retention.Rules{Daily: 14, Weekly: 8, Monthly: 12, Yearly: 5}}
	fs := FileSetOf([]string{"/srv"}, nil)
	rf := func(_, fileSet string) (*retention.Policy, bool) { return pol, fileSet == fs }
	c.s.mu.RLock()
	c.s.db.NoSync = false // the passes commit as a server does
	c.s.mu.RUnlock()

	pass := func(name string) {
		before, inUse := fileBytes(b, c.s), liveBytes(b, c.s)
		t0 := time.Now()
		plan, err := c.s.PlanExpiry(rf, true)
		if err != nil {
			b.Fatal(err)
		}
		planned := time.Since(t0)
		expired, kept, emptied := 0, 0, 0
		for _, e := range plan.Batches(2000, "expiry pass") {
			res := c.must(&Command{Op: OpExpireBackups, Expire: e})
			expired, kept, emptied = expired+len(res.Expired), kept+len(res.Kept), emptied+len(res.Emptied)
		}
		took := time.Since(t0)
		after := fileBytes(b, c.s)
		b.Logf("%s pass: %d backups in %d groups decided, %d expired (%d kept by the applier), %d volumes emptied, in %s (plan %s, apply %s); catalog file %.1f MB -> %.1f MB (in use %.1f MB -> %.1f MB)",
			name, plan.Backups, plan.Groups, expired, kept, emptied, took.Round(time.Millisecond), planned.Round(time.Millisecond),
			(took - planned).Round(time.Millisecond), float64(before)/1e6, float64(after)/1e6, float64(inUse)/1e6, float64(liveBytes(b, c.s))/1e6)
		b.ReportMetric(took.Seconds(), name+"-pass-s")
		b.ReportMetric(float64(before)/1e6, name+"-before-MB")
		b.ReportMetric(float64(after)/1e6, name+"-after-MB")
		b.ReportMetric(float64(inUse)/1e6, name+"-inuse-before-MB")
		b.ReportMetric(float64(liveBytes(b, c.s))/1e6, name+"-inuse-after-MB")
		b.ReportMetric(float64(expired), name+"-expired")
	}
	b.ResetTimer()
	for range b.N {
		pass("first")
		c.s.mu.RLock()
		c.s.db.NoSync = true
		c.s.mu.RUnlock()
		for _, name := range names {
			w.client(b, name, days, days+1)
		}
		c.s.mu.RLock()
		c.s.db.NoSync = false
		c.s.mu.RUnlock()
		days++
		pass("daily")
	}
}

func envInt(b *testing.B, name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("%s=%q is not a positive number", name, v)
		}
		return n
	}
	return def
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

// historyWriter writes clients' daily backups through the applier, one
// transaction per client, as the commands of a backup's life would: the
// job, its dispatch, its commit on the client's volume of the month.
type historyWriter struct {
	s     *Store
	start time.Time
	vols  map[string]uuid.UUID // client/month -> volume
	last  map[string]uint64    // client -> its newest backup
}

func (w *historyWriter) client(b *testing.B, name string, from, to int) {
	if w.vols == nil {
		w.vols, w.last = map[string]uuid.UUID{}, map[string]uint64{}
	}
	err := w.s.db.Update(func(tx *bbolt.Tx) error {
		for d := from; d < to; d++ {
			now := w.start.AddDate(0, 0, d)
			var res ApplyResult
			a := &applier{tx: tx, now: now, res: &res}
			// Created as a full and made an incremental on the previous
			// day's backup below: the applier resolves an incremental's
			// parent by reading every backup of its client (latestComplete),
			// which over five years of history would take the setup hours.
			if err := a.apply(&Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: name, Level: LevelFull, Pool: "disk1",
				Paths: []fileindex.Path{"/srv"}, State: JobQueued}}); err != nil {
				return err
			}
			job := res.JobID
			if now.Weekday() != time.Sunday && w.last[name] != 0 {
				bk, err := a.backup(job)
				if err != nil {
					return err
				}
				old := *bk
				bk.Level, bk.Parent = LevelIncremental, w.last[name]
				if err := a.putBackup(&old, bk); err != nil {
					return err
				}
			}
			w.last[name] = job
			if err := a.apply(&Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: job, Node: "sn1"}}); err != nil {
				return err
			}
			month := name + now.Format("/2006-01")
			vol, ok := w.vols[month]
			if !ok {
				vol = uuid.New()
				w.vols[month] = vol
				if err := a.apply(&Command{Op: OpCreateVolume, Volume: &Volume{ID: vol, Pool: "disk1"}}); err != nil {
					return err
				}
			}
			v, err := a.volume(vol)
			if err != nil {
				return err
			}
			end := max(v.Bytes, DefaultBlockSize) + 64<<20
			if err := a.apply(&Command{Op: OpCommitBackup, Commit: &BackupCommit{BackupID: job, SessionID: uuid.New(),
				Parts: []Part{{VolumeID: vol, VolumeStart: max(v.Bytes, DefaultBlockSize), End: end, Final: true}},
				Files: 1000, Bytes: 64 << 20, StoredBytes: 60 << 20, EndTime: now.Add(time.Hour)}}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}
