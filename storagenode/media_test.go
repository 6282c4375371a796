package storagenode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/storagenode/library"
	"github.com/cairnbackup/cairn/wire"
)

// mediumCase is one medium in the table every medium runs: how pool P of
// it is configured, what an operator does before the first backup, and
// what a failed session must leave on it.
type mediumCase struct {
	name string
	// servers is how the fake servers grant the volumes of pool P.
	servers fakePool
	// pool adds pool P of the medium to the node's configuration.
	pool func(t testing.TB, cfg *Config)
	// ready runs once the node registered (labels tapes, say).
	ready func(t testing.TB, r *nodeRig)
	// rolledBack checks what the medium keeps of a failed session once
	// the servers heard of it: nothing that counts, and nothing held.
	rolledBack func(t testing.TB, r *nodeRig)
}

// mediaCases are the storage node's media. A new medium adds its line.
var mediaCases = []mediumCase{
	{name: "disk", servers: fakePool{name: "P", mediaType: "disk", compression: true, newVolumes: true}, pool: diskCase, rolledBack: diskRolledBack},
	{name: "tape", servers: tapePoolP, pool: tapeCase(false), ready: labelTapes, rolledBack: tapeRolledBack},
	{name: "tape+spool", servers: tapePoolP, pool: tapeCase(true), ready: labelTapes, rolledBack: tapeRolledBack},
	{name: "sftp", servers: sftpPoolP, pool: sftpCase, rolledBack: sftpRolledBack},
	{name: "s3", servers: s3PoolP, pool: s3Case, rolledBack: s3RolledBack},
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
			if _, err := r.sendFiles(1, first, sendOpts{}); err != nil {
				t.Fatal(err)
			}
			r.restore(2, r.fake.readRequest(t, 1)).check(t, r.fake.readRequest(t, 1), first, noLoss, "")
			end := r.fake.sessionEnd(t, 1)

			// The agent of job 3 goes away in the middle of its stream.
			if _, err := r.sendFiles(3, randomFiles(33, 6, 700<<10), sendOpts{broken: true}); err != nil {
				t.Fatal(err)
			}
			poll.Until(t, 20*time.Second, func() error {
				r.fake.mu.Lock()
				defer r.fake.mu.Unlock()
				if len(r.fake.aborts) == 0 {
					return errors.New("the broken session was not reported")
				}
				if a := r.fake.aborts[0]; a.JobID != 3 || a.Error.Code != wire.CodeAgentLost {
					return fmt.Errorf("abort %+v", a)
				}
				return nil
			})
			if mc.rolledBack != nil {
				mc.rolledBack(t, r)
			}

			next := randomFiles(44, 5, 300<<10)
			if _, err := r.sendFiles(4, next, sendOpts{}); err != nil {
				t.Fatal(err)
			}
			c := r.fake.commit(t, 4)
			if p := c.Parts[0]; p.VolumeID != end.VolumeID || p.VolumeStart != end.End {
				t.Fatalf("the next session starts on volume %s at %d; the first ended on volume %s at %d", p.VolumeID, p.VolumeStart, end.VolumeID, end.End)
			}
			r.fake.mu.Lock()
			for _, c := range r.fake.commits {
				if c.JobID == 3 {
					t.Errorf("the broken session was committed: %+v", c)
				}
			}
			r.fake.mu.Unlock()
			r.restore(5, r.fake.readRequest(t, 1)).check(t, r.fake.readRequest(t, 1), first, noLoss, "")
			r.restore(6, r.fake.readRequest(t, 4)).check(t, r.fake.readRequest(t, 4), next, noLoss, "")
		})
	}
}

func noLoss(fileindex.Location) bool { return false }

func diskCase(t testing.TB, cfg *Config) {
	cfg.Pools = append(cfg.Pools, PoolConfig{Name: "P", Dir: filepath.Join(t.TempDir(), "P")})
}

// diskRolledBack: every volume file ends at its committed end.
func diskRolledBack(t testing.TB, r *nodeRig) {
	r.fake.mu.Lock()
	defer r.fake.mu.Unlock()
	for _, v := range r.fake.vols {
		st, err := os.Stat(filepath.Join(r.node.cfg.Pools[0].Dir, v.name+".cvol"))
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() != v.end {
			t.Fatalf("volume %s is %d bytes long; %d are committed", v.name, st.Size(), v.end)
		}
	}
}

// tapePoolP is how the servers grant the tapes of pool P in library lib1.
var tapePoolP = fakePool{name: "P", mediaType: "tape", library: "lib1", compression: true}

func tapeCase(spool bool) func(testing.TB, *Config) {
	return func(t testing.TB, cfg *Config) {
		cfg.Libraries = append(cfg.Libraries, library.Config{Name: "lib1", Emulated: &library.EmulatedConfig{
			Dir: filepath.Join(t.TempDir(), "lib1"), Drives: 1, Slots: 4, MailSlots: 1, Barcodes: []string{"CRN001L9", "CRN002L9"},
			CartridgeBytes: 1 << 30, EarlyWarningBytes: 64 << 20, VirtualClock: true,
		}, MountPoll: 20 * time.Millisecond})
		p := TapePoolConfig{Name: "P", Library: "lib1"}
		if spool {
			p.SpoolDir, p.SpoolChunkBytes = filepath.Join(t.TempDir(), "spool"), 1<<20
		}
		cfg.TapePools = append(cfg.TapePools, p)
	}
}

// labelTapes labels the library's tapes for pool P.
func labelTapes(_ testing.TB, r *nodeRig) { r.labelTapes("CRN001L9", "CRN002L9") }

// tapeRolledBack: the drive is free again, and the spool holds nothing.
func tapeRolledBack(t testing.TB, r *nodeRig) {
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

// newMediaRig starts NATS, the fake servers and a storage node serving
// pool P of one medium.
func newMediaRig(t testing.TB, mc mediumCase) *nodeRig {
	t.Helper()
	r := newNodeRig(t, mc.servers)
	r.serve()
	cfg := r.config()
	mc.pool(t, &cfg)
	r.start(cfg)
	r.waitRegistered()
	if mc.ready != nil {
		mc.ready(t, r)
	}
	return r
}
