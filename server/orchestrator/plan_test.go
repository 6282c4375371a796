package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/wire"
)

// natsDefaultPayload is NATS's default max_payload, what an external
// cluster most likely has.
const natsDefaultPayload = 1 << 20

// planCatalog is a real catalog on disk that a test fills with backups
// straight from index segments, as the storage node's commands do, with no
// agent, node or Raft in between.
type planCatalog struct {
	t     testing.TB
	store *catalog.Store
	index uint64
	clock time.Time
}

// newBareCatalog is an empty catalog, whose commands the test applies.
func newBareCatalog(t testing.TB) *planCatalog {
	t.Helper()
	store, err := catalog.Open(filepath.Join(t.TempDir(), "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return &planCatalog{t: t, store: store, clock: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)}
}

func newPlanCatalog(t testing.TB) *planCatalog {
	t.Helper()
	c := newBareCatalog(t)
	c.apply(&catalog.Command{Op: catalog.OpRegisterClient, Client: &catalog.Client{Name: "web", Hostname: "web.example"}})
	c.apply(&catalog.Command{Op: catalog.OpPutKey, Key: &catalog.Key{ID: "k1", Pool: "Default", Wrapped: []byte("wrapped")}})
	c.apply(&catalog.Command{Op: catalog.OpCreatePool, Pool: &catalog.Pool{Name: "Default", Nodes: []string{"sn1"}, KeyID: "k1"}})
	c.apply(&catalog.Command{Op: catalog.OpRegisterNode, Node: &catalog.StorageNode{ID: "sn1", DataAddr: "127.0.0.1:7020",
		Pools: []catalog.NodePool{{Name: "Default", Dir: "/srv/pool"}}}})
	return c
}

func (c *planCatalog) apply(cmd *catalog.Command) catalog.ApplyResult {
	c.t.Helper()
	c.index++
	c.clock = c.clock.Add(time.Minute)
	cmd.Time = c.clock
	res := c.store.Apply(c.index, cmd)
	if res.Err != nil {
		c.t.Fatalf("apply %s: %v", cmd.Op, res.Err)
	}
	return res
}

// backup stores a backup of /data whose index is what gen adds, in index
// order, cut into default-size segments, and returns the backup.
func (c *planCatalog) backup(level catalog.Level, gen func(add func(*fileindex.Entry))) *catalog.Backup {
	c.t.Helper()
	id := c.apply(&catalog.Command{Op: catalog.OpCreateJob, Job: &catalog.Job{Type: catalog.JobBackup, Client: "web", Level: level, Pool: "Default", Paths: []fileindex.Path{"/data"}}}).JobID
	c.apply(&catalog.Command{Op: catalog.OpDispatchJob, Dispatch: &catalog.JobDispatch{JobID: id, Node: "sn1"}})
	b := fileindex.NewSegmentBuilder(0)
	segs, entries := 0, int64(0)
	send := func() {
		seg := b.Flush()
		if seg.Count == 0 {
			return
		}
		c.apply(&catalog.Command{Op: catalog.OpAddIndexSegment, Segment: &catalog.IndexSegment{
			BackupID: id, No: segs, First: fileindex.Path(seg.First), Last: fileindex.Path(seg.Last), Count: seg.Count, Data: seg.Data}})
		segs++
	}
	gen(func(e *fileindex.Entry) {
		if err := b.Add(e); err != nil {
			c.t.Fatal(err)
		}
		entries++
		if b.Full() {
			send()
		}
	})
	send()
	vol := uuid.New()
	c.apply(&catalog.Command{Op: catalog.OpCreateVolume, Volume: &catalog.Volume{ID: vol, Pool: "Default", WriterJob: id}})
	size := int64(catalog.DefaultBlockSize)
	c.apply(&catalog.Command{Op: catalog.OpUpdateVolume, VolumeUpdate: &catalog.VolumeUpdate{ID: vol, State: catalog.VolumeAppend, Bytes: &size}})
	c.apply(&catalog.Command{Op: catalog.OpCommitBackup, Commit: &catalog.BackupCommit{
		BackupID: id, SessionID: uuid.New(), Segments: segs, Entries: entries, Files: entries,
		Parts: []catalog.Part{{VolumeID: vol, VolumeStart: size, DataStart: size + 4096, End: size + 1<<30, Final: true}},
	}})
	backup, err := c.store.Backup(id)
	if err != nil {
		c.t.Fatal(err)
	}
	return backup
}

func (c *planCatalog) chain(id uint64) []catalog.Backup {
	c.t.Helper()
	chain, err := c.store.Chain(id)
	if err != nil {
		c.t.Fatal(err)
	}
	return chain
}

func fileEntry(path string, n int) fileindex.Entry {
	return fileindex.Entry{
		Path: path, Type: fileindex.TypeFile, Mode: 0o644, UID: 1000, GID: 1000, User: "app", Group: "app",
		Size: int64(n%65536) * 37, MTime: 1_760_000_000_000_000_000 + int64(n)*1_000_003, NLink: 1, Inode: uint64(100000 + n),
		Loc: fileindex.Location{Seq: uint64(n / 8), Off: uint64(n) * 40000, InBlock: uint32(n%8) * 4096, EndSeq: uint64(n / 8)},
	}
}

// longPath is a path of exactly n bytes below dir, built from components of
// at most 200 bytes (NAME_MAX is 255), ending in a name that sorts by i.
func longPath(dir string, i, n int) string {
	p := dir
	for c := 0; len(p)+201 < n-16; c++ {
		p += "/" + strings.Repeat(string(rune('a'+c%26)), 200)
	}
	name := fmt.Sprintf("/f%06d-", i)
	return p + name + strings.Repeat("x", n-len(p)-len(name))
}

// oddNames are names that JSON escapes: quotes, HTML, control bytes,
// invalid UTF-8, the line separators.
var oddNames = []string{`quote"d`, `back\slash`, "<html>&amp;", "new\nline", "tab\tbell\x07", "bad-\xff\xfe-utf8",
	"sep\u2028\u2029", "日本語のファイル名", "emoji-😀"}

// bigTree adds the index of a full backup of /data: dirs×files ordinary
// files, then deep files with 4,000-byte paths (PATH_MAX is 4,096) and
// large extended attributes, then names that JSON escapes.
func bigTree(dirs, files, deep int) func(add func(*fileindex.Entry)) {
	return func(add func(*fileindex.Entry)) {
		n := 0
		e := fileindex.Entry{Path: "/data", Type: fileindex.TypeDir, Mode: 0o755}
		add(&e)
		for d := range dirs {
			dir := fmt.Sprintf("/data/d%04d", d)
			e := fileindex.Entry{Path: dir, Type: fileindex.TypeDir, Mode: 0o755}
			add(&e)
			for f := range files {
				// Names of 10 to 70 bytes.
				e := fileEntry(fmt.Sprintf("%s/file-%06d.%s", dir, f, strings.Repeat("z", n%61)), n)
				add(&e)
				n++
			}
		}
		if deep > 0 {
			var dirsOf []string
			for i := range deep {
				p := longPath("/data/deep", i, 4000)
				for d := filepath.Dir(p); d != "/data"; d = filepath.Dir(d) {
					if !slices.Contains(dirsOf, d) {
						dirsOf = append(dirsOf, d)
					}
				}
			}
			slices.SortFunc(dirsOf, fileindex.Compare)
			for _, d := range dirsOf {
				e := fileindex.Entry{Path: d, Type: fileindex.TypeDir, Mode: 0o755}
				add(&e)
			}
			for i := range deep {
				e := fileEntry(longPath("/data/deep", i, 4000), n)
				if i%50 == 0 {
					e.Xattrs = []fileindex.Xattr{{Name: "user.big", Value: make([]byte, 60<<10)}}
				}
				add(&e)
				n++
			}
		}
		names := slices.Clone(oddNames)
		slices.SortFunc(names, func(a, b string) int { return fileindex.Compare("/data/odd/"+a, "/data/odd/"+b) })
		e = fileindex.Entry{Path: "/data/odd", Type: fileindex.TypeDir, Mode: 0o755}
		add(&e)
		for _, name := range names {
			e := fileEntry("/data/odd/"+name, n)
			add(&e)
			n++
		}
	}
}

// changes adds the index of an incremental on top of bigTree: every
// 97th file of every 10th directory changed, every 89th deleted, new deep
// files next to the old ones.
func changes(dirs, files, deep int) func(add func(*fileindex.Entry)) {
	return func(add func(*fileindex.Entry)) {
		n := 0
		for d := 0; d < dirs; d += 10 {
			dir := fmt.Sprintf("/data/d%04d", d)
			for f := range files {
				i := d*files + f
				p := fmt.Sprintf("%s/file-%06d.%s", dir, f, strings.Repeat("z", i%61))
				switch {
				case f%97 == 0:
					e := fileEntry(p, 7_000_000+n)
					add(&e)
				case f%89 == 0:
					add(&fileindex.Entry{Path: p, Type: fileindex.TypeDeleted})
				}
				n++
			}
		}
		for i := deep; i < deep+deep/4; i++ {
			e := fileEntry(longPath("/data/deep", i, 4000), 8_000_000+i)
			add(&e)
		}
	}
}

// layerOf maps a read's session to its layer in the chain.
func layerOf(t testing.TB, chain []catalog.Backup, session uuid.UUID) int {
	t.Helper()
	for i, b := range chain {
		if b.SessionID == session {
			return i
		}
	}
	t.Fatalf("a read names session %s, which is not in the chain", session)
	return -1
}

// expectLayer walks the tree at the chain's last backup and yields the
// paths that layer holds, in index order: what the planner's pass over
// that layer must hand out, each exactly once.
type expectLayer struct {
	layer int
	it    *fileindex.MergeIterator
	seen  int
}

func (x *expectLayer) next() (string, bool) {
	for {
		e, ok := x.it.Next()
		if !ok {
			return "", false
		}
		if x.it.Layer() == x.layer {
			x.seen++
			return e.Path, true
		}
	}
}

// checkPlan drains a planner and checks that it hands out every entry of
// the tree exactly once, from the layer that holds its version, in pages
// that each fit limit bytes as a NATS message. It returns the number of
// pages and entries.
func checkPlan(t testing.TB, store *catalog.Store, chain []catalog.Backup, p *planner, limit int) (pages, entries int) {
	t.Helper()
	var cur *expectLayer
	done := map[int]bool{}
	finish := func() {
		if cur == nil {
			return
		}
		if path, ok := cur.next(); ok {
			t.Fatalf("layer %d's pass ended before %q", cur.layer, path)
		}
		if err := cur.it.Err(); err != nil {
			t.Fatal(err)
		}
		done[cur.layer] = true
	}
	biggest := 0
	for cursor := 0; ; {
		resp, err := p.page(cursor)
		if err != nil {
			t.Fatalf("page %d: %v", cursor, err)
		}
		data, err := wire.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) > limit {
			t.Fatalf("page %d is %d bytes, over the %d a NATS message may carry", cursor, len(data), limit)
		}
		biggest = max(biggest, len(data))
		pages++
		n := 0
		for _, rr := range resp.Reads {
			layer := layerOf(t, chain, rr.SessionID)
			if cur == nil || cur.layer != layer {
				finish()
				if done[layer] {
					t.Fatalf("page %d reads layer %d again", cursor, layer)
				}
				it, _, err := store.Tree(chain[len(chain)-1].ID)
				if err != nil {
					t.Fatal(err)
				}
				cur = &expectLayer{layer: layer, it: it}
			}
			for _, loc := range rr.Locs {
				want, ok := cur.next()
				if !ok || want != string(loc.Path) {
					t.Fatalf("page %d: read %.80q of layer %d, want %.80q", cursor, loc.Path, layer, want)
				}
			}
			n += len(rr.Locs)
		}
		if n == 0 && !resp.Done {
			t.Fatalf("page %d is empty and not the last", cursor)
		}
		entries += n
		if resp.Done {
			break
		}
		cursor = resp.Cursor
	}
	finish()
	if len(done) != len(chain) {
		t.Fatalf("the plan read %d of the chain's %d layers", len(done), len(chain))
	}
	if pages > 1 && biggest < limit/2 {
		t.Fatalf("the largest of %d pages is %d bytes: pages should fill most of the %d allowed", pages, biggest, limit)
	}
	return pages, entries
}

// checkBaseTree drains a tree pager and checks that it hands out the tree
// at backup exactly once, in order, in pages that each fit limit bytes.
func checkBaseTree(t testing.TB, store *catalog.Store, backup uint64, tp *treePager, limit int) (pages, entries int) {
	t.Helper()
	want, _, err := store.Tree(backup)
	if err != nil {
		t.Fatal(err)
	}
	biggest, fullest := 0, 0 // bytes of a message, raw bytes of a segment
	after := ""
	for {
		seg, done, err := tp.page(after)
		if err != nil {
			t.Fatal(err)
		}
		data, err := wire.Marshal(wire.BaseTreeResp{Segment: seg, Done: done})
		if err != nil {
			t.Fatal(err)
		}
		if len(data) > limit {
			t.Fatalf("base tree page %d is %d bytes, over the %d a NATS message may carry", pages, len(data), limit)
		}
		biggest = max(biggest, len(data))
		pages++
		var got []fileindex.Entry
		if len(seg) > 0 {
			if got, err = fileindex.DecodeSegment(seg); err != nil {
				t.Fatal(err)
			}
		}
		raw := 0
		for _, e := range got {
			raw += len(fileindex.AppendEntry(nil, &e))
			w, ok := want.Next()
			if !ok || w.Path != e.Path || w.Size != e.Size || w.MTime != e.MTime {
				t.Fatalf("base tree page %d: %.80q, want %.80q", pages, e.Path, w.Path)
			}
			if len(e.Xattrs) > 0 || len(e.Hash) > 0 {
				t.Fatalf("base tree entry %.80q carries attributes the agent does not need", e.Path)
			}
			entries++
			after = e.Path
		}
		fullest = max(fullest, raw)
		if done {
			break
		}
		if len(got) == 0 {
			t.Fatalf("base tree page %d is empty and not the last", pages)
		}
	}
	if w, ok := want.Next(); ok {
		t.Fatalf("the base tree ended before %.80q", w.Path)
	}
	// Compression makes the messages smaller than the raw entries, which
	// are what a page is filled with.
	if budget := segmentBudget(tp.bytes); pages > 1 && fullest < budget/2 {
		t.Fatalf("the fullest of %d base tree pages holds %d bytes of entries (its message %d): pages should fill most of the %d allowed",
			pages, fullest, biggest, budget)
	}
	return pages, entries
}

// A million-file backup: the restore plan and the base tree come out in
// pages that each fit NATS's default max_payload, with every entry exactly
// once, the 4,000-byte paths too. Paging by a count of entries, 4,000 of
// those paths made a 16 MB page, which NATS drops.
//
// Under the race detector the tree is a tenth as large.
func TestMillionFilePlanPagesFitAMessage(t *testing.T) {
	dirs, files, deep := 1000, 1000, 1000
	if raceEnabled {
		dirs = 100
	}
	c := newPlanCatalog(t)
	start := time.Now()
	full := c.backup(catalog.LevelFull, bigTree(dirs, files, deep))
	incr := c.backup(catalog.LevelIncremental, changes(dirs, files, deep))
	chain := c.chain(incr.ID)
	if len(chain) != 2 || full.Files < int64(dirs*files) {
		t.Fatalf("chain %d backups, the full %d files", len(chain), full.Files)
	}
	t.Logf("catalog of %d + %d entries built in %s", full.Files, incr.Files, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	p := newPlanner(c.store, chain, nil, PageBytes(natsDefaultPayload))
	pages, entries := checkPlan(t, c.store, chain, p, natsDefaultPayload)
	t.Logf("restore plan: %d entries in %d pages in %s", entries, pages, time.Since(start).Round(time.Millisecond))
	total, _, err := p.count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if int64(entries) != total {
		t.Fatalf("the plan reads %d entries, the tree holds %d", entries, total)
	}
	// A count is stopped: the run ended, the leadership was lost.
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := p.count(stopped); !errors.Is(err, context.Canceled) {
		t.Fatalf("a count whose context ended: %v", err)
	}
	if empty, err := p.empty(); err != nil || empty {
		t.Fatalf("the chain's tree is empty? %v, %v", empty, err)
	}
	if empty, err := newPlanner(c.store, chain, []string{"/no/such/path"}, PageBytes(natsDefaultPayload)).empty(); err != nil || !empty {
		t.Fatalf("a restore of a path the chain does not hold is empty? %v, %v", empty, err)
	}

	start = time.Now()
	pages, entries = checkBaseTree(t, c.store, incr.ID, &treePager{store: c.store, backup: incr.ID, bytes: PageBytes(natsDefaultPayload)}, natsDefaultPayload)
	t.Logf("base tree: %d entries in %d pages in %s", entries, pages, time.Since(start).Round(time.Millisecond))
	if int64(entries) != total {
		t.Fatalf("the base tree holds %d entries, the tree %d", entries, total)
	}
}

// An entry bigger than a whole page goes out alone, on a page of its own.
func TestOversizeEntryGoesOutAlone(t *testing.T) {
	c := newPlanCatalog(t)
	full := c.backup(catalog.LevelFull, bigTree(2, 20, 6))
	chain := c.chain(full.ID)
	const limit = 3 << 10 // less than one 4,000-byte path
	p := newPlanner(c.store, chain, nil, PageBytes(limit))
	alone := 0
	for cursor := 0; ; {
		resp, err := p.page(cursor)
		if err != nil {
			t.Fatal(err)
		}
		locs := 0
		for _, rr := range resp.Reads {
			locs += len(rr.Locs)
			for _, l := range rr.Locs {
				if len(l.Path) == 4000 {
					alone++
					if len(resp.Reads) != 1 || len(rr.Locs) != 1 {
						t.Fatalf("page %d holds the 4,000-byte path %.40q… and %d more", cursor, l.Path, locs-1)
					}
				}
			}
		}
		if locs == 0 && !resp.Done {
			t.Fatalf("page %d is empty", cursor)
		}
		if resp.Done {
			break
		}
		cursor = resp.Cursor
	}
	if alone != 6 {
		t.Fatalf("%d of the 6 long paths came out", alone)
	}
	tp := &treePager{store: c.store, backup: full.ID, bytes: PageBytes(limit)}
	if _, entries := checkBaseTree(t, c.store, full.ID, tp, 2*limit); entries != int(full.Files) {
		t.Fatalf("base tree of %d entries, want %d", entries, full.Files)
	}
}

// Paging by bytes keeps what the agent and a new leader rely on: the same
// cursor asked again gets the same page, a fresh planner (a server that
// became leader mid-restore) replays to any cursor and gets the page the
// old one gave, hard links pull their first name in, and a cursor past the
// end is an error. The base tree resumes after any path.
func TestPlanPagesRetryAndReplay(t *testing.T) {
	c := newPlanCatalog(t)
	c.backup(catalog.LevelFull, bigTree(30, 100, 40))
	// A hard link in /data/d0010 whose first name is in /data/d0001,
	// outside the restored paths.
	target := "/data/d0001/file-000005." + strings.Repeat("z", 105%61)
	incr := c.backup(catalog.LevelIncremental, func(add func(*fileindex.Entry)) {
		changes(30, 100, 40)(func(e *fileindex.Entry) {
			add(e)
			if strings.HasPrefix(e.Path, "/data/d0010/file-000000.") {
				link := fileindex.Entry{Path: e.Path + "-link", Type: fileindex.TypeHardlink, Target: target}
				add(&link)
			}
		})
	})
	chain := c.chain(incr.ID)
	roots := []string{"/data/d0010", "/data/d0020", "/data/deep"}
	const limit = 24 << 10
	first := newPlanner(c.store, chain, roots, PageBytes(limit))
	var pages []wire.RestorePlanResp
	for cursor := 0; ; {
		resp, err := first.page(cursor)
		if err != nil {
			t.Fatal(err)
		}
		again, err := first.page(cursor)
		if err != nil || !reflect.DeepEqual(resp, again) {
			t.Fatalf("page %d asked again differs (%v)", cursor, err)
		}
		pages = append(pages, resp)
		if resp.Done {
			break
		}
		cursor = resp.Cursor
	}
	if len(pages) < 10 {
		t.Fatalf("only %d pages; the test wants many", len(pages))
	}
	found := false
	for _, pg := range pages {
		for _, rr := range pg.Reads {
			for _, l := range rr.Locs {
				found = found || string(l.Path) == target
			}
		}
	}
	if !found {
		t.Fatal("the hard link's first name, outside the restored paths, is not in the plan")
	}
	for cursor := range pages {
		fresh := newPlanner(c.store, chain, roots, PageBytes(limit))
		got, err := fresh.page(cursor)
		if err != nil || !reflect.DeepEqual(got, pages[cursor]) {
			t.Fatalf("a new leader's page %d differs from the old one's (%v)", cursor, err)
		}
		// And an earlier cursor after that, as a retry that crossed the
		// change of leader.
		if cursor > 0 {
			got, err = fresh.page(cursor - 1)
			if err != nil || !reflect.DeepEqual(got, pages[cursor-1]) {
				t.Fatalf("page %d after page %d differs (%v)", cursor-1, cursor, err)
			}
		}
	}
	_, err := newPlanner(c.store, chain, roots, PageBytes(limit)).page(len(pages) + 3)
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("a cursor past the plan: %v, want ErrInvalidArgument", err)
	}

	// The base tree resumes after any path, as an agent that retried.
	tp := &treePager{store: c.store, backup: incr.ID, bytes: PageBytes(limit)}
	seg, _, err := tp.page("")
	if err != nil {
		t.Fatal(err)
	}
	firstPage, err := fileindex.DecodeSegment(seg)
	if err != nil {
		t.Fatal(err)
	}
	mid := firstPage[len(firstPage)/2].Path
	seg2, _, err := tp.page(mid)
	if err != nil {
		t.Fatal(err)
	}
	resumed, err := fileindex.DecodeSegment(seg2)
	if err != nil {
		t.Fatal(err)
	}
	if resumed[0].Path != firstPage[len(firstPage)/2+1].Path {
		t.Fatalf("resumed after %q at %q, want %q", mid, resumed[0].Path, firstPage[len(firstPage)/2+1].Path)
	}
}

// BenchmarkRestorePlan hands out the whole plan of a 200,000-file backup
// and its incremental, as an agent's restore asks for it, and the base
// tree an incremental compares against.
func BenchmarkRestorePlan(b *testing.B) {
	const dirs, files, deep = 200, 1000, 200
	c := newPlanCatalog(b)
	c.backup(catalog.LevelFull, bigTree(dirs, files, deep))
	incr := c.backup(catalog.LevelIncremental, changes(dirs, files, deep))
	chain := c.chain(incr.ID)
	b.Run("plan", func(b *testing.B) {
		entries, pages := 0, 0
		for b.Loop() {
			p := newPlanner(c.store, chain, nil, PageBytes(natsDefaultPayload))
			for cursor := 0; ; {
				resp, err := p.page(cursor)
				if err != nil {
					b.Fatal(err)
				}
				pages++
				for _, rr := range resp.Reads {
					entries += len(rr.Locs)
				}
				if resp.Done {
					break
				}
				cursor = resp.Cursor
			}
		}
		b.ReportMetric(float64(entries)/b.Elapsed().Seconds(), "entries/s")
		b.ReportMetric(float64(entries)/float64(pages), "entries/page")
	})
	b.Run("basetree", func(b *testing.B) {
		entries, pages := 0, 0
		for b.Loop() {
			tp := &treePager{store: c.store, backup: incr.ID, bytes: PageBytes(natsDefaultPayload)}
			after := ""
			for {
				seg, done, err := tp.page(after)
				if err != nil {
					b.Fatal(err)
				}
				pages++
				if len(seg) > 0 {
					es, err := fileindex.DecodeSegment(seg)
					if err != nil {
						b.Fatal(err)
					}
					entries += len(es)
					after = es[len(es)-1].Path
				}
				if done {
					break
				}
			}
		}
		b.ReportMetric(float64(entries)/b.Elapsed().Seconds(), "entries/s")
		b.ReportMetric(float64(entries)/float64(pages), "entries/page")
	})
}

// A file or subtree restored alone brings the directories above it, from
// whichever backup of the chain holds them, marked as ancestors, once
// each; so do the directories above a hard link's first name that the
// restore pulls in. Nothing else comes, and a path that holds nothing is
// still refused.
func TestPlanBringsTheParentsOfWhatIsChosen(t *testing.T) {
	c := newPlanCatalog(t)
	dir := func(p string, uid uint32, mode uint32) *fileindex.Entry {
		return &fileindex.Entry{Path: p, Type: fileindex.TypeDir, Mode: mode, UID: uid, GID: uid}
	}
	file := func(p string) *fileindex.Entry { e := fileEntry(p, 1); return &e }
	c.backup(catalog.LevelFull, func(add func(*fileindex.Entry)) {
		add(dir("/data", 0, 0o755))
		add(dir("/data/home", 0, 0o755))
		add(dir("/data/home/bob", 1000, 0o700))
		add(dir("/data/home/bob/.ssh", 1000, 0o700))
		add(file("/data/home/bob/.ssh/authorized_keys"))
		add(file("/data/home/bob/other"))
		add(dir("/data/srv", 0, 0o755))
		add(dir("/data/srv/x", 0, 0o750))
		add(file("/data/srv/x/first"))
	})
	incr := c.backup(catalog.LevelIncremental, func(add func(*fileindex.Entry)) {
		add(file("/data/home/bob/.ssh/authorized_keys"))
		add(&fileindex.Entry{Path: "/data/home/bob/.ssh/linked", Type: fileindex.TypeHardlink, Target: "/data/srv/x/first"})
	})
	p := newPlanner(c.store, c.chain(incr.ID), []string{"/data/home/bob/.ssh"}, PageBytes(natsDefaultPayload))
	var got []string
	for cursor := 0; ; {
		resp, err := p.page(cursor)
		if err != nil {
			t.Fatal(err)
		}
		for _, rr := range resp.Reads {
			for _, l := range rr.Locs {
				got = append(got, fmt.Sprintf("%s ancestor=%v", l.Path, l.Ancestor))
			}
		}
		if resp.Done {
			break
		}
		cursor = resp.Cursor
	}
	slices.Sort(got)
	want := []string{
		"/data ancestor=true",
		"/data/home ancestor=true",
		"/data/home/bob ancestor=true",
		"/data/home/bob/.ssh ancestor=false",
		"/data/home/bob/.ssh/authorized_keys ancestor=false", // from the incremental
		"/data/home/bob/.ssh/linked ancestor=false",
		"/data/srv ancestor=true",
		"/data/srv/x ancestor=true",
		"/data/srv/x/first ancestor=false", // the link's first name
	}
	if !slices.Equal(got, want) {
		t.Fatalf("plan reads\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// A path holding nothing is refused by its start (empty) and counts
	// nothing: no ancestor of it either.
	nope := newPlanner(c.store, c.chain(incr.ID), []string{"/data/home/bob/nope"}, PageBytes(natsDefaultPayload))
	files, _, err := nope.count(context.Background())
	if err != nil || files != 0 {
		t.Fatalf("a path that holds nothing counts %d entries (%v)", files, err)
	}
	if empty, err := nope.empty(); err != nil || !empty {
		t.Fatalf("a path that holds nothing is empty? %v, %v", empty, err)
	}
}

func TestTapeReadOrderNeedsEachTapeOnce(t *testing.T) {
	c := newBareCatalog(t)
	store := c.store
	apply := c.apply
	apply(&catalog.Command{Op: catalog.OpRegisterNode, Node: &catalog.StorageNode{ID: "sn1", Libraries: []catalog.NodeLibrary{{Name: "lib1"}},
		Pools: []catalog.NodePool{{Name: "Weekly", Type: "tape", Library: "lib1"}}}})
	a, b := uuid.New(), uuid.New()
	for i, id := range []uuid.UUID{a, b} {
		apply(&catalog.Command{Op: catalog.OpLabelTape, TapeLabel: &catalog.TapeLabel{VolumeID: id, Barcode: fmt.Sprintf("T%d", i), Library: "lib1", Pool: "Weekly", BlockSize: 1}})
	}
	on := func(parts ...catalog.Part) catalog.Backup { return catalog.Backup{Parts: parts} }
	chain := []catalog.Backup{
		on(catalog.Part{VolumeID: a, VolumeStart: 1}),
		on(catalog.Part{VolumeID: b, VolumeStart: 1}),
		on(catalog.Part{VolumeID: a, VolumeStart: 50}),
		on(catalog.Part{VolumeID: a, Part: 0, VolumeStart: 20}, catalog.Part{VolumeID: b, Part: 1, VolumeStart: 30}),
		on(catalog.Part{VolumeID: b, VolumeStart: 40}),
	}
	// Tape a (positions 1, 50, then the session that goes on to b), then b.
	if got := readOrder(store, chain); !slices.Equal(got, []int{0, 2, 3, 1, 4}) {
		t.Fatalf("read order %v", got)
	}
}

// A read part names its volume's medium whatever it is, not only a tape's:
// a storage node finds the pool that reads it by type and name, and an
// SFTP pool reads only parts marked sftp.
func TestReadPartsNameTheirMedium(t *testing.T) {
	c := newBareCatalog(t)
	store := c.store
	apply := c.apply
	apply(&catalog.Command{Op: catalog.OpRegisterNode, Node: &catalog.StorageNode{ID: "sn1",
		Pools: []catalog.NodePool{{Name: "Local", Dir: "/srv/pool"}, {Name: "Offsite", Type: "sftp", Dir: "/backups"}}}})
	local, offsite := uuid.New(), uuid.New()
	apply(&catalog.Command{Op: catalog.OpCreateVolume, Volume: &catalog.Volume{ID: local, Name: "Local-0001", Pool: "Local", BlockSize: 1}})
	apply(&catalog.Command{Op: catalog.OpCreateVolume, Volume: &catalog.Volume{ID: offsite, Name: "Offsite-0001", Pool: "Offsite", BlockSize: 1}})
	p := &planner{store: store, chain: []catalog.Backup{{Parts: []catalog.Part{{VolumeID: local}, {VolumeID: offsite, Part: 1}}}}, parts: map[int][]wire.ReadPart{}, heads: map[int]int{}, targets: map[string]bool{}}
	rp, err := p.readParts(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rp) != 2 || rp[0].MediaType != "disk" || rp[1].MediaType != "sftp" || rp[1].Pool != "Offsite" {
		t.Fatalf("read parts %+v", rp)
	}
}

// A server that leads after the order went out (or lost and regained the
// lead, which drops the pagers) still hands the agent its base tree, from
// where it asks: an empty answer there would make the agent mark none of
// the parent's files deleted, and the incremental would restore them.
func TestBaseTreeSurvivesANewLeader(t *testing.T) {
	w := newWorld(t, Config{})
	c := &planCatalog{t: t, store: w.store, index: 1 << 20, clock: w.clock.Now()}
	full := c.backup(catalog.LevelFull, bigTree(3, 40, 4))
	id := c.apply(&catalog.Command{Op: catalog.OpCreateJob, Job: &catalog.Job{Type: catalog.JobBackup, Client: "web",
		Level: catalog.LevelIncremental, Pool: "Default", Paths: []fileindex.Path{"/data"}}}).JobID
	job := w.job(id)
	if b, err := w.store.Backup(job.BackupID); err != nil || b.Parent != full.ID {
		t.Fatalf("the incremental's backup %+v (%v) does not build on the full %d", b, err, full.ID)
	}
	const limit = 4 << 10
	pager := func(o *Orchestrator) func(after string) ([]byte, bool) {
		return func(after string) ([]byte, bool) {
			seg, done, err := o.BaseTree(job, after)
			if err != nil {
				t.Fatal(err)
			}
			return seg, done
		}
	}
	// The first pages come from the leader that ordered the job, the rest
	// from one that never saw the order, then from the first again after
	// it lost and regained the lead.
	leader := func() *Orchestrator {
		return New(Config{}, Deps{Store: w.store, Raft: w, Member: w, Roles: pageRoles{w, limit}, Liveness: w, Clock: w.clock, Log: w.o.log})
	}
	first, second := leader(), leader()
	var got []string
	after := ""
	for page := 0; ; page++ {
		var seg []byte
		var done bool
		switch {
		case page < 2:
			seg, done = pager(first)(after)
		case page < 4:
			seg, done = pager(second)(after)
		default:
			if page == 4 {
				first.lostLeadership()
			}
			seg, done = pager(first)(after)
		}
		it := fileindex.SegmentIterator(func() ([]byte, bool, error) {
			if seg == nil {
				return nil, false, nil
			}
			s := seg
			seg = nil
			return s, true, nil
		})
		for e, ok := it.Next(); ok; e, ok = it.Next() {
			got = append(got, e.Path)
			after = e.Path
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		if done {
			if page < 5 {
				t.Fatalf("the base tree ended on page %d, after %d of the parent's %d entries", page, len(got), full.Files)
			}
			break
		}
	}
	if int64(len(got)) != full.Files {
		t.Fatalf("the agent got %d of the parent's %d entries across the leaders", len(got), full.Files)
	}
	if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
		t.Fatal("the entries came out of order or twice")
	}
}

// pageRoles is the world's roles with a small page, so a tree takes pages.
type pageRoles struct {
	*world
	bytes int64
}

func (p pageRoles) PageBytes() int { return PageBytes(p.bytes) }

// A whole restore of a chain of one backup says its reads are adjacent,
// and they are: each read's locations are the next entries of the index,
// in order, none left out. A restore of a chosen path, or of a chain of
// more than one backup, does not say so.
func TestPlanSaysWhenItsReadsAreAdjacent(t *testing.T) {
	c := newPlanCatalog(t)
	full := c.backup(catalog.LevelFull, bigTree(20, 500, 0))
	var index []string
	it := c.store.TreeOf(c.chain(full.ID))
	for e, ok := it.Next(); ok; e, ok = it.Next() {
		index = append(index, e.Path)
	}
	incr := c.backup(catalog.LevelIncremental, func(add func(*fileindex.Entry)) {
		e := fileEntry("/data/d0003/new", 1)
		add(&e)
	})
	reads := func(chain []catalog.Backup, roots []string) (adjacent, not int, paths []string) {
		eachRead(t, newPlanner(c.store, chain, roots, 64<<10), func(rr wire.ReadRequest) {
			if rr.Adjacent {
				adjacent++
			} else {
				not++
			}
			for _, l := range rr.Locs {
				paths = append(paths, string(l.Path))
			}
		})
		return adjacent, not, paths
	}
	adjacent, not, paths := reads(c.chain(full.ID), nil)
	if adjacent < 5 || not != 0 {
		t.Fatalf("whole restore of a full: %d reads adjacent, %d not", adjacent, not)
	}
	if !slices.Equal(paths, index) {
		t.Fatalf("whole restore of a full reads %d entries, the index holds %d, or not in its order", len(paths), len(index))
	}
	if adjacent, _, _ := reads(c.chain(full.ID), []string{"/"}); adjacent == 0 {
		t.Fatal(`a restore of "/" is a whole restore too`)
	}
	if adjacent, not, _ := reads(c.chain(full.ID), []string{"/data/d0004"}); adjacent != 0 || not == 0 {
		t.Fatalf("restore of a directory: %d reads adjacent, %d not", adjacent, not)
	}
	if adjacent, not, _ := reads(c.chain(incr.ID), nil); adjacent != 0 || not == 0 {
		t.Fatalf("restore of a chain of two: %d reads adjacent, %d not", adjacent, not)
	}
}

// Each location of a plan says whether it follows the one before it in its
// read: both whole entries, nothing of the session's index between them.
// In a chain the newer backups shadow entries of the older ones (changed,
// deleted), a large file's kept blocks are read by place, and a restore of
// some paths seeks over the rest: each of those breaks a run, and only
// those. The storage node passes the blocks inside a run on as stored.
func TestPlanSaysWhichLocationsFollow(t *testing.T) {
	c := newPlanCatalog(t)
	const dirs, files, deep = 20, 300, 10
	full := c.backup(catalog.LevelFull, bigTree(dirs, files, deep))
	big := fmt.Sprintf("/data/d0005/file-%06d.%s", 10, strings.Repeat("z", (5*files+10)%61))
	incr := c.backup(catalog.LevelIncremental, func(add func(*fileindex.Entry)) {
		var entries []fileindex.Entry
		changes(dirs, files, deep)(func(e *fileindex.Entry) { entries = append(entries, *e) })
		// A large file that changed: its first block kept from the full,
		// read where it lies there.
		e := fileEntry(big, 9_000_000)
		e.Size = 150
		e.Blocks = &fileindex.BlockList{Bits: 20, Sessions: [][16]byte{full.SessionID}, Blocks: []fileindex.Block{
			{Session: 1, Loc: fileindex.Location{Seq: 40, Off: 40 << 20, InBlock: 512, EndSeq: 40, Len: 100}},
			{Loc: fileindex.Location{Len: 50}},
		}}
		entries = append(entries, e)
		slices.SortFunc(entries, func(a, b fileindex.Entry) int { return fileindex.Compare(a.Path, b.Path) })
		for i := range entries {
			add(&entries[i])
		}
	})
	chain := c.chain(incr.ID)
	place := make([]map[string]int, len(chain))
	for i, b := range chain {
		place[i] = map[string]int{}
		it := c.store.Index(b.ID)
		for e, ok := it.Next(); ok; e, ok = it.Next() {
			place[i][e.Path] = len(place[i])
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, roots := range [][]string{nil, {"/data/d0000", "/data/d0005", "/data/odd"}} {
		follow, not, blocks := 0, 0, 0
		eachRead(t, newPlanner(c.store, chain, roots, 64<<10), func(rr wire.ReadRequest) {
			layer := layerOf(t, chain, rr.SessionID)
			for i, l := range rr.Locs {
				want := false
				if i > 0 && l.Block == nil && rr.Locs[i-1].Block == nil {
					want = place[layer][string(l.Path)] == place[layer][string(rr.Locs[i-1].Path)]+1
				}
				if l.Follows != want {
					t.Fatalf("roots %q, layer %d: %s says it follows %v, after %s: want %v", roots, layer, l.Path, l.Follows, rr.Locs[max(i-1, 0)].Path, want)
				}
				switch {
				case l.Block != nil:
					blocks++
				case l.Follows:
					follow++
				default:
					not++
				}
			}
		})
		if follow < 100 || not < 10 || blocks != 1 {
			t.Fatalf("roots %q: %d locations follow, %d do not, %d blocks read by place", roots, follow, not, blocks)
		}
		t.Logf("roots %q: %d locations follow, %d do not", roots, follow, not)
	}
}

// eachRead hands fn every read of p's plan, page by page (small pages
// make many reads).
func eachRead(t *testing.T, p *planner, fn func(wire.ReadRequest)) {
	t.Helper()
	for cursor := 0; ; {
		resp, err := p.page(cursor)
		if err != nil {
			t.Fatal(err)
		}
		for _, rr := range resp.Reads {
			fn(rr)
		}
		if resp.Done {
			return
		}
		cursor = resp.Cursor
	}
}
