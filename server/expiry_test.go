package server

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/media/disk"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/retention"
	"github.com/cairnbackup/cairn/wire"
)

// fullVolumeBackup runs a full of /srv that fills the volume it is given,
// so the next backup gets a volume of its own.
func (h *harness) fullVolumeBackup(orders chan *nats.Msg) (uint64, string) {
	h.t.Helper()
	var started wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/srv"}, Level: "full"}, &started))
	<-orders
	g := h.labeledVolume(started.JobID)
	b := fileindex.NewSegmentBuilder(0)
	h.must(b.Add(&fileindex.Entry{Path: "/srv", Type: fileindex.TypeDir, Mode: 0o755}))
	seg := b.Flush()
	h.must(h.node(wire.OpSessionIndex, wire.SessionIndexReq{JobID: started.JobID, First: fileindex.Path(seg.First), Last: fileindex.Path(seg.Last), Count: seg.Count, Data: seg.Data}, nil))
	h.must(h.node(wire.OpSessionCommit, wire.SessionCommitReq{
		JobID: started.JobID, SessionID: uuid.New(), Segments: 1,
		Parts: []wire.SessionPart{{VolumeID: g.ID, VolumeStart: 256 << 10, DataStart: 256<<10 + 64, End: 62 << 20, Final: true}},
		Stats: wire.SessionStats{Entries: 1},
	}, nil))
	return started.JobID, g.Name
}

// labeledVolume is a volume of the Default pool granted to job, as the node
// asks for one and labels it.
func (h *harness) labeledVolume(job uint64) wire.VolumeGrant {
	h.t.Helper()
	var g wire.VolumeGrant
	h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: job, Pool: "Default"}, &g))
	h.must(h.node(wire.OpVolumeLabeled, wire.VolumeLabeled{JobID: job, VolumeID: g.ID}, nil))
	return g
}

// volumeDeletes answers the node's volume.delete orders and records them.
type volumeDeletes struct {
	mu    sync.Mutex
	names []string
}

func (h *harness) volumeDeletes() *volumeDeletes {
	d := &volumeDeletes{}
	sub, err := h.nc.Subscribe(wire.NodeSubject("sn1", wire.OpNodeVolumeDelete), func(m *nats.Msg) {
		body, err := wire.Unmarshal(m.Data)
		var o wire.VolumeDeleteOrder
		if err == nil {
			err = json.Unmarshal(body, &o)
		}
		if err != nil {
			m.Respond(wire.MarshalError(wire.Errorf(wire.CodeBadRequest, "", "%v", err)))
			return
		}
		d.mu.Lock()
		d.names = append(d.names, o.Volume)
		d.mu.Unlock()
		data, _ := wire.Marshal(wire.Empty{})
		m.Respond(data)
	})
	h.must(err)
	h.t.Cleanup(func() { sub.Unsubscribe() })
	h.must(h.nc.Flush())
	return d
}

func (d *volumeDeletes) list() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.names)
}

// keepLast makes the server's retention keep-last n for web's /srv.
func (h *harness) keepLast(n int) {
	fs := catalog.FileSetOf([]string{"/srv"}, nil)
	r := &retentions{byGroup: map[[2]string]*retentionOf{
		{"web", fs}: {policy: retention.Policy{Rules: retention.Rules{Last: n}}, names: []string{"daily"}},
	}}
	h.srv.expiryMu.Lock()
	h.srv.retentionsHook = func() (*retentions, error) { return r, nil }
	h.srv.expiryMu.Unlock()
}

func (h *harness) backupIDs() []uint64 {
	var resp wire.BackupListResp
	h.must(h.api(wire.OpBackupList, wire.BackupListReq{Client: "web"}, &resp))
	var ids []uint64
	for _, b := range resp.Backups {
		ids = append(ids, b.ID)
	}
	slices.Sort(ids)
	return ids
}

