package storagenode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/media/s3vol"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/wire"
)

// mediaS3 is the medium type of S3 pools.
const mediaS3 = "s3"

// S3PoolConfig is a pool whose volumes are objects in an S3 bucket (AWS
// or any S3-compatible store), an offsite target that can keep what it
// holds under object lock (media/s3vol). Its credentials come from
// CredentialsFile, or else from $AWS_ACCESS_KEY_ID and
// $AWS_SECRET_ACCESS_KEY; never from a flag, which every user of the
// machine can read in the process list.
type S3PoolConfig struct {
	// Name of the pool in the catalog.
	Name string `json:"name"`
	// Endpoint is the store's URL: https://... (TLS) or http://....
	Endpoint string `json:"endpoint"`
	// Bucket holds the volumes; with object lock enabled when LockMode is
	// set (it can only be enabled when the bucket is made).
	Bucket string `json:"bucket"`
	// Region is the bucket's region; empty lets the store say.
	Region string `json:"region,omitempty"`
	// Prefix is where in the bucket the volumes are (empty, or ending in /).
	Prefix string `json:"prefix,omitempty"`
	// CAFile is a PEM file of the CAs that sign the store's certificate,
	// for a store with its own CA; empty trusts the system's.
	CAFile string `json:"ca_file,omitempty"`
	// CredentialsFile is a JSON file {"access_key": ..., "secret_key":
	// ...}, mode 0600: a file its group or others may read is refused.
	CredentialsFile string `json:"credentials_file,omitempty"`
	// LockMode is governance or compliance: every object is locked in that
	// mode until the retain-until date of its backup's retention (the
	// bucket must have object lock enabled). Empty locks nothing.
	LockMode string `json:"lock_mode,omitempty"`
	// DefaultLock is how long objects of a backup whose retention gives
	// no date (a backup with no policy) stay locked; 0 locks them not at
	// all.
	DefaultLock time.Duration `json:"default_lock,omitempty"`
	// MaxVolumeBytes caps each volume, as for a disk pool; 0 means no
	// limit.
	MaxVolumeBytes int64 `json:"volume_size,omitempty" config:"size,alias=max_volume_bytes"`
	// PartSize is the size of each upload part (5 MiB to 1 GiB; 0 is 16
	// MiB); the node holds one in memory per stream.
	PartSize int64 `json:"part_size,omitempty" config:"size"`
}

func (c S3PoolConfig) target() s3vol.Config {
	return s3vol.Config{Pool: c.Name, Endpoint: c.Endpoint, Bucket: c.Bucket, Region: c.Region, Prefix: c.Prefix,
		CAFile: c.CAFile, LockMode: c.LockMode, MaxVolumeBytes: c.MaxVolumeBytes, PartSize: c.PartSize}
}

// credentials are the pool's access key and secret, from its file or
// the environment.
func (c S3PoolConfig) credentials() (s3vol.Credentials, error) {
	cr, err := s3vol.ResolveCredentials(c.CredentialsFile)
	if err != nil {
		return cr, fmt.Errorf("s3 pool %s: %w", c.Name, err)
	}
	return cr, nil
}

// validateS3Pools adds what is wrong with each S3 pool to errs.
func validateS3Pools(pools []S3PoolConfig, seen map[string]bool, bad func(field, format string, args ...any)) {
	for i, p := range pools {
		at := fmt.Sprintf("s3_pools[%d]", i)
		if seen[p.Name] {
			bad(at+".name", "pool %s is given twice: keep one", p.Name)
		}
		seen[p.Name] = true
		if err := p.target().Validate(); err != nil {
			bad(at, "%v", err)
		}
		if p.DefaultLock < 0 {
			bad(at+".default_lock", "s3 pool %s: the default lock is negative: give a duration, or 0 for none", p.Name)
		}
	}
}

// s3Pool is a medium of volumes in an S3 bucket: a volume is a prefix and
// each session part an object, born locked when the pool locks (see
// media/s3vol). A new volume is labeled by the session granted it; a
// failed session's upload is never completed, and what it completed is
// deleted where the store lets it, else left past the committed end.
type s3Pool struct {
	cfg    S3PoolConfig
	target *s3vol.Pool
	// probing: a check of the store is under way in the background.
	probing atomic.Bool
}

