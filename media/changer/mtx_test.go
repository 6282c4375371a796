package changer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// script answers mtx commands from a table keyed by the arguments after
// the program name; commands not in the table block until their context
// ends, as a robot that does not answer would keep mtx waiting.
type script struct {
	mu      sync.Mutex
	calls   [][]string
	answers map[string]Output
	started chan string // receives each blocking command, when set
}

func (s *script) Run(ctx context.Context, args []string) (Output, error) {
	s.mu.Lock()
	s.calls = append(s.calls, args)
	out, ok := s.answers[strings.Join(args[1:], " ")]
	s.mu.Unlock()
	if ok {
		return out, nil
	}
	if s.started != nil {
		s.started <- strings.Join(args[1:], " ")
	}
	<-ctx.Done()
	return Output{}, ctx.Err()
}

func (s *script) commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cmds []string
	for _, c := range s.calls {
		cmds = append(cmds, strings.Join(c, " "))
	}
	return cmds
}

func statusOutput(t *testing.T, file string) Output {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "status", file))
	if err != nil {
		t.Fatal(err)
	}
	return Output{Stdout: b}
}

func newScripted(t *testing.T, statusFile string, answers map[string]Output) (*MTX, *script) {
	t.Helper()
	s := &script{answers: map[string]Output{"-f /dev/sg1 status": statusOutput(t, statusFile)}}
	for k, v := range answers {
		s.answers[k] = v
	}
	m, err := NewMTX(MTXConfig{Device: "/dev/sg1", Binary: "/usr/sbin/mtx", Runner: s})
	if err != nil {
		t.Fatal(err)
	}
	return m, s
}

func TestMTXArguments(t *testing.T) {
	ctx := context.Background()
	done := func(s string) Output { return Output{Stdout: []byte(s + "done\n")} }
	m, s := newScripted(t, "lto9-2drives-24slots-2mail.txt", map[string]Output{
		"-f /dev/sg1 load 1 1":      done("Loading media from Storage Element 1 into drive 1..."),
		"-f /dev/sg1 unload 3 0":    done("Unloading drive 0 into Storage Element 3..."),
		"-f /dev/sg1 unload 9 0":    done("Unloading drive 0 into Storage Element 9..."),
		"-f /dev/sg1 transfer 23 9": {},
	})
	if err := m.Load(ctx, 1, 1); err != nil {
		t.Fatal(err)
	}
	// Unload to the home slot names it: mtx, given none, would pick the
	// first empty slot if the home slot were full.
	if err := m.Unload(ctx, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := m.Unload(ctx, 0, 9); err != nil {
		t.Fatal(err)
	}
	if err := m.Transfer(ctx, 23, 9); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"/usr/sbin/mtx -f /dev/sg1 status", "/usr/sbin/mtx -f /dev/sg1 load 1 1",
		"/usr/sbin/mtx -f /dev/sg1 status", "/usr/sbin/mtx -f /dev/sg1 unload 3 0",
		"/usr/sbin/mtx -f /dev/sg1 status", "/usr/sbin/mtx -f /dev/sg1 unload 9 0",
		"/usr/sbin/mtx -f /dev/sg1 status", "/usr/sbin/mtx -f /dev/sg1 transfer 23 9",
	}
	if got := s.commands(); !reflect.DeepEqual(got, want) {
		t.Fatalf("commands run:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestMTXRefusesBeforeMoving(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		status   string
		move     func(m *MTX) error
		want     error
		from, to Addr
		barcode  string
	}{
		{"load from an empty slot", "lto9-2drives-24slots-2mail.txt", func(m *MTX) error { return m.Load(ctx, 3, 1) }, ErrSourceEmpty, Addr{KindSlot, 3}, Addr{KindDrive, 1}, ""},
		{"load into a full drive", "lto9-2drives-24slots-2mail.txt", func(m *MTX) error { return m.Load(ctx, 1, 0) }, ErrDestinationFull, Addr{KindSlot, 1}, Addr{KindDrive, 0}, "A00001L9"},
		{"load from a mail slot into a full drive", "lto9-2drives-24slots-2mail.txt", func(m *MTX) error { return m.Load(ctx, 23, 0) }, ErrDestinationFull, Addr{KindMailSlot, 23}, Addr{KindDrive, 0}, "B00001L9"},
		{"load from no slot", "lto9-2drives-24slots-2mail.txt", func(m *MTX) error { return m.Load(ctx, 25, 1) }, ErrNoElement, Addr{KindSlot, 25}, Addr{KindDrive, 1}, ""},
		{"load into no drive", "lto9-2drives-24slots-2mail.txt", func(m *MTX) error { return m.Load(ctx, 1, 2) }, ErrNoElement, Addr{KindSlot, 1}, Addr{KindDrive, 2}, ""},
		{"unload an empty drive", "lto9-2drives-24slots-2mail.txt", func(m *MTX) error { return m.Unload(ctx, 1, 3) }, ErrSourceEmpty, Addr{KindDrive, 1}, Addr{KindSlot, 3}, ""},
		{"unload into a full slot", "lto9-2drives-24slots-2mail.txt", func(m *MTX) error { return m.Unload(ctx, 0, 23) }, ErrDestinationFull, Addr{KindDrive, 0}, Addr{KindMailSlot, 23}, "A00003L9"},
		{"unload home, home unknown", "unknown-source.txt", func(m *MTX) error { return m.Unload(ctx, 0, 0) }, ErrNoHomeSlot, Addr{KindDrive, 0}, Addr{KindSlot, 0}, "B00010L8"},
		{"unload to slot 0 of no drive", "unknown-source.txt", func(m *MTX) error { return m.Unload(ctx, -1, 0) }, ErrNoElement, Addr{KindDrive, -1}, Addr{KindSlot, 0}, ""},
		{"transfer from an empty slot", "lto9-2drives-24slots-2mail.txt", func(m *MTX) error { return m.Transfer(ctx, 24, 3) }, ErrSourceEmpty, Addr{KindMailSlot, 24}, Addr{KindSlot, 3}, ""},
		{"transfer into a full slot", "lto9-2drives-24slots-2mail.txt", func(m *MTX) error { return m.Transfer(ctx, 1, 2) }, ErrDestinationFull, Addr{KindSlot, 1}, Addr{KindSlot, 2}, "A00001L9"},
		{"transfer onto itself", "lto9-2drives-24slots-2mail.txt", func(m *MTX) error { return m.Transfer(ctx, 1, 1) }, ErrDestinationFull, Addr{KindSlot, 1}, Addr{KindSlot, 1}, "A00001L9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, s := newScripted(t, tc.status, nil)
			err := tc.move(m)
			var me *MoveError
			if !errors.Is(err, tc.want) || !errors.As(err, &me) {
				t.Fatalf("err = %v; want a *MoveError wrapping %v", err, tc.want)
			}
			if me.From != tc.from || me.To != tc.to || me.Barcode != tc.barcode || me.Changer != "/dev/sg1" {
				t.Fatalf("MoveError %+v; want from %v to %v, barcode %q", me, tc.from, tc.to, tc.barcode)
			}
			if cmds := s.commands(); len(cmds) != 1 {
				t.Fatalf("ran %q; want only the status", cmds)
			}
		})
	}
}

