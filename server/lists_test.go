package server

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/natsd"
	"github.com/cairnbackup/cairn/wire"
)

// Every list that grows with the data comes in pages that fit the NATS
// max_payload, and following the pages as the CLI does yields each item
// once. The NATS server here takes 16 KiB, so a few dozen long items
// overflow it; before, such a reply was dropped and the caller waited out
// its timeout.
func TestListsComeInPagesThatFitAMessage(t *testing.T) {
	const limit = 16 << 10
	h := newHarnessOn(t, natsd.Config{Anonymous: true, MaxPayload: limit})
	_, orders := h.setup()
	go func() {
		for {
			select {
			case <-orders:
			case <-h.ctx.Done():
				return
			}
		}
	}()
	// Each request gets far less than the harness's minute, so a reply
	// that never comes fails the test soon.
	call := func(op string, req, resp any) error {
		ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
		defer cancel()
		return wire.Request(ctx, h.nc, wire.APISubject(op), req, resp)
	}
	long := strings.Repeat("p", 300)

	// Jobs and backups with long paths.
	var jobs []uint64
	for i := range 40 {
		var st wire.JobStarted
		h.must(call(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{fileindex.Path(fmt.Sprintf("/srv/%s/%02d", long, i))}, Level: "full"}, &st))
		jobs = append(jobs, st.JobID)
	}
	slices.Reverse(jobs) // newest first, as the lists come
	var gotJobs []uint64
	pages := 1
	for req := (wire.JobListReq{Limit: 1000}); ; pages++ {
		var resp wire.JobListResp
		h.must(call(wire.OpJobList, req, &resp))
		for _, j := range resp.Jobs {
			gotJobs = append(gotJobs, j.ID)
		}
		if !resp.More {
			break
		}
		req.Before = resp.Jobs[len(resp.Jobs)-1].ID
	}
	if !slices.Equal(gotJobs, jobs) || pages < 2 {
		t.Fatalf("job list in %d pages: %v, want %v", pages, gotJobs, jobs)
	}
	// A limit is a limit across pages.
	var resp wire.JobListResp
	h.must(call(wire.OpJobList, wire.JobListReq{Limit: 3}, &resp))
	if len(resp.Jobs) != 3 || resp.More {
		t.Fatalf("job list of 3: %d jobs, more %v", len(resp.Jobs), resp.More)
	}

	var gotBackups []uint64
	pages = 1
	for req := (wire.BackupListReq{Client: "web"}); ; pages++ {
		var resp wire.BackupListResp
		h.must(call(wire.OpBackupList, req, &resp))
		for _, b := range resp.Backups {
			gotBackups = append(gotBackups, b.ID)
		}
		if !resp.More {
			break
		}
		req.Before = resp.Backups[len(resp.Backups)-1].ID
	}
	if len(gotBackups) != len(jobs) || !slices.IsSortedFunc(gotBackups, func(a, b uint64) int { return int(b) - int(a) }) || pages < 2 {
		t.Fatalf("backup list in %d pages: %v", pages, gotBackups)
	}

	// Clients with long host names.
	wantClients := []string{"web"}
	for i := range 50 {
		name := fmt.Sprintf("c%03d", i)
		h.must(wire.Request(h.ctx, h.nc, wire.FromAgentSubject(name, wire.OpAgentRegister), wire.AgentRegisterReq{Name: name, Hostname: long + name}, nil))
		wantClients = append(wantClients, name)
	}
	slices.Sort(wantClients)
	var gotClients []string
	pages = 1
	for req := (wire.ClientListReq{}); ; pages++ {
		var resp wire.ClientListResp
		h.must(call(wire.OpClientList, req, &resp))
		for _, c := range resp.Clients {
			gotClients = append(gotClients, c.Name)
		}
		if !resp.More {
			break
		}
		req.After = resp.Clients[len(resp.Clients)-1].Name
	}
	if !slices.Equal(gotClients, wantClients) || pages < 2 {
		t.Fatalf("client list in %d pages: %v", pages, gotClients)
	}

	// Volumes.
	var wantVolumes []string
	for range 80 {
		res, err := h.srv.apply(h.ctx, &catalog.Command{Op: catalog.OpCreateVolume, Volume: &catalog.Volume{ID: uuid.New(), Pool: "Default"}})
		h.must(err)
		wantVolumes = append(wantVolumes, res.VolumeName)
	}
	slices.Sort(wantVolumes)
	var gotVolumes []string
	pages = 1
	for req := (wire.VolumeListReq{}); ; pages++ {
		var resp wire.VolumeListResp
		h.must(call(wire.OpVolumeList, req, &resp))
		for _, v := range resp.Volumes {
			gotVolumes = append(gotVolumes, v.Name)
		}
		if !resp.More {
			break
		}
		req.After = resp.Volumes[len(resp.Volumes)-1].Name
	}
	if !slices.Equal(gotVolumes, wantVolumes) || pages < 2 {
		t.Fatalf("volume list in %d pages: %v", pages, gotVolumes)
	}

	// A long job log.
	job := jobs[0]
	var lines []catalog.LogLine
	for i := range 200 {
		lines = append(lines, catalog.LogLine{Level: "warning", Msg: fmt.Sprintf("%s/%03d: permission denied", long, i)})
	}
	_, err := h.srv.apply(h.ctx, &catalog.Command{Op: catalog.OpAppendJobLog, JobLog: &catalog.JobLog{JobID: job, Lines: lines}})
	h.must(err)
	stored, err := h.srv.store.Job(job)
	h.must(err)
	var gotLog []string
	pages = 1
	for req := (wire.JobShowReq{ID: job}); ; pages++ {
		var info wire.JobInfo
		h.must(call(wire.OpJobShow, req, &info))
		if info.ID != job || info.LogFrom != req.LogFrom {
			t.Fatalf("job show from line %d: job %d from line %d", req.LogFrom, info.ID, info.LogFrom)
		}
		for _, l := range info.Log {
			gotLog = append(gotLog, l.Msg)
		}
		if info.LogNext == 0 {
			break
		}
		req.LogFrom = info.LogNext
	}
	var wantLog []string
	for _, l := range stored.Log {
		wantLog = append(wantLog, l.Msg)
	}
	if !slices.Equal(gotLog, wantLog) || len(wantLog) < 200 || pages < 2 {
		t.Fatalf("job log in %d pages: %d lines, want %d", pages, len(gotLog), len(wantLog))
	}

	// A backup's tree with long names, listed whole and one directory.
	dir := fmt.Sprintf("/srv/%s/%02d", long, 39)
	var g wire.VolumeGrant
	h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: jobs[0], Pool: "Default"}, &g))
	h.must(h.node(wire.OpVolumeLabeled, wire.VolumeLabeled{JobID: jobs[0], VolumeID: g.ID}, nil))
	b := fileindex.NewSegmentBuilder(0)
	wantTree := []string{dir, dir + "/sub"}
	for i := range 120 {
		wantTree = append(wantTree, fmt.Sprintf("%s/f%03d-%s", dir, i, strings.Repeat("n", 180)))
	}
	for i := range 120 {
		wantTree = append(wantTree, fmt.Sprintf("%s/sub/g%03d-%s", dir, i, strings.Repeat("n", 180)))
	}
	slices.SortFunc(wantTree, fileindex.Compare)
	for i, p := range wantTree {
		e := fileindex.Entry{Path: p, Type: fileindex.TypeFile, Mode: 0o644, Size: int64(i), Loc: fileindex.Location{Seq: uint64(i)}}
		if p == dir || p == dir+"/sub" {
			e.Type, e.Mode = fileindex.TypeDir, 0o755
		}
		h.must(b.Add(&e))
	}
	seg := b.Flush()
	h.must(h.node(wire.OpSessionIndex, wire.SessionIndexReq{JobID: jobs[0], No: 0, First: fileindex.Path(seg.First), Last: fileindex.Path(seg.Last), Count: seg.Count, Data: seg.Data}, nil))
	h.must(h.node(wire.OpSessionCommit, wire.SessionCommitReq{
		JobID: jobs[0], SessionID: uuid.New(), Segments: 1,
		Parts: []wire.SessionPart{{VolumeID: g.ID, VolumeStart: 256 << 10, DataStart: 256<<10 + 64, End: 512 << 10, Final: true}},
		Stats: wire.SessionStats{Entries: int64(len(wantTree)), Files: int64(len(wantTree))},
	}, nil))
	list := func(path string, recursive bool) (paths []string, pages int) {
		req := wire.TreeListReq{PointInTime: wire.PointInTime{Client: "web", BackupID: jobs[0]}, Path: fileindex.Path(path), Recursive: recursive}
		for {
			var resp wire.TreeListResp
			h.must(call(wire.OpTreeList, req, &resp))
			pages++
			for _, e := range resp.Entries {
				paths = append(paths, string(e.Path))
			}
			if !resp.More {
				return paths, pages
			}
			req.After = resp.Entries[len(resp.Entries)-1].Path
		}
	}
	if got, pages := list(dir, true); !slices.Equal(got, wantTree) || pages < 3 {
		t.Fatalf("ls -R in %d pages: %d entries, want %d", pages, len(got), len(wantTree))
	}
	var direct []string
	for _, p := range wantTree {
		if p != dir && !strings.HasPrefix(p, dir+"/sub/") {
			direct = append(direct, p)
		}
	}
	if got, pages := list(dir, false); !slices.Equal(got, direct) || pages < 2 {
		t.Fatalf("ls in %d pages: %d entries, want %d", pages, len(got), len(direct))
	}

	// One item bigger than a message cannot be paged: the caller learns
	// so at once, with a code.
	_, err = h.srv.apply(h.ctx, &catalog.Command{Op: catalog.OpAppendJobLog, JobLog: &catalog.JobLog{JobID: job,
		Lines: []catalog.LogLine{{Level: "error", Msg: strings.Repeat("x", 2*limit)}}}})
	h.must(err)
	start := time.Now()
	var info wire.JobInfo
	for req := (wire.JobShowReq{ID: job}); ; {
		err = call(wire.OpJobShow, req, &info)
		if err != nil || info.LogNext == 0 {
			break
		}
		req.LogFrom = info.LogNext
	}
	wantCode(t, err, wire.CodeTooLarge)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the oversize reply took %s to fail", took)
	}
}

