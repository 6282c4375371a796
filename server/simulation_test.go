package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/alert"
	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/clock"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/natsd"
	"github.com/cairnbackup/cairn/wire"
)

// simBackup is the simulation's own record of a backup: what the rules
// written out in the test say it is, not what the server says.
type simBackup struct {
	id      uint64
	at      time.Time
	level   catalog.Level
	parent  uint64
	volume  string
	held    bool
	expired bool
}

// simLevel is the level the policy's schedule gives day's run, written
// from the rules' words ("monthly fulls on the 1st, weekly differentials
// on Sunday, daily incrementals", the higher level winning a day two
// rules share), not computed by package schedule.
func simLevel(day time.Time) catalog.Level {
	switch {
	case day.Day() == 1:
		return catalog.LevelFull
	case day.Weekday() == time.Sunday:
		return catalog.LevelDifferential
	}
	return catalog.LevelIncremental
}

// simKeep is the retention of the policy (incrementals kept 14 days,
// differentials 8 weeks, fulls 12 months, holds, and every kept backup's
// chain down to its full), applied to the backups not yet expired with a
// plain loop, not by package retention.
func simKeep(bs []*simBackup) map[uint64]bool {
	var live []*simBackup
	var newest time.Time
	for _, b := range bs {
		if !b.expired {
			live = append(live, b)
			if b.at.After(newest) {
				newest = b.at
			}
		}
	}
	keep := map[uint64]bool{}
	newestOf := func(level catalog.Level, period func(time.Time) string, n int) {
		seen := map[string]bool{}
		for i := len(live) - 1; i >= 0; i-- { // newest first
			b := live[i]
			if b.level != level {
				continue
			}
			p := period(b.at)
			if seen[p] {
				continue
			}
			if len(seen) == n {
				return
			}
			seen[p] = true
			keep[b.id] = true
		}
	}
	for _, b := range live {
		if b.held || (b.level == catalog.LevelIncremental && !b.at.Before(newest.Add(-14*24*time.Hour))) {
			keep[b.id] = true
		}
	}
	newestOf(catalog.LevelDifferential, func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprint(y, w) }, 8)
	newestOf(catalog.LevelFull, func(t time.Time) string { return t.Format("2006-01") }, 12)
	byID := map[uint64]*simBackup{}
	for _, b := range live {
		byID[b.id] = b
	}
	for id := range keep {
		for p := byID[id].parent; p != 0; p = byID[p].parent {
			keep[p] = true
		}
	}
	return keep
}

