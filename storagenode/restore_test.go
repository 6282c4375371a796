package storagenode

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/corrupt"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

// readResult is what an agent makes of one read: the entries that came
// whole and were not named lost, the ones named lost, and ReadDone.
type readResult struct {
	whole map[string][]byte
	lost  map[string]string // path -> reason
	done  dataplane.ReadDone
	// stored counts the StoredBlock frames that came.
	stored int
}

// storedRecords decompresses a StoredBlock frame as an agent does.
func storedRecords(t testing.TB, p []byte) []byte {
	t.Helper()
	codec, n, data, err := dataplane.ParseStoredBlock(p)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := volume.Decompress(nil, volume.Flags(codec), n, data)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// readOnce takes in the node's answer to rr, the next read of the plan,
// as an agent does: records of an entry named lost are thrown away. The
// read opens with its entries' paths, and nothing of where they lie.
func readOnce(t testing.TB, conn *dataplane.Conn, rr wire.ReadRequest) readResult {
	t.Helper()
	typ, payload, err := conn.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	var start dataplane.ReadStart
	if typ == dataplane.FrameReadStartPacked {
		start, err = dataplane.UnpackReadStart(payload)
	} else {
		err = dataplane.DecodeJSON(typ, payload, dataplane.FrameReadStart, &start)
	}
	if err != nil {
		t.Fatal(err)
	}
	if start.SessionID != rr.SessionID || len(start.Entries) != len(rr.Locs) {
		t.Fatalf("read of session %s with %d entries, want %s with %d", start.SessionID, len(start.Entries), rr.SessionID, len(rr.Locs))
	}
	for i, e := range start.Entries {
		if e.Path != rr.Locs[i].Path || e.Ancestor != rr.Locs[i].Ancestor {
			t.Fatalf("entry %d of the read is %+v, want %s", i, e, rr.Locs[i].Path)
		}
	}
	res, err := readAnswer(t, conn)
	if err != nil {
		t.Fatalf("the answer to a read ended before its ReadDone: %v", err)
	}
	return res
}

// readAnswer takes in the answer to a read, as an agent does, up to its
// ReadDone; err is why it ended before: the error the node sent, or the
// connection's. Every test that reads a restore stream reads it here.
func readAnswer(t testing.TB, conn *dataplane.Conn) (readResult, error) {
	t.Helper()
	res := readResult{whole: map[string][]byte{}, lost: map[string]string{}}
	content := map[string][]byte{}
	ended := map[string]bool{}
	cur := ""
	for {
		typ, payload, err := conn.ReadFrame()
		if err != nil {
			return res, err
		}
		switch typ {
		case dataplane.FrameReadStart, dataplane.FrameReadStartPacked: // readOnce checks it
		case dataplane.FrameRecords, dataplane.FrameStoredBlock:
			if typ == dataplane.FrameStoredBlock {
				payload = storedRecords(t, payload)
				res.stored++
			}
			for len(payload) > 0 {
				rt, body, n, err := volume.ParseRecord(payload)
				if err != nil {
					t.Fatal(err)
				}
				switch rt {
				case volume.RecFileHeader:
					e, err := fileindex.DecodeEntry(body)
					if err != nil {
						t.Fatal(err)
					}
					cur = e.Path
					content[cur] = []byte{}
				case volume.RecData:
					_, d, err := volume.DecodeData(body)
					if err != nil {
						t.Fatal(err)
					}
					content[cur] = append(content[cur], d...)
				case volume.RecFileEnd:
					ended[cur] = true
				}
				payload = payload[n:]
			}
		case dataplane.FrameDamaged:
			var d dataplane.Damaged
			if err := json.Unmarshal(payload, &d); err != nil {
				t.Fatal(err)
			}
			for _, p := range fileindex.Strings(d.Paths) {
				if _, dup := res.lost[p]; dup {
					t.Errorf("%s named lost twice", p)
				}
				res.lost[p] = d.Reason
			}
		case dataplane.FrameReadDone:
			if err := json.Unmarshal(payload, &res.done); err != nil {
				t.Fatal(err)
			}
			for p, c := range content {
				if _, lost := res.lost[p]; !lost && ended[p] {
					res.whole[p] = c
				}
			}
			return res, nil
		case dataplane.FrameError:
			return res, dataplane.DecodeJSON(typ, payload, dataplane.FrameReadDone, nil)
		default:
			t.Fatalf("unexpected frame %d", typ)
		}
	}
}

// check holds every entry of rr to its fate: lost (named, with a reason
// that says want) when lose says so, else back whole and byte for byte;
// and ReadDone counts exactly that.
func (res readResult) check(t testing.TB, rr wire.ReadRequest, fs []testFile, lose func(fileindex.Location) bool, want string) {
	t.Helper()
	content := map[string][]byte{}
	for _, f := range fs {
		content[f.path] = f.content
	}
	lost := 0
	for _, l := range rr.Locs {
		p := string(l.Path)
		reason, named := res.lost[p]
		switch {
		case lose(l.Loc) && !named:
			t.Errorf("%s (blocks %d..%d) is lost but not named", l.Path, l.Loc.Seq, l.Loc.EndSeq)
		case lose(l.Loc) && !strings.Contains(reason, want):
			t.Errorf("%s is named lost because %q, want it to say %q", l.Path, reason, want)
		case !lose(l.Loc) && named:
			t.Errorf("%s (blocks %d..%d) is named lost (%s) but its blocks are intact", l.Path, l.Loc.Seq, l.Loc.EndSeq, reason)
		case !lose(l.Loc) && string(res.whole[p]) != string(content[p]):
			t.Errorf("%s (blocks %d..%d): %d bytes restored, want %d", l.Path, l.Loc.Seq, l.Loc.EndSeq, len(res.whole[p]), len(content[p]))
		}
		if named {
			lost++
		}
	}
	if res.done.Asked != len(rr.Locs) || res.done.Lost != lost || len(res.lost) != lost || len(res.whole)+lost != len(rr.Locs) {
		t.Errorf("read done %+v: %d entries asked, %d came whole, %d named lost", res.done, len(rr.Locs), len(res.whole), len(res.lost))
	}
}

// mixedFiles are files of sizes that make entries start, end and lie
// inside blocks of 512 KiB, and run across several.
func mixedFiles() []testFile {
	var fs []testFile
	for i, size := range []int{100 << 10, 1300 << 10, 50 << 10, 700 << 10, 30 << 10, 30 << 10, 2000 << 10, 90 << 10, 400 << 10, 20 << 10, 1100 << 10, 60 << 10} {
		f := randomFiles(uint64(i+1), 1, size)[0]
		f.path = fmt.Sprintf("/data/f%02d", i)
		fs = append(fs, f)
	}
	return fs
}

// compressibleFiles are mixedFiles of log text, for a pool that
// compresses.
func compressibleFiles() []testFile {
	fs := mixedFiles()
	rnd := rand.New(rand.NewPCG(5, 6))
	for i := range fs {
		fs[i].content = sample.LogText(rnd, len(fs[i].content))
	}
	return fs
}

// newBackedUpRig is a rig whose disk pool holds fs, backed up as job 1 a
// frame a file, and the read of all of it.
func newBackedUpRig(t *testing.T, fs []testFile) (*rig, wire.ReadRequest) {
	t.Helper()
	r := newRig(t, true)
	r.waitRegistered()
	if _, err := r.sendFiles(1, fs, sendOpts{}); err != nil {
		t.Fatal(err)
	}
	return r, r.fake.readRequest(t, 1)
}

// blockOffset is where data block seq of the session's only part lies in
// its volume file.
func blockOffset(t *testing.T, path string, p wire.ReadPart, seq uint64) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hb := make([]byte, volume.HeaderSize)
	for off := p.DataStart; off < p.DataStart+int64(p.StreamEnd-p.StreamStart); {
		if _, err := f.ReadAt(hb, off); err != nil {
			t.Fatal(err)
		}
		h, err := volume.ParseBlockHeader(hb)
		if err != nil {
			t.Fatalf("block header at %d: %v", off, err)
		}
		if h.Seq == seq {
			return off
		}
		off += h.Size()
	}
	t.Fatalf("no block seq %d in %s", seq, path)
	return 0
}

