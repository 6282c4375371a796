package storagenode

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/keyring"
	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/natsd"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

// This file is what every storage node test that runs a node starts from:
// an embedded NATS server, fake servers that answer the node over it as
// the servers would for one pool, and the node, sn1, as an agent and the
// servers reach it. A test configures the pool (fakePool) and the node
// (Config), and reads what the node reported from the fake servers.

// fakePool is how the fake servers grant the volumes of the one pool they
// know, by its name.
type fakePool struct {
	name string
	// mediaType is the grants' and the read parts' MediaType: "disk",
	// "tape", or "" as the servers sent it for a disk pool before media
	// types.
	mediaType string
	// library is a tape pool's library.
	library     string
	compression bool
	codec       string // the pool's codec when compression is on; zstd when empty
	// newVolumes: when no volume is left to append to, the servers name a
	// new one, which the node labels (a disk pool); else they answer
	// that there is none (a tape pool, whose tapes an operator labels).
	newVolumes bool
}

// fakeVol is the fake servers' view of one volume of the pool.
type fakeVol struct {
	id            uuid.UUID
	name, barcode string
	end           int64   // committed
	starts        []int64 // VolumeStart of every part committed on it
	state         string  // "append", "full", "bad"
	reason        string  // why it is bad
}

// fakeServers answers a storage node as the servers would for one pool of
// any medium: it grants the pool's appendable volumes in order (and, for
// a pool whose volumes the node labels, a new one when none is left),
// records what the node reports, and plans reads from the commits.
type fakeServers struct {
	pool fakePool
	bs   int // the pool's block size

	mu     sync.Mutex
	signer ed25519.PrivateKey // the group's ticket key, given at registration
	key    []byte
	vols   []*fakeVol // in grant order
	// noVolume makes every volume.acquire answer CodeNoVolume while set.
	noVolume bool
	// grant, when set, answers volume.acquire in place of the volumes
	// above; it runs outside mu, so it may wait for other requests.
	grant func(wire.VolumeAcquireReq) (wire.VolumeGrant, error)

	registers, hearts int
	grants            []wire.VolumeAcquireReq
	waiting           []string
	moves             []wire.TapeMoved
	labeled           []wire.VolumeLabeled
	commits           []wire.SessionCommitReq
	segments          map[uint64][][]byte // each job's index segments
	segmentAttempts   []int               // the attempt each index segment named
	// segmentErr, when set, answers an index segment in its place; it
	// runs outside mu, so it may wait.
	segmentErr func(wire.SessionIndexReq) error
	// lateSegments counts index segments that came after an abort.
	lateSegments int
	aborts       []wire.SessionAbortReq
	plans        planBook
}

func (f *fakeServers) vol(id uuid.UUID) *fakeVol {
	for _, v := range f.vols {
		if v.id == id {
			return v
		}
	}
	return nil
}

