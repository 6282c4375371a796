package storagenode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/media/sftpvol"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/wire"
)

// mediaSFTP is the medium type of SFTP pools.
const mediaSFTP = "sftp"

// SFTPPoolConfig is a pool whose volume files are on an SFTP server, an
// offsite target this node writes over SSH (media/sftpvol).
type SFTPPoolConfig struct {
	// Name of the pool in the catalog.
	Name string `json:"name"`
	// Host is the target's name or address.
	Host string `json:"host"`
	// Port is the target sshd's port; 0 is 22.
	Port int `json:"port,omitempty"`
	// User is the user the node logs in as on the target: give it SFTP
	// only (ForceCommand internal-sftp).
	User string `json:"user"`
	// KeyFile is the private key the node logs in with (unencrypted,
	// readable by the node only); empty uses the ssh-agent at
	// $SSH_AUTH_SOCK.
	KeyFile string `json:"key_file,omitempty"`
	// KnownHosts is a known_hosts file that must name the target's host
	// key: it is never accepted unchecked.
	KnownHosts string `json:"known_hosts"`
	// Dir is the directory of the volume files on the target (absolute).
	Dir string `json:"remote_dir"`
	// MaxVolumeBytes caps each volume file, as for a disk pool; 0 means
	// no limit.
	MaxVolumeBytes int64 `json:"volume_size,omitempty" config:"size,alias=max_volume_bytes"`
	// AppendOnly says the target lets User create files but not delete,
	// rename or rewrite them (DESIGN.md, "Append-only SFTP targets"): each
	// volume is written once, by one session, and expired volumes are
	// left for the target's owner to delete.
	AppendOnly bool `json:"append_only,omitempty"`
	// BytesPerSecond caps what the pool sends and receives, over all its
	// streams (a size per second, like "20M"); 0 means no limit.
	BytesPerSecond int64 `json:"bandwidth,omitempty" config:"size,alias=bytes_per_second"`
	// Streams is how many connections the pool opens to the target, a
	// long write or read going out in ranges over all of them (0: 1).
	// More help where one TCP stream cannot fill the link.
	Streams int `json:"streams,omitempty"`
	// Retry is how a dropped or refused connection is tried again (tests
	// shorten it; the defaults try six times over about half a minute).
	Retry sftpvol.Retry `json:"-"`
}

func (c SFTPPoolConfig) target() sftpvol.Config {
	return sftpvol.Config{Pool: c.Name, Host: c.Host, Port: c.Port, User: c.User, KeyFile: c.KeyFile,
		KnownHosts: c.KnownHosts, Dir: c.Dir, MaxVolumeBytes: c.MaxVolumeBytes,
		AppendOnly: c.AppendOnly, BytesPerSecond: c.BytesPerSecond, Streams: c.Streams, Retry: c.Retry}
}

// validateSFTPPools adds what is wrong with each SFTP pool to errs.
func validateSFTPPools(pools []SFTPPoolConfig, seen map[string]bool, bad func(field, format string, args ...any)) {
	for i, p := range pools {
		at := fmt.Sprintf("sftp_pools[%d]", i)
		if seen[p.Name] {
			bad(at+".name", "pool %s is given twice: keep one", p.Name)
		}
		seen[p.Name] = true
		if err := p.target().Validate(); err != nil {
			bad(at, "%v", err)
		}
	}
}

// sftpPool is a medium of volume files in a directory of an SFTP target.
// It is a disk pool at a distance: a new volume is labeled by the session
// that is granted it, and a failed session is cut off every volume it
// appended to. The connection is the target's (sftpvol.Pool), shared by
// every stream of the pool and redialled when it drops.
type sftpPool struct {
	cfg    SFTPPoolConfig
	target *sftpvol.Pool

	// The target's free space, as last asked: a heartbeat must not wait
	// on a target that hangs or redials, so usage answers with the last
	// figures and asks again in the background, one question at a time.
	mu         sync.Mutex
	last       wire.PoolUsage
	lastOK     bool
	refreshing bool
}

func newSFTPPool(c SFTPPoolConfig) (*sftpPool, error) {
	t, err := sftpvol.New(c.target())
	if err != nil {
		return nil, err
	}
	return &sftpPool{cfg: c, target: t}, nil
}