// TestExpiryPassRunsOnItsSchedule: the leader's pass runs every
// expiry_interval of its clock, expires what keep-last 2 does not keep,
// has the node delete the volume it emptied and forgets it only then; a
// crash between the two leaves the volume to the next pass; a hold keeps
// a backup past its retention.
func TestExpiryPassRunsOnItsSchedule(t *testing.T) {
	h := newFakeClockHarness(t, func(c *Config) {
		c.ExpiryInterval = time.Hour
		// The node stays online across the clock's jumps, which the
		// heartbeats of the fake node follow only after the tick.
		c.LivenessTimeout, c.StallTimeout = 3*time.Hour, 3*time.Hour
	})
	_, orders := h.setup()
	deletes := h.volumeDeletes()
	passes := make(chan wire.PruneResp, 10)
	crash := true
	h.srv.expiryMu.Lock()
	h.srv.expiryTrace = func(r wire.PruneResp, err error) { t.Logf("pass: %+v, %v", r, err); passes <- r }
	h.srv.afterVolumeDelete = func(string) error {
		if crash {
			crash = false
			return errors.New("crashed after the node deleted the file")
		}
		return nil
	}
	h.srv.expiryMu.Unlock()
	h.keepLast(2)

	var ids []uint64
	var vols []string
	for range 3 {
		id, vol := h.fullVolumeBackup(orders)
		ids, vols = append(ids, id), append(vols, vol)
	}
	if vols[0] == vols[1] || vols[1] == vols[2] {
		t.Fatalf("backups share volumes: %v", vols)
	}
	var dry wire.PruneResp
	h.must(h.api(wire.OpPrune, wire.PruneReq{DryRun: true}, &dry))
	if dry.Expired != 1 || len(dry.Groups) != 1 || dry.Groups[0].Expire[0].ID != ids[0] || dry.Groups[0].Policy != "daily" ||
		dry.Groups[0].Expire[0].Reason != "no rule keeps it" || !slices.Equal(dry.Groups[0].Paths, []string{"/srv"}) {
		t.Fatalf("dry run %+v", dry)
	}
	if got := h.backupIDs(); !slices.Equal(got, ids) {
		t.Fatalf("a dry run expired something: %v", got)
	}
	var list wire.BackupListResp
	h.must(h.api(wire.OpBackupList, wire.BackupListReq{Client: "web"}, &list))
	if list.Backups[2].ID != ids[0] || list.Backups[2].Expires != "no rule keeps it" || list.Backups[0].Expires != "" {
		t.Fatalf("list %+v", list.Backups)
	}

	// Nothing runs before the interval is up.
	h.advance(30 * time.Minute)
	select {
	case r := <-passes:
		t.Fatalf("a pass ran before its time: %+v", r)
	default:
	}
	// The first pass expires the oldest; the node deletes its volume, and
	// the server "crashes" before the catalog forgets it.
	h.advance(30 * time.Minute)
	r := waitPass(t, passes)
	if r.Expired != 1 {
		t.Fatalf("first pass %+v", r)
	}
	if got := h.backupIDs(); !slices.Equal(got, ids[1:]) {
		t.Fatalf("backups after the first pass %v", got)
	}
	if got := deletes.list(); !slices.Equal(got, vols[:1]) {
		v, err := h.srv.store.VolumeByName(vols[0])
		t.Fatalf("deletion orders %v; volume %+v %v", got, v, err)
	}
	if v, err := h.srv.store.VolumeByName(vols[0]); err != nil || v.State != catalog.VolumeExpired {
		t.Fatalf("volume after the crash: %+v %v", v, err)
	}
	var pools wire.PoolListResp
	h.must(h.api(wire.OpPoolList, wire.Empty{}, &pools))
	if pools.Pools[0].ReclaimableBytes != 62<<20 {
		t.Fatalf("pool %+v", pools.Pools[0])
	}

	// A hold on the oldest survivor keeps it past keep-last 2.
	var hold wire.HoldInfo
	h.must(h.api(wire.OpBackupHold, wire.HoldReq{BackupID: ids[1], Reason: "case 4711", By: "alice"}, &hold))
	id4, _ := h.fullVolumeBackup(orders)

	// The next pass orders the deletion again and forgets the volume.
	h.advance(time.Hour)
	r = waitPass(t, passes)
	if r.Expired != 0 || !slices.Contains(r.Volumes, vols[0]) {
		t.Fatalf("second pass %+v", r)
	}
	if got := deletes.list(); !slices.Equal(got, []string{vols[0], vols[0]}) {
		t.Fatalf("deletion orders %v", got)
	}
	if _, err := h.srv.store.VolumeByName(vols[0]); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("volume after the second pass: %v", err)
	}
	h.must(h.api(wire.OpPoolList, wire.Empty{}, &pools))
	if pools.Pools[0].ReclaimableBytes != 0 {
		t.Fatalf("pool %+v", pools.Pools[0])
	}
	if got := h.backupIDs(); !slices.Equal(got, []uint64{ids[1], ids[2], id4}) {
		t.Fatalf("backups under the hold %v", got)
	}
	var show wire.BackupShowResp
	h.must(h.api(wire.OpBackupShow, wire.BackupShowReq{BackupID: ids[1]}, &show))
	if show.Backup.Hold == nil || show.Backup.Hold.Reason != "case 4711" || show.Retention != "on legal hold" {
		t.Fatalf("show %+v", show)
	}

	// Released, it goes with the next pass; an operator's deletion of the
	// newest is in the history beside it.
	h.must(h.api(wire.OpBackupRelease, wire.HoldReq{BackupID: ids[1]}, nil))
	wantCode(t, h.api(wire.OpBackupRelease, wire.HoldReq{BackupID: ids[1]}, nil), wire.CodeNotFound)
	h.advance(time.Hour)
	if r := waitPass(t, passes); r.Expired != 1 {
		t.Fatalf("pass after the release %+v", r)
	}
	var del wire.BackupDeleteResp
	h.must(h.api(wire.OpBackupDelete, wire.BackupDeleteReq{BackupID: id4, By: "bob"}, &del))
	wantCode(t, h.api(wire.OpBackupDelete, wire.BackupDeleteReq{BackupID: id4}, nil), wire.CodeNotFound)
	var hist wire.PruneHistoryResp
	h.must(h.api(wire.OpPruneHistory, wire.PruneHistoryReq{}, &hist))
	var got []string
	for _, e := range hist.Expiries {
		got = append(got, fmt.Sprintf("%d %s %s", e.BackupID, e.By, e.Reason))
	}
	want := []string{
		fmt.Sprintf("%d bob deleted by hand", id4),
		fmt.Sprintf("%d expiry pass no rule keeps it", ids[1]),
		fmt.Sprintf("%d expiry pass no rule keeps it", ids[0]),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("history\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func waitPass(t *testing.T, passes chan wire.PruneResp) wire.PruneResp {
	t.Helper()
	var r wire.PruneResp
	poll.Until(t, 20*time.Second, func() error {
		select {
		case r = <-passes:
			return nil
		default:
			return errors.New("no expiry pass yet")
		}
	})
	return r
}

// TestRecyclableTapeIsReusedBeforeScratch: once a tape's backups are all
// gone, the next backup of its pool that needs a tape writes over it from
// its label on, and leaves the scratch tape for pools with nothing to reuse.
func TestRecyclableTapeIsReusedBeforeScratch(t *testing.T) {
	h := newHarness(t)
	_, orders := h.tapeSetup()
	h.must(h.api(wire.OpMediaLabel, wire.MediaLabelReq{Slot: 1, Pool: "Weekly"}, nil))
	h.must(h.api(wire.OpMediaLabel, wire.MediaLabelReq{Slot: 2, Pool: catalog.ScratchPool, Overwrite: true}, nil))
	const bs = defaultBlockSize
	backup := func() uint64 {
		var started wire.JobStarted
		h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/srv"}, Level: "full", Pool: "Weekly"}, &started))
		<-orders
		return started.JobID
	}
	first := backup()
	var g1 wire.VolumeGrant
	h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: first, Pool: "Weekly"}, &g1))
	b := fileindex.NewSegmentBuilder(0)
	h.must(b.Add(&fileindex.Entry{Path: "/srv", Type: fileindex.TypeDir}))
	seg := b.Flush()
	h.must(h.node(wire.OpSessionIndex, wire.SessionIndexReq{JobID: first, First: fileindex.Path(seg.First), Last: fileindex.Path(seg.Last), Count: seg.Count, Data: seg.Data}, nil))
	h.must(h.node(wire.OpSessionCommit, wire.SessionCommitReq{JobID: first, SessionID: uuid.New(), Segments: 1,
		Parts: []wire.SessionPart{{VolumeID: g1.ID, VolumeStart: bs, DataStart: bs + 64, End: 9 * bs, Final: true}}}, nil))
	if v := h.volume(g1.Barcode); v.State != "append" || v.Bytes != 9*bs {
		t.Fatalf("tape after the backup %+v", v)
	}

	h.must(h.api(wire.OpBackupDelete, wire.BackupDeleteReq{BackupID: first}, nil))
	if v := h.volume(g1.Barcode); v.State != "recyclable" {
		t.Fatalf("tape of a deleted backup is %s", v.State)
	}
	var pools wire.PoolListResp
	h.must(h.api(wire.OpPoolList, wire.Empty{}, &pools))
	for _, p := range pools.Pools {
		if p.Name == "Weekly" && p.ReclaimableBytes != 9*bs {
			t.Fatalf("pool %+v", p)
		}
	}

	second := backup()
	var g2 wire.VolumeGrant
	h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: second, Pool: "Weekly"}, &g2))
	if g2.ID == g1.ID || g2.Relabel != g1.ID || g2.Barcode != g1.Barcode || g2.Bytes != bs || g2.Parts != 0 {
		t.Fatalf("grant %+v, want tape %s as a new volume from its label on, to relabel", g2, g1.Barcode)
	}
	if v := h.volume(g1.Barcode); v.ID != g2.ID {
		t.Fatalf("the barcode names volume %s, want the new %s", v.ID, g2.ID)
	}
	// The node writes the new label first and says so; only the job
	// that holds the tape may.
	if err := h.node(wire.OpVolumeLabeled, wire.VolumeLabeled{JobID: first, VolumeID: g2.ID}, nil); wire.CodeOf(err) != wire.CodeAborted {
		t.Fatalf("the relabel reported by an ended job: %v", err)
	}
	h.must(h.node(wire.OpVolumeLabeled, wire.VolumeLabeled{JobID: second, VolumeID: g2.ID}, nil))
	if v, err := h.srv.store.Volume(g2.ID); err != nil || v.Relabel != uuid.Nil {
		t.Fatalf("after the relabel: %+v, %v", v, err)
	}
	if v := h.volume("CRN002L9"); v.Pool != catalog.ScratchPool {
		t.Fatalf("scratch tape went to %s", v.Pool)
	}
	var ji wire.JobInfo
	h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: second}, &ji))
	logged := false
	for _, l := range ji.Log {
		logged = logged || strings.Contains(l.Msg, "is recyclable")
		logged = logged && !strings.Contains(l.Msg, "relabeled as volume") || strings.Contains(l.Msg, "relabeled as volume "+g2.ID.String())
	}
	if !logged {
		t.Fatalf("the job log does not say the tape is reused: %+v", ji.Log)
	}
}