func (f *fakeServers) handle(_ context.Context, subject string, body json.RawMessage) (any, error) {
	_, op, _ := wire.SplitFrom(subject)
	if op == wire.OpRestorePlan {
		return f.plans.page(body)
	}
	f.mu.Lock()
	grant := f.grant
	f.mu.Unlock()
	if op == wire.OpVolumeAcquire && grant != nil {
		req, err := wire.Decode[wire.VolumeAcquireReq](body)
		if err != nil {
			return nil, err
		}
		return grant(req)
	}
	if op == wire.OpSessionIndex {
		f.mu.Lock()
		hook := f.segmentErr
		f.mu.Unlock()
		if hook != nil {
			req, err := wire.Decode[wire.SessionIndexReq](body)
			if err != nil {
				return nil, err
			}
			if err := hook(req); err != nil {
				return nil, err
			}
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch op {
	case wire.OpNodeRegister:
		f.registers++
		pub := f.signer.Public().(ed25519.PublicKey)
		return wire.NodeRegisterResp{TicketKey: pub, TicketKeys: [][]byte{pub}}, nil
	case wire.OpKeyGet:
		return wire.KeyGetResp{ID: "k1", Key: f.key}, nil
	case wire.OpVolumeAcquire:
		req, err := appendDecoded(body, &f.grants)
		if err != nil {
			return nil, err
		}
		return f.acquire(req)
	case wire.OpVolumeLabeled:
		_, err := appendDecoded(body, &f.labeled)
		return wire.Empty{}, err
	case wire.OpJobWaiting:
		req, err := wire.Decode[wire.JobWaitingReq](body)
		if err != nil {
			return nil, err
		}
		f.waiting = append(f.waiting, req.Reason)
		return wire.Empty{}, nil
	case wire.OpTapeMoved:
		_, err := appendDecoded(body, &f.moves)
		return wire.Empty{}, err
	case wire.OpSessionIndex:
		req, err := wire.Decode[wire.SessionIndexReq](body)
		if err != nil {
			return nil, err
		}
		if len(f.aborts) > 0 {
			f.lateSegments++
		}
		if f.segments == nil {
			f.segments = map[uint64][][]byte{}
		}
		f.segments[req.JobID] = append(f.segments[req.JobID], req.Data)
		f.segmentAttempts = append(f.segmentAttempts, req.Attempt)
		return wire.Empty{}, nil
	case wire.OpSessionCommit:
		req, err := appendDecoded(body, &f.commits)
		for _, id := range req.Sealed {
			if v := f.vol(id); v != nil && v.state == "append" {
				v.state = "full"
			}
		}
		for _, p := range req.Parts {
			// A volume a test's own grant named is not the fake's to track.
			if v := f.vol(p.VolumeID); v != nil {
				v.starts = append(v.starts, p.VolumeStart)
				if v.state != "bad" {
					v.end = p.End
				}
			}
		}
		return wire.Empty{}, err
	case wire.OpSessionAbort:
		_, err := appendDecoded(body, &f.aborts)
		return wire.Empty{}, err
	}
	return nil, wire.Errorf(wire.CodeUnknownOperation, "", "fake servers: %s", op)
}

// appendDecoded decodes a request's body into list's type and appends it.
func appendDecoded[T any](body json.RawMessage, list *[]T) (T, error) {
	req, err := wire.Decode[T](body)
	if err == nil {
		*list = append(*list, req)
	}
	return req, err
}

// acquire grants the first appendable volume the node has not used in
// this session, after it marked what the node reported full or bad.
func (f *fakeServers) acquire(req wire.VolumeAcquireReq) (any, error) {
	if v := f.vol(req.Full); v != nil {
		v.state = "full"
	}
	if v := f.vol(req.Bad); v != nil {
		v.state, v.reason = "bad", req.BadReason
	}
	g := wire.VolumeGrant{Pool: req.Pool, BlockSize: f.bs, BlockRawSize: volume.MinBlockRawSize, Compression: f.pool.compression, Codec: f.pool.codec,
		MediaType: f.pool.mediaType, Library: f.pool.library}
	for _, v := range f.vols {
		if !f.noVolume && v.state == "append" && !slices.Contains(req.Used, v.id) {
			g.ID, g.Name, g.Barcode, g.Bytes, g.Parts = v.id, v.name, v.barcode, v.end, len(v.starts)
			return g, nil
		}
	}
	if f.noVolume || !f.pool.newVolumes {
		return nil, wire.Errorf(wire.CodeNoVolume, "label volumes", "no appendable volume in pool %s", req.Pool)
	}
	v := &fakeVol{id: uuid.New(), name: fmt.Sprintf("%s-%04d", f.pool.name, len(f.vols)+1), end: int64(f.bs), state: "append"}
	f.vols = append(f.vols, v)
	g.ID, g.Name, g.New = v.id, v.name, true
	return g, nil
}

// commit is what the node committed of job's session.
func (f *fakeServers) commit(t testing.TB, job uint64) wire.SessionCommitReq {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.commits {
		if c.JobID == job {
			return c
		}
	}
	t.Fatalf("job %d was not committed; aborts %+v", job, f.aborts)
	return wire.SessionCommitReq{}
}

// sessionEnd is the last part of job's session: where the next session
// on its volume starts.
func (f *fakeServers) sessionEnd(t testing.TB, job uint64) wire.SessionPart {
	parts := f.commit(t, job).Parts
	return parts[len(parts)-1]
}

// readRequest is what the servers' restore plan asks the node for: the
// entries of paths (every entry when none) of job's session, its parts
// located as the catalog has them.
func (f *fakeServers) readRequest(t testing.TB, job uint64, paths ...string) wire.ReadRequest {
	t.Helper()
	c := f.commit(t, job)
	f.mu.Lock()
	defer f.mu.Unlock()
	// A whole session's read is adjacent, as the servers' plan says of a
	// whole restore of a full.
	rr := wire.ReadRequest{SessionID: c.SessionID, KeyID: "k1", Adjacent: len(paths) == 0}
	for _, p := range c.Parts {
		v := f.vol(p.VolumeID)
		if v == nil {
			t.Fatalf("job %d committed a part on volume %s, which the fake servers did not grant", job, p.VolumeID)
		}
		var starts []int64
		for _, s := range v.starts {
			if s <= p.VolumeStart {
				starts = append(starts, s)
			}
		}
		rr.Parts = append(rr.Parts, wire.ReadPart{VolumeID: p.VolumeID, Volume: v.name, Pool: f.pool.name, VolumeStart: p.VolumeStart,
			DataStart: p.DataStart, StreamStart: p.StreamStart, StreamEnd: p.StreamEnd, MediaType: f.pool.mediaType, Barcode: v.barcode,
			Library: f.pool.library, BlockSize: f.bs, PartStarts: starts, VolumeBytes: v.end})
	}
	for _, seg := range f.segments[job] {
		es, err := fileindex.DecodeSegment(seg)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if len(paths) == 0 || slices.Contains(paths, e.Path) {
				rr.Locs = append(rr.Locs, wire.ReadLoc{Path: fileindex.Path(e.Path), Loc: e.Loc})
			}
		}
	}
	return rr
}

// nodeRig is the embedded NATS server, the fake servers and storage node
// sn1 serving their pool.
type nodeRig struct {
	t    testing.TB
	ns   *natsd.Server
	fake *fakeServers
	nc   *nats.Conn // the fake servers' connection, once they serve
	node *Node
	// signer signs the tickets of the rig's agents; a test may swap it
	// (for a forger's, say) apart from the group's key the servers give.
	signer ed25519.PrivateKey
	// jsonStarts: the rig's agents ask for no packed ReadStart, as an
	// agent older than the form does; by default they ask, as agents do.
	jsonStarts bool
	// recordsOnly: the rig's agents ask for no StoredBlock frames, as an
	// agent older than them does.
	recordsOnly bool
}

// newNodeRig starts NATS and the fake servers for pool, not serving yet.
func newNodeRig(t testing.TB, pool fakePool) *nodeRig {
	t.Helper()
	ns, err := natsd.Start(natsd.Config{Anonymous: true}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	_, signer, _ := ed25519.GenerateKey(nil)
	return &nodeRig{t: t, ns: ns, signer: signer, fake: &fakeServers{pool: pool, bs: volume.MinBlockSize, signer: signer, key: keyring.NewKey()}}
}

// serve makes the fake servers answer the node, and count its heartbeats.
func (r *nodeRig) serve() {
	nc, err := nats.Connect(r.ns.URL())
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(nc.Close)
	if _, err := wire.Serve(context.Background(), nc, wire.FromNodeWildcard, "", slog.New(slog.NewTextHandler(io.Discard, nil)), r.fake.handle); err != nil {
		r.t.Fatal(err)
	}
	if _, err := nc.Subscribe(wire.NodeBeatSubject("sn1"), func(*nats.Msg) {
		r.fake.mu.Lock()
		r.fake.hearts++
		r.fake.mu.Unlock()
	}); err != nil {
		r.t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		r.t.Fatal(err)
	}
	r.nc = nc
}

// config is the node's configuration with no pool yet.
func (r *nodeRig) config() Config {
	cfg := DefaultConfig()
	cfg.ID = "sn1"
	cfg.DataDir = r.t.TempDir()
	cfg.NATSURL = r.ns.URL()
	cfg.DataAddr = "127.0.0.1:0"
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.VolumeWaitPoll = 50 * time.Millisecond
	return cfg
}

// start starts the node (again, after the last one closed).
func (r *nodeRig) start(cfg Config) {
	r.t.Helper()
	n, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { n.Close() })
	r.node = n
}

func (r *nodeRig) waitRegistered() {
	r.t.Helper()
	poll.Until(r.t, 10*time.Second, func() error {
		if !r.node.Registered() {
			return errors.New("the node did not register")
		}
		return nil
	})
}

// labelTapes labels the pool's library's tapes, in slots 1 on, through
// the node's order, as 'cairn media label' does.
func (r *nodeRig) labelTapes(barcodes ...string) {
	r.t.Helper()
	for i, b := range barcodes {
		id := uuid.New()
		if err := wire.Request(context.Background(), r.nc, wire.NodeSubject("sn1", wire.OpNodeTapeLabel), wire.TapeLabelOrder{
			Library: r.fake.pool.library, Slot: i + 1, Barcode: b, VolumeID: id, Name: b, Pool: r.fake.pool.name, BlockSize: r.fake.bs, Created: time.Now(),
		}, &wire.TapeLabelResult{}); err != nil {
			r.t.Fatalf("label %s: %v", b, err)
		}
		r.fake.mu.Lock()
		r.fake.vols = append(r.fake.vols, &fakeVol{id: id, name: b, barcode: b, end: int64(r.fake.bs), state: "append"})
		r.fake.mu.Unlock()
	}
}

// sign signs tk as the servers would for an agent of client web to node
// sn1, for the pool, filling in what tk leaves out.
func (r *nodeRig) sign(tk ticket.Ticket) string {
	r.t.Helper()
	now := time.Now()
	tk.Client, tk.Node, tk.Pool, tk.KeyID, tk.Level = cmp.Or(tk.Client, "web"), cmp.Or(tk.Node, "sn1"), cmp.Or(tk.Pool, r.fake.pool.name), cmp.Or(tk.KeyID, "k1"), cmp.Or(tk.Level, "full")
	tk.BackupID = cmp.Or(tk.BackupID, tk.JobID)
	if tk.Issued.IsZero() {
		tk.Issued, tk.Expires = now, now.Add(10*time.Minute)
	}
	s, err := ticket.Sign(tk, r.signer)
	if err != nil {
		r.t.Fatal(err)
	}
	return s
}

// ticket is job's ticket for op, for the sessions of a restore.
func (r *nodeRig) ticket(job uint64, op ticket.Op, sessions ...string) string {
	return r.sign(ticket.Ticket{JobID: job, Op: op, Sessions: sessions})
}

// hello connects to the node's data port and says hello with tk: what
// the node answers is the caller's to read.
func (r *nodeRig) hello(tk string) *dataplane.Conn {
	r.t.Helper()
	_, fp, err := dataplane.LoadOrCreateCert(r.node.cfg.DataDir, "sn1")
	if err != nil {
		r.t.Fatal(err)
	}
	conn, err := dataplane.Dial(context.Background(), r.node.DataAddr(), fp)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { conn.Close() })
	hello := dataplane.Hello{V: dataplane.Version, Ticket: tk, Client: "web", PackedReadStart: dataplane.PackedReadStartVersion}
	if r.jsonStarts {
		hello.PackedReadStart = 0
	}
	if !r.recordsOnly {
		hello.StoredBlocks = dataplane.StoredBlockVersion
	}
	if err := conn.WriteJSON(dataplane.FrameHello, hello); err != nil {
		r.t.Fatal(err)
	}
	return conn
}

