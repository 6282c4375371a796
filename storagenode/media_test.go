package storagenode

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
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
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/natsd"
	"github.com/cairnbackup/cairn/storagenode/library"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

// mediumCase is one medium in the table every medium runs: how pool P of
// it is configured, what an operator does before the first backup, and
// what a failed session must leave on it.
type mediumCase struct {
	name string
	// pool adds pool P of the medium to the node's configuration and
	// tells the fake catalog how it grants the pool's volumes.
	pool func(t testing.TB, cfg *Config, cat *mediaCatalog)
	// ready runs once the node registered (labels tapes, say).
	ready func(t testing.TB, r *mediaRig)
	// rolledBack checks what the medium keeps of a failed session once
	// the servers heard of it: nothing that counts, and nothing held.
	rolledBack func(t testing.TB, r *mediaRig)
}

// mediaCases are the storage node's media. A new medium adds its line.
var mediaCases = []mediumCase{
	{name: "disk", pool: diskCase, rolledBack: diskRolledBack},
	{name: "tape", pool: tapeCase(false), ready: labelTapes, rolledBack: tapeRolledBack},
	{name: "tape+spool", pool: tapeCase(true), ready: labelTapes, rolledBack: tapeRolledBack},
}

// Every medium takes the same backup, gives it back, rolls back a
// session its agent broke off (the volume keeps nothing of it that
// counts and nothing stays held), and takes the next backup where the
// first one ended.
func TestEveryMediumBacksUpRestoresAndRollsBack(t *testing.T) {
	for _, mc := range mediaCases {
		t.Run(mc.name, func(t *testing.T) {
			r := newMediaRig(t, mc)
			first := mixedFiles()
			if err := r.backup(1, first, false); err != nil {
				t.Fatal(err)
			}
			r.restore(2, r.cat.readRequest(t, 1)).check(t, r.cat.readRequest(t, 1), first, noLoss, "")
			end := r.cat.sessionEnd(t, 1)

			// The agent of job 3 goes away in the middle of its stream.
			if err := r.backup(3, randomFiles(33, 6, 700<<10), true); err != nil {
				t.Fatal(err)
			}
			poll.Until(t, 20*time.Second, func() error {
				r.cat.mu.Lock()
				defer r.cat.mu.Unlock()
				if len(r.cat.aborts) == 0 {
					return errors.New("the broken session was not reported")
				}
				if a := r.cat.aborts[0]; a.JobID != 3 || a.Error.Code != wire.CodeAgentLost {
					return fmt.Errorf("abort %+v", a)
				}
				return nil
			})
			if mc.rolledBack != nil {
				mc.rolledBack(t, r)
			}

			next := randomFiles(44, 5, 300<<10)
			if err := r.backup(4, next, false); err != nil {
				t.Fatal(err)
			}
			c := r.cat.commit(t, 4)
			if p := c.Parts[0]; p.VolumeID != end.VolumeID || p.VolumeStart != end.End {
				t.Fatalf("the next session starts on volume %s at %d; the first ended on volume %s at %d", p.VolumeID, p.VolumeStart, end.VolumeID, end.End)
			}
			r.cat.mu.Lock()
			for _, c := range r.cat.commits {
				if c.JobID == 3 {
					t.Errorf("the broken session was committed: %+v", c)
				}
			}
			r.cat.mu.Unlock()
			r.restore(5, r.cat.readRequest(t, 1)).check(t, r.cat.readRequest(t, 1), first, noLoss, "")
			r.restore(6, r.cat.readRequest(t, 4)).check(t, r.cat.readRequest(t, 4), next, noLoss, "")
		})
	}
}

func noLoss(fileindex.Location) bool { return false }

func diskCase(t testing.TB, cfg *Config, cat *mediaCatalog) {
	cfg.Pools = append(cfg.Pools, PoolConfig{Name: "P", Dir: filepath.Join(t.TempDir(), "P")})
	cat.typ, cat.newVolumes = "disk", true
}

// diskRolledBack: every volume file ends at its committed end.
func diskRolledBack(t testing.TB, r *mediaRig) {
	r.cat.mu.Lock()
	defer r.cat.mu.Unlock()
	for _, v := range r.cat.vols {
		st, err := os.Stat(filepath.Join(r.node.cfg.Pools[0].Dir, v.name+".cvol"))
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() != v.end {
			t.Fatalf("volume %s is %d bytes long; %d are committed", v.name, st.Size(), v.end)
		}
	}
}

