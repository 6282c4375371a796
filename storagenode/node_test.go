package storagenode

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

// rig is a storage node with one disk pool, Default, whose servers may
// not answer yet.
type rig struct {
	*nodeRig
	pool string
}

func newRig(t *testing.T, serveNow bool, tune ...func(*Config)) *rig {
	t.Helper()
	r := &rig{nodeRig: newNodeRig(t, fakePool{name: "Default", newVolumes: true, compression: true}), pool: t.TempDir()}
	cfg := r.config()
	cfg.Pools = []PoolConfig{{Name: "Default", Dir: r.pool}}
	for _, f := range tune {
		f(&cfg)
	}
	if serveNow {
		r.serve()
	}
	r.start(cfg)
	return r
}

// A node refuses data connections until it has registered, since it cannot
// check a ticket before; the refusal is a node not there yet (node_lost),
// so the servers try the backup again, on another node or on this one once
// it registered, instead of failing it: TestClusterChaos saw 14 backups of
// a client fail in a row against a restarted node whose registration's
// answer a NATS server took with it when it was killed.
func TestRegistersWhenAServerAppearsAndRefusesUntilThen(t *testing.T) {
	r := newRig(t, false)
	conn, err := r.open(r.ticket(1, ticket.OpBackup))
	if err == nil || !strings.Contains(err.Error(), "has not registered") || wire.CodeOf(err) != wire.CodeNodeLost {
		t.Fatalf("before registration: %v (code %q), want a %s error saying the node has not registered", err, wire.CodeOf(err), wire.CodeNodeLost)
	}
	conn.Close()
	r.serve()
	r.waitRegistered()
	poll.Until(t, 5*time.Second, func() error {
		r.fake.mu.Lock()
		defer r.fake.mu.Unlock()
		if r.fake.hearts < 2 {
			return errors.New("no heartbeats")
		}
		return nil
	})
}

// A ticket that comes before the answer to the node's registration (the
// servers took the registration and sent an agent here at once) makes the
// node ask the servers for the group's keys, and the backup goes on:
// refused, it went back to the queue and waited a minute for a restart of
// the node that had already happened (TestStorageNodeKilledMidBackup).
func TestTicketBeforeTheRegistrationsAnswerIsChecked(t *testing.T) {
	r := newRig(t, true)
	r.waitRegistered()
	r.node.mu.Lock()
	r.node.ticketKeys, r.node.keysRefreshed = nil, time.Time{} // the answer not yet in
	r.node.mu.Unlock()
	if _, err := r.sendFiles(1, randomFiles(3, 2, 4<<10), sendOpts{}); err != nil {
		t.Fatalf("a backup whose ticket came before the registration's answer: %v", err)
	}
}

// TestTicketOfAKeyNotYetKnownAsksTheGroupOnce: a ticket signed with a key
// the node did not learn at registration (the group's keys changed, or it
// registered with the wrong server) makes it ask the servers for the
// group's keys once before refusing; a forged ticket is refused after that
// one question, and forged tickets in a row do not make it ask again and
// again.
func TestTicketOfAKeyNotYetKnownAsksTheGroupOnce(t *testing.T) {
	r := newRig(t, true)
	r.waitRegistered()
	_, groupKey, _ := ed25519.GenerateKey(nil)
	r.fake.mu.Lock()
	r.fake.signer = groupKey
	before := r.fake.registers
	r.fake.mu.Unlock()
	r.signer = groupKey
	conn, err := r.open(r.ticket(1, ticket.OpBackup))
	if err != nil {
		t.Fatalf("a ticket signed with the group's key the node had not learnt yet: %v", err)
	}
	conn.Close()
	r.fake.mu.Lock()
	asked := r.fake.registers - before
	r.fake.mu.Unlock()
	if asked != 1 {
		t.Fatalf("the node asked the servers %d times for the keys; want once", asked)
	}

	_, forger, _ := ed25519.GenerateKey(nil)
	r.signer = forger
	for i := range 3 {
		conn, err := r.open(r.ticket(uint64(10+i), ticket.OpBackup))
		if err == nil || !strings.Contains(err.Error(), "invalid signature") {
			t.Fatalf("forged ticket %d: %v", i, err)
		}
		conn.Close()
	}
	r.fake.mu.Lock()
	asked = r.fake.registers - before
	r.fake.mu.Unlock()
	if asked > 2 {
		t.Fatalf("three forged tickets in a row made the node ask the servers %d more times", asked-1)
	}
}