// TestStoredPolicyDecidesTheExpiry: the pass takes the retention from the
// policies of the catalog, for the clients each covers, and leaves a
// file set no policy covers alone.
func TestStoredPolicyDecidesTheExpiry(t *testing.T) {
	h := newHarness(t)
	_, orders := h.setup()
	var ids []uint64
	for range 3 {
		id, _ := h.fullVolumeBackup(orders)
		ids = append(ids, id)
	}
	var dry wire.PruneResp
	h.must(h.api(wire.OpPrune, wire.PruneReq{DryRun: true}, &dry))
	if dry.Expired != 0 || len(dry.Groups) != 0 {
		t.Fatalf("with no policy the pass would expire %+v", dry)
	}
	_, err := h.srv.apply(h.ctx, &catalog.Command{Op: catalog.OpPutPolicy, PolicyPut: &catalog.PolicyPut{Mode: catalog.PutCreate, Policy: catalog.Policy{
		Name: "nightly", Clients: []string{"web"}, Paths: []string{"/srv"}, Schedule: "daily 02:00", Pool: "Default",
		Retention: catalog.PolicyRetention{All: catalog.KeepRules{Last: 2}},
	}}})
	h.must(err)
	h.must(h.api(wire.OpPrune, wire.PruneReq{DryRun: true}, &dry))
	if dry.Expired != 1 || len(dry.Groups) != 1 || dry.Groups[0].Policy != "nightly" || dry.Groups[0].Expire[0].ID != ids[0] {
		t.Fatalf("dry run under keep-last 2: %+v", dry)
	}
	var list wire.BackupListResp
	h.must(h.api(wire.OpBackupList, wire.BackupListReq{Policy: "nightly"}, &list))
	if len(list.Backups) != 3 || list.Backups[2].Expires == "" {
		t.Fatalf("list of the policy's backups %+v", list.Backups)
	}
	wantCode(t, h.api(wire.OpBackupList, wire.BackupListReq{Policy: "nope"}, nil), wire.CodeNotFound)
	var run wire.PruneResp
	h.must(h.api(wire.OpPrune, wire.PruneReq{}, &run))
	if run.Expired != 1 || !slices.Equal(h.backupIDs(), ids[1:]) {
		t.Fatalf("prune %+v, backups %v", run, h.backupIDs())
	}
}

