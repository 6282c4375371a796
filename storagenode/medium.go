package storagenode

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

// medium is one pool of this node as a backup session and a restore see
// it, whatever holds its volumes: diskPool (volume files in a directory)
// and tapePool (the cartridges of a library, through a disk spool or
// not). backup.go and restore.go know nothing else of the pool; a new
// medium is a new implementation (see the package doc for the steps).
//
// Contract:
//
//   - register is the pool as the node announces it to the servers, with
//     its Type; usage is its free and total bytes, ok false when the
//     medium cannot tell (a tape pool: the catalog counts its cartridges).
//   - appendTo starts the pool's side of one backup session of job j
//     (appendSession's contract).
//   - reads says whether the medium reads part p of a restore: its volume
//     is on this medium (p.MediaType) where the medium reaches it (a disk
//     pool by name, a tape pool by library: a tape moved to another
//     library, or into another pool, is read where it is now).
//   - readFrom starts the medium's side of one restore stream of job j
//     (partReader's contract).
//
// Implementations are shared by every stream of the node at once: the
// per-stream state lives in what appendTo and readFrom return, and a
// medium itself changes nothing after the node starts (a session's block
// size, for one, is its grant's, never written into the medium), but for
// the SFTP pool's last figures of its target's free space, under its own
// lock.
type medium interface {
	register() wire.NodePool
	usage() (u wire.PoolUsage, ok bool)
	appendTo(j *stream) appendSession
	reads(p wire.ReadPart) bool
	readFrom(j *stream) partReader
}

// appendSession is a medium's side of one backup session: the volumes it
// appends to, from the first acquire to rollback or commit. Calls come one
// at a time, in this order: acquire (the first volume, on the stream's
// goroutine); acquire again and lost as the session writer fills or loses
// volumes (volume.WriterOptions.Next and Lost, on the writer's goroutine);
// then, on the stream's goroutine once the writer stopped, either
// rollback, or finish and committing (and rollback still, if sending the
// index fails before committing). Nothing else calls it, so it needs no
// lock.
type appendSession interface {
	// acquire asks the servers for a volume of the pool to append to,
	// prepares it (labels a new disk volume; mounts a tape, waiting with
	// the reason reported while the pool has none) and returns it open
	// at its committed end, with the servers' grant (the first grant's
	// compression and block raw size are the session's). done is nil for
	// the first volume; else the volume the writer is done with: full, or
	// lost to a medium error (lost was called with it first), which
	// acquire gives up and reports to the servers with the request.
	acquire(ctx context.Context, done volume.Appender) (volume.Appender, wire.VolumeGrant, error)
	// lost is told of a volume the writer gave up after a medium error,
	// with the error (volume.WriterOptions.Lost).
	lost(v volume.Appender, cause error)
	// finish is called once the session is durable on its volumes, before
	// its index and commit go to the servers. It gives back what other
	// jobs may wait for (a tape's drive) and adds what the medium reports
	// to the commit (a tape's drive figures).
	finish(req *wire.SessionCommitReq, res *volume.SessionResult)
	// committing is called just before the commit is sent: from then on
	// the volumes are never cut back, since the servers may have
	// recorded the session. It names every volume the session wrote, by
	// id.
	committing() map[uuid.UUID]string
	// rollback undoes a failed session, before finish or after it: each
	// volume is cut back to where the session started on it (or left
	// past the catalog's committed end, for the next session to
	// overwrite) and released. cause is the session's failure. It is
	// a no-op after committing.
	rollback(cause error)
}