func records(t *testing.T, n int) []byte {
	var out []byte
	for i := 0; i < n; i++ {
		e := fileindex.Entry{Path: "/d/f" + string(rune('a'+i%26)) + strings.Repeat("x", i), Type: fileindex.TypeFile, Size: 200 << 10}
		out = volume.AppendRecord(out, volume.RecFileHeader, fileindex.AppendEntry(nil, &e))
		data := make([]byte, 200<<10)
		for j := range data {
			data[j] = byte(j * (i + 7))
		}
		out = volume.AppendDataRecord(out, 0, data)
		out = volume.AppendFileEnd(out, volume.EndReadError, nil)
	}
	return out
}

func TestAgentVanishingMidStreamCutsTheSessionOff(t *testing.T) {
	r := newRig(t, true)
	r.waitRegistered()
	conn, err := r.open(r.ticket(7, ticket.OpBackup))
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.WriteFrame(dataplane.FrameRecords, records(t, 8)); err != nil {
		t.Fatal(err)
	}
	conn.Flush()
	conn.Close() // the agent dies: no End frame
	poll.Until(t, 10*time.Second, func() error {
		r.fake.mu.Lock()
		defer r.fake.mu.Unlock()
		if len(r.fake.aborts) != 1 {
			return errors.New("no abort reported")
		}
		a := r.fake.aborts[0]
		if a.JobID != 7 || a.Error.Code != wire.CodeAgentLost || !strings.Contains(a.Error.Message, "disconnected") {
			t.Fatalf("abort %+v", a)
		}
		return nil
	})
	// The volume holds its label and nothing of the failed session.
	poll.Until(t, 5*time.Second, func() error {
		st, err := os.Stat(filepath.Join(r.pool, "Default-0001.cvol"))
		if err != nil {
			return err
		}
		if st.Size() != 64<<10 {
			return errors.New("volume not cut back to its label")
		}
		return nil
	})
	if len(r.fake.commits) != 0 {
		t.Fatal("a broken session was committed")
	}
}

func TestClassifyNamesThePool(t *testing.T) {
	s := &session{stream: stream{n: &Node{cfg: Config{ID: "sn1"}}, t: ticket.Ticket{Pool: "Default"}}}
	we := s.classify(&os.PathError{Op: "write", Path: "/p/v.cvol", Err: syscall.ENOSPC})
	if we.Code != wire.CodePoolFull || !strings.Contains(we.Message, "disk pool Default on storage node sn1 is full") || we.Hint == "" {
		t.Fatalf("%+v", we)
	}
}

// A full disk under the node's own temporary files (a backup's index
// spill file, a consolidation's staging) is named as such, not as the
// pool: they may be filesystems apart, and freeing the pool's would change
// nothing.
func TestClassifyNamesTheNodesTempDirectory(t *testing.T) {
	s := &session{stream: stream{n: &Node{cfg: Config{ID: "sn1", DataDir: "/var/lib/cairn"}}, t: ticket.Ticket{Pool: "Default"}}}
	const dir = "/var/lib/cairn/tmp"
	for what, cause := range map[string]error{
		"the index spill file": fmt.Errorf("spill index segment: %w", &os.PathError{Op: "write", Path: dir + "/(index spill file)", Err: syscall.ENOSPC}),
		"making it":            &os.PathError{Op: "make", Path: dir + "/(index spill file)", Err: syscall.ENOSPC},
		"a staging file":       fmt.Errorf("stage the changes of session 1: %w", &os.PathError{Op: "write", Path: dir + "/(staging file)", Err: syscall.ENOSPC}),
	} {
		we := s.classify(fmt.Errorf("session 1: %w", cause))
		if we.Code != wire.CodeDiskFull || !strings.Contains(we.Message, "storage node sn1 has no room for its temporary files") || !strings.Contains(we.Message, " in "+dir+": ") ||
			!strings.Contains(we.Hint, "free space in "+dir) || !errors.Is(we, syscall.ENOSPC) {
			t.Errorf("%s: %+v", what, we)
		}
	}
	// The pool's own files are the pool's.
	if we := s.classify(&os.PathError{Op: "write", Path: "/var/lib/cairn/tmpfoo/v.cvol", Err: syscall.ENOSPC}); we.Code != wire.CodePoolFull {
		t.Errorf("a volume beside the node's tmp: %+v", we)
	}
}

