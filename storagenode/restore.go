package storagenode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

// recordBatch is how many bytes of records a restore sends per frame.
const recordBatch = 1 << 20

func (n *Node) restore(ctx context.Context, log *slog.Logger, conn *dataplane.Conn, t ticket.Ticket) {
	n.metrics.streams.WithLabelValues("restore").Inc()
	defer n.metrics.streams.WithLabelValues("restore").Dec()
	r := &reader{n: n, log: log, t: t, conn: conn, keys: map[string]*volume.Key{}}
	err := r.run(ctx)
	r.releaseTape(err)
	outcome := "success"
	if err != nil {
		outcome = "failed"
		we := wire.AsError(err)
		if we.Code == wire.CodeInternal {
			we = wire.Errorf(wire.CodeIO, "", "storage node %s: %v", n.cfg.ID, err)
		}
		log.Warn("restore stream failed", "err", we.Message)
		_ = conn.WriteError(we)
	}
	n.metrics.sessions.WithLabelValues("restore", outcome).Inc()
}

type reader struct {
	n     *Node
	log   *slog.Logger
	t     ticket.Ticket
	conn  *dataplane.Conn
	keys  map[string]*volume.Key
	batch []byte
	held  *heldTape // the tape mounted last, kept while reads need it
}

func (r *reader) run(ctx context.Context) error {
	allowed := map[string]bool{}
	for _, s := range r.t.Sessions {
		allowed[s] = true
	}
	if err := r.conn.WriteJSON(dataplane.FrameAccept, dataplane.Accept{JobID: r.t.JobID, Node: r.n.cfg.ID}); err != nil {
		return err
	}
	for {
		_ = r.conn.SetReadDeadline(time.Now().Add(r.n.cfg.IdleTimeout))
		typ, payload, err := r.conn.ReadFrame()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("agent connection: %w", err)
		}
		switch typ {
		case dataplane.FrameEnd:
			return nil
		case dataplane.FrameRead:
			var rr wire.ReadRequest
			if err := json.Unmarshal(payload, &rr); err != nil {
				return wire.Errorf(wire.CodeBadRequest, "", "malformed read request: %v", err)
			}
			if !allowed[rr.SessionID.String()] {
				return wire.Errorf(wire.CodeTicketRejected, "", "the ticket of job %d does not allow reading session %s", r.t.JobID, rr.SessionID)
			}
			if err := r.serve(ctx, &rr); err != nil {
				return err
			}
		default:
			return wire.Errorf(wire.CodeBadRequest, "", "unexpected frame %d in a restore stream", typ)
		}
	}
}

func (r *reader) key(ctx context.Context, id string) (*volume.Key, error) {
	if k := r.keys[id]; k != nil {
		return k, nil
	}
	var kr wire.KeyGetResp
	if err := r.n.request(ctx, wire.OpKeyGet, wire.KeyGetReq{JobID: r.t.JobID, KeyID: id}, &kr); err != nil {
		return nil, err
	}
	k := &volume.Key{ID: kr.ID, Material: kr.Key}
	r.keys[id] = k
	return k, nil
}

// serve reads the entries of one read request and streams their records.
func (r *reader) serve(ctx context.Context, rr *wire.ReadRequest) error {
	key, err := r.key(ctx, rr.KeyID)
	if err != nil {
		return err
	}
	names := map[uuid.UUID]wire.ReadPart{}
	refs := make([]volume.PartRef, 0, len(rr.Parts))
	for _, p := range rr.Parts {
		if p.MediaType == "tape" {
			if _, err := r.n.library(p.Library); err != nil {
				return wire.Errorf(wire.CodeNotFound, "", "storage node %s has no library %s, which holds tape %s (volume %s)", r.n.cfg.ID, p.Library, p.Barcode, p.Volume)
			}
		} else if r.n.pools[p.Pool] == nil {
			return wire.Errorf(wire.CodeNotFound, "", "storage node %s does not serve pool %s, which holds volume %s", r.n.cfg.ID, p.Pool, p.Volume)
		}
		names[p.VolumeID] = p
		refs = append(refs, volume.PartRef{VolumeID: p.VolumeID, VolumeStart: p.VolumeStart, DataStart: p.DataStart, StreamStart: p.StreamStart, StreamEnd: p.StreamEnd})
	}
	// The session reader owns what this opens and closes it when done.
	open := func(id uuid.UUID) (io.ReaderAt, error) {
		p, ok := names[id]
		if !ok {
			return nil, fmt.Errorf("volume %s is not part of session %s", id, rr.SessionID)
		}
		if p.MediaType == "tape" {
			return &tapeVolume{r: r, ctx: ctx, part: p}, nil
		}
		f, _, err := r.n.pools[p.Pool].OpenRead(p.Volume)
		if err != nil {
			return nil, wire.Errorf(wire.CodeIO, "check that the volume file is in its pool directory", "open volume %s: %v", p.Volume, err)
		}
		return f, nil
	}
	locs := make([]fileindex.Location, len(rr.Locs))
	for i, l := range rr.Locs {
		locs[i] = l.Loc
	}
	opts := volume.ReaderOptions{Workers: r.n.cfg.Workers}
	for _, p := range rr.Parts {
		if p.MediaType == "tape" {
			// Reading on costs a tape far less than a locate; and the part
			// header, a locate away from the file wanted, is read only if
			// a block does not decrypt.
			opts.SeekGap = 256 << 20
			opts.CheckKeyLazily = true
		}
	}
	sr := volume.NewSessionReader(rr.SessionID, key, refs, open, opts)
	defer sr.Close()
	entries := 0
	onRecord := func(t volume.RecordType, body []byte) error {
		if t == volume.RecFileHeader {
			entries++
		}
		r.batch = volume.AppendRecord(r.batch, t, body)
		if len(r.batch) >= recordBatch {
			return r.flush()
		}
		return nil
	}
	onDamage := func(cbe *volume.CorruptBlockError) error {
		if err := r.flush(); err != nil {
			return err
		}
		d := dataplane.Damaged{SessionID: rr.SessionID, Seq: cbe.Seq, Reason: cbe.Error()}
		for _, l := range rr.Locs {
			if l.Loc.Seq <= cbe.Seq && cbe.Seq <= l.Loc.EndSeq {
				d.Paths = append(d.Paths, l.Path)
			}
		}
		r.log.Error("damaged block", "session", rr.SessionID, "seq", cbe.Seq, "entries", len(d.Paths), "err", cbe)
		r.n.metrics.damagedBlocks.Inc()
		return r.conn.WriteJSON(dataplane.FrameDamaged, d)
	}
	err = sr.ReadEntries(ctx, locs, onRecord, onDamage)
	var lost *volume.LostEntriesError
	if errors.As(err, &lost) {
		// onDamage named the entries in each damaged block as reading went
		// on; the agent counts what it did not get whole.
		err = nil
	}
	if err != nil {
		var ke *volume.KeyError
		if errors.As(err, &ke) {
			return wire.Errorf(wire.CodeKey, "", "%v", err)
		}
		return err
	}
	if err := r.flush(); err != nil {
		return err
	}
	return r.conn.WriteJSON(dataplane.FrameReadDone, dataplane.ReadDone{SessionID: rr.SessionID, Entries: entries})
}

func (r *reader) flush() error {
	if len(r.batch) == 0 {
		return nil
	}
	if err := r.conn.WriteFrame(dataplane.FrameRecords, r.batch); err != nil {
		return err
	}
	r.n.metrics.bytesRead.Add(float64(len(r.batch)))
	r.batch = r.batch[:0]
	return r.conn.Flush()
}