// TestVolumeDeleteHelper is the storage node TestNodeKilledMidDeletion
// runs as a process of its own: it deletes the volume file it is ordered
// to delete, as a node does (disk.Pool.Delete), and then, unless told to
// answer, hangs before answering, to be killed there.
func TestVolumeDeleteHelper(t *testing.T) {
	url := os.Getenv("CAIRN_DELETE_HELPER_NATS")
	if url == "" {
		return
	}
	answer := os.Getenv("CAIRN_DELETE_HELPER_ANSWER") != ""
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	_, err = nc.Subscribe(wire.NodeSubject("sn1", wire.OpNodeVolumeDelete), func(m *nats.Msg) {
		body, err := wire.Unmarshal(m.Data)
		var o wire.VolumeDeleteOrder
		if err == nil {
			err = json.Unmarshal(body, &o)
		}
		if err == nil {
			p := &disk.Pool{Name: o.Pool, Dir: os.Getenv("CAIRN_DELETE_HELPER_DIR")}
			err = p.Delete(o.Volume, o.VolumeID)
		}
		if err != nil {
			m.Respond(wire.MarshalError(wire.AsError(err)))
			return
		}
		fmt.Println("deleted", o.Volume)
		if !answer {
			select {} // the file is gone, the answer never comes: killed here
		}
		data, _ := wire.Marshal(wire.Empty{})
		m.Respond(data)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	select {}
}

// startDeleteHelper runs TestVolumeDeleteHelper as a process and waits
// until it listens.
func startDeleteHelper(t *testing.T, h *harness, dir string, answer bool) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestVolumeDeleteHelper$", "-test.v=false")
	cmd.Env = append(os.Environ(), "CAIRN_DELETE_HELPER_NATS="+h.nc.ConnectedUrl(), "CAIRN_DELETE_HELPER_DIR="+dir)
	if answer {
		cmd.Env = append(cmd.Env, "CAIRN_DELETE_HELPER_ANSWER=1")
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- nil
			}
		}
		ready <- errors.New("the helper ended before it was ready")
	}()
	poll.Until(t, 30*time.Second, func() error {
		select {
		case err := <-ready:
			if err != nil {
				t.Fatal(err)
			}
			return nil
		default:
			return errors.New("the delete helper is not listening yet")
		}
	})
	return cmd
}