// A whole session of compressed blocks, one of them altered, restored to
// an agent that takes StoredBlock frames: the blocks before and after the
// damage go as stored, each entry that touches the damaged block is named
// lost with it, every other comes back byte for byte, and ReadDone counts
// them all. The block after the damage starts inside an entry named lost,
// so it goes record by record, and the entries after come whole.
func TestRestoreOfStoredBlocksAroundDamage(t *testing.T) {
	fs := compressibleFiles()
	r, rr := newBackedUpRig(t, fs)
	var bad uint64
	for _, l := range rr.Locs[1:] {
		if l.Loc.EndSeq > l.Loc.Seq {
			bad = l.Loc.EndSeq // an entry runs into it from the block before
			break
		}
	}
	path := filepath.Join(r.pool, "Default-0001.cvol")
	corrupt.FlipByte(t, path, blockOffset(t, path, rr.Parts[0], bad)+volume.HeaderSize+100)
	res := readOnce(t, r.restoreConn(2, rr), rr)
	res.check(t, rr, fs, func(l fileindex.Location) bool { return l.Seq <= bad && bad <= l.EndSeq }, fmt.Sprintf("block seq %d", bad))
	last := rr.Locs[len(rr.Locs)-1].Loc.EndSeq
	t.Logf("block %d of 0..%d damaged: %d entries restored, %d named lost, %d blocks as stored", bad, last, len(res.whole), len(res.lost), res.stored)
	if res.stored < 2 || len(res.lost) == 0 || len(res.whole) < 2 {
		t.Fatalf("%d blocks as stored, %d lost, %d whole", res.stored, len(res.lost), len(res.whole))
	}
}

