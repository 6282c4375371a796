package retention

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/schedule"
)

// randomHistory is a few clients and filesets of backups at random times
// (often several a day, sometimes days apart), chained as the catalog chains
// them, with some aborted, the newest sometimes still being written, and a
// few held.
func randomHistory(r *rand.Rand) []Backup {
	var all []Backup
	id := uint64(1)
	for g := range 1 + r.IntN(3) {
		c := newChainer(string(rune('a'+g)), "fs", id)
		t := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		n := r.IntN(120)
		for i := range n {
			t = t.Add(time.Duration(r.IntN(72*60)) * time.Minute)
			l := []schedule.Level{schedule.Full, schedule.Differential, schedule.Incremental, schedule.Incremental, schedule.Incremental}[r.IntN(5)]
			state := Complete
			switch {
			case r.IntN(15) == 0:
				state = Aborted
			case i == n-1 && r.IntN(3) == 0:
				state = Writing
			}
			c.add(t, l, state)
		}
		for i := range c.backups {
			c.backups[i].Held = r.IntN(40) == 0
		}
		id = c.nextID
		all = append(all, c.backups...)
	}
	// Half the histories get IDs that do not follow time (a catalog rebuilt
	// from media numbers backups in the order it reads them), so both ways
	// of finding a base are exercised.
	if r.IntN(2) == 0 {
		perm := r.Perm(len(all))
		remap := map[uint64]uint64{0: 0}
		for i := range all {
			remap[all[i].ID] = uint64(perm[i]) + 1
		}
		for i := range all {
			all[i].ID, all[i].Parent = remap[all[i].ID], remap[all[i].Parent]
		}
	}
	return all
}

func randomRules(r *rand.Rand) Rules {
	n := func() int {
		switch r.IntN(4) {
		case 0:
			return 0
		case 1:
			return Unlimited
		}
		return 1 + r.IntN(6)
	}
	var within time.Duration
	if r.IntN(2) == 0 {
		within = time.Duration(r.IntN(20*24)) * time.Hour
	}
	return Rules{Within: within, Last: n(), Hourly: n(), Daily: n(), Weekly: n(), Monthly: n(), Yearly: n()}
}

func randomPolicy(r *rand.Rand) Policy {
	p := Policy{Levels: map[schedule.Level]Rules{}}
	if r.IntN(2) == 0 {
		p.Rules = randomRules(r)
	}
	for _, l := range []schedule.Level{schedule.Full, schedule.Differential, schedule.Incremental} {
		if r.IntN(2) == 0 {
			p.Levels[l] = randomRules(r)
		}
	}
	if r.IntN(2) == 0 {
		p.Location, _ = time.LoadLocation("America/New_York")
	}
	return p
}

func keptSet(ds []Decision) map[uint64]bool {
	m := map[uint64]bool{}
	for _, d := range ds {
		if d.Keep {
			m[d.ID] = true
		}
	}
	return m
}

// chainOf is the IDs a backup's restore needs, itself included.
func chainOf(bs []Backup, id uint64) map[uint64]bool {
	byID := map[uint64]Backup{}
	for _, b := range bs {
		byID[b.ID] = b
	}
	out := map[uint64]bool{}
	for ; id != 0 && !out[id]; id = byID[id].Parent {
		out[id] = true
	}
	return out
}

func TestPlanProperties(t *testing.T) {
	for seed := range uint64(400) {
		r := rand.New(rand.NewPCG(seed, 13))
		bs := randomHistory(r)
		pol := randomPolicy(r)
		policies := one(pol)
		ds := Plan(bs, policies)
		kept := keptSet(ds)

		if len(ds) != len(bs) {
			t.Fatalf("seed %d: %d decisions for %d backups", seed, len(ds), len(bs))
		}
		for _, d := range ds {
			if d.Keep && d.Parent != 0 && !kept[d.Parent] {
				t.Fatalf("seed %d: backup %d kept, its base %d expired", seed, d.ID, d.Parent)
			}
			if d.Held && !d.Keep {
				t.Fatalf("seed %d: held backup %d expired", seed, d.ID)
			}
			if d.State == Writing && !d.Keep {
				t.Fatalf("seed %d: backup %d being written expired", seed, d.ID)
			}
			if len(d.Reasons()) == 0 {
				t.Fatalf("seed %d: backup %d has no reason", seed, d.ID)
			}
		}

		// Stable: a second pass over what the first kept keeps it all.
		var rest []Backup
		for _, b := range bs {
			if kept[b.ID] {
				rest = append(rest, b)
			}
		}
		for _, d := range Plan(rest, policies) {
			if !d.Keep {
				t.Fatalf("seed %d: a second pass expires %d (%s %s), which the first kept", seed, d.ID, d.Level, d.Time)
			}
		}

		// Deterministic: the order of the input changes nothing.
		shuffled := slices.Clone(bs)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		again := Plan(shuffled, policies)
		for i := range ds {
			if ds[i].ID != again[i].ID || ds[i].Keep != again[i].Keep || ds[i].Why() != again[i].Why() {
				t.Fatalf("seed %d: decision %d differs with the input shuffled", seed, i)
			}
		}

		// A newer backup in a group expires, never keeps, older ones, but for
		// the chain it needs itself.
		if len(bs) == 0 {
			continue
		}
		last := bs[len(bs)-1]
		for _, l := range []schedule.Level{schedule.Full, schedule.Differential, schedule.Incremental} {
			c := &chainer{nextID: 1 << 40, lastFull: map[Group]uint64{}, lastAny: map[Group]uint64{}, client: last.Client, fileSet: last.FileSet}
			for _, b := range bs {
				if b.Client == last.Client && b.State == Complete {
					c.lastAny[Group{b.Client, b.FileSet}] = b.ID
					if b.Level == schedule.Full {
						c.lastFull[Group{b.Client, b.FileSet}] = b.ID
					}
				}
			}
			newID := c.add(last.Time.Add(time.Hour), l, Complete)
			more := append(slices.Clone(bs), c.backups...)
			needs := chainOf(more, newID)
			for _, d := range Plan(more, policies) {
				if d.ID != newID && d.Keep && !kept[d.ID] && !needs[d.ID] {
					t.Fatalf("seed %d: adding %s %d keeps %d, which was expired and is not in its chain", seed, l, newID, d.ID)
				}
			}
		}
	}
}