// open is hello and the node's accept, or why it refused.
func (r *nodeRig) open(tk string) (*dataplane.Conn, error) {
	conn := r.hello(tk)
	return conn, conn.ReadJSON(dataplane.FrameAccept, &dataplane.Accept{})
}

// sendOpts is how an agent sends a backup.
type sendOpts struct {
	// batch is how many bytes of records a frame holds at least before
	// it goes (0: a frame a file).
	batch int
	// rate is the most bytes a second it sends (0: as fast as it can).
	rate int64
	// broken: the agent goes away half way through the files, with no
	// End frame.
	broken bool
	// attempt is the ticket's attempt of the job (0: none, as from older
	// servers).
	attempt int
}

// appendFile appends f's records, as an agent reads a file: its header,
// its data in records of 256 KiB, its end.
func appendFile(b []byte, f testFile) []byte {
	b = volume.AppendRecord(b, volume.RecFileHeader, fileindex.AppendEntry(nil, &fileindex.Entry{Path: f.path, Type: fileindex.TypeFile, Size: int64(len(f.content))}))
	for off := 0; off < len(f.content); off += 256 << 10 {
		b = volume.AppendDataRecord(b, int64(off), f.content[off:min(off+256<<10, len(f.content))])
	}
	return volume.AppendFileEnd(b, volume.EndOK, nil)
}