// A volume cut short in the middle of a block: every entry whose blocks
// reach the cut is named lost with the truncation as its reason (the one
// that runs into the cut, and every one after it, which the reader never
// gets to), every entry before it comes back byte for byte, and ReadDone
// accounts for all of them.
func TestRestoreNamesEveryEntryATruncatedVolumeLoses(t *testing.T) {
	fs := mixedFiles()
	r, rr := newBackedUpRig(t, fs)
	if len(rr.Parts) != 1 || len(rr.Locs) != len(fs) {
		t.Fatalf("read request %+v", rr)
	}
	// Cut inside the block where an entry that runs across blocks goes on.
	var cut uint64
	for _, l := range rr.Locs {
		if l.Loc.EndSeq >= l.Loc.Seq+2 {
			cut = l.Loc.Seq + 1
			break
		}
	}
	if cut == 0 {
		t.Fatalf("no entry runs across three blocks: %+v", rr.Locs)
	}
	path := filepath.Join(r.pool, "Default-0001.cvol")
	if err := os.Truncate(path, blockOffset(t, path, rr.Parts[0], cut)+volume.HeaderSize+1000); err != nil {
		t.Fatal(err)
	}
	res := readOnce(t, r.restoreConn(2, rr), rr)
	res.check(t, rr, fs, func(l fileindex.Location) bool { return l.EndSeq >= cut }, "truncated")
	after := 0
	for _, l := range rr.Locs {
		if l.Loc.Seq > cut {
			after++
		}
	}
	t.Logf("cut in block %d: %d entries restored, %d named lost, %d of them start after the cut", cut, len(res.whole), len(res.lost), after)
	if after == 0 || len(res.whole) == 0 {
		t.Fatalf("the cut at block %d leaves no entry after it, or none before", cut)
	}
}