// TestNinetyDaysOfAPolicy plays 90 days of one policy (monthly fulls,
// weekly differentials, daily incrementals; incrementals kept 14 days,
// differentials 8 weeks, fulls 12 months) on a fake clock, through the
// real scheduler, the real expiry pass, real Raft and bbolt and NATS; the
// test is the storage node and the agent, completing every ordered backup
// through the node protocol on a volume of its own, and answering the
// volume deletions. A legal hold is placed on day 30 and released on day
// 70; the servers are down for a week from day 40 (the clock jumps past
// it: no tick of the scheduler in between). After each day's expiry pass
// it checks the catalog against the test's own reading of the rules: the
// backups kept, none without its base, none held expired, the volumes the
// node was told to delete, the pool's used and reclaimable bytes; at the
// end, the exact list of runs and their levels, and the one missed_run
// alert for the downtime.
func TestNinetyDaysOfAPolicy(t *testing.T) {
	began := time.Now()
	var alertsMu sync.Mutex
	var alerts []alert.Event
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e alert.Event
		if err := json.NewDecoder(r.Body).Decode(&e); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		alertsMu.Lock()
		alerts = append(alerts, e)
		alertsMu.Unlock()
	}))
	t.Cleanup(hook.Close)

	const day = 24 * time.Hour
	jan1 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// Jan 1, 12:00: the policy is made then, and the expiry pass runs at
	// noon every day.
	fake := clock.NewFake(jan1.Add(12 * time.Hour))
	h := startHarness(t, natsd.Config{Anonymous: true}, fake, func(c *Config) {
		c.Alerts.Webhooks = []alert.WebhookConfig{{Name: "ops", URL: hook.URL}}
		c.ExpiryInterval = day
		c.RunHistory = 0 // keep every run, to compare them all at the end
		// The clock jumps a day at a time, and a week once: the fake node
		// and agent, heartbeating on the real clock, stay online across.
		c.LivenessTimeout, c.StallTimeout, c.QueueTimeout = 10*day, 10*day, 10*day
	})
	_, orders := h.setup()
	deletes := h.volumeDeletes()
	passes := make(chan wire.PruneResp, 4)
	h.srv.expiryMu.Lock()
	h.srv.expiryTrace = func(r wire.PruneResp, err error) {
		if err != nil {
			t.Errorf("expiry pass: %v", err)
		}
		passes <- r
	}
	h.srv.expiryMu.Unlock()

	policy := catalog.Policy{Name: "sim", Clients: []string{"web"}, Paths: []string{"/srv"}, Pool: "Default", TimeZone: "UTC",
		Schedule: "1st day of month 21:00 full\nSun 21:00 differential\ndaily 21:00 incremental",
		Retention: catalog.PolicyRetention{Levels: map[catalog.Level]catalog.KeepRules{
			catalog.LevelIncremental:  {Within: 14 * day},
			catalog.LevelDifferential: {Weekly: 8},
			catalog.LevelFull:         {Monthly: 12},
		}}}
	_, err := h.srv.orch.Apply(h.ctx, &catalog.Command{Op: catalog.OpPutPolicy, PolicyPut: &catalog.PolicyPut{Policy: policy, Mode: catalog.PutCreate}})
	h.must(err)

	var model []*simBackup
	byID := map[uint64]*simBackup{}
	// advanceTo moves the clock; whatever ticks there acts at that time,
	// since the scheduler and the expiry pass read the clock when they act.
	// Then the node and the agent heartbeat at once, as the harness's
	// (which beat on the real clock, slower than days pass here) would.
	advanceTo := func(at time.Time) {
		t.Helper()
		fake.Advance(at.Sub(fake.Now()))
		h.mu.Lock()
		running := slices.Clone(h.running)
		h.mu.Unlock()
		h.must(wire.Publish(h.nc, wire.NodeBeatSubject("sn1"), wire.NodeHeartbeat{ID: "sn1", Pools: []wire.PoolUsage{{Name: "Default", FreeBytes: 1 << 40, TotalBytes: 2 << 40}}}))
		h.must(wire.Publish(h.nc, wire.AgentBeatSubject("web"), wire.AgentHeartbeat{Running: running}))
		poll.Until(t, 10*time.Second, func() error {
			h.srv.mu.Lock()
			defer h.srv.mu.Unlock()
			if h.srv.nodes["sn1"].lastSeen.Before(at) || h.srv.agents["web"].lastSeen.Before(at) {
				return errors.New("no heartbeat since the clock moved")
			}
			return nil
		})
	}
	waitPass := func(what string) wire.PruneResp {
		t.Helper()
		select {
		case r := <-passes:
			return r
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: no expiry pass", what)
		}
		return wire.PruneResp{}
	}
	// complete answers the next backup order as the agent and the node
	// would: one volume for the backup, filled, so that its expiry
	// empties it.
	complete := func(at time.Time) {
		t.Helper()
		var m *nats.Msg
		select {
		case m = <-orders:
		case <-time.After(30 * time.Second):
			last, err := h.srv.store.LastRun("sim", "web")
			jobs, _ := h.srv.store.Jobs(catalog.JobFilter{Client: "web", Limit: 2})
			t.Fatalf("%s: the scheduler ordered no backup; the last run %+v (%v), jobs %+v", at, last, err, jobs)
		}
		body, err := wire.Unmarshal(m.Data)
		h.must(err)
		var o wire.RunBackup
		h.must(json.Unmarshal(body, &o))
		var g wire.VolumeGrant
		h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: o.JobID, Pool: "Default"}, &g))
		if !g.New || g.Bytes != 0 {
			t.Fatalf("%s: backup %d got volume %s, not a new one: %+v", at, o.JobID, g.Name, g)
		}
		h.must(h.node(wire.OpVolumeLabeled, wire.VolumeLabeled{JobID: o.JobID, VolumeID: g.ID}, nil))
		b := fileindex.NewSegmentBuilder(0)
		h.must(b.Add(&fileindex.Entry{Path: "/srv", Type: fileindex.TypeDir, Mode: 0o755}))
		seg := b.Flush()
		h.must(h.node(wire.OpSessionIndex, wire.SessionIndexReq{JobID: o.JobID, First: fileindex.Path(seg.First), Last: fileindex.Path(seg.Last), Count: seg.Count, Data: seg.Data}, nil))
		h.must(h.node(wire.OpSessionCommit, wire.SessionCommitReq{
			JobID: o.JobID, SessionID: uuid.New(), Segments: 1,
			Parts: []wire.SessionPart{{VolumeID: g.ID, VolumeStart: 256 << 10, DataStart: 256<<10 + 64, End: 62 << 20, Final: true}},
			Stats: wire.SessionStats{Entries: 1},
		}, nil))
		job, err := h.srv.store.Job(o.JobID)
		h.must(err)
		if job.State != catalog.JobSuccess || job.BackupID == 0 {
			t.Fatalf("%s: job %+v", at, job)
		}
		// The base, by the rules: an incremental builds on the newest
		// backup, a differential on the newest full.
		var parent uint64
		for i := len(model) - 1; i >= 0 && simLevel(at) != catalog.LevelFull; i-- {
			if !model[i].expired && (simLevel(at) == catalog.LevelIncremental || model[i].level == catalog.LevelFull) {
				parent = model[i].id
				break
			}
		}
		sb := &simBackup{id: job.BackupID, at: at, level: simLevel(at), parent: parent, volume: g.Name}
		if o.Level != string(sb.level) || o.Base != parent {
			t.Fatalf("%s: ordered a %s on base %d, the rules say a %s on base %d", at, o.Level, o.Base, sb.level, parent)
		}
		model = append(model, sb)
		byID[sb.id] = sb
	}
	var perVolume int64 // the pool's used bytes of one backup's volume
	// check compares the catalog after a pass with the rules' reading.
	check := func(when string, r wire.PruneResp) {
		t.Helper()
		keep := simKeep(model)
		var wantExpired []uint64
		var wantDeleted []string
		for _, b := range model {
			if !b.expired && !keep[b.id] {
				b.expired = true
				wantExpired = append(wantExpired, b.id)
				if b.held {
					t.Fatalf("%s: the rules expire held backup %d", when, b.id)
				}
			}
			if b.expired {
				wantDeleted = append(wantDeleted, b.volume)
			}
		}
		if r.Expired != len(wantExpired) {
			t.Fatalf("%s: the pass expired %d, the rules %d (%v): %+v", when, r.Expired, len(wantExpired), wantExpired, r)
		}
		bs, err := h.srv.store.Backups(catalog.BackupFilter{Client: "web"})
		h.must(err)
		var got, want []uint64
		present := map[uint64]catalog.Backup{}
		for _, b := range bs {
			if b.State == catalog.BackupComplete {
				got = append(got, b.ID)
				present[b.ID] = b
			}
		}
		for _, b := range model {
			if !b.expired {
				want = append(want, b.id)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("%s: the catalog keeps %v, the rules %v", when, got, want)
		}
		for _, b := range present {
			if b.Level != catalog.LevelFull {
				if _, ok := present[b.Parent]; !ok || b.Parent != byID[b.ID].parent {
					t.Fatalf("%s: %s %d lacks its base %d (the rules' %d)", when, b.Level, b.ID, b.Parent, byID[b.ID].parent)
				}
			}
		}
		slices.Sort(wantDeleted)
		gotDeleted := deletes.list()
		slices.Sort(gotDeleted)
		if !slices.Equal(gotDeleted, wantDeleted) {
			t.Fatalf("%s: the node was told to delete %v, the rules expired the backups of %v", when, gotDeleted, wantDeleted)
		}
		var pools wire.PoolListResp
		h.must(h.api(wire.OpPoolList, wire.Empty{}, &pools))
		p := pools.Pools[0]
		if perVolume == 0 && len(want) == 1 {
			perVolume = p.UsedBytes
		}
		if p.UsedBytes != int64(len(want))*perVolume || p.ReclaimableBytes != 0 {
			t.Fatalf("%s: pool %+v, with %d backups of %d bytes each kept and every expired volume deleted", when, p, len(want), perVolume)
		}
	}

	var held *simBackup
	const downFrom, downTo = 40, 47 // days 40-46 (Feb 10-16) the servers are down
	for d := 0; d < 90; d++ {
		date := jan1.Add(time.Duration(d) * day)
		runAt := date.Add(21 * time.Hour)
		if d == downFrom {
			// Back on day 47 at 21:30: the run of 21:00 is half an hour
			// late, within the catch-up window (6 hours), and runs; the
			// seven before it are missed. The expiry pass, due since
			// noon on day 41, runs once, first.
			d = downTo
			date = jan1.Add(time.Duration(d) * day)
			runAt = date.Add(21*time.Hour + 30*time.Minute)
			advanceTo(runAt)
			check("back from the downtime", waitPass("back from the downtime"))
		} else {
			advanceTo(runAt)
		}
		complete(runAt)
		noon := date.Add(36 * time.Hour)
		advanceTo(noon)
		check(noon.Format("Jan 2 noon"), waitPass(noon.Format("Jan 2 noon")))
		switch d {
		case 30:
			// The incremental of Jan 21 goes on legal hold while the
			// rules still keep it; it outlives its 14 days, and so does
			// its chain (Jan 18's differential, Jan 19 and 20).
			for _, b := range model {
				if b.at.Equal(jan1.Add(20*day + 21*time.Hour)) {
					held = b
				}
			}
			var info wire.HoldInfo
			h.must(h.api(wire.OpBackupHold, wire.HoldReq{BackupID: held.id, Reason: "case 4711", By: "legal"}, &info))
			held.held = true
		case 70:
			if !held.held || held.expired {
				t.Fatalf("held backup %+v", held)
			}
			h.must(h.api(wire.OpBackupRelease, wire.HoldReq{BackupID: held.id, By: "legal"}, nil))
			held.held = false
		}
	}
	if !held.expired {
		t.Fatalf("the released backup %+v was not expired", held)
	}

	// The runs: one a day, at the level the rules give the day, the seven
	// of the downtime missed and the one after it run.
	runs, err := h.srv.store.Runs(catalog.RunFilter{Policy: "sim"})
	h.must(err)
	slices.Reverse(runs)
	if len(runs) != 90 {
		t.Fatalf("%d runs recorded, want 90", len(runs))
	}
	seen := map[time.Time]bool{}
	for i, r := range runs {
		at := jan1.Add(time.Duration(i)*day + 21*time.Hour)
		wantState := catalog.RunDispatched
		if i >= downFrom && i < downTo {
			wantState = catalog.RunMissed
		}
		if !r.Scheduled.Equal(at) || r.Asked != simLevel(at) || r.State != wantState || seen[r.Scheduled] {
			t.Fatalf("run %d: %+v, want %s %s %s", i, r, at, simLevel(at), wantState)
		}
		seen[r.Scheduled] = true
		if wantState == catalog.RunDispatched && r.Level != simLevel(at) {
			t.Fatalf("run %d at %s: level %s, the rules %s", i, at, r.Level, simLevel(at))
		}
	}
	jobs, err := h.srv.store.Jobs(catalog.JobFilter{Client: "web"})
	h.must(err)
	if len(jobs) != 90-(downTo-downFrom) || len(model) != len(jobs) {
		t.Fatalf("%d jobs, %d backups: want one for each of the %d runs", len(jobs), len(model), 90-(downTo-downFrom))
	}
	poll.Until(t, 10*time.Second, func() error {
		alertsMu.Lock()
		defer alertsMu.Unlock()
		var missed []alert.Event
		for _, e := range alerts {
			if e.Kind == alert.MissedRun {
				missed = append(missed, e)
			}
		}
		if len(missed) != 1 {
			return fmt.Errorf("missed_run alerts %+v, want one for the downtime", missed)
		}
		if e := missed[0]; e.Missed != downTo-downFrom || e.Policy != "sim" || e.Client != "web" {
			return fmt.Errorf("missed_run alert %+v, want %d runs missed", e, downTo-downFrom)
		}
		return nil
	})
	var expired int
	for _, b := range model {
		if b.expired {
			expired++
		}
	}
	t.Logf("90 days: %d backups, %d expired, %d volumes deleted, in %s", len(model), expired, len(deletes.list()), time.Since(began).Round(time.Millisecond))
}