func tapeCase(spool bool) func(testing.TB, *Config, *mediaCatalog) {
	return func(t testing.TB, cfg *Config, cat *mediaCatalog) {
		cfg.Libraries = append(cfg.Libraries, library.Config{Name: "lib1", Emulated: &library.EmulatedConfig{
			Dir: filepath.Join(t.TempDir(), "lib1"), Drives: 1, Slots: 4, MailSlots: 1, Barcodes: []string{"CRN001L9", "CRN002L9"},
			CartridgeBytes: 1 << 30, EarlyWarningBytes: 64 << 20, VirtualClock: true,
		}, MountPoll: 20 * time.Millisecond})
		p := TapePoolConfig{Name: "P", Library: "lib1"}
		if spool {
			p.SpoolDir, p.SpoolChunkBytes = filepath.Join(t.TempDir(), "spool"), 1<<20
		}
		cfg.TapePools = append(cfg.TapePools, p)
		cat.typ, cat.library = "tape", "lib1"
	}
}

// labelTapes labels the library's tapes for pool P through the node's
// order, as 'cairn media label' does.
func labelTapes(t testing.TB, r *mediaRig) {
	for i, b := range []string{"CRN001L9", "CRN002L9"} {
		id := uuid.New()
		if err := wire.Request(context.Background(), r.nc, wire.NodeSubject("sn1", wire.OpNodeTapeLabel), wire.TapeLabelOrder{
			Library: "lib1", Slot: i + 1, Barcode: b, VolumeID: id, Name: b, Pool: "P", BlockSize: r.cat.bs, Created: time.Now(),
		}, &wire.TapeLabelResult{}); err != nil {
			t.Fatalf("label %s: %v", b, err)
		}
		r.cat.mu.Lock()
		r.cat.vols = append(r.cat.vols, &mediaVol{id: id, name: b, barcode: b, end: int64(r.cat.bs), state: "append"})
		r.cat.mu.Unlock()
	}
}

// tapeRolledBack: the drive is free again, and the spool holds nothing.
func tapeRolledBack(t testing.TB, r *mediaRig) {
	poll.Until(t, 10*time.Second, func() error {
		st, err := r.node.Library("lib1").Status(context.Background())
		if err != nil {
			return err
		}
		for _, d := range st.Drives {
			if d.State != "idle" {
				return fmt.Errorf("drive %d is %s (%s)", d.Number, d.State, d.Doing)
			}
		}
		return nil
	})
	if dir := r.node.cfg.TapePools[0].SpoolDir; dir != "" {
		if left := spoolFiles(t, dir); len(left) > 0 {
			t.Fatalf("spool files left: %v", left)
		}
	}
}

// mediaVol is the fake catalog's view of one volume.
type mediaVol struct {
	id            uuid.UUID
	name, barcode string
	end           int64
	starts        []int64
	state         string // "append", "full", "bad"
}

// mediaCatalog answers a storage node as the servers would for pool P,
// of any medium: it grants the pool's appendable volumes in order (and,
// for a medium whose volumes the node labels, a new one when none is
// left), records what the node reports, and plans reads from commits.
type mediaCatalog struct {
	mu         sync.Mutex
	signer     ed25519.PrivateKey
	key        []byte
	typ        string // the pool's medium type
	library    string // the library of a tape pool
	newVolumes bool   // the node labels new volumes the catalog names
	bs         int
	vols       []*mediaVol
	commits    []wire.SessionCommitReq
	segments   map[uint64][][]byte
	aborts     []wire.SessionAbortReq
	plans      planBook
}

func (c *mediaCatalog) vol(id uuid.UUID) *mediaVol {
	for _, v := range c.vols {
		if v.id == id {
			return v
		}
	}
	return nil
}