// A volume that is gone loses the entries of its read, named with the
// reason, and the stream goes on: the next read is served.
func TestRestoreGoesOnPastAMissingVolume(t *testing.T) {
	fs := mixedFiles()[:4]
	r, rr := newBackedUpRig(t, fs)
	path := filepath.Join(r.pool, "Default-0001.cvol")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".away"); err != nil {
		t.Fatal(err)
	}
	// The second read is in the plan only once the volume is back.
	r.fake.plans.add(2, rr)
	conn, err := r.open(r.ticket(2, ticket.OpRestore, rr.SessionID.String()))
	if err != nil {
		t.Fatal(err)
	}
	res := readOnce(t, conn, rr)
	res.check(t, rr, fs, func(fileindex.Location) bool { return true }, "Default-0001")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	r.fake.plans.add(2, rr)
	r.fake.plans.end(2)
	res = readOnce(t, conn, rr)
	res.check(t, rr, fs, func(fileindex.Location) bool { return false }, "")
	var end dataplane.RestoreEnd
	if err := conn.ReadJSON(dataplane.FrameEnd, &end); err != nil || end.Reads != 2 || end.Entries != int64(2*len(rr.Locs)) {
		t.Fatalf("end of the restore: %+v %v, want 2 reads of %d entries", end, err, len(rr.Locs))
	}
}

// A damaged block loses exactly the entries whose blocks, Seq to EndSeq,
// include it: the one that runs into it, those inside it, the one that
// starts in it and runs on; the rest come back byte for byte. Read from
// an emulated tape whose drive cannot read one record, moved along the
// session so that the damaged block is each of its blocks in turn.
func TestRestoreNamesEntriesRunningIntoADamagedBlock(t *testing.T) {
	r := newNodeTapeRig(t, tapeRigOpts{cartridge: 1 << 30, zone: 64 << 20, tapes: 1})
	fs := mixedFiles()
	if _, err := r.backup(1, fs); err != nil {
		t.Fatal(err)
	}
	rr := r.fake.readRequest(t, 1)
	var into, startsIn, inside bool
	damaged := map[uint64]bool{}
	// Tape records are 64 KiB; a 512 KiB volume block takes eight or nine.
	for _, rec := range []int64{17, 35, 62, 80} {
		r.lib.EmulatedDrive(0).SetFaults(tape.Faults{MediumErrorAt: []int64{rec}})
		conn := r.restoreConn(100+uint64(rec), rr)
		res := readOnce(t, conn, rr)
		conn.Close()
		var seqs []uint64
		for _, reason := range res.lost {
			var seq uint64
			if i := strings.Index(reason, "block seq "); i >= 0 {
				if _, err := fmt.Sscanf(reason[i:], "block seq %d", &seq); err == nil && !slices.Contains(seqs, seq) {
					seqs = append(seqs, seq)
				}
			}
		}
		if len(seqs) != 1 {
			t.Fatalf("tape record %d: damaged blocks named: %v (lost %v)", rec, seqs, res.lost)
		}
		bad := seqs[0]
		damaged[bad] = true
		for _, l := range rr.Locs {
			into = into || (l.Loc.Seq < bad && bad <= l.Loc.EndSeq)
			startsIn = startsIn || (l.Loc.Seq == bad && l.Loc.EndSeq > bad)
			inside = inside || (l.Loc.Seq == bad && l.Loc.EndSeq == bad)
		}
		res.check(t, rr, fs, func(l fileindex.Location) bool { return l.Seq <= bad && bad <= l.EndSeq }, fmt.Sprintf("block seq %d", bad))
		t.Logf("tape record %d, block %d damaged: %d entries lost, %d restored", rec, bad, len(res.lost), len(res.whole))
	}
	if !into || !startsIn || !inside || len(damaged) < 4 {
		t.Fatalf("blocks damaged %v: none with an entry running into it (%v), starting in it and running on (%v), inside it (%v)", damaged, into, startsIn, inside)
	}
}