// noisySegment is a segment of n entries under dir whose extended
// attributes hardly compress.
func noisySegment(t *testing.T, dir string, n int) fileindex.Segment {
	b := fileindex.NewSegmentBuilder(64 << 20)
	for i := range n {
		e := fileindex.Entry{Path: fmt.Sprintf("%s/%06d", dir, i), Type: fileindex.TypeFile,
			Xattrs: []fileindex.Xattr{{Name: "user.noise", Value: []byte(uuid.NewString() + uuid.NewString() + uuid.NewString() + uuid.NewString())}}}
		if err := b.Add(&e); err != nil {
			t.Fatal(err)
		}
	}
	return b.Flush()
}

// checkSegments fails t unless out holds want's entries, in order, in
// segments that each fit a message.
func checkSegments(t *testing.T, out []fileindex.Segment, want []fileindex.Segment) {
	t.Helper()
	var got, all []string
	for i, s := range out {
		if len(s.Data) > wire.MaxIndexSegmentBytes {
			t.Fatalf("segment of %d bytes left", len(s.Data))
		}
		msg, err := json.Marshal(wire.SessionIndexReq{JobID: 1 << 60, No: i, First: fileindex.Path(s.First), Last: fileindex.Path(s.Last), Count: s.Count, Data: s.Data})
		if err != nil || len(msg) > 1<<20 {
			t.Fatalf("segment %d goes in a message of %d bytes (%v), over NATS's default max_payload", i, len(msg), err)
		}
		entries, err := fileindex.DecodeSegment(s.Data)
		if err != nil || len(entries) != s.Count || entries[0].Path != s.First || entries[len(entries)-1].Path != s.Last {
			t.Fatalf("segment %q..%q of %d: %d entries, %v", s.First, s.Last, s.Count, len(entries), err)
		}
		for _, e := range entries {
			got = append(got, e.Path)
		}
	}
	for _, s := range want {
		entries, _ := fileindex.DecodeSegment(s.Data)
		for _, e := range entries {
			all = append(all, e.Path)
		}
	}
	if !slices.Equal(got, all) {
		t.Fatalf("%d entries in the catalog's segments, want the session's %d in order", len(got), len(all))
	}
}

