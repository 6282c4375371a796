package integration

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/wire"
)

// fillFS writes a file in dir until no more than leave bytes are free on
// its filesystem, or it refuses more, and returns the file.
func fillFS(t *testing.T, dir string, leave int64) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		free := int64(st.Bavail) * st.Bsize
		if free <= leave {
			return path
		}
		if _, err := f.Write(buf[:min(int64(len(buf)), free-leave)]); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return path
			}
			t.Fatal(err)
		}
	}
}

// jobList lists every job, newest first.
func (s *stack) jobList() []wire.JobInfo {
	s.t.Helper()
	var js []wire.JobInfo
	s.json(&js, "job", "list", "--limit", "1000")
	return js
}

// TestCatalogDiskFull runs a server whose data directory is a small
// filesystem, its Raft log on another with room (so a command can be
// committed that the catalog cannot apply).
//
// Full: a backup through the CLI fails, saying the disk is full, where, and
// on which server, and exits non-zero; the catalog says it stopped. Then
// the server is stopped, the space freed and the server started: its Raft
// log holds the start it was told failed, and replaying it makes a job that
// is voided and never dispatched (no run on the agent, no session on the
// node). A backup after that works.
//
// Nearly full (below min_free): the leader starts nothing, makes no
// job, and its catalog goes on; once there is room a backup works with no
// restart.
func TestCatalogDiskFull(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "server")
	raftDir := filepath.Join(data, "raft")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, data, "48m")
	if err := os.MkdirAll(raftDir, 0o700); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, raftDir, "64m")
	cfg := filepath.Join(root, "server.json")
	config := func(minFree, floor int64) {
		writeJSON(t, cfg, map[string]any{"min_free": fmt.Sprintf("%dK", minFree>>10), "catalog_floor": fmt.Sprintf("%dK", floor>>10),
			"start_confirm_timeout": "5s", "request_id_ttl": "1h"})
	}
	config(0, 8<<20) // no margin for new work: the catalog's floor decides
	s := newStack(t, stackOpts{serverData: data, serverConfig: cfg})
	src := makeTree(t, smallSpec(31))
	s.backup("full", src)
	before := len(s.jobList())

	filler := fillFS(t, data, 4<<20)
	r := s.fails(1, []string{"server s1", "the disk is full: free space in " + data, "was not started"},
		"backup", "--client", s.client, "--path", src, "--level", "full")
	if strings.Contains(r.output(), "electing") {
		t.Errorf("a full disk is not an election:\n%s", r)
	}
	var st wire.StatusResp
	s.json(&st, "status")
	if !strings.Contains(st.CatalogError, "the disk is full: free space in "+data) {
		t.Errorf("status of a server whose catalog stopped: %+v", st)
	}

	stop(s.server)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	s.server.start()
	s.waitReady()
	var void wire.JobInfo
	poll.Until(t, 60*time.Second, func() error {
		js := s.jobList()
		if len(js) != before+1 {
			return fmt.Errorf("%d jobs, want the %d before and the one replayed: %+v", len(js), before, js)
		}
		if void = js[0]; void.State != "void" {
			return fmt.Errorf("the replayed start's job %d is %s", void.ID, void.State)
		}
		return nil
	})
	if void.Attempt != 0 || void.Node != "" || !void.Started.IsZero() || !strings.Contains(void.Error, "not confirmed") {
		t.Errorf("the job of the start the CLI was told failed: %+v", void)
	}
	for _, run := range runsIn(t, s.agent, "backup started", nil) {
		if run.job == void.ID {
			t.Errorf("the agent ran job %d, whose start the CLI was told failed", void.ID)
		}
	}
	for _, run := range runsIn(t, s.storage, "backup session started", nil) {
		if run.job == void.ID {
			t.Errorf("storage node sn1 opened a session of job %d, whose start the CLI was told failed", void.ID)
		}
	}
	s.backup("incremental", src)

	// Nearly full: below the margin for new work, nothing is started and
	// the catalog goes on.
	config(24<<20, 8<<20)
	stop(s.server)
	s.server.start()
	s.waitReady()
	before = len(s.jobList())
	filler = fillFS(t, data, 16<<20)
	s.fails(1, []string{"server s1", "the disk is full: free space in " + data}, "backup", "--client", s.client, "--path", src)
	if n := len(s.jobList()); n != before {
		t.Errorf("%d jobs after a start refused for space, %d before", n, before)
	}
	var after wire.StatusResp
	s.json(&after, "status")
	if after.CatalogError != "" {
		t.Errorf("the catalog stopped above its floor: %+v", after)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	s.backup("incremental", src)
}