// driveJob is the job that holds the rig's only drive, 0 when it is free.
func (r *nodeTapeRig) driveJob(t testing.TB) uint64 {
	t.Helper()
	st, err := r.lib.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Drives[0].Job
}

// stalledRestore starts a restore of all of rr as job that reads the
// accept and then reads nothing: the node's writes
// back up once the socket buffers are full. It returns once the job holds
// the drive.
func (r *nodeTapeRig) stalledRestore(t testing.TB, job uint64, rr wire.ReadRequest) *dataplane.Conn {
	t.Helper()
	conn := r.restoreConn(job, rr)
	poll.Until(t, 10*time.Second, func() error {
		if j := r.driveJob(t); j != job {
			return fmt.Errorf("the drive is held by job %d, not %d", j, job)
		}
		return nil
	})
	return conn
}

// resumed reads what a stalled client finds when it reads again: what was
// already on its way, then the end of the stream, never a ReadDone.
func resumed(t testing.TB, conn *dataplane.Conn) error {
	t.Helper()
	conn.SetTimeout(10 * time.Second)
	if _, err := readAnswer(t, conn); err != nil {
		return err
	}
	t.Fatal("a stalled restore was served to its end")
	return nil
}

// A client that stops reading during a restore from tape: the node's
// writes back up, and within its IdleTimeout the stream fails and gives
// the drive back; another restore gets the drive and completes; the first
// client, reading again, gets the end of the stream and never the rest.
func TestStalledRestoreClientReleasesTheDrive(t *testing.T) {
	// The timeout leaves a slow reader (the race detector on two cores)
	// the time to take a frame.
	r := newNodeTapeRig(t, tapeRigOpts{cartridge: 1 << 30, zone: 64 << 20, tapes: 1, idle: 3 * time.Second})
	fs := randomFiles(21, 6, 2<<20) // 12 MiB: more than the socket buffers take
	if _, err := r.backup(1, fs); err != nil {
		t.Fatal(err)
	}
	rr := r.fake.readRequest(t, 1)
	stalled := r.stalledRestore(t, 2, rr)
	held := time.Now()
	poll.Until(t, 15*time.Second, func() error {
		if j := r.driveJob(t); j != 0 {
			return fmt.Errorf("the drive is still held by job %d", j)
		}
		return nil
	})
	t.Logf("the drive was given back %s after the stalled client got it", time.Since(held).Round(time.Millisecond))

	conn := r.restoreConn(3, rr)
	readOnce(t, conn, rr).check(t, rr, fs, func(fileindex.Location) bool { return false }, "")

	err := resumed(t, stalled)
	t.Logf("the stalled client reading again: %v", err)
}

// The servers' cancel order stops a stalled restore at once, long before
// the node's IdleTimeout, and gives the drive back; the order is
// idempotent.
func TestCancelOrderStopsARestore(t *testing.T) {
	r := newNodeTapeRig(t, tapeRigOpts{cartridge: 1 << 30, zone: 64 << 20, tapes: 1, idle: 10 * time.Minute})
	fs := randomFiles(22, 6, 2<<20)
	if _, err := r.backup(1, fs); err != nil {
		t.Fatal(err)
	}
	rr := r.fake.readRequest(t, 1)
	stalled := r.stalledRestore(t, 2, rr)
	cancelled := time.Now()
	var res wire.CancelResult
	if err := wire.Request(context.Background(), r.nc, wire.NodeSubject("sn1", wire.OpCancel), wire.CancelJob{JobID: 2, Reason: "job made no progress for 10m0s"}, &res); err != nil || !res.Running {
		t.Fatalf("cancel: %+v %v", res, err)
	}
	poll.Until(t, 5*time.Second, func() error {
		if j := r.driveJob(t); j != 0 {
			return fmt.Errorf("the drive is still held by job %d", j)
		}
		return nil
	})
	t.Logf("the drive was given back %s after the order", time.Since(cancelled).Round(time.Millisecond))
	if err := wire.Request(context.Background(), r.nc, wire.NodeSubject("sn1", wire.OpCancel), wire.CancelJob{JobID: 2, Reason: "again"}, &res); err != nil || res.Running {
		t.Fatalf("cancel again: %+v %v", res, err)
	}
	conn := r.restoreConn(3, rr)
	readOnce(t, conn, rr).check(t, rr, fs, func(fileindex.Location) bool { return false }, "")
	t.Logf("the stalled client reading again: %v", resumed(t, stalled))
}

