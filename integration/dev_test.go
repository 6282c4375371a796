package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/wire"
)

// TestDevPersistence runs 'cairn dev' as a process, backs up, stops it with
// SIGTERM and starts it again on the same directory: the client, the backup
// and its volume are all still there, the backup restores byte for byte,
// and the next backup builds on it.
func TestDevPersistence(t *testing.T) {
	dir := t.TempDir()
	s := &stack{
		t: t, dir: dir, logs: &logs{}, client: "devhost", node: "dev-node", pool: "Default",
		url: fmt.Sprintf("nats://127.0.0.1:%d", freePort(t)),
	}
	s.logs.printOnFailure(t)
	_, port, _ := strings.Cut(strings.TrimPrefix(s.url, "nats://"), ":")
	data := filepath.Join(dir, "dev")
	dev := newProc(t, s.logs, dir, "dev", "dev", "--data", data, "--nats-port", port, "--raft-addr", freeAddr(t),
		"--client", s.client, "--metrics-addr", freeAddr(t))
	s.procs = []*proc{dev}
	t.Cleanup(dev.stop)
	dev.start()
	s.waitReady()

	src := makeTree(t, smallSpec(23))
	snap := snapshot(t, src)
	b := s.backup("full", src)
	vols := s.volumes()
	if len(vols) != 1 {
		t.Fatalf("volumes: %+v", vols)
	}

	dev.stop()
	if err := dev.exitErr(); err != nil {
		t.Fatalf("cairn dev exited with %v on SIGTERM", err)
	}
	if !strings.Contains(dev.logText(), "stopping") {
		t.Errorf("cairn dev did not say it was stopping")
	}
	dev.start()
	s.waitReady()

	var clients []wire.ClientInfo
	s.json(&clients, "client", "list")
	if len(clients) != 1 || clients[0].Name != s.client || clients[0].Backups != 1 {
		t.Errorf("clients after the restart: %+v", clients)
	}
	var backups []wire.BackupInfo
	s.json(&backups, "backup", "list", "--client", s.client)
	if len(backups) != 1 || backups[0].ID != b.BackupID || backups[0].State != "complete" {
		t.Errorf("backups after the restart: %+v", backups)
	}
	after := s.volumes()
	if len(after) != 1 || after[0].Name != vols[0].Name || after[0].Bytes != vols[0].Bytes || after[0].Path != vols[0].Path {
		t.Errorf("volumes after the restart: %+v, before: %+v", after, vols)
	}
	if size := fileSize(t, after[0].Path); size != after[0].Bytes {
		t.Errorf("volume file %s has %d bytes, the catalog %d", after[0].Path, size, after[0].Bytes)
	}
	to := filepath.Join(t.TempDir(), "restore")
	s.restore(to, "--backup", strconv.FormatUint(b.BackupID, 10))
	checkRestored(t, snap, to, src)

	// The next backup is an incremental on the one from before the restart.
	if err := os.WriteFile(filepath.Join(src, "after-restart.txt"), []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	next := s.backup("incremental", src)
	s.json(&backups, "backup", "list", "--client", s.client)
	for _, nb := range backups {
		if nb.ID == next.BackupID && (nb.Parent != b.BackupID || nb.Level != "incremental") {
			t.Errorf("the backup after the restart: %+v, want an incremental on %d", nb, b.BackupID)
		}
	}
	to = filepath.Join(t.TempDir(), "restore-next")
	s.restore(to)
	checkRestored(t, snapshot(t, src), to, src)
}