// TestNodeKilledMidDeletion: the process that deletes an expired volume's
// file is killed with SIGKILL after the file is gone and before it
// answers. The catalog keeps the volume, expired and reclaimable, never
// forgets it without the node's answer; once a node answers again, the
// next pass orders the deletion again, the file already gone is success,
// and the catalog forgets the volume.
func TestNodeKilledMidDeletion(t *testing.T) {
	h := newHarness(t)
	_, orders := h.setup()
	h.srv.expiryMu.Lock()
	h.srv.volumeDeleteWait = 2 * time.Second
	h.srv.expiryMu.Unlock()
	first, name := h.fullVolumeBackup(orders)
	h.fullVolumeBackup(orders)
	v, err := h.srv.store.VolumeByName(name)
	h.must(err)
	dir := t.TempDir()
	p := &disk.Pool{Name: "Default", Dir: dir}
	h.must(p.Create(name, volume.Label{VolumeID: v.ID}))
	file := filepath.Join(dir, name+".cvol")

	helper := startDeleteHelper(t, h, dir, false)
	done := make(chan wire.BackupDeleteResp, 1)
	go func() {
		var resp wire.BackupDeleteResp
		if err := h.api(wire.OpBackupDelete, wire.BackupDeleteReq{BackupID: first}, &resp); err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	poll.Until(t, 20*time.Second, func() error {
		if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("volume file still there: %v", err)
		}
		return nil
	})
	h.must(helper.Process.Signal(syscall.SIGKILL))
	helper.Wait()
	resp := <-done
	if !slices.Equal(resp.Deleted, []uint64{first}) || len(resp.Pending) != 1 || !strings.Contains(resp.Pending[0], name) {
		t.Fatalf("delete with the node killed mid deletion: %+v", resp)
	}
	if v, err := h.srv.store.VolumeByName(name); err != nil || v.State != catalog.VolumeExpired {
		t.Fatalf("volume after the kill: %+v %v", v, err)
	}
	var pools wire.PoolListResp
	h.must(h.api(wire.OpPoolList, wire.Empty{}, &pools))
	if pools.Pools[0].ReclaimableBytes != v.Bytes {
		t.Fatalf("pool after the kill %+v", pools.Pools[0])
	}

	startDeleteHelper(t, h, dir, true)
	var pr wire.PruneResp
	h.must(h.api(wire.OpPrune, wire.PruneReq{}, &pr))
	if !slices.Contains(pr.Volumes, name) || len(pr.Pending) != 0 {
		t.Fatalf("prune after the node is back: %+v", pr)
	}
	if _, err := h.srv.store.VolumeByName(name); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("volume after the prune: %v", err)
	}
}