// The cancel order stops a backup to tape whose agent stopped sending: the
// session is cut off, the servers hear of it, the drive goes back, and the
// next backup appends where the tape's committed end was.
func TestCancelOrderRollsBackABackup(t *testing.T) {
	r := newNodeTapeRig(t, tapeRigOpts{cartridge: 1 << 30, zone: 64 << 20, tapes: 1, idle: 10 * time.Minute})
	fs := randomFiles(23, 3, 300<<10)
	if _, err := r.backup(1, fs); err != nil {
		t.Fatal(err)
	}
	end := r.fake.vols[0].end
	conn, err := r.open(r.ticket(2, ticket.OpBackup))
	if err != nil {
		t.Fatal(err)
	}
	var batch []byte
	// Records an agent sends (Data records of at most volume.MaxDataBody:
	// one of a whole MiB is malformed, and the node failed the session on
	// it when it read it before the cancel came).
	for _, f := range randomFiles(24, 6, 1<<20) {
		batch = appendFile(batch, f)
	}
	if err := conn.WriteFrame(dataplane.FrameRecords, batch); err != nil {
		t.Fatal(err)
	}
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, func() error {
		if j := r.driveJob(t); j != 2 {
			return fmt.Errorf("the drive is held by job %d", j)
		}
		return nil
	})
	// The agent stops sending here.
	var res wire.CancelResult
	if err := wire.Request(context.Background(), r.nc, wire.NodeSubject("sn1", wire.OpCancel), wire.CancelJob{JobID: 2, Attempt: 1, Reason: "the agent of client web stopped answering"}, &res); err != nil || !res.Running {
		t.Fatalf("cancel: %+v %v", res, err)
	}
	poll.Until(t, 5*time.Second, func() error {
		if j := r.driveJob(t); j != 0 {
			return fmt.Errorf("the drive is still held by job %d", j)
		}
		r.fake.mu.Lock()
		defer r.fake.mu.Unlock()
		if len(r.fake.aborts) != 1 {
			return errors.New("no abort reported")
		}
		if a := r.fake.aborts[0]; a.JobID != 2 || a.Error.Code != wire.CodeAborted || !strings.Contains(a.Error.Message, "stopped by the servers: the agent of client web stopped answering") {
			t.Fatalf("abort %+v", a)
		}
		return nil
	})
	r.fake.mu.Lock()
	commits, endAfter := len(r.fake.commits), r.fake.vols[0].end
	r.fake.mu.Unlock()
	if commits != 1 || endAfter != end {
		t.Fatalf("after the cancelled backup: %d commits, tape end %d (was %d)", commits, endAfter, end)
	}
	fs3 := randomFiles(25, 3, 300<<10)
	if _, err := r.backup(3, fs3); err != nil {
		t.Fatal(err)
	}
	if c := r.fake.commit(t, 3); c.Parts[0].VolumeStart != end {
		t.Fatalf("the next backup starts at %d, the tape's committed end is %d", c.Parts[0].VolumeStart, end)
	}
	checkRestored(t, r.restore(1000+3, r.fake.readRequest(t, 3)).whole, fs3)
}

