package s3vol

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/minio/minio-go/v7"
)

// Want is what the store must keep of a volume's objects that start in
// [Start, End): locked until at least Until (zero asks for no date), and
// under legal hold or not.
type Want struct {
	Start, End int64
	Until      time.Time
	Hold       bool
}

// Relocked counts what Relock changed.
type Relocked struct {
	Objects, Extended, Held, Released int
}

// Relock makes the store keep volume name's objects as want says: each
// object of the volume's chain that a Want covers gets its retain-until
// date extended to the Want's when it ends sooner (never brought forward:
// the store refuses that) and its legal hold set or lifted to match. It
// reads each object's state first, so a repeat changes nothing and costs
// a HEAD per object. Objects no Want covers (past the committed end) are
// left alone. The volume's label must name id. A pool that locks nothing
// has nothing to keep.
func (p *Pool) Relock(ctx context.Context, name string, id uuid.UUID, want []Want) (Relocked, error) {
	var r Relocked
	if p.cfg.LockMode == LockNone {
		return r, nil
	}
	if err := p.CheckLabel(ctx, name, id); err != nil {
		return r, err
	}
	ch, err := p.volumeChain(ctx, name)
	if err != nil {
		return r, err
	}
	mode := minio.Governance
	if p.cfg.LockMode == LockCompliance {
		mode = minio.Compliance
	}
	for _, o := range ch {
		w, ok := covering(want, o.start)
		if !ok {
			continue
		}
		r.Objects++
		cur, err := p.retention(ctx, o.key, o.version)
		p.stats.note(err, time.Now())
		if err != nil {
			return r, fmt.Errorf("s3 pool %q: volume %s: read the lock of %s: %w", p.cfg.Pool, name, o.key, err)
		}
		if until := w.Until.UTC().Truncate(time.Second).Add(time.Second); !w.Until.IsZero() && cur.Until.Before(until) {
			err := p.storeErr(p.c.PutObjectRetention(ctx, p.cfg.Bucket, o.key, minio.PutObjectRetentionOptions{Mode: &mode, RetainUntilDate: &until, VersionID: o.version}))
			p.stats.note(err, time.Now())
			if err != nil {
				return r, fmt.Errorf("s3 pool %q: volume %s: extend the lock of %s to %s: %w", p.cfg.Pool, name, o.key, until.Format(time.RFC3339), err)
			}
			r.Extended++
		}
		if w.Hold != cur.LegalHold {
			st := minio.LegalHoldDisabled
			if w.Hold {
				st = minio.LegalHoldEnabled
			}
			err := p.storeErr(p.c.PutObjectLegalHold(ctx, p.cfg.Bucket, o.key, minio.PutObjectLegalHoldOptions{VersionID: o.version, Status: &st}))
			p.stats.note(err, time.Now())
			if err != nil {
				return r, fmt.Errorf("s3 pool %q: volume %s: set the legal hold of %s to %v: %w", p.cfg.Pool, name, o.key, w.Hold, err)
			}
			if w.Hold {
				r.Held++
			} else {
				r.Released++
			}
		}
	}
	return r, nil
}

// covering is the Want whose range holds off.
func covering(want []Want, off int64) (Want, bool) {
	for _, w := range want {
		if w.Start <= off && off < w.End {
			return w, true
		}
	}
	return Want{}, false
}