func newS3Pool(c S3PoolConfig) (*s3Pool, error) {
	cr, err := c.credentials()
	if err != nil {
		return nil, err
	}
	t := c.target()
	t.AccessKey, t.SecretKey = cr.AccessKey, cr.SecretKey
	p, err := s3vol.New(t)
	if err != nil {
		return nil, err
	}
	return &s3Pool{cfg: c, target: p}, nil
}

func (d *s3Pool) register() wire.NodePool {
	return wire.NodePool{Name: d.cfg.Name, Type: mediaS3, Dir: d.cfg.Endpoint + "/" + d.cfg.Bucket + "/" + d.cfg.Prefix, MaxVolumeBytes: d.cfg.MaxVolumeBytes}
}

// probeAge is how old the store's last answer may be before a report
// asks it again: a pool no backup uses still says whether it is reachable.
const probeAge = 30 * time.Second

// usage is the store's state, for pool list and the metrics: a bucket has
// no size to fill. It never waits on the store: an answer older than
// probeAge starts a check in the background, one at a time, which the
// next report shows.
func (d *s3Pool) usage() (wire.PoolUsage, bool) {
	st := d.target.Stats()
	if time.Since(st.Checked) > probeAge && d.probing.CompareAndSwap(false, true) {
		go func() {
			defer d.probing.Store(false)
			ctx, cancel := context.WithTimeout(context.Background(), probeAge)
			defer cancel()
			_ = d.target.Check(ctx)
		}()
	}
	return wire.PoolUsage{Name: d.cfg.Name, Target: &wire.TargetStatus{
		Addr: d.cfg.Endpoint + "/" + d.cfg.Bucket, Tried: st.Tried, Reachable: st.Reachable,
		BytesWritten: st.BytesWritten, BytesRead: st.BytesRead,
		WriteSeconds: st.WriteBusy.Seconds(), ReadSeconds: st.ReadBusy.Seconds(),
		Errors: st.Errors, LastError: st.LastError, LastErrorAt: st.LastErrorAt,
	}}, st.Tried
}

func (d *s3Pool) reads(p wire.ReadPart) bool {
	return p.MediaType == mediaS3 && p.Pool == d.cfg.Name
}

func (d *s3Pool) appendTo(j *stream) appendSession { return &s3Session{d: d, j: j} }

func (d *s3Pool) readFrom(*stream) partReader { return &s3Reader{d: d, keptVolumes: keptVolumes{}} }

// lock is the lock of what a session granted g writes.
func (d *s3Pool) lock(g wire.VolumeGrant, now time.Time) s3vol.Lock {
	if d.cfg.LockMode == s3vol.LockNone {
		return s3vol.Lock{}
	}
	if !g.RetainUntil.IsZero() {
		return s3vol.Lock{Until: g.RetainUntil}
	}
	if d.cfg.DefaultLock > 0 {
		return s3vol.Lock{Until: now.Add(d.cfg.DefaultLock)}
	}
	return s3vol.Lock{}
}

// s3Session is a backup session's volumes in an S3 pool.
type s3Session struct {
	d      *s3Pool
	j      *stream
	opened []*s3vol.Appender
	// lockedUntil is the latest date the session's objects are locked
	// until, for the commit: the servers extend the locks of the backups
	// this one builds on to it.
	lockedUntil time.Time
}

// acquire asks the servers for a volume and opens it in the bucket,
// creating its label object first when it is new.
func (s *s3Session) acquire(ctx context.Context, done volume.Appender) (volume.Appender, wire.VolumeGrant, error) {
	if done == nil {
		// Before the servers grant a volume: a store that refuses the
		// credentials, a bucket missing or without the object lock the
		// pool needs fail the session with what to do, having written
		// nothing.
		if err := s.d.target.Check(ctx); err != nil {
			return nil, wire.VolumeGrant{}, err
		}
	}
	var used []uuid.UUID
	for _, o := range s.opened {
		used = append(used, o.VolumeID())
	}
	g, err := s.j.grantVolume(ctx, done, used, nil)
	if err != nil {
		return nil, g, err
	}
	// The volume outlives this call: its uploads, and the rollback of a
	// session whose stream was canceled, must still reach the store.
	vctx := context.WithoutCancel(ctx)
	lock := s.d.lock(g, time.Now())
	if lock.Until.After(s.lockedUntil) {
		s.lockedUntil = lock.Until
	}
	if g.New {
		if err := s.j.labelVolume(ctx, &g, mediaS3, func(l volume.Label) error { return s.d.target.Create(vctx, g.Name, l, lock) }); err != nil {
			return nil, g, err
		}
		s.j.log.Info("labeled volume", "volume", g.Name, "bucket", s.d.cfg.Bucket, "locked_until", lock.Until)
	}
	app, err := s.d.target.OpenAppend(vctx, g.Name, g.ID, g.Bytes, lock)
	if err != nil {
		return nil, g, fmt.Errorf("open volume %s: %w", g.Name, err)
	}
	if app.TornBytes > 0 {
		s.j.log.Warn("found parts past the committed end of a volume (an earlier session did not commit); deleted what is not locked", "volume", g.Name, "at", g.Bytes, "bytes", app.TornBytes, "locked_bytes", app.TornLocked)
	}
	s.opened = append(s.opened, app)
	return app, g, nil
}