// What an agent receives in a restore is the stream and the entries' paths,
// nothing of where they lie: every frame decodes into its agent-facing type
// with no field left over, records are whole records, and no frame names a
// volume, a part, an offset or the key. The node asked the servers for the
// plan itself, as the job and attempt of its ticket. ReadStarts come
// packed to an agent that asks for them, and in JSON to one that does not.
//
// Blocks of a whole session's read go as StoredBlock frames to an agent
// that reads them, and never to one that does not.
func TestRestoreStreamCarriesNoVolumeLayout(t *testing.T) {
	for _, packed := range []bool{false, true} {
		t.Run(fmt.Sprintf("packed=%v", packed), func(t *testing.T) { restoreStreamCarriesNoVolumeLayout(t, packed, packed) })
	}
	t.Run("packed=true,stored=false", func(t *testing.T) { restoreStreamCarriesNoVolumeLayout(t, true, false) })
}

func restoreStreamCarriesNoVolumeLayout(t *testing.T, packed, stored bool) {
	fs := compressibleFiles()
	r, rr := newBackedUpRig(t, fs)
	r.jsonStarts = !packed
	r.recordsOnly = !stored
	rr.Locs[0].Ancestor = true
	conn := r.restoreConn(2, rr, rr)
	layout := []string{rr.Parts[0].VolumeID.String(), rr.Parts[0].Volume, rr.Parts[0].Pool, rr.KeyID,
		"volume", "part", "offset", "start", "barcode", "loc", "key", "seq"}
	strict := func(p []byte, v any) {
		d := json.NewDecoder(bytes.NewReader(p))
		d.DisallowUnknownFields()
		if err := d.Decode(v); err != nil {
			t.Fatalf("frame %s: %v", p, err)
		}
	}
	var reads, records, blocks int
	for done := false; !done; {
		typ, p, err := conn.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if typ == dataplane.FrameStoredBlock {
			p, typ = storedRecords(t, p), dataplane.FrameRecords
			blocks++
		}
		if typ != dataplane.FrameRecords {
			for _, s := range layout {
				if bytes.Contains(bytes.ToLower(p), []byte(strings.ToLower(s))) {
					t.Errorf("frame %d names %q: %s", typ, s, p)
				}
			}
		}
		switch typ {
		case dataplane.FrameReadStart, dataplane.FrameReadStartPacked:
			if packed != (typ == dataplane.FrameReadStartPacked) {
				t.Fatalf("a read start of frame type %d to an agent that asked packed=%v", typ, packed)
			}
			var rs dataplane.ReadStart
			if packed {
				if rs, err = dataplane.UnpackReadStart(p); err != nil {
					t.Fatal(err)
				}
			} else {
				strict(p, &rs)
			}
			if rs.SessionID != rr.SessionID || len(rs.Entries) != len(rr.Locs) {
				t.Fatalf("read start %+v", rs)
			}
			for i, e := range rs.Entries {
				if e != (dataplane.ReadEntry{Path: rr.Locs[i].Path, Ancestor: rr.Locs[i].Ancestor, Block: rr.Locs[i].Block != nil}) {
					t.Fatalf("entry %d of the read start is %+v, want %+v", i, e, rr.Locs[i])
				}
			}
			reads++
		case dataplane.FrameRecords:
			for len(p) > 0 {
				_, _, n, err := volume.ParseRecord(p)
				if err != nil {
					t.Fatal(err)
				}
				p = p[n:]
				records++
			}
		case dataplane.FrameReadDone:
			strict(p, &dataplane.ReadDone{})
		case dataplane.FrameEnd:
			var end dataplane.RestoreEnd
			strict(p, &end)
			if end.Reads != 2 || end.Entries != int64(2*len(rr.Locs)) {
				t.Fatalf("end %+v", end)
			}
			done = true
		default:
			t.Fatalf("frame %d: %s", typ, p)
		}
	}
	if reads != 2 || records == 0 || (blocks > 0) != stored {
		t.Fatalf("%d reads, %d records, %d stored blocks to an agent that reads them: %v", reads, records, blocks, stored)
	}
	asked := r.fake.plans.requests()
	if len(asked) != 2 || asked[0].JobID != 2 || asked[0].Cursor != 0 || asked[1].Cursor != 1 || asked[0].Packed != wire.PackedVersion || asked[1].Packed != wire.PackedVersion {
		t.Fatalf("the node asked the servers for %+v", asked)
	}
}

