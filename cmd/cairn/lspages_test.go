package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/wire"
)

// lsPages answers tree.list with pages, in order, the last one saying
// that no more follow; a request after it is an error.
func lsPages(pages ...[]wire.EntryInfo) []scriptedAnswer {
	var out []scriptedAnswer
	for i, p := range pages {
		resp := wire.TreeListResp{Backup: wire.BackupInfo{ID: 3, Client: "web"}, Entries: p, More: i < len(pages)-1}
		out = append(out, func(json.RawMessage) (any, error) { return resp, nil })
	}
	return append(out, func(json.RawMessage) (any, error) {
		return nil, wire.Errorf(wire.CodeInvalidArgument, "", "a page asked for after the last one")
	})
}

// Each page is printed as it comes, and nothing of one page's entries
// shows in the next's: an entry without an owner's name or a link target
// is printed without them, whatever the entry at its place on the page
// before had.
func TestLsPrintsEachPageAsItIs(t *testing.T) {
	server := func() *scriptedServer {
		s := newScriptedServer(t)
		s.script(wire.OpTreeList, lsPages(
			[]wire.EntryInfo{{Path: "/a", Type: "file", User: "alice", Group: "staff", UID: 1000, GID: 50}, {Path: "/b", Type: "symlink", Target: "/etc/passwd"}},
			[]wire.EntryInfo{{Path: "/c", Type: "file", UID: 1001, GID: 1001}, {Path: "/d", Type: "file"}},
		)...)
		return s
	}
	code, out, stderr := cli(context.Background(), "--nats", server().url, "ls", "--client", "web", "/")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 6 || strings.Count(out, "MODE") != 1 {
		t.Fatalf("want the backup's line, one header and 4 rows:\n%s", out)
	}
	for _, l := range lines[4:] {
		if strings.Contains(l, "alice") || strings.Contains(l, "passwd") {
			t.Fatalf("an entry of page 2 shows what page 1 had:\n%s", out)
		}
	}
	if !strings.Contains(lines[4], "1001:1001") {
		t.Fatalf("page 2's first entry lost its owner:\n%s", out)
	}

	code, out, stderr = cli(context.Background(), "--nats", server().url, "--json", "ls", "--client", "web", "/")
	var doc struct {
		Backup  wire.BackupInfo `json:"backup"`
		Entries []lsEntryJSON   `json:"entries"`
	}
	if err := json.Unmarshal([]byte(out), &doc); code != 0 || err != nil || len(doc.Entries) != 4 || doc.Backup.ID != 3 {
		t.Fatalf("exit %d, %q, %v: %s", code, stderr, err, out)
	}
	if e := doc.Entries[2]; e.User != "" || e.UID != 1001 || doc.Entries[3].Target != "" {
		t.Fatalf("page 2 in JSON: %+v", doc.Entries[2:])
	}
}

// A page that fails after others were printed ends the listing with an
// error and a non-zero exit; the JSON printed so far is closed, and says
// it is incomplete.
func TestLsPageFailingHalfway(t *testing.T) {
	s := newScriptedServer(t)
	first := lsPages([]wire.EntryInfo{{Path: "/a", Type: "file"}}, nil)[0]
	s.script(wire.OpTreeList, first, func(json.RawMessage) (any, error) {
		return nil, wire.Errorf(wire.CodeInternal, "", "the catalog could not be read")
	})
	code, out, stderr := cli(context.Background(), "--nats", s.url, "--json", "ls", "--client", "web", "/")
	var doc struct {
		Entries    []lsEntryJSON `json:"entries"`
		Incomplete bool          `json:"incomplete"`
	}
	if code == 0 || !strings.Contains(stderr, "the catalog could not be read") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || !doc.Incomplete || len(doc.Entries) != 1 {
		t.Fatalf("stdout is not the closed, incomplete listing (%v):\n%s", err, out)
	}
}
