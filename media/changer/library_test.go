package changer_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cairnbackup/cairn/media/changer"
)

func devConfig(dir string) changer.LibraryConfig {
	return changer.LibraryConfig{Dir: dir, Drives: 2, Slots: 24, MailSlots: 2, Cartridges: []string{"CRN001L9", "CRN002L9", "CRN003L9"}}
}

// cairn dev keeps its library across restarts: the cartridges stay
// where the robot put them, and a drive attached after the restart is
// handed the cartridge it held.
func TestLibraryKeepsItsStateAcrossRestarts(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "library")
	lib, err := changer.OpenLibrary(devConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	must(t, lib.Load(ctx, 2, 1))
	must(t, lib.Transfer(ctx, 3, 25))
	before, err := lib.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	must(t, lib.Close())

	// The state file is plain JSON an operator can read.
	var st struct {
		Version int `json:"version"`
		Drives  []struct {
			Barcode string `json:"barcode"`
			Source  int    `json:"source"`
		} `json:"drives"`
		Slots     []string `json:"slots"`
		MailSlots []string `json:"mail_slots"`
	}
	data, err := os.ReadFile(filepath.Join(dir, changer.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	if st.Version != 1 || st.Drives[1].Barcode != "CRN002L9" || st.Drives[1].Source != 2 || st.Slots[0] != "CRN001L9" || st.MailSlots[0] != "CRN003L9" {
		t.Fatalf("state file:\n%s", data)
	}

	// Cartridges in the config only fill a new library.
	cfg := devConfig(dir)
	cfg.Cartridges = []string{"OTHER1"}
	lib, err = changer.OpenLibrary(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	after, err := lib.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(after, before) {
		t.Fatalf("after a restart:\n%+v\nbefore:\n%+v", after, before)
	}
	d := &recordingDrive{}
	must(t, lib.Attach(1, d))
	if b, log := d.state(); b != "CRN002L9" || !reflect.DeepEqual(log, []string{"load CRN002L9"}) {
		t.Fatalf("drive 1 attached after the restart holds %q (told %q)", b, log)
	}
	must(t, lib.Attach(0, &recordingDrive{}))
	must(t, lib.Unload(ctx, 1, 0))
	if b, log := d.state(); b != "" || !reflect.DeepEqual(log, []string{"load CRN002L9", "unload CRN002L9"}) {
		t.Fatalf("drive 1 holds %q after the unload (told %q)", b, log)
	}
}

func TestLibraryOpenRefuses(t *testing.T) {
	dir := t.TempDir()
	lib, err := changer.OpenLibrary(devConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := changer.OpenLibrary(devConfig(dir)); !errors.Is(err, changer.ErrLibraryLocked) {
		t.Fatalf("a second open of the same library = %v; want ErrLibraryLocked", err)
	}
	must(t, lib.Close())

	cfg := devConfig(dir)
	cfg.Slots = 30
	if _, err := changer.OpenLibrary(cfg); err == nil || !strings.Contains(err.Error(), "holds 2 drives, 24 slots and 2 mail slots, the configuration asks for 2, 30 and 2") {
		t.Fatalf("open with another shape = %v", err)
	}

	must(t, os.WriteFile(filepath.Join(dir, changer.StateFile), []byte(`{"version":1,"drives":[`), 0o640))
	if _, err := changer.OpenLibrary(devConfig(dir)); err == nil || !strings.Contains(err.Error(), "is damaged") {
		t.Fatalf("open with a torn state file = %v", err)
	}
	must(t, os.WriteFile(filepath.Join(dir, changer.StateFile), []byte(`{"version":1,"drives":[{},{}],"slots":["A1","A1"],"mail_slots":[]}`), 0o640))
	cfg = devConfig(dir)
	cfg.Slots, cfg.MailSlots, cfg.Cartridges = 2, 0, nil
	if _, err := changer.OpenLibrary(cfg); err == nil || !strings.Contains(err.Error(), "holds cartridge A1 twice") {
		t.Fatalf("open with a cartridge in two places = %v", err)
	}

	for _, tc := range []struct {
		change func(*changer.LibraryConfig)
		want   string
	}{
		{func(c *changer.LibraryConfig) { c.Dir = "relative" }, "absolute path"},
		{func(c *changer.LibraryConfig) { c.Drives = 0 }, "0 drives; use 1 to 64"},
		{func(c *changer.LibraryConfig) { c.Slots = 0 }, "0 slots"},
		{func(c *changer.LibraryConfig) { c.MailSlots = -1 }, "-1 mail slots"},
		{func(c *changer.LibraryConfig) { c.Cartridges = make([]string, 27) }, "27 cartridges do not fit"},
		{func(c *changer.LibraryConfig) { c.Cartridges = []string{"../etc"} }, `barcode "../etc" is not valid`},
		{func(c *changer.LibraryConfig) { c.Cartridges = []string{"A1", "", "A1"} }, "cartridge A1 is listed twice"},
		{func(c *changer.LibraryConfig) { c.MoveTime = -time.Second }, "negative"},
	} {
		cfg := devConfig(t.TempDir())
		tc.change(&cfg)
		if _, err := changer.OpenLibrary(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("OpenLibrary(%+v) = %v; want %q", cfg, err, tc.want)
		}
	}
}

// The storage node asks for a tape the library does not hold; an
// operator puts it into a mail slot; the import brings it in and the
// load goes ahead.
func TestLibraryOperatorInsertsATape(t *testing.T) {
	ctx := context.Background()
	lib, err := changer.OpenLibrary(devConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	if _, err := changer.LoadBarcode(ctx, lib, "VAULT7L9", 0); !errors.Is(err, changer.ErrNotFound) || !strings.Contains(err.Error(), "insert it into a mail slot") {
		t.Fatalf("LoadBarcode of a tape in the vault = %v", err)
	}
	n, err := lib.Insert(0, "VAULT7L9")
	if err != nil || n != 25 {
		t.Fatalf("Insert = %d, %v; want mail slot 25", n, err)
	}
	moves, err := changer.Import(ctx, lib)
	if err != nil || len(moves) != 1 || moves[0].To.Number != 4 {
		t.Fatalf("Import = %+v, %v; want the tape in slot 4", moves, err)
	}
	if e, err := changer.LoadBarcode(ctx, lib, "VAULT7L9", 0); err != nil || e.Number != 4 {
		t.Fatalf("LoadBarcode = %v, %v", e, err)
	}

	// And it goes back out the same way.
	m, err := changer.Export(ctx, lib, "VAULT7L9")
	if err != nil || m.To.Number != 25 {
		t.Fatalf("Export = %+v, %v", m, err)
	}
	if b, err := lib.Remove(25); err != nil || b != "VAULT7L9" {
		t.Fatalf("Remove = %q, %v", b, err)
	}
}

func TestLibraryInsertRemoveRefuse(t *testing.T) {
	lib, err := changer.OpenLibrary(devConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	for _, tc := range []struct {
		mail    int
		barcode string
		want    error
		text    string
	}{
		{0, "CRN001L9", changer.ErrDuplicateBarcode, "in slot 1"},
		{0, "bad barcode", nil, "not valid"},
		{3, "NEW001L9", changer.ErrNoElement, "mail slots are storage elements 25 to 26"},
		{27, "NEW001L9", changer.ErrNoElement, "25 to 26"},
	} {
		if _, err := lib.Insert(tc.mail, tc.barcode); err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("Insert(%d, %q) = %v; want %v, %q", tc.mail, tc.barcode, err, tc.want, tc.text)
		}
	}
	if _, err := lib.Insert(26, "NEW001L9"); err != nil {
		t.Fatal(err)
	}
	if _, err := lib.Insert(26, "NEW002L9"); !errors.Is(err, changer.ErrDestinationFull) {
		t.Fatalf("Insert into a full mail slot = %v", err)
	}
	if _, err := lib.Insert(0, "NEW002L9"); err != nil {
		t.Fatal(err)
	}
	if _, err := lib.Insert(0, "NEW003L9"); !errors.Is(err, changer.ErrNoFreeSlot) {
		t.Fatalf("Insert with every mail slot full = %v", err)
	}
	if _, err := lib.Remove(1); !errors.Is(err, changer.ErrNoElement) {
		t.Fatalf("Remove from a storage slot = %v", err)
	}
	for _, n := range []int{25, 26} {
		if _, err := lib.Remove(n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := lib.Remove(25); !errors.Is(err, changer.ErrSourceEmpty) {
		t.Fatalf("Remove from an empty mail slot = %v", err)
	}

	noMail, err := changer.OpenLibrary(changer.LibraryConfig{Dir: t.TempDir(), Drives: 1, Slots: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer noMail.Close()
	if _, err := noMail.Insert(0, "NEW001L9"); !errors.Is(err, changer.ErrNoElement) || !strings.Contains(err.Error(), "no mail slots") {
		t.Fatalf("Insert into a library with no mail slots = %v", err)
	}
}

func TestLibraryDriveRefuses(t *testing.T) {
	ctx := context.Background()
	lib, err := changer.OpenLibrary(devConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	d := &recordingDrive{refuse: errors.New("cannot open cartridge file CRN001L9.tape: permission denied")}
	must(t, lib.Attach(0, d))
	err = lib.Load(ctx, 1, 0)
	if err == nil || !strings.Contains(err.Error(), "drive 0 did not take cartridge CRN001L9") || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("Load into a drive that cannot open the cartridge = %v", err)
	}
	inv, _ := lib.Inventory(ctx)
	if !inv.Slots[0].Full || inv.Drives[0].Full {
		t.Fatalf("after a refused load: slot 1 %v, drive 0 %v", inv.Slots[0], inv.Drives[0])
	}

	d.refuse = nil
	must(t, lib.Load(ctx, 1, 0))
	d.setHold(true)
	err = lib.Unload(ctx, 0, 0)
	if !errors.Is(err, changer.ErrDriveBusy) || !errors.Is(err, errTapeOpen) {
		t.Fatalf("Unload of a drive with its tape open = %v; want ErrDriveBusy and the drive's reason", err)
	}
	if b, _ := d.state(); b != "CRN001L9" {
		t.Fatalf("drive holds %q after refusing the unload", b)
	}

	if err := lib.Attach(2, d); !errors.Is(err, changer.ErrNoElement) {
		t.Fatalf("Attach(2) = %v", err)
	}
	if err := lib.Attach(0, &recordingDrive{refuse: errors.New("no such cartridge")}); err == nil || !strings.Contains(err.Error(), "holding cartridge CRN001L9") {
		t.Fatalf("Attach of a drive that cannot open the cartridge it holds = %v", err)
	}
}

// A failed save leaves the library, the drive and the state file as they
// were.
func TestLibrarySaveFails(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	lib, err := changer.OpenLibrary(devConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	d := &recordingDrive{}
	must(t, lib.Attach(0, d))
	// A directory where the new state file goes makes the save fail, even
	// for root.
	must(t, os.Mkdir(filepath.Join(dir, changer.StateFile+".tmp"), 0o750))
	if err := lib.Load(ctx, 1, 0); err == nil || !strings.Contains(err.Error(), "save state") {
		t.Fatalf("Load with a failing save = %v", err)
	}
	inv, _ := lib.Inventory(ctx)
	if !inv.Slots[0].Full || inv.Drives[0].Full {
		t.Fatalf("after a failed save: slot 1 %v, drive 0 %v", inv.Slots[0], inv.Drives[0])
	}
	if b, log := d.state(); b != "" || !reflect.DeepEqual(log, []string{"load CRN001L9", "unload CRN001L9"}) {
		t.Fatalf("drive holds %q (told %q); want it told to give the cartridge back", b, log)
	}
	if _, err := lib.Insert(0, "NEW001L9"); err == nil {
		t.Fatal("Insert with a failing save succeeded")
	}
	must(t, os.Remove(filepath.Join(dir, changer.StateFile+".tmp")))
	must(t, lib.Load(ctx, 1, 0))
}

func TestLibraryNoBarcodeReader(t *testing.T) {
	cfg := devConfig(t.TempDir())
	cfg.NoBarcodeReader = true
	lib, err := changer.OpenLibrary(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	must(t, lib.Load(context.Background(), 1, 0))
	inv, err := lib.Inventory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if d := inv.Drives[0]; !d.Full || d.Barcode != "" || d.Source != 1 {
		t.Fatalf("drive 0: %v", d)
	}
	if s := inv.Slots[1]; !s.Full || s.Barcode != "" {
		t.Fatalf("slot 2: %v", s)
	}
}

// With a robot that takes its time, an inventory still answers during a
// move, and a move cut short by its context moves nothing. The robot's time
// and the deadlines run on synctest's clock, which does not move while an
// fsync is slow.
func TestLibraryMoveTime(t *testing.T) {
	synctest.Test(t, testLibraryMoveTime)
}

func testLibraryMoveTime(t *testing.T) {
	cfg := devConfig(t.TempDir())
	cfg.MoveTime = 300 * time.Millisecond
	lib, err := changer.OpenLibrary(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- lib.Load(context.Background(), 1, 0) }()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := lib.Inventory(ctx); err != nil {
		t.Fatalf("Inventory during a move = %v", err)
	}
	must(t, <-done)
	if d := time.Since(start); d < cfg.MoveTime {
		t.Fatalf("a move took %s; the robot takes %s", d, cfg.MoveTime)
	}

	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := lib.Load(ctx, 2, 1); !errors.Is(err, changer.ErrNoAnswer) {
		t.Fatalf("a move past its deadline = %v", err)
	}
	inv, _ := lib.Inventory(context.Background())
	if !inv.Slots[1].Full || inv.Drives[1].Full {
		t.Fatalf("a move cut short moved: slot 2 %v, drive 1 %v", inv.Slots[1], inv.Drives[1])
	}
}

func TestLibraryClose(t *testing.T) {
	lib, err := changer.OpenLibrary(devConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	lib.StickRobot(true)
	done := make(chan error, 1)
	go func() { done <- lib.Load(context.Background(), 1, 0) }()
	// Close frees a move stuck with no deadline, and the move fails; a
	// move that reaches the robot after Close fails the same way.
	must(t, lib.Close())
	if err := <-done; !errors.Is(err, changer.ErrLibraryClosed) {
		t.Fatalf("a move stuck when the library closed = %v", err)
	}
	if _, err := lib.Inventory(context.Background()); !errors.Is(err, changer.ErrLibraryClosed) {
		t.Fatalf("Inventory after Close = %v", err)
	}
	must(t, lib.Close())
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