// senseLines is what mtx 1.3.12's PrintRequestSense writes to stderr.
func senseLines(key string, asc, ascq byte) string {
	return fmt.Sprintf(`mtx: Request Sense: Long Report=yes
mtx: Request Sense: Valid Residual=no
mtx: Request Sense: Error Code=70 (Current)
mtx: Request Sense: Sense Key=%s
mtx: Request Sense: FileMark=no
mtx: Request Sense: EOM=no
mtx: Request Sense: ILI=no
mtx: Request Sense: Additional Sense Code = %02X
mtx: Request Sense: Additional Sense Qualifier = %02X
mtx: Request Sense: BPV=no
mtx: Request Sense: Error in CDB=no
mtx: Request Sense: SKSV=no
`, key, asc, ascq)
}

// mtx's FatalError can prefix its messages with the program name; the
// Debian build prints them bare, and the "mtx: " of others is dropped
// from Message.
func TestMTXFailures(t *testing.T) {
	for _, tc := range []struct {
		name, stderr string
		want         error
		message      string
		sense        *Sense
		hint         string
	}{
		{"no device", "cannot open SCSI device '/dev/sg9' - No such file or directory\n", ErrNoDevice,
			"cannot open SCSI device '/dev/sg9' - No such file or directory", nil, "lsscsi -g"},
		{"not sg", "/dev/null is not an sg device, or old sg driver\n", ErrNoDevice, "/dev/null is not an sg device, or old sg driver", nil, "sg module"},
		{"phantom slot", senseLines("Illegal Request", 0x3B, 0x0E) + "Source Element Address 4099 is Empty\n", ErrSourceEmpty,
			"Source Element Address 4099 is Empty", &Sense{"Illegal Request", 0x3B, 0x0E}, ""},
		{"destination full", senseLines("Illegal Request", 0x3B, 0x0D) + "Destination Element Address 4100 is Already Full\n", ErrDestinationFull,
			"Destination Element Address 4100 is Already Full", &Sense{"Illegal Request", 0x3B, 0x0D}, ""},
		// A tape still threaded: the library refuses with MEDIUM REMOVAL
		// PREVENTED BY DATA TRANSFER ELEMENT, and mtx only says the move failed.
		{"threaded tape", senseLines("Illegal Request", 0x53, 0x03) + "MOVE MEDIUM from Element Address 256 to 4101 Failed\n", ErrDriveBusy,
			"MOVE MEDIUM from Element Address 256 to 4101 Failed", &Sense{"Illegal Request", 0x53, 0x03}, "mt offline"},
		{"needs offline", "Drive needs offline before move\n", ErrDriveBusy, "Drive needs offline before move", nil, "mt offline"},
		{"library offline", senseLines("Not Ready", 0x04, 0x12) + "MOVE MEDIUM from Element Address 257 to 4097 Failed\n", nil,
			"MOVE MEDIUM from Element Address 257 to 4097 Failed", &Sense{"Not Ready", 0x04, 0x12}, "random mode"},
		{"status not ready", senseLines("Not Ready", 0x04, 0x12) + "Mode sense (0x1A) for Page 0x1D failed\n" + senseLines("Not Ready", 0x04, 0x12) + "READ ELEMENT STATUS Command Failed\n", nil,
			"READ ELEMENT STATUS Command Failed", &Sense{"Not Ready", 0x04, 0x12}, "online"},
		{"slot already full", "Storage Element 5 is Already Full\n", ErrDestinationFull, "Storage Element 5 is Already Full", nil, ""},
		{"drive full", "Drive 0 Full (Storage Element 3 loaded)\n", ErrDestinationFull, "Drive 0 Full (Storage Element 3 loaded)", nil, ""},
		{"drive empty", "Data Transfer Element 1 is Empty\n", ErrSourceEmpty, "Data Transfer Element 1 is Empty", nil, ""},
		{"bad slot", "mtx: Invalid <storage-element-number> argument '40' to 'load' command\n", ErrNoElement, "Invalid <storage-element-number> argument '40' to 'load' command", nil, ""},
		{"bad drive", "illegal <drive-number> argument '7' to 'unload' command\n", ErrNoElement, "illegal <drive-number> argument '7' to 'unload' command", nil, ""},
		{"no source", "No Source for tape in drive 0!\n", ErrNoHomeSlot, "No Source for tape in drive 0!", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newCommandError("/dev/sg1", []string{"-f", "/dev/sg1", "load", "4", "1"}, Output{Stderr: []byte(tc.stderr), ExitCode: 1})
			if e.Err != tc.want || e.Message != tc.message || !reflect.DeepEqual(e.Sense, tc.sense) {
				t.Fatalf("got Err %v, Message %q, Sense %v\nwant Err %v, Message %q, Sense %v", e.Err, e.Message, e.Sense, tc.want, tc.message, tc.sense)
			}
			msg := e.Error()
			if !strings.Contains(msg, "mtx -f /dev/sg1 load 4 1 exited 1") || !strings.Contains(msg, tc.message) || !strings.Contains(msg, tc.hint) {
				t.Fatalf("Error() = %q; want the command, %q and %q", msg, tc.message, tc.hint)
			}
		})
	}
}