// TestListFiltersThatNameNothing: a filter naming a client, a job state or
// a pool that does not exist is refused with the code and a hint, not
// answered with an empty list a script would take for "none"; a filter
// that names something that has nothing yet is an empty list.
func TestListFiltersThatNameNothing(t *testing.T) {
	h := newHarness(t)
	h.setup()
	var jobs wire.JobListResp
	wantCode(t, h.api(wire.OpJobList, wire.JobListReq{Client: "nosuch"}, &jobs), wire.CodeUnknownClient)
	err := h.api(wire.OpJobList, wire.JobListReq{States: []string{"failed", "bogus"}}, &jobs)
	wantCode(t, err, wire.CodeInvalidArgument)
	if we := wire.AsError(err); !strings.Contains(we.Message, `"bogus"`) || !strings.Contains(we.Hint, "running") {
		t.Errorf("an unknown job state: %+v", we)
	}
	var vols wire.VolumeListResp
	wantCode(t, h.api(wire.OpVolumeList, wire.VolumeListReq{Pool: "nosuch"}, &vols), wire.CodeNotFound)

	h.must(h.api(wire.OpJobList, wire.JobListReq{Client: "web", States: []string{"failed", "canceled"}}, &jobs))
	h.must(h.api(wire.OpVolumeList, wire.VolumeListReq{Pool: "Default"}, &vols))
	if len(jobs.Jobs) != 0 || len(vols.Volumes) != 0 {
		t.Errorf("filters naming what has nothing yet: %+v, %+v", jobs, vols)
	}
}
