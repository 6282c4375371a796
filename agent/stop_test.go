package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/wire"
)

// Once Admit refuses, the Restorer applies nothing more: the entry under
// way is not renamed into place, its temporary file goes, and Finish sets
// no directory's mode or times. (A file whose worker had not named it when
// the servers ended the job: TestStalledClientsReleaseTheDrive.)
func TestRestorerWritesNothingOnceRefused(t *testing.T) {
	root := filepath.Join(t.TempDir(), "r")
	stop := errors.New("the servers ended the job")
	var entries []string
	// The servers end the job once b's header came: its data is refused.
	// Admit is asked by the workers too, so it is told by what came, not
	// by how often it was asked.
	var ended atomic.Bool
	r, err := NewRestorer(RestoreOptions{Root: root, OnEntry: func(p string) {
		entries = append(entries, p)
		if p == "/d/b" {
			ended.Store(true)
		}
	}, Admit: func() error {
		if ended.Load() {
			return stop
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	stream := volume.AppendRecord(nil, volume.RecFileHeader, fileindex.AppendEntry(nil, &fileindex.Entry{Path: "/d", Type: fileindex.TypeDir, Mode: 0o750}))
	stream = volume.AppendFileEnd(stream, volume.EndOK, nil)
	stream = append(stream, checkedFile("/d/a", []byte("first"))...)
	if err := r.Records(stream); err != nil {
		t.Fatal(err)
	}
	r.wk.settle() // a is in place
	stream = checkedFile("/d/b", []byte("second"))
	stream = append(stream, checkedFile("/d/c", []byte("third"))...)
	if err := r.Records(stream); !errors.Is(err, stop) {
		t.Fatalf("records past the refusal: %v", err)
	}
	if err := r.Records(checkedFile("/d/e", nil)); !errors.Is(err, stop) {
		t.Fatalf("a batch after the refusal: %v", err)
	}
	if _, err := r.Finish(); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(root, "d", "a")); err != nil || string(got) != "first" {
		t.Fatalf("the file before the refusal: %q %v", got, err)
	}
	names, _ := os.ReadDir(filepath.Join(root, "d"))
	if len(names) != 1 {
		t.Fatalf("the target holds %v, want only a", names)
	}
	if st, err := os.Stat(filepath.Join(root, "d")); err != nil || st.Mode().Perm() == 0o750 {
		t.Fatalf("Finish set the directory's mode after the refusal: %v %v", st.Mode(), err)
	}
	if !slices.Equal(entries, []string{"/d", "/d/a", "/d/b"}) {
		t.Fatalf("entries told: %v", entries)
	}
}

// A cancel order stops a running restore at once: what was restored stays,
// the file under way is never renamed into place even though its last
// records come after the order, nothing after it is written, and the
// agent reports the job stopped with the servers' reason.
func TestCancelOrderStopsARestore(t *testing.T) {
	_, nc, srv := startAgent(t, nil, "")

	// The storage node: it sends a whole and half of b, and the rest once
	// the order was taken.
	l, fp := listenNode(t)
	ordered := make(chan struct{})
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		conn := dataplane.NewConn(c)
		defer conn.Close()
		if _, _, err := conn.ReadFrame(); err != nil { // hello
			return
		}
		_ = conn.WriteJSON(dataplane.FrameAccept, dataplane.Accept{V: dataplane.Version, JobID: 7, Node: "sn1"})
		_ = conn.WriteJSON(dataplane.FrameReadStart, dataplane.ReadStart{Entries: []dataplane.ReadEntry{{Path: "/d/a"}, {Path: "/d/b"}, {Path: "/d/c"}}})
		b := checkedFile("/d/b", []byte("second"))
		sum := sha256.Sum256([]byte("second"))
		end := volume.AppendFileEnd(nil, volume.EndOK, sum[:])
		_ = conn.WriteFrame(dataplane.FrameRecords, append(checkedFile("/d/a", []byte("first")), b[:len(b)-len(end)]...))
		_ = conn.Flush()
		<-ordered
		_ = conn.WriteFrame(dataplane.FrameRecords, append(end, checkedFile("/d/c", []byte("third"))...))
		_ = conn.WriteJSON(dataplane.FrameReadDone, dataplane.ReadDone{Entries: 3, Asked: 3})
	}()

	root := filepath.Join(t.TempDir(), "r")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := wire.Request(ctx, nc, wire.AgentSubject("web", wire.OpRunRestore), wire.RunRestore{
		JobID: 7, Attempt: 1, To: root, Node: wire.DataEndpoint{Node: "sn1", Addr: l.Addr().String(), CertSHA256: fp}, Ticket: "t",
	}, nil); err != nil {
		t.Fatal(err)
	}
	temp := func() []string { return filesUnderWay(t, filepath.Join(root, "d")) }
	poll.Until(t, 10*time.Second, func() error {
		if _, err := os.Stat(filepath.Join(root, "d", "a")); err != nil {
			return err
		}
		if len(temp()) == 0 {
			return errors.New("b is not under way")
		}
		return nil
	})
	var res wire.CancelResult
	if err := wire.Request(ctx, nc, wire.AgentSubject("web", wire.OpCancel), wire.CancelJob{JobID: 7, Attempt: 1, Reason: "job made no progress"}, &res); err != nil || !res.Running {
		t.Fatalf("cancel: %+v %v", res, err)
	}
	close(ordered)
	done := srv.report(t, 10*time.Second)
	if done.Error == nil || done.Error.Code != wire.CodeAborted || !strings.Contains(done.Error.Message, "stopped by the servers: job made no progress") {
		t.Fatalf("report %+v", done)
	}
	names, _ := os.ReadDir(filepath.Join(root, "d"))
	if len(names) != 1 || names[0].Name() != "a" {
		var ns []string
		for _, n := range names {
			ns = append(ns, n.Name())
		}
		t.Fatalf("after the order the target holds %v, want only a", ns)
	}
	// The order is idempotent.
	if err := wire.Request(ctx, nc, wire.AgentSubject("web", wire.OpCancel), wire.CancelJob{JobID: 7, Attempt: 1, Reason: "again"}, &res); err != nil || res.Running {
		t.Fatalf("cancel again: %+v %v", res, err)
	}
}
