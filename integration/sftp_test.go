package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cairnbackup/cairn/internal/sshdtest"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/wire"
)

// A backup to an SFTP pool on a real sshd goes through the whole system:
// the storage node registers the pool, the servers grant it a new volume,
// the node writes it on the target; a restore reads it back from there
// byte for byte, and the volume file on the target reads with 'cairn
// volume ls' and no server.
func TestSFTPPoolEndToEnd(t *testing.T) {
	sshd := sshdtest.Start(t)
	remote := filepath.Join(sshd.Dir, "sn1")
	if err := os.Mkdir(remote, 0o700); err != nil {
		t.Fatal(err)
	}
	s := newStack(t, stackOpts{nodeConfig: map[string]any{"sftp_pools": []map[string]any{{
		"name": "Offsite", "host": sshd.Host, "port": sshd.Port, "user": sshd.User,
		"key_file": sshd.KeyFile, "known_hosts": sshd.KnownHosts, "remote_dir": remote,
	}}}})
	src := makeTree(t, sample.Spec{TextFiles: 40, RandomFiles: 30, MaxFileSize: 256 << 10, SparseSize: 1 << 20, Seed: 15})
	snap := snapshot(t, src)
	var job wire.JobInfo
	s.json(&job, "backup", "--client", s.client, "--path", src, "--level", "full", "--pool", "Offsite", "--wait")
	if job.State != "success" || len(job.Volumes) != 1 {
		t.Fatalf("backup to the SFTP pool: %+v", job)
	}
	var offsite *wire.VolumeInfo
	for _, v := range s.volumes() {
		if v.Pool == "Offsite" {
			offsite = &v
		}
	}
	if offsite == nil || offsite.MediaType != "sftp" {
		t.Fatalf("no sftp volume in pool Offsite: %+v", s.volumes())
	}
	file := filepath.Join(remote, offsite.Name+".cvol")
	if st, err := os.Stat(file); err != nil || st.Size() != offsite.Bytes {
		t.Fatalf("the volume on the target: %v, %v; the catalog has %d bytes committed", st, err, offsite.Bytes)
	}

	to := filepath.Join(t.TempDir(), "restore")
	s.restore(to, "--backup", strconv.FormatUint(job.BackupID, 10))
	checkRestored(t, snap, to, src)

	keys := filepath.Join(t.TempDir(), "keys.json")
	s.ok("key", "export", "--to", keys)
	var listing volumeListing
	s.json(&listing, "volume", "ls", file, "--key-file", keys)
	if len(listing.Sessions) != 1 || len(listing.Sessions[0].Entries) == 0 {
		t.Fatalf("cairn volume ls of the remote file: %+v", listing)
	}
}