// TestTwoPoliciesOverOneFileSetKeepWhatEitherKeeps: the retention of a
// client's file set that two policies cover takes each rule at its larger
// setting, and a client a policy does not cover has none.
func TestTwoPoliciesOverOneFileSetKeepWhatEitherKeeps(t *testing.T) {
	policies := []catalog.Policy{
		{Name: "a", Clients: []string{"web"}, Paths: []string{"/srv"}, Retention: catalog.PolicyRetention{All: catalog.KeepRules{Last: 2, Daily: 7}}},
		{Name: "b", Clients: []string{"web", "db"}, Paths: []string{"/srv"}, Retention: catalog.PolicyRetention{
			All: catalog.KeepRules{Last: retention.Unlimited}, Levels: map[catalog.Level]catalog.KeepRules{catalog.LevelFull: {Monthly: 12}}}},
	}
	for i := range policies {
		policies[i].TimeZone = "UTC"
	}
	r, err := newRetentions(policies, func(p *catalog.Policy, c string) bool { return slices.Contains(p.Clients, c) }, []string{"web", "db", "mail"})
	if err != nil {
		t.Fatal(err)
	}
	fs := catalog.FileSetOf([]string{"/srv"}, nil)
	p, ok := r.retentionFor("web", fs)
	if !ok || p.Rules != (retention.Rules{Last: retention.Unlimited, Daily: 7}) || p.Levels["full"] != (retention.Rules{Monthly: 12}) {
		t.Fatalf("web's retention %+v", p)
	}
	if r.policyOf("web", fs) != "a, b" || r.policyOf("db", fs) != "b" {
		t.Fatalf("policies %q %q", r.policyOf("web", fs), r.policyOf("db", fs))
	}
	if _, ok := r.retentionFor("mail", fs); ok {
		t.Fatal("a client no policy covers has a retention")
	}
	if _, ok := r.retentionFor("web", catalog.FileSetOf([]string{"/etc"}, nil)); ok {
		t.Fatal("a file set no policy covers has a retention")
	}
}