// A packed page the node cannot read ends the restore with an error that
// names the plan's page, and nothing of it is served.
func TestRestoreRefusesAPackedPageItCannotRead(t *testing.T) {
	fs := mixedFiles()[:4]
	r, rr := newBackedUpRig(t, fs)
	r.fake.plans.mu.Lock()
	r.fake.plans.packed = func(page *wire.RestorePlanResp, req wire.RestorePlanReq) error {
		good, err := wire.PackReads(page.Reads, wire.PackedVersion)
		if err != nil {
			return err
		}
		page.Reads, page.Packed = nil, good[:len(good)-1]
		return nil
	}
	r.fake.plans.mu.Unlock()
	r.fake.plans.set(2, rr)
	conn, err := r.open(r.ticket(2, ticket.OpRestore, rr.SessionID.String()))
	if err != nil {
		t.Fatal(err)
	}
	for {
		typ, p, err := conn.ReadFrame()
		if err != nil {
			t.Fatalf("the stream ended without an error frame: %v", err)
		}
		switch typ {
		case dataplane.FrameAccept:
			continue
		case dataplane.FrameError:
			var we wire.Error
			if err := json.Unmarshal(p, &we); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(we.Message, "restore plan of job 2, page 0") || !strings.Contains(we.Message, "malformed packed restore reads") {
				t.Fatalf("error %q does not say the plan's page was unreadable", we.Message)
			}
			return
		default:
			t.Fatalf("frame %d before the error: %s", typ, p)
		}
	}
}

// An agent of data-port protocol version 1 relayed the plan in Read frames
// this node no longer takes: its restore is refused at the hello, saying
// which versions met, rather than left waiting; its backup, whose frames
// did not change, is accepted. A version this node does not know yet is
// refused whatever the job.
func TestRestoreOfAnOlderAgentIsRefusedWithTheVersions(t *testing.T) {
	r := newRig(t, true)
	r.waitRegistered()
	_, fp, err := dataplane.LoadOrCreateCert(r.node.cfg.DataDir, "sn1")
	if err != nil {
		t.Fatal(err)
	}
	hello := func(v int, tk string) error {
		conn, err := dataplane.Dial(context.Background(), r.node.DataAddr(), fp)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := conn.WriteJSON(dataplane.FrameHello, dataplane.Hello{V: v, Ticket: tk, Client: "web"}); err != nil {
			t.Fatal(err)
		}
		var acc dataplane.Accept
		if err := conn.ReadJSON(dataplane.FrameAccept, &acc); err != nil {
			return err
		}
		if acc.V != dataplane.Version {
			t.Fatalf("accept of version %d, want %d", acc.V, dataplane.Version)
		}
		return nil
	}
	err = hello(1, r.ticket(2, ticket.OpRestore, "s"))
	if wire.CodeOf(err) != wire.CodeUnsupportedVersion || !strings.Contains(err.Error(), "the agent speaks data-port protocol version 1 and this side version 2") {
		t.Fatalf("restore of a version-1 agent: %v", err)
	}
	if err := hello(dataplane.Version+1, r.ticket(3, ticket.OpBackup)); wire.CodeOf(err) != wire.CodeUnsupportedVersion {
		t.Fatalf("a hello of version %d: %v", dataplane.Version+1, err)
	}
	if err := hello(1, r.ticket(4, ticket.OpBackup)); err != nil {
		t.Fatalf("backup of a version-1 agent: %v", err)
	}
}