// A move that mtx refuses comes back as a *MoveError holding the
// *CommandError, both seen through by errors.Is and errors.As.
func TestMTXMoveFailsInMTX(t *testing.T) {
	m, _ := newScripted(t, "lto9-2drives-24slots-2mail.txt", map[string]Output{
		"-f /dev/sg1 load 4 1": {
			Stdout:   []byte("Loading media from Storage Element 4 into drive 1..."),
			Stderr:   []byte(senseLines("Illegal Request", 0x3B, 0x0E) + "Source Element Address 4099 is Empty\n"),
			ExitCode: 1,
		},
	})
	err := m.Load(context.Background(), 4, 1)
	var me *MoveError
	var ce *CommandError
	if !errors.Is(err, ErrSourceEmpty) || !errors.As(err, &me) || !errors.As(err, &ce) {
		t.Fatalf("err = %v; want a *MoveError holding a *CommandError, wrapping ErrSourceEmpty", err)
	}
	if me.Barcode != "A00004L9" || ce.Sense == nil || ce.Sense.ASC != 0x3B {
		t.Fatalf("MoveError %+v, CommandError %+v", me, ce)
	}
}

// The deadlines run on synctest's clock: a loaded machine cannot make them
// pass early or the calls late.
func TestMTXBoundedByContext(t *testing.T) {
	synctest.Test(t, testMTXBoundedByContext)
}