func (c *mediaCatalog) handle(_ context.Context, subject string, body json.RawMessage) (any, error) {
	_, op, _ := wire.SplitFrom(subject)
	if op == wire.OpRestorePlan {
		return c.plans.page(body)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch op {
	case wire.OpNodeRegister:
		pub := c.signer.Public().(ed25519.PublicKey)
		return wire.NodeRegisterResp{TicketKey: pub, TicketKeys: [][]byte{pub}}, nil
	case wire.OpKeyGet:
		return wire.KeyGetResp{ID: "k1", Key: c.key}, nil
	case wire.OpVolumeAcquire:
		req, err := wire.Decode[wire.VolumeAcquireReq](body)
		if err != nil {
			return nil, err
		}
		if v := c.vol(req.Full); v != nil {
			v.state = "full"
		}
		if v := c.vol(req.Bad); v != nil {
			v.state = "bad"
		}
		g := wire.VolumeGrant{Pool: req.Pool, BlockSize: c.bs, BlockRawSize: volume.MinBlockRawSize, Compression: true, MediaType: c.typ, Library: c.library}
		for _, v := range c.vols {
			if v.state == "append" && !slices.Contains(req.Used, v.id) {
				g.ID, g.Name, g.Barcode, g.Bytes, g.Parts = v.id, v.name, v.barcode, v.end, len(v.starts)
				return g, nil
			}
		}
		if !c.newVolumes {
			return nil, wire.Errorf(wire.CodeNoVolume, "label volumes", "no appendable volume in pool %s", req.Pool)
		}
		v := &mediaVol{id: uuid.New(), name: fmt.Sprintf("P-%04d", len(c.vols)+1), end: int64(c.bs), state: "append"}
		c.vols = append(c.vols, v)
		g.ID, g.Name, g.New = v.id, v.name, true
		return g, nil
	case wire.OpVolumeLabeled, wire.OpJobWaiting, wire.OpTapeMoved:
		return wire.Empty{}, nil
	case wire.OpSessionIndex:
		req, err := wire.Decode[wire.SessionIndexReq](body)
		if err != nil {
			return nil, err
		}
		if c.segments == nil {
			c.segments = map[uint64][][]byte{}
		}
		c.segments[req.JobID] = append(c.segments[req.JobID], req.Data)
		return wire.Empty{}, nil
	case wire.OpSessionCommit:
		req, err := wire.Decode[wire.SessionCommitReq](body)
		if err != nil {
			return nil, err
		}
		c.commits = append(c.commits, req)
		for _, p := range req.Parts {
			v := c.vol(p.VolumeID)
			v.starts = append(v.starts, p.VolumeStart)
			if v.state != "bad" {
				v.end = p.End
			}
		}
		return wire.Empty{}, nil
	case wire.OpSessionAbort:
		req, err := wire.Decode[wire.SessionAbortReq](body)
		if err != nil {
			return nil, err
		}
		c.aborts = append(c.aborts, req)
		return wire.Empty{}, nil
	}
	return nil, wire.Errorf(wire.CodeUnknownOperation, "", "fake catalog: %s", op)
}

func (c *mediaCatalog) commit(t testing.TB, job uint64) wire.SessionCommitReq {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cm := range c.commits {
		if cm.JobID == job {
			return cm
		}
	}
	t.Fatalf("job %d was not committed; aborts %+v", job, c.aborts)
	return wire.SessionCommitReq{}
}

// sessionEnd is the last part of job's session: where the next session
// on its volume starts.
func (c *mediaCatalog) sessionEnd(t testing.TB, job uint64) wire.SessionPart {
	parts := c.commit(t, job).Parts
	return parts[len(parts)-1]
}

// readRequest is what the servers' restore plan asks the node for: every
// entry of job's session, its parts located as the catalog has them.
func (c *mediaCatalog) readRequest(t testing.TB, job uint64) wire.ReadRequest {
	t.Helper()
	cm := c.commit(t, job)
	c.mu.Lock()
	defer c.mu.Unlock()
	rr := wire.ReadRequest{SessionID: cm.SessionID, KeyID: "k1"}
	for _, p := range cm.Parts {
		v := c.vol(p.VolumeID)
		var starts []int64
		for _, s := range v.starts {
			if s <= p.VolumeStart {
				starts = append(starts, s)
			}
		}
		rr.Parts = append(rr.Parts, wire.ReadPart{VolumeID: p.VolumeID, Volume: v.name, Pool: "P", VolumeStart: p.VolumeStart,
			DataStart: p.DataStart, StreamStart: p.StreamStart, StreamEnd: p.StreamEnd, MediaType: c.typ, Barcode: v.barcode,
			Library: c.library, BlockSize: c.bs, PartStarts: starts, VolumeBytes: v.end})
	}
	for _, seg := range c.segments[job] {
		es, err := fileindex.DecodeSegment(seg)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			rr.Locs = append(rr.Locs, wire.ReadLoc{Path: fileindex.Path(e.Path), Loc: e.Loc})
		}
	}
	return rr
}