// partReader is a medium's side of one restore stream: it opens the
// volumes of the parts it reads for the session reader. Calls come from
// the stream's goroutine.
type partReader interface {
	// open opens the volume of part p (a part this medium reads) for the
	// session reader, which reads it with ReadAt and closes it when it is
	// an io.Closer. A volume this node cannot read (missing, not
	// mountable, its library gone) is an *unreadableError: the entries of
	// the read are lost, not the stream.
	open(ctx context.Context, p wire.ReadPart) (io.ReaderAt, error)
	// tune sets what reads this medium best in o (a tape reads on rather
	// than locates, and checks the key only when a block does not open).
	tune(o *volume.ReaderOptions)
	// release gives back what the stream holds between reads (a mounted
	// tape): when the stream ends, with its failure, or when it goes on
	// to another medium's parts, with nil.
	release(err error)
}

// stream is what a medium needs of the data stream it serves: the node
// (its requests and reports to the servers, its settings), the stream's
// ticket and its log.
type stream struct {
	n   *Node
	t   ticket.Ticket
	log *slog.Logger
}

// grantVolume asks the servers for a volume of the stream's pool to append
// to: a volume other than done, which is full, and than those the session
// already wrote to (used). bad, when not nil, names a volume the servers
// are to mark error, and why.
func (j *stream) grantVolume(ctx context.Context, done volume.Appender, used []uuid.UUID, bad *wire.VolumeAcquireReq) (wire.VolumeGrant, error) {
	var g wire.VolumeGrant
	req := wire.VolumeAcquireReq{JobID: j.t.JobID, Pool: j.t.Pool, Used: used}
	if done != nil {
		req.Full = done.VolumeID()
	}
	if bad != nil {
		req.Bad, req.BadReason = bad.Bad, bad.BadReason
	}
	if err := j.n.request(ctx, wire.OpVolumeAcquire, req, &g); err != nil {
		return g, fmt.Errorf("get a volume in pool %s: %w", j.t.Pool, err)
	}
	return g, nil
}

// labelVolume writes the label of a new volume the servers granted, with
// create, and tells them whether it took (a label that failed puts the
// volume in state error); the volume's data then starts after its label
// block.
func (j *stream) labelVolume(ctx context.Context, g *wire.VolumeGrant, mediaType string, create func(volume.Label) error) error {
	err := create(volume.Label{
		VolumeID: g.ID, Name: g.Name, Pool: g.Pool, MediaType: mediaType,
		BlockSize: g.BlockSize, Created: g.Created,
	})
	report := wire.VolumeLabeled{JobID: j.t.JobID, VolumeID: g.ID}
	if err != nil {
		report.Error = err.Error()
	}
	if rerr := j.n.request(ctx, wire.OpVolumeLabeled, report, nil); rerr != nil && err == nil {
		err = fmt.Errorf("record the label of volume %s: %w", g.Name, rerr)
	}
	if err != nil {
		return fmt.Errorf("label volume %s: %w", g.Name, err)
	}
	g.Bytes = int64(g.BlockSize)
	return nil
}

// keptVolumes holds the volumes one restore stream opened until the
// stream ends or goes on to another medium. A plan comes in many read
// requests, each read by a session reader of its own that closes what it
// opens; a volume opened anew for each would start its read-ahead over
// and drop the chunks it fetched past the request's last block, which
// the next request reads first (S3), or pay its open again (SFTP).
type keptVolumes map[string]readerAtCloser

// readerAtCloser is a volume open for reading, which can be closed.
type readerAtCloser interface {
	io.ReaderAt
	io.Closer
}

// open is the stream's reader of volume name, opened by openNew the first
// time. The session reader gets it without its Close.
func (k keptVolumes) open(name string, openNew func() (readerAtCloser, error)) (io.ReaderAt, error) {
	if r, ok := k[name]; ok {
		return struct{ io.ReaderAt }{r}, nil
	}
	r, err := openNew()
	if err != nil {
		return nil, err
	}
	k[name] = r
	return struct{ io.ReaderAt }{r}, nil
}

// release closes every volume kept: the stream ended or went on to
// another medium (partReader.release).
func (k keptVolumes) release(error) {
	for name, r := range k {
		_ = r.Close()
		delete(k, name)
	}
}
