package s3vol

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/internal/poll"
)

// A legal hold that Relock sets keeps an object from being deleted, by the
// store itself, and stays on it past its retain-until date; lifted, the
// object can go. A later date extends a lock, an earlier one changes
// nothing, and a repeat of an order changes nothing.
//
// versitygw 1.8.0 does not refuse the deletion of a held object whose
// retain-until date has passed (auth/object_lock.go, checkObject: "an
// expired retention ... also skips the legal-hold check"), where AWS S3
// does; so the refusal is shown on objects held with no date (a backup no
// retention dates), and past a date the hold is shown to stay set.
func TestRelockHoldsAndReleases(t *testing.T) {
	p, _ := lockedPool(t, "held", LockGovernance)
	ctx := context.Background()

	// Objects with no retain-until date: the hold is all that keeps them.
	a := newVolume(t, p, "Held-0001", Lock{})
	start := a.Offset()
	writeSession(t, a, 4096)
	end := a.Offset()
	other := a.Offset()
	writeSession(t, a, 8192)
	id := a.VolumeID()
	hold := []Want{{Start: 0, End: 1, Hold: true}, {Start: start, End: end, Hold: true}}
	r, err := p.Relock(ctx, "Held-0001", id, hold)
	if err != nil || r != (Relocked{Objects: 2, Held: 2}) {
		t.Fatalf("hold: %+v, %v", r, err)
	}
	if r, err := p.Relock(ctx, "Held-0001", id, hold); err != nil || r != (Relocked{Objects: 2}) {
		t.Fatalf("the same order again: %+v, %v; want nothing changed", r, err)
	}
	objs := objectsAt(t, p, "Held-0001")
	if err := p.remove(ctx, objs[start]); !errors.Is(err, ErrLocked) {
		t.Fatalf("delete of a held part: %v, want ErrLocked", err)
	}
	if err := p.remove(ctx, objs[other]); err != nil {
		t.Fatalf("delete of a part not held: %v", err)
	}
	// Released, with a date for the label: it gets the date, and the
	// part goes.
	later := time.Now().Add(72 * time.Hour)
	r, err = p.Relock(ctx, "Held-0001", id, []Want{{Start: 0, End: 1, Until: later}, {Start: start, End: end}})
	if err != nil || r != (Relocked{Objects: 2, Extended: 1, Released: 2}) {
		t.Fatalf("release: %+v, %v", r, err)
	}
	if ret, err := p.ObjectRetention(ctx, "Held-0001", 0); err != nil || ret.Until.Before(later) || ret.LegalHold {
		t.Fatalf("label's lock %+v, %v; want until %s, no hold", ret, err, later)
	}
	if err := p.remove(ctx, objs[start]); err != nil {
		t.Fatalf("delete of a released part: %v", err)
	}
	// An earlier date than the lock's changes nothing.
	if r, err := p.Relock(ctx, "Held-0001", id, []Want{{Start: 0, End: 1, Until: time.Now().Add(time.Hour)}}); err != nil || r != (Relocked{Objects: 1}) {
		t.Fatalf("an earlier date: %+v, %v; want nothing changed", r, err)
	}
	// An order for another volume than the label's is refused.
	if _, err := p.Relock(ctx, "Held-0001", uuid.New(), hold); !errors.Is(err, ErrWrongVolume) {
		t.Fatalf("relock naming another volume: %v, want ErrWrongVolume", err)
	}

	// A part locked for a second and held: past its date, the hold stays.
	b := newVolume(t, p, "Held-0002", Lock{Until: time.Now().Add(time.Second)})
	bs := b.Offset()
	writeSession(t, b, 4096)
	if _, err := p.Relock(ctx, "Held-0002", b.VolumeID(), []Want{{Start: bs, End: b.Offset(), Hold: true}}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, func() error {
		if ret, err := p.ObjectRetention(ctx, "Held-0002", bs); err != nil || time.Now().Before(ret.Until) {
			return fmt.Errorf("lock %+v, %v not passed yet", ret, err)
		}
		return nil
	})
	if ret, err := p.ObjectRetention(ctx, "Held-0002", bs); err != nil || !ret.LegalHold {
		t.Fatalf("held part past its date: %+v, %v; want the hold kept", ret, err)
	}
}

// objectsAt are volume name's objects by their start.
func objectsAt(t *testing.T, p *Pool, name string) map[int64]object {
	t.Helper()
	prefix, _ := p.Prefix(name)
	objs, err := p.list(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]object{}
	for _, o := range objs {
		out[o.start] = o
	}
	return out
}
