package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/corrupt"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/internal/sshdtest"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/wire"
)

// An offsite copy on an append-only SFTP target, through the whole system:
// a storage node at site dr (the client is at hq) backs up straight to
// it, each backup on volumes of its own; 'cairn pool list' shows the
// target reachable and append-only with its traffic; a restore reads from
// the target with no other copy anywhere; a byte changed in a volume
// file behind Cairn's back fails the restore naming the files it held, as
// 'cairn volume extract' of a copy of the file does with no server; and
// expiry leaves an expired volume for the target's owner, forgetting it
// once the owner has deleted its file.
func TestSFTPAppendOnlyOffsite(t *testing.T) {
	sshd := sshdtest.StartWith(t, sshdtest.Options{AppendOnly: true})
	s := newStack(t, stackOpts{
		nodeConfig: map[string]any{"site": "dr", "sftp_pools": []map[string]any{{
			"name": "Offsite", "host": sshd.Host, "port": sshd.Port, "user": sshd.User, "append_only": true,
			"key_file": sshd.KeyFile, "known_hosts": sshd.KnownHosts, "remote_dir": sshd.Dir,
		}}},
		agentConfig: map[string]any{"site": "hq"},
	})
	s.pool = "Offsite"
	src1 := makeTree(t, smallSpec(151))
	src2 := makeTree(t, smallSpec(152))
	var jobs [2]wire.JobInfo
	for i, src := range []string{src1, src2} {
		s.json(&jobs[i], "backup", "--client", s.client, "--path", src, "--level", "full", "--pool", "Offsite", "--wait")
		if jobs[i].State != "success" || len(jobs[i].Volumes) != 1 {
			t.Fatalf("backup %d to the append-only pool: %+v", i+1, jobs[i])
		}
	}
	if jobs[0].Volumes[0] == jobs[1].Volumes[0] {
		t.Fatalf("two backups on one volume %s of an append-only target", jobs[0].Volumes[0])
	}
	for _, v := range s.volumes() {
		if v.Pool == "Offsite" && v.State != "full" {
			t.Fatalf("volume %s on the append-only target is %s, want full (sealed)", v.Name, v.State)
		}
	}
	// The node reports its target with its heartbeats: the bytes of the
	// last backup show at the next one.
	poll.Until(t, 20*time.Second, func() error {
		p := s.poolOf()
		if len(p.Nodes) != 1 || p.Nodes[0].Target == nil {
			return fmt.Errorf("pool list of the SFTP pool: %+v", p.Nodes)
		}
		if tg := p.Nodes[0].Target; !tg.Reachable || !tg.AppendOnly || tg.BytesWritten == 0 {
			return fmt.Errorf("the SFTP target in the pool list: %+v", *tg)
		}
		return nil
	})
	if r := s.ok("pool", "list"); !strings.Contains(r.stdout, sshd.Addr()+" reachable") || !strings.Contains(r.stdout, "append-only") {
		t.Fatalf("pool list does not show the target's state:\n%s", r.stdout)
	}

	// Straight from the target: the only copy there is.
	to := filepath.Join(t.TempDir(), "restore")
	s.restore(to, "--backup", strconv.FormatUint(jobs[1].BackupID, 10))
	checkRestored(t, snapshot(t, src2), to, src2)

	// A byte changed on the target behind Cairn's back.
	file := filepath.Join(sshd.Dir, jobs[0].Volumes[0]+".cvol")
	local := filepath.Join(t.TempDir(), filepath.Base(file)) // the administrator's copy, taken first
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blocks := dataBlocks(t, file)
	victim := blocks[len(blocks)/2]
	b[victim.off+volume.HeaderSize+victim.storedLen/2] ^= 0x10
	if err := os.WriteFile(local, b, 0o600); err != nil {
		t.Fatal(err)
	}
	corrupt.FlipByte(t, file, victim.off+volume.HeaderSize+victim.storedLen/2)
	r := s.cairn("restore", "--client", s.client, "--to", filepath.Join(t.TempDir(), "damaged"), "--backup", strconv.FormatUint(jobs[0].BackupID, 10))
	checkFailure(t, r, 1, "damaged", fmt.Sprintf("block seq %d", victim.seq))
	var failed []wire.JobInfo
	s.json(&failed, "job", "list", "--state", "failed")
	if len(failed) != 1 {
		t.Fatalf("failed jobs: %+v", failed)
	}
	var named []string
	for _, l := range s.job(failed[0].ID).Log {
		if p, ok := strings.CutPrefix(l.Msg, "lost: "); ok {
			named = append(named, p[:strings.Index(p, ": ")])
		}
	}
	if len(named) == 0 {
		t.Fatalf("the failed restore names no file:\n%s", r)
	}
	keys := filepath.Join(t.TempDir(), "keys.json")
	s.ok("key", "export", "--to", keys)
	x := s.cairn("volume", "extract", local, "--key-file", keys, "--to", filepath.Join(t.TempDir(), "extract"))
	checkFailure(t, x, 1, fmt.Sprintf("%d entries were not extracted because their data is damaged", len(named)))
	for _, p := range named {
		if !strings.Contains(x.stderr, "  "+p+": ") {
			t.Errorf("volume extract of the copy does not name %s, which the restore named:\n%s", p, x)
		}
	}

	// Expiry: the target's owner deletes.
	id := strconv.FormatUint(jobs[0].BackupID, 10)
	var del wire.BackupDeleteResp
	s.json(&del, "backup", "delete", id, "--yes")
	gone := jobs[0].Volumes[0]
	var pr wire.PruneResp
	s.json(&pr, "prune")
	if !slices.ContainsFunc(pr.Pending, func(m string) bool { return strings.Contains(m, gone) && strings.Contains(m, "owner") }) {
		t.Fatalf("prune does not say volume %s waits for the target's owner: %+v", gone, pr)
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("the node deleted a file on the append-only target: %v", err)
	}
	if p := s.poolOf(); p.ReclaimableBytes == 0 {
		t.Fatalf("the expired volume is not reclaimable: %+v", p)
	}
	if err := os.Remove(file); err != nil { // the owner, on the target
		t.Fatal(err)
	}
	poll.Until(t, 20*time.Second, func() error {
		s.json(&pr, "prune")
		for _, v := range s.volumes() {
			if v.Name == gone {
				return fmt.Errorf("volume %s is still in the catalog (%s): prune said %+v", gone, v.State, pr)
			}
		}
		return nil
	})
}