// mediaRig is NATS, the fake catalog and a storage node serving pool P
// of one medium.
type mediaRig struct {
	t      testing.TB
	nc     *nats.Conn
	node   *Node
	cat    *mediaCatalog
	signer ed25519.PrivateKey
}

func newMediaRig(t testing.TB, mc mediumCase) *mediaRig {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ns, err := natsd.Start(natsd.Config{Anonymous: true}, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	_, signer, _ := ed25519.GenerateKey(nil)
	r := &mediaRig{t: t, signer: signer, cat: &mediaCatalog{signer: signer, key: keyring.NewKey(), bs: volume.MinBlockSize}}
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	r.nc = nc
	if _, err := wire.Serve(context.Background(), nc, wire.FromNodeWildcard, "", logger, r.cat.handle); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.ID = "sn1"
	cfg.DataDir = t.TempDir()
	cfg.NATSURL = ns.URL()
	cfg.DataAddr = "127.0.0.1:0"
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.VolumeWaitPoll = 50 * time.Millisecond
	mc.pool(t, &cfg, r.cat)
	n, err := New(cfg, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	r.node = n
	poll.Until(t, 10*time.Second, func() error {
		if !n.Registered() {
			return errors.New("the node did not register")
		}
		return nil
	})
	if mc.ready != nil {
		mc.ready(t, r)
	}
	return r
}

func (r *mediaRig) dial(job uint64, op ticket.Op, sessions ...string) (*dataplane.Conn, error) {
	now := time.Now()
	tk, err := ticket.Sign(ticket.Ticket{JobID: job, Client: "web", Node: "sn1", Op: op, Pool: "P", BackupID: job, Level: "full",
		KeyID: "k1", Issued: now, Expires: now.Add(10 * time.Minute), Sessions: sessions}, r.signer)
	if err != nil {
		return nil, err
	}
	_, fp, err := dataplane.LoadOrCreateCert(r.node.cfg.DataDir, "sn1")
	if err != nil {
		return nil, err
	}
	conn, err := dataplane.Dial(context.Background(), r.node.DataAddr(), fp)
	if err != nil {
		return nil, err
	}
	if err := conn.WriteJSON(dataplane.FrameHello, dataplane.Hello{V: dataplane.Version, Ticket: tk, Client: "web"}); err != nil {
		conn.Close()
		return nil, err
	}
	if err := conn.ReadJSON(dataplane.FrameAccept, &dataplane.Accept{}); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// backup streams fs as job's backup; broken stops the agent half way,
// with no End frame.
func (r *mediaRig) backup(job uint64, fs []testFile, broken bool) error {
	conn, err := r.dial(job, ticket.OpBackup)
	if err != nil {
		return err
	}
	defer conn.Close()
	for i, f := range fs {
		if broken && i == len(fs)/2 {
			return conn.Flush() // and the agent is gone
		}
		b := volume.AppendRecord(nil, volume.RecFileHeader, fileindex.AppendEntry(nil, &fileindex.Entry{Path: f.path, Type: fileindex.TypeFile, Size: int64(len(f.content))}))
		for off := 0; off < len(f.content); off += 256 << 10 {
			b = volume.AppendDataRecord(b, int64(off), f.content[off:min(off+256<<10, len(f.content))])
		}
		if err := conn.WriteFrame(dataplane.FrameRecords, volume.AppendFileEnd(b, volume.EndOK, nil)); err != nil {
			return err
		}
	}
	if err := conn.WriteJSON(dataplane.FrameEnd, dataplane.End{Entries: int64(len(fs))}); err != nil {
		return err
	}
	return conn.ReadJSON(dataplane.FrameResult, &dataplane.Result{})
}

// restore reads rr back as restore job.
func (r *mediaRig) restore(job uint64, rr wire.ReadRequest) readResult {
	r.t.Helper()
	r.cat.plans.set(job, rr)
	conn, err := r.dial(job, ticket.OpRestore, rr.SessionID.String())
	if err != nil {
		r.t.Fatal(err)
	}
	defer conn.Close()
	return readOnce(r.t, conn, rr)
}