func (d *sftpPool) close() { _ = d.target.Close() }

func (d *sftpPool) register() wire.NodePool {
	return wire.NodePool{Name: d.cfg.Name, Type: mediaSFTP, Dir: d.cfg.Dir, MaxVolumeBytes: d.cfg.MaxVolumeBytes}
}

func (d *sftpPool) usage() (wire.PoolUsage, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.refreshing {
		d.refreshing = true
		go func() {
			free, total, ok := d.target.Usage(context.Background())
			d.mu.Lock()
			defer d.mu.Unlock()
			d.last, d.lastOK, d.refreshing = wire.PoolUsage{Name: d.cfg.Name, FreeBytes: free, TotalBytes: total}, ok, false
		}()
	}
	u := d.last
	u.Name = d.cfg.Name
	u.Target = d.status()
	return u, d.lastOK || u.Target.Tried
}

// status is the target's reachability and traffic, for pool list and the
// metrics.
func (d *sftpPool) status() *wire.TargetStatus {
	st := d.target.Stats()
	return &wire.TargetStatus{
		Addr: d.target.Config().Addr(), Tried: st.Tried, Reachable: st.Reachable,
		BytesWritten: st.BytesWritten, BytesRead: st.BytesRead,
		WriteSeconds: st.WriteBusy.Seconds(), ReadSeconds: st.ReadBusy.Seconds(),
		Errors: st.Errors, LastError: st.LastError, LastErrorAt: st.LastErrorAt,
		AppendOnly: d.cfg.AppendOnly,
	}
}

func (d *sftpPool) reads(p wire.ReadPart) bool {
	return p.MediaType == mediaSFTP && p.Pool == d.cfg.Name
}

func (d *sftpPool) appendTo(j *stream) appendSession { return &sftpSession{d: d, j: j} }

func (d *sftpPool) readFrom(*stream) partReader { return &sftpReader{d: d, keptVolumes: keptVolumes{}} }

// sftpSession is a backup session's volumes in an SFTP pool.
type sftpSession struct {
	d      *sftpPool
	j      *stream
	opened []*openedSFTPVolume
}

type openedSFTPVolume struct {
	app   *sftpvol.Appender
	start int64
}

// acquire asks the servers for a volume and opens it on the target,
// creating it first when it is new (under a temporary name, renamed once
// its label is durable).
func (s *sftpSession) acquire(ctx context.Context, done volume.Appender) (volume.Appender, wire.VolumeGrant, error) {
	var used []uuid.UUID
	for _, o := range s.opened {
		used = append(used, o.app.VolumeID())
	}
	g, err := s.j.grantVolume(ctx, done, used, nil)
	if err != nil {
		return nil, g, err
	}
	// An append-only target takes each volume once: one that a session
	// started and did not commit (its connection dropped, it failed) is
	// sealed there with nothing committed, and the servers mark it error
	// and grant another. One that holds committed sessions (the servers
	// that recorded them did not mark it full) is passed over, never
	// marked error: its backups stay readable.
	for !g.New && s.d.cfg.AppendOnly {
		s.j.log.Warn("a volume on the append-only target takes no more writes; asking for a new one", "volume", g.Name)
		var bad *wire.VolumeAcquireReq
		if g.Bytes <= int64(g.BlockSize) {
			bad = &wire.VolumeAcquireReq{Bad: g.ID, BadReason: "sealed on the append-only SFTP target after a session that did not commit; its file is the target owner's to delete"}
		} else {
			used = append(used, g.ID)
		}
		if g, err = s.j.grantVolume(ctx, nil, used, bad); err != nil {
			return nil, g, err
		}
	}
	// The volume outlives this call: its writes, and the rollback of a
	// session whose stream was canceled, must still reach the target. The
	// pool's retries bound them.
	vctx := context.WithoutCancel(ctx)
	if g.New {
		if err := s.j.labelVolume(ctx, &g, mediaSFTP, func(l volume.Label) error { return s.d.target.Create(vctx, g.Name, l) }); err != nil {
			return nil, g, err
		}
		s.j.log.Info("labeled volume", "volume", g.Name, "target", s.d.target.Config().Addr())
	}
	app, err := s.d.target.OpenAppend(vctx, g.Name, g.ID, g.Bytes)
	if err != nil {
		return nil, g, fmt.Errorf("open volume %s: %w", g.Name, err)
	}
	if app.TornBytes > 0 {
		s.j.log.Warn("cut off an uncommitted tail of a volume (an earlier session did not finish)", "volume", g.Name, "at", g.Bytes, "bytes", app.TornBytes)
	}
	s.opened = append(s.opened, &openedSFTPVolume{app: app, start: g.Bytes})
	return app, g, nil
}