func testMTXBoundedByContext(t *testing.T) {
	m, s := newScripted(t, "lto9-2drives-24slots-2mail.txt", nil)
	s.started = make(chan string, 1)

	// A move the robot never finishes: the call returns when its
	// deadline passes, saying so.
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	loadErr := make(chan error, 1)
	go func() { loadErr <- m.Load(ctx, 1, 1) }()
	if got := <-s.started; got != "-f /dev/sg1 load 1 1" {
		t.Fatalf("blocked in %q", got)
	}
	// Meanwhile the robot is taken: an inventory waits for it, within its
	// own deadline.
	ictx, icancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer icancel()
	if _, err := m.Inventory(ictx); !errors.Is(err, ErrNoAnswer) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Inventory during a stuck move = %v; want ErrNoAnswer and the deadline", err)
	}
	err := <-loadErr
	if !errors.Is(err, ErrNoAnswer) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Load = %v; want ErrNoAnswer and the deadline", err)
	}
	if d := time.Since(start); d != 200*time.Millisecond {
		t.Fatalf("Load returned after %s; its deadline was 200ms", d)
	}
	// The robot is free again.
	if _, err := m.Inventory(context.Background()); err != nil {
		t.Fatal(err)
	}

	// A call whose context has already ended runs nothing.
	n := len(s.commands())
	done, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if err := m.Load(done, 1, 1); !errors.Is(err, context.Canceled) || errors.Is(err, ErrNoAnswer) {
		t.Fatalf("Load with a cancelled context = %v; want context.Canceled alone", err)
	}
	if _, err := m.Inventory(done); !errors.Is(err, context.Canceled) {
		t.Fatalf("Inventory with a cancelled context = %v", err)
	}
	if len(s.commands()) != n {
		t.Fatalf("ran %q with a cancelled context", s.commands()[n:])
	}
}

func TestMTXCheck(t *testing.T) {
	real, err := os.ReadFile(filepath.Join("testdata", "mtx", "version-1.3.12.stderr"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		out     Output
		runErr  error
		version string
		want    error
		message string
	}{
		{"mtx 1.3.12", Output{Stderr: real, ExitCode: 1}, nil, "1.3.12", nil, ""},
		{"old mtx", Output{Stderr: []byte("mtx version 1.2.18\n\nUsage:\n"), ExitCode: 1}, nil, "1.2.18", ErrMTXUnsupported, "mtx 1.2.18"},
		{"no transfer", Output{Stderr: []byte(strings.ReplaceAll(string(real), "transfer", "move")), ExitCode: 1}, nil, "1.3.12", ErrMTXUnsupported, "transfer"},
		{"not mtx", Output{Stderr: []byte("sh: 1: mtx: Permission denied\n"), ExitCode: 126}, nil, "", ErrMTXUnsupported, "Permission denied"},
		{"missing", Output{}, exec.ErrNotFound, "", exec.ErrNotFound, "apt-get install mtx"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runnerFunc(func(ctx context.Context, args []string) (Output, error) {
				if !reflect.DeepEqual(args, []string{"mtx", "--version"}) {
					t.Errorf("ran %q", args)
				}
				return tc.out, tc.runErr
			})
			m, err := NewMTX(MTXConfig{Device: "/dev/sg1", Runner: r})
			if err != nil {
				t.Fatal(err)
			}
			v, err := m.Check(context.Background())
			if v != tc.version || !errors.Is(err, tc.want) || (err != nil && !strings.Contains(err.Error(), tc.message)) {
				t.Fatalf("Check = %q, %v; want %q, %v mentioning %q", v, err, tc.version, tc.want, tc.message)
			}
		})
	}
}

type runnerFunc func(ctx context.Context, args []string) (Output, error)

func (f runnerFunc) Run(ctx context.Context, args []string) (Output, error) { return f(ctx, args) }

func TestMTXConfigValidate(t *testing.T) {
	for _, dev := range []string{"", "sg1", "dev/sg1"} {
		if _, err := NewMTX(MTXConfig{Device: dev}); err == nil || !strings.Contains(err.Error(), "absolute path") {
			t.Errorf("device %q: %v", dev, err)
		}
	}
	m, err := NewMTX(MTXConfig{Device: "/dev/sg3"})
	if err != nil || m.Device() != "/dev/sg3" || m.String() != "/dev/sg3" {
		t.Fatalf("NewMTX = %v, %v", m, err)
	}
}