// sendFiles streams fs as job's backup and returns the node's result; it
// may run on any goroutine.
func (r *nodeRig) sendFiles(job uint64, fs []testFile, o sendOpts) (*dataplane.Result, error) {
	conn, err := r.open(r.sign(ticket.Ticket{JobID: job, Op: ticket.OpBackup, Attempt: o.attempt}))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	pace := newPacer(o.rate)
	var batch []byte
	for i, f := range fs {
		if o.broken && i == len(fs)/2 {
			return nil, conn.Flush() // and the agent is gone
		}
		batch = appendFile(batch, f)
		if len(batch) <= o.batch {
			continue
		}
		if err := conn.WriteFrame(dataplane.FrameRecords, batch); err != nil {
			return nil, err
		}
		if err := pace.sent(len(batch)); err != nil {
			return nil, err
		}
		batch = batch[:0]
	}
	if len(batch) > 0 {
		if err := conn.WriteFrame(dataplane.FrameRecords, batch); err != nil {
			return nil, err
		}
	}
	return endBackup(conn, len(fs))
}

// endBackup ends a backup stream of n entries and takes the node's answer.
func endBackup(conn *dataplane.Conn, n int) (*dataplane.Result, error) {
	if err := conn.WriteJSON(dataplane.FrameEnd, dataplane.End{Entries: int64(n)}); err != nil {
		return nil, err
	}
	if err := conn.Flush(); err != nil {
		return nil, err
	}
	var res dataplane.Result
	if err := conn.ReadJSON(dataplane.FrameResult, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// pacer holds a client to rate bytes a second (none when 0) on wall time,
// the clock of a client on a network.
type pacer struct {
	clock tape.Clock
	start time.Time
	rate  int64
	total int64 // bytes sent
}

func newPacer(rate int64) *pacer {
	c := tape.RealClock()
	return &pacer{clock: c, start: c.Now(), rate: rate}
}

// sent counts n bytes sent, and waits until the rate allows the next.
func (p *pacer) sent(n int) error {
	p.total += int64(n)
	if p.rate == 0 {
		return nil
	}
	if ahead := time.Duration(p.total*int64(time.Second)/p.rate) - p.clock.Now().Sub(p.start); ahead > 0 {
		return p.clock.Sleep(context.Background(), ahead)
	}
	return nil
}

// elapsed is the wall time since the pacer started.
func (p *pacer) elapsed() time.Duration { return p.clock.Now().Sub(p.start) }

// restoreConn opens the restore stream of job, whose plan is reads.
func (r *nodeRig) restoreConn(job uint64, reads ...wire.ReadRequest) *dataplane.Conn {
	r.t.Helper()
	r.fake.plans.set(job, reads...)
	var sessions []string
	for _, rr := range reads {
		sessions = append(sessions, rr.SessionID.String())
	}
	conn, err := r.open(r.ticket(job, ticket.OpRestore, sessions...))
	if err != nil {
		r.t.Fatal(err)
	}
	return conn
}

// restore reads rr back as restore job.
func (r *nodeRig) restore(job uint64, rr wire.ReadRequest) readResult {
	r.t.Helper()
	conn := r.restoreConn(job, rr)
	defer conn.Close()
	return readOnce(r.t, conn, rr)
}