// Entries that hardly compress go in segments that still fit a message: one
// too big is cut up, and each goes in a message NATS takes by default.
func TestFitSegmentsSplitsOversized(t *testing.T) {
	in := []fileindex.Segment{noisySegment(t, "/x", 12000), noisySegment(t, "/y", 12000)}
	if len(in[0].Data) <= wire.MaxIndexSegmentBytes {
		t.Fatalf("test segment of %d bytes does not need splitting", len(in[0].Data))
	}
	out, err := fitSegments(in)
	if err != nil {
		t.Fatal(err)
	}
	checkSegments(t, out, in)
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	err := c.Validate()
	for _, want := range []string{"data directory", "no disk pool"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
	c.DataDir = "/d"
	c.Pools = []PoolConfig{{Name: "A", Dir: "rel"}, {Name: "A", Dir: "/x"}}
	err = c.Validate()
	for _, want := range []string{"not absolute", "given twice"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
}

func TestAnswersOrdersAndGarbage(t *testing.T) {
	r := newRig(t, true)
	nc, err := nats.Connect(r.ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var st wire.NodeStatus
	if err := wire.Request(context.Background(), nc, wire.NodeSubject("sn1", wire.OpNodeStatus), wire.Empty{}, &st); err != nil {
		t.Fatal(err)
	}
	if st.ID != "sn1" || len(st.Pools) != 1 || st.Pools[0].TotalBytes == 0 {
		t.Fatalf("status %+v", st)
	}
	for data, code := range map[string]string{"garbage": wire.CodeBadRequest, `{"v":1}`: wire.CodeUnknownOperation} {
		subj := wire.NodeSubject("sn1", "no.such.order")
		if data == "garbage" {
			subj = wire.NodeSubject("sn1", wire.OpNodeStatus)
		}
		m, err := nc.Request(subj, []byte(data), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := wire.Unmarshal(m.Data); wire.CodeOf(err) != code {
			t.Fatalf("%q on %s: %v, want %s", data, subj, err, code)
		}
	}
}

func TestSilentAgentTimesOut(t *testing.T) {
	r := newRig(t, true, func(c *Config) { c.IdleTimeout = time.Second })
	r.waitRegistered()
	conn, err := r.open(r.ticket(9, ticket.OpBackup))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.WriteFrame(dataplane.FrameRecords, records(t, 2))
	conn.Flush()
	// The agent hangs: it neither sends nor closes.
	poll.Until(t, 10*time.Second, func() error {
		r.fake.mu.Lock()
		defer r.fake.mu.Unlock()
		if len(r.fake.aborts) != 1 {
			return errors.New("no abort reported")
		}
		if a := r.fake.aborts[0]; a.Error.Code != wire.CodeTimeout || !strings.Contains(a.Error.Message, "sent nothing for 1s") {
			t.Fatalf("abort %+v", a)
		}
		return nil
	})
}

// TestSessionNamesItsAttempt: a backup's index segments and its commit name
// the attempt of its ticket, so the servers can refuse those of an attempt
// that is over when the next one runs on this node (server:
// TestSessionOfAnAttemptThatIsOverIsNotCommitted).
func TestSessionNamesItsAttempt(t *testing.T) {
	r := newRig(t, true)
	r.waitRegistered()
	if _, err := r.sendFiles(5, randomFiles(3, 2, 4<<10), sendOpts{attempt: 3}); err != nil {
		t.Fatal(err)
	}
	r.fake.mu.Lock()
	defer r.fake.mu.Unlock()
	if len(r.fake.segmentAttempts) == 0 || len(r.fake.commits) != 1 {
		t.Fatalf("%d index segments and %d commits", len(r.fake.segmentAttempts), len(r.fake.commits))
	}
	for i, a := range r.fake.segmentAttempts {
		if a != 3 {
			t.Errorf("index segment %d names attempt %d, want 3", i, a)
		}
	}
	if a := r.fake.commits[0].Attempt; a != 3 {
		t.Errorf("the commit names attempt %d, want 3", a)
	}
}

// TestIndexIsSentWhileTheSessionIsWritten: the node sends a session's
// index segments to the servers as the blocks they point into are written,
// before the agent's End, numbered in order; the commit counts them all.
func TestIndexIsSentWhileTheSessionIsWritten(t *testing.T) {
	r := newRig(t, true)
	r.waitRegistered()
	conn, err := r.open(r.ticket(6, ticket.OpBackup))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	files := randomFiles(4, 30000, 16)
	var batch []byte
	for i, f := range files {
		batch = appendFile(batch, f)
		if len(batch) > 256<<10 || i == len(files)-1 {
			if err := conn.WriteFrame(dataplane.FrameRecords, batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	// No End yet: the session is still open, and what is on the volume is
	// indexed already.
	poll.Until(t, 20*time.Second, func() error {
		r.fake.mu.Lock()
		defer r.fake.mu.Unlock()
		if n := len(r.fake.segments[6]); n < 2 {
			return fmt.Errorf("%d index segments sent while the session is written", n)
		}
		return nil
	})
	if _, err := endBackup(conn, len(files)); err != nil {
		t.Fatal(err)
	}
	r.fake.mu.Lock()
	defer r.fake.mu.Unlock()
	segs := r.fake.segments[6]
	if len(r.fake.commits) != 1 || r.fake.commits[0].Segments != len(segs) {
		t.Fatalf("%d commits, %d segments sent", len(r.fake.commits), len(segs))
	}
	checkIndexSent(t, segs, files)
}

// TestRefusedIndexSegmentFailsTheSession: a segment the servers refuse
// fails the session with their reason at once, not at its next segment,
// which a large file may put far off (here a file of 256 MiB after the
// small ones); no segment comes after the abort, and nothing is committed.
func TestRefusedIndexSegmentFailsTheSession(t *testing.T) {
	r := newRig(t, true)
	r.waitRegistered()
	r.fake.mu.Lock()
	r.fake.segmentErr = func(req wire.SessionIndexReq) error {
		// The 30,000 small files make three full segments (0-2) and the
		// start of a fourth, cut only at Close: after the third, nothing
		// but the refusal itself can stop the session before its end.
		if req.No == 2 {
			return wire.Errorf(wire.CodeWrongState, "", "backup 6 is aborted: it takes no more index segments")
		}
		return nil
	}
	r.fake.mu.Unlock()
	conn, err := r.open(r.ticket(6, ticket.OpBackup))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var batch []byte
	for _, f := range randomFiles(4, 30000, 16) {
		if batch = appendFile(batch, f); len(batch) > 256<<10 {
			if err := conn.WriteFrame(dataplane.FrameRecords, batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	const tail = 256 << 20
	chunk := randomFiles(5, 1, 256<<10)[0].content // a Data record's most
	batch = volume.AppendRecord(batch, volume.RecFileHeader, fileindex.AppendEntry(nil, &fileindex.Entry{Path: "/zz/big", Type: fileindex.TypeFile, Size: tail}))
	sent := 0
	for ; sent < tail; sent += len(chunk) {
		batch = volume.AppendDataRecord(batch, int64(sent), chunk)
		if err := conn.WriteFrame(dataplane.FrameRecords, batch); err != nil {
			break // the node ended the stream
		}
		batch = batch[:0]
	}
	if sent < tail {
		t.Logf("the node ended the stream after %d MiB of the large file", sent>>20)
	} else {
		_, err = endBackup(conn, 30001)
		t.Fatalf("the node took the whole large file after the refusal (and then said %v)", err)
	}
	poll.Until(t, 10*time.Second, func() error {
		r.fake.mu.Lock()
		defer r.fake.mu.Unlock()
		if len(r.fake.aborts) == 0 {
			return errors.New("no abort reported")
		}
		return nil
	})
	r.fake.mu.Lock()
	defer r.fake.mu.Unlock()
	if len(r.fake.aborts) != 1 || !strings.Contains(r.fake.aborts[0].Error.Message, "takes no more index segments") || len(r.fake.commits) != 0 || r.fake.lateSegments != 0 {
		t.Fatalf("aborts %+v, %d commits, %d segments after the abort", r.fake.aborts, len(r.fake.commits), r.fake.lateSegments)
	}
}

// TestIndexSegmentNotTakenInTimeGoesWithTheCommit: servers out of reach for
// longer than ServerWait while the session is written (here, a segment's
// request that never gets its answer) do not fail the backup: the node
// stops sending while it writes, and the segments not sent go with the
// commit, from the one whose outcome it does not know.
func TestIndexSegmentNotTakenInTimeGoesWithTheCommit(t *testing.T) {
	r := newRig(t, true, func(c *Config) { c.ServerWait = 300 * time.Millisecond })
	r.waitRegistered()
	hold := make(chan struct{})
	defer close(hold)
	held, asked := false, 0
	r.fake.mu.Lock()
	r.fake.segmentErr = func(req wire.SessionIndexReq) error {
		if req.No != 1 {
			return nil
		}
		r.fake.mu.Lock()
		asked++
		first := !held
		held = true
		r.fake.mu.Unlock()
		if first {
			<-hold // the servers never answer this one
			return wire.Errorf(wire.CodeUnavailable, "", "too late")
		}
		return nil
	}
	r.fake.mu.Unlock()
	files := randomFiles(4, 30000, 16)
	if _, err := r.sendFiles(6, files, sendOpts{batch: 256 << 10}); err != nil {
		t.Fatal(err)
	}
	r.fake.mu.Lock()
	defer r.fake.mu.Unlock()
	segs := r.fake.segments[6]
	if len(r.fake.commits) != 1 || r.fake.commits[0].Segments != len(segs) || len(segs) < 3 || asked != 2 {
		t.Fatalf("%d commits, %d segments taken, segment 1 asked %d times", len(r.fake.commits), len(segs), asked)
	}
	checkIndexSent(t, segs, files)
}

// checkIndexSent fails the test unless the segments the servers took hold
// an entry for each of files, in order, and nothing else.
func checkIndexSent(t *testing.T, segs [][]byte, files []testFile) {
	t.Helper()
	n := 0
	for _, data := range segs {
		es, err := fileindex.DecodeSegment(data)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if n >= len(files) || e.Path != files[n].path {
				t.Fatalf("entry %d of the index sent is %q, not the file sent there", n, e.Path)
			}
			n++
		}
	}
	if n != len(files) {
		t.Fatalf("%d entries in the index sent, want %d", n, len(files))
	}
}