// TestExpiredJobsArePruned: the job of a backup the pass expired stays
// while it is younger than job_history and goes after (with its log: job
// show says it does not exist); the jobs of the backups kept stay, and
// job.list lists them as before.
func TestExpiredJobsArePruned(t *testing.T) {
	h := newFakeClockHarness(t, func(c *Config) {
		c.ExpiryInterval = time.Hour
		c.JobHistory = 8 * 24 * time.Hour
		c.LivenessTimeout, c.StallTimeout = 20*24*time.Hour, 20*24*time.Hour
	})
	_, orders := h.setup()
	passes := make(chan wire.PruneResp, 10)
	h.srv.expiryMu.Lock()
	h.srv.expiryTrace = func(r wire.PruneResp, err error) { passes <- r }
	h.srv.expiryMu.Unlock()
	h.keepLast(2)
	var ids []uint64
	for range 3 {
		id, _ := h.fullVolumeBackup(orders)
		ids = append(ids, id)
	}
	jobs := func() []uint64 {
		var resp wire.JobListResp
		h.must(h.api(wire.OpJobList, wire.JobListReq{Client: "web"}, &resp))
		var out []uint64
		for _, j := range resp.Jobs {
			out = append(out, j.ID)
		}
		slices.Sort(out)
		return out
	}
	h.advance(time.Hour)
	if r := waitPass(t, passes); r.Expired != 1 {
		t.Fatalf("first pass %+v", r)
	}
	if got := jobs(); !slices.Equal(got, ids) {
		t.Fatalf("jobs after the expiry %v, want all of %v (none older than the job history)", got, ids)
	}
	h.advance(9 * 24 * time.Hour)
	waitPass(t, passes)
	if got := jobs(); !slices.Equal(got, ids[1:]) {
		t.Fatalf("jobs 9 days on %v, want %v", got, ids[1:])
	}
	var job wire.JobInfo
	wantCode(t, h.api(wire.OpJobShow, wire.JobShowReq{ID: ids[0]}, &job), wire.CodeNotFound)
	h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: ids[1]}, &job))
}

// TestExpirySizing: a command after a fast one is twice its size, up to the
// most; after a slow one, shorter in proportion to how much it overran,
// down to the least; in between, the same.
func TestExpirySizing(t *testing.T) {
	z := defaultExpirySizing
	for _, c := range []struct {
		size, n int
		took    time.Duration
		want    int
	}{
		{250, 250, 10 * time.Millisecond, 500},
		{1500, 1500, 10 * time.Millisecond, 2000},
		{2000, 2000, 0, 2000},
		{2000, 2000, 4400 * time.Millisecond, 113}, // the slowest command measured at scale
		{400, 400, 500 * time.Millisecond, 200},
		{30, 30, 10 * time.Second, 25},
		{300, 300, 200 * time.Millisecond, 300},
		{300, 300, z.hold, 300},
		{300, 300, z.hold / 2, 300},
		// The last command of a plan, shorter than the size: quick, it
		// leaves the size as it was; slow, it says what a backup costs.
		{1000, 10, time.Millisecond, 1000},
		{1000, 10, 200 * time.Millisecond, 1000},
		{1000, 100, time.Second, 25},
	} {
		if got := z.next(c.size, c.n, c.took); got != c.want {
			t.Errorf("size %d, after %d backups in %v: %d, want %d", c.size, c.n, c.took, got, c.want)
		}
	}
}

// TestExpiryCommandsFollowTheirHold: a pass starts with small commands,
// cuts the next one short when one held the applier too long, and grows
// them again while they are quick; what it expires is what one command
// would have expired.
func TestExpiryCommandsFollowTheirHold(t *testing.T) {
	h := newFakeClockHarness(t, func(c *Config) {
		c.LivenessTimeout, c.StallTimeout = 20*24*time.Hour, 20*24*time.Hour
	})
	_, orders := h.setup()
	var ids []uint64
	for range 11 {
		id, _ := h.fullVolumeBackup(orders)
		ids = append(ids, id)
	}
	h.keepLast(1)
	var sizes []int
	h.srv.expiryMu.Lock()
	h.srv.expirySizing = &expirySizing{start: 2, min: 1, max: 4, hold: time.Second}
	h.srv.expiryCommands = func(n int) {
		sizes = append(sizes, n)
		if len(sizes) == 2 {
			h.fake.Advance(3 * time.Second) // the second command holds the applier 3 s
		}
	}
	h.srv.expiryMu.Unlock()
	var resp wire.PruneResp
	h.must(h.api(wire.OpPrune, wire.PruneReq{}, &resp))
	// 2 (quick), 4 (slow: 3 s against 1 s), 1 (quick), 2 (quick), then
	// the last of the 10 expired.
	if want := []int{2, 4, 1, 2, 1}; !slices.Equal(sizes, want) {
		t.Fatalf("commands of %v backups, want %v", sizes, want)
	}
	if resp.Expired != 10 || resp.Kept != 0 {
		t.Fatalf("pass expired %d and kept %d, want 10 and 0", resp.Expired, resp.Kept)
	}
	if got := h.backupIDs(); !slices.Equal(got, ids[10:]) {
		t.Fatalf("backups after the pass %v, want %v", got, ids[10:])
	}
}
