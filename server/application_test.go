package server

import (
	"reflect"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/fieldcheck"
	"github.com/cairnbackup/cairn/wire"
)

// A backup's application steps and command sources reach the agent's
// order as the start request gave them, every field of them.
func TestApplicationIsCarried(t *testing.T) {
	var step wire.AppStep
	fieldcheck.Fill(&step)
	if err := fieldcheck.Carried(step, catalog.AppStep(step)); err != nil {
		t.Fatal(err)
	}
	var src wire.CommandSource
	fieldcheck.Fill(&src)
	if err := fieldcheck.Carried(src, catalog.CommandSource(src)); err != nil {
		t.Fatal(err)
	}

	h := newHarness(t)
	_, orders := h.setup()
	app := wire.Application{
		Before:  []wire.AppStep{{Command: "/etc/cairn/scripts/freeze", Timeout: time.Minute, FailJob: true}},
		After:   []wire.AppStep{{Command: "/etc/cairn/scripts/thaw"}, {Command: "/bin/true", Timeout: time.Second}},
		Sources: []wire.CommandSource{{Path: "/db/app.sql", Command: "/usr/bin/pg_dump app", Timeout: time.Hour}},
	}
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/srv/www"}, Application: app}, nil))
	order := h.backupOrder(orders)
	if !reflect.DeepEqual(order.Application, app) {
		t.Fatalf("order carries %+v, want %+v", order.Application, app)
	}
}

func TestApplicationBadInput(t *testing.T) {
	h := newHarness(t)
	h.setup()
	for _, app := range []wire.Application{
		{Before: []wire.AppStep{{Command: ""}}},
		{After: []wire.AppStep{{Command: "/bin/x", Timeout: -time.Second}}},
		{Sources: []wire.CommandSource{{Path: "db.sql", Command: "/bin/x"}}},
		{Sources: []wire.CommandSource{{Path: "/db.sql"}}},
		{Sources: []wire.CommandSource{{Path: "/db/../x.sql", Command: "/bin/x"}}},
		{Sources: []wire.CommandSource{{Path: "/srv/www/db.sql", Command: "/bin/x"}}},
		{Sources: []wire.CommandSource{{Path: "/srv", Command: "/bin/x"}}},
		{Sources: []wire.CommandSource{{Path: "/db.sql", Command: "/bin/x"}, {Path: "/db.sql", Command: "/bin/y"}}},
	} {
		wantCode(t, h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/srv/www"}, Application: app}, nil), wire.CodeInvalidArgument)
	}
}

// TestWalkOptionsAreCarried: what a backup start asks of the agent's walk
// reaches its order.
func TestWalkOptionsAreCarried(t *testing.T) {
	h := newHarness(t)
	_, orders := h.setup()
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/srv/www"}, SkipNodump: true, OneFileSystem: true}, nil))
	order := h.backupOrder(orders)
	if !order.SkipNodump || !order.OneFileSystem {
		t.Fatalf("order: skip nodump %v, one filesystem %v; want both", order.SkipNodump, order.OneFileSystem)
	}
}