// lost is never called: an S3 Appender is not recoverable.
func (s *s3Session) lost(volume.Appender, error) {}

func (s *s3Session) finish(req *wire.SessionCommitReq, _ *volume.SessionResult) {
	req.LockedUntil = s.lockedUntil
}

func (s *s3Session) committing() map[uuid.UUID]string {
	names := map[uuid.UUID]string{}
	for _, a := range s.opened {
		names[a.VolumeID()] = a.Name()
		_ = a.Close()
	}
	s.opened = nil
	return names
}

// rollback aborts the upload in progress and deletes what the session
// completed where the store lets it; what stays (locked, or the store
// away) lies past the committed end, where the next session passes over
// it.
func (s *s3Session) rollback(error) {
	for _, a := range s.opened {
		if err := a.Rollback(); err != nil {
			s.j.log.Error("could not remove all of a failed session from its volume in the bucket; what stays lies past the committed end and never counts", "volume", a.Name(), "err", err)
		}
		_ = a.Close()
	}
	s.opened = nil
}

// s3Reader opens volumes in the bucket for range reads. A stream keeps
// the volumes it opened until it ends.
type s3Reader struct {
	d *s3Pool
	keptVolumes
}

func (r *s3Reader) open(ctx context.Context, p wire.ReadPart) (io.ReaderAt, error) {
	return r.keptVolumes.open(p.Volume, func() (readerAtCloser, error) {
		rd, err := r.d.target.OpenRead(context.WithoutCancel(ctx), p.Volume)
		if err != nil {
			return nil, &unreadableError{volume: p.Volume, err: err}
		}
		// A restore reads blocks in order: a few ranges in flight hide
		// the store's latency (s3vol's read-ahead).
		rd.ReadAhead(0, 0)
		return rd, nil
	})
}

func (*s3Reader) tune(*volume.ReaderOptions) {}

// relock carries out the servers' order to make a volume's objects keep
// the catalog's locks and legal holds (DESIGN.md, "Object locks"). It
// changes only what differs, so the servers send it again as often as
// they like: after a hold, a release, a commit, when the node registers.
func (n *Node) relock(ctx context.Context, _ string, o wire.ObjectLockOrder) (wire.ObjectLockResult, error) {
	d, ok := n.byPool[o.Pool].(*s3Pool)
	if !ok {
		return wire.ObjectLockResult{}, wire.Errorf(wire.CodeInvalidArgument, "", "storage node %s has no S3 pool %q", n.cfg.ID, o.Pool)
	}
	want := make([]s3vol.Want, len(o.Objects))
	for i, w := range o.Objects {
		want[i] = s3vol.Want{Start: w.Start, End: w.End, Until: w.Until, Hold: w.Hold}
	}
	r, err := d.target.Relock(ctx, o.Volume, o.VolumeID, want)
	res := wire.ObjectLockResult{Objects: r.Objects, Extended: r.Extended, Held: r.Held, Released: r.Released}
	if r.Extended+r.Held+r.Released > 0 {
		n.log.Info("changed the locks of a volume's objects", "pool", o.Pool, "volume", o.Volume, "extended", r.Extended, "held", r.Held, "released", r.Released)
	}
	switch {
	case err == nil:
		return res, nil
	case errors.Is(err, s3vol.ErrWrongVolume):
		return res, wire.Errorf(wire.CodeInvalidArgument, "check the pool: it holds another volume under that name than the catalog's", "%w", err)
	case errors.Is(err, s3vol.ErrNoVolume):
		return res, wire.Errorf(wire.CodeNotFound, "the volume's objects are gone from the bucket: check the store", "%w", err)
	}
	return res, edgeError(err)
}