// lost is never called: an SFTP Appender is not recoverable; a write the
// target refuses, or that no redial gets through, fails the session.
func (s *sftpSession) lost(volume.Appender, error) {}

// finish seals every volume of the session on an append-only target: its
// file cannot be opened for writing again, so the servers mark it full.
func (s *sftpSession) finish(req *wire.SessionCommitReq, _ *volume.SessionResult) {
	if !s.d.cfg.AppendOnly {
		return
	}
	for _, o := range s.opened {
		req.Sealed = append(req.Sealed, o.app.VolumeID())
	}
}

func (s *sftpSession) committing() map[uuid.UUID]string {
	names := map[uuid.UUID]string{}
	for _, o := range s.opened {
		names[o.app.VolumeID()] = o.app.Name()
		_ = o.app.Close()
	}
	s.opened = nil
	return names
}

// rollback cuts each volume back to where the session started on it.
// When the target cannot be reached, what the session left stays past the
// catalog's committed end, where the next session's OpenAppend cuts it.
//
// An append-only target cuts nothing: the session's bytes stay past the
// committed end of a volume that the next acquire has marked error.
func (s *sftpSession) rollback(error) {
	for _, o := range s.opened {
		if s.d.cfg.AppendOnly {
			_ = o.app.Close()
			continue
		}
		if err := o.app.Truncate(o.start); err != nil {
			s.j.log.Error("could not cut a failed session off its volume on the SFTP target; the next session on it will", "volume", o.app.Name(), "err", err)
		}
		_ = o.app.Close()
	}
	s.opened = nil
}

// sftpReader opens volumes on the target for range reads. A stream keeps
// the volumes it opened until it ends: an open is an open and a stat on
// the target, each a round trip.
type sftpReader struct {
	d *sftpPool
	keptVolumes
}

func (r *sftpReader) open(ctx context.Context, p wire.ReadPart) (io.ReaderAt, error) {
	return r.keptVolumes.open(p.Volume, func() (readerAtCloser, error) {
		f, err := r.d.target.OpenRead(context.WithoutCancel(ctx), p.Volume)
		if err != nil {
			return nil, &unreadableError{volume: p.Volume, err: err}
		}
		return f, nil
	})
}

func (*sftpReader) tune(*volume.ReaderOptions) {}

// sftpError gives the SFTP target's failures their code and hint.
func sftpError(err error) *wire.Error {
	var fe *sftpvol.FullError
	var ue *sftpvol.UnreachableError
	var he *sftpvol.HostKeyError
	var ae *sftpvol.AuthError
	switch {
	case errors.As(err, &fe):
		return wire.Errorf(wire.CodePoolFull, "free space on the target (or give the pool a smaller volume size), then rerun the job; earlier backups are intact", "%w", err)
	case errors.Is(err, sftpvol.ErrSealed):
		return wire.Errorf(wire.CodeIO, "rerun the job: it writes a new volume; the sealed one is the target owner's to delete", "%w", err)
	case errors.Is(err, sftpvol.ErrWrongVolume):
		return wire.Errorf(wire.CodeInvalidArgument, "check the target's directory: the file is not the catalog's volume, and is kept", "%w", err)
	case errors.Is(err, sftpvol.ErrOwnerReclaims):
		return wire.Errorf(wire.CodeWrongState, "the target's owner deletes expired volumes there (README, 'Append-only SFTP targets'); the catalog forgets each once its file is gone", "%w", err)
	case errors.As(err, &ue):
		return wire.Errorf(wire.CodeUnavailable, "check that the target is up and reachable from the storage node ('cairn pool list' shows its state), then rerun the job", "%w", err)
	case errors.As(err, &he), errors.As(err, &ae):
		return wire.Errorf(wire.CodeInvalidArgument, "", "%w", err)
	}
	return nil
}
