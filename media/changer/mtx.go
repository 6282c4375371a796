package changer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Runner runs one command. The MTX driver runs mtx through it, so tests
// answer with recorded or simulated output instead of a library.
type Runner interface {
	// Run runs args[0] with the arguments args[1:] and returns what it
	// printed and how it exited. A command that ran and exited non-zero
	// is not an error here: Output.ExitCode says so. The error is for a
	// command that could not start, or that was still running when ctx
	// ended (the error then wraps the context's).
	Run(ctx context.Context, args []string) (Output, error)
}

// Output is what a command printed and its exit code.
type Output struct {
	Stdout, Stderr []byte
	ExitCode       int
}

// ExecRunner runs commands as child processes.
type ExecRunner struct{}

// killGrace is how long Run waits for a command it killed to exit.
const killGrace = 2 * time.Second

// Run starts args and waits for it or for ctx to end, whichever is first.
func (ExecRunner) Run(ctx context.Context, args []string) (Output, error) {
	if len(args) == 0 {
		return Output{}, errors.New("run: no command")
	}
	if err := ctx.Err(); err != nil {
		return Output{}, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return Output{}, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		out := Output{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			out.ExitCode = exit.ExitCode()
			return out, nil
		}
		return out, err
	case <-ctx.Done():
	}
	cmd.Process.Kill()
	select {
	case <-done:
	case <-time.After(killGrace):
		// mtx waiting in the SCSI generic driver sleeps uninterruptibly: the
		// kill lands only when the command returns, after the sg timeout,
		// which for a MOVE MEDIUM is many minutes. The caller's deadline
		// wins; the goroutine above reaps the process when it exits.
	}
	return Output{}, context.Cause(ctx)
}

// MTXConfig is how to reach a SCSI library through mtx.
type MTXConfig struct {
	// Device is the library's SCSI generic device, such as /dev/sg3. sg
	// numbers can change between boots when devices come and go; a name
	// a udev rule keeps stable for the changer is better where there is
	// one.
	Device string
	// Binary is the mtx program, a path or a name looked up in PATH; ""
	// means mtx from PATH, or else /usr/sbin/mtx, where Debian puts it
	// and where a PATH without sbin (most users but root) misses it.
	Binary string
	// Runner runs mtx; nil means ExecRunner.
	Runner Runner
}

// Validate names the first field that is wrong and how to fix it.
func (c *MTXConfig) Validate() error {
	if c.Device == "" || !filepath.IsAbs(c.Device) {
		return fmt.Errorf("mtx changer: device %q must be an absolute path, such as /dev/sg3 (see lsscsi -g for the mediumx line)", c.Device)
	}
	return nil
}

// MTX drives a SCSI tape library with the mtx command (1.3.12, as Debian
// packages it). Every move reads the library's status first and refuses,
// with the contract's errors, what mtx would refuse less clearly or leave
// to the library's sense codes; what mtx reports is mapped to the same
// errors, and kept in a *CommandError.
//
// mtx opens the device for every command and does not stop a robot that
// is already moving: when a context ends, the mtx process is killed, and
// the robot may still finish the move. So MTX runs one mtx command at a
// time, and a move that ran out of time means "take an inventory".
type MTX struct {
	device string
	binary string
	run    Runner
	// robot holds one token: one mtx command at a time. A library answers
	// READ ELEMENT STATUS during a move with "not ready", and mtx's own
	// status-then-move is not atomic, so commands are not interleaved.
	robot chan struct{}
}

var _ Changer = (*MTX)(nil)

// NewMTX returns the driver of the library cfg names. It runs nothing;
// Check and Inventory are the first calls that reach the library.
func NewMTX(cfg MTXConfig) (*MTX, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &MTX{device: cfg.Device, binary: cfg.Binary, run: cfg.Runner, robot: make(chan struct{}, 1)}
	if m.binary == "" {
		m.binary = defaultMTX()
	}
	if m.run == nil {
		m.run = ExecRunner{}
	}
	return m, nil
}

func defaultMTX() string {
	if _, err := exec.LookPath("mtx"); err == nil {
		return "mtx"
	}
	for _, p := range []string{"/usr/sbin/mtx", "/sbin/mtx"} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return "mtx"
}

// Device is the library's device path.
func (m *MTX) Device() string { return m.device }

// String names the library in errors and logs.
func (m *MTX) String() string { return m.device }

// The argument forms this driver uses, as mtx 1.3.12's usage lists them;
// Check refuses an mtx whose usage lacks one.
var usageForms = []string{
	"status",
	"load <storage-element-number> [<drive#>]",
	"unload [<storage-element-number>][<drive#>]",
	"transfer <storage-element-number> <storage-element-number>",
}

var versionRE = regexp.MustCompile(`(?m)^mtx version (\S+)`)

// ErrMTXUnsupported: the mtx program does not report a version, or does
// not take the arguments this driver passes.
var ErrMTXUnsupported = errors.New("mtx program is not one this driver supports (mtx 1.3.x)")

// Check runs `mtx --version` and returns the version mtx reports. It
// fails with ErrMTXUnsupported when mtx reports no version or its usage
// lacks a form the driver uses, and with the runner's error when mtx
// cannot be run at all. It does not open the device.
func (m *MTX) Check(ctx context.Context) (string, error) {
	out, err := m.run.Run(ctx, []string{m.binary, "--version"})
	if err != nil {
		return "", m.runError(ctx, []string{"--version"}, err)
	}
	// mtx prints its version and then its usage on stderr, and exits 1
	// after --version as after any usage: that exit is success here.
	text := string(out.Stderr) + string(out.Stdout)
	v := versionRE.FindStringSubmatch(text)
	if v == nil {
		return "", fmt.Errorf("%s --version printed no \"mtx version\" line (exit %d): %q: %w", m.binary, out.ExitCode, firstLine(text), ErrMTXUnsupported)
	}
	if !strings.HasPrefix(v[1], "1.3.") {
		return v[1], fmt.Errorf("%s is mtx %s: %w", m.binary, v[1], ErrMTXUnsupported)
	}
	for _, form := range usageForms {
		if !strings.Contains(text, "] "+form) {
			return v[1], fmt.Errorf("%s (mtx %s) does not list %q in its usage: %w", m.binary, v[1], form, ErrMTXUnsupported)
		}
	}
	return v[1], nil
}

// Inventory runs `mtx -f DEVICE status` and parses what it prints.
func (m *MTX) Inventory(ctx context.Context) (*Inventory, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := m.acquire(ctx); err != nil {
		return nil, fmt.Errorf("changer %s: status: %w", m.device, err)
	}
	defer m.release()
	return m.status(ctx)
}

// Load runs `mtx -f DEVICE load SLOT DRIVE`.
func (m *MTX) Load(ctx context.Context, slot, drive int) error {
	return m.move(ctx, "load", Addr{KindSlot, slot}, Addr{KindDrive, drive}, func(inv *Inventory, e *MoveError) ([]string, error) {
		d, ok := inv.Drive(drive)
		if !ok {
			return nil, noElement(inv, e.To)
		}
		s, ok := inv.Storage(slot)
		if !ok {
			return nil, noElement(inv, e.From)
		}
		e.From, e.Barcode = s.Addr, s.Barcode
		if !s.Full {
			return nil, ErrSourceEmpty
		}
		if d.Full {
			return nil, fmt.Errorf("%w: %s", ErrDestinationFull, d)
		}
		return []string{"load", strconv.Itoa(slot), strconv.Itoa(drive)}, nil
	})
}

// Unload runs `mtx -f DEVICE unload SLOT DRIVE`, with the drive's home
// slot from the status when slot is 0. (mtx itself, given no slot, picks
// the first empty one when the home slot is full; the driver never
// leaves that choice to it.)
func (m *MTX) Unload(ctx context.Context, drive, slot int) error {
	return m.move(ctx, "unload", Addr{KindDrive, drive}, Addr{KindSlot, slot}, func(inv *Inventory, e *MoveError) ([]string, error) {
		d, ok := inv.Drive(drive)
		if !ok {
			return nil, noElement(inv, e.From)
		}
		e.Barcode = d.Barcode
		if !d.Full {
			return nil, ErrSourceEmpty
		}
		if slot == 0 {
			if d.Source == 0 {
				return nil, fmt.Errorf("%w: name the slot to unload drive %d to", ErrNoHomeSlot, drive)
			}
			slot = d.Source
			e.To.Number = slot
		}
		s, ok := inv.Storage(slot)
		if !ok {
			return nil, noElement(inv, e.To)
		}
		e.To = s.Addr
		if s.Full {
			return nil, fmt.Errorf("%w: %s", ErrDestinationFull, s)
		}
		return []string{"unload", strconv.Itoa(slot), strconv.Itoa(drive)}, nil
	})
}

// Transfer runs `mtx -f DEVICE transfer FROM TO`.
func (m *MTX) Transfer(ctx context.Context, from, to int) error {
	return m.move(ctx, "transfer", Addr{KindSlot, from}, Addr{KindSlot, to}, func(inv *Inventory, e *MoveError) ([]string, error) {
		f, ok := inv.Storage(from)
		if !ok {
			return nil, noElement(inv, e.From)
		}
		e.From, e.Barcode = f.Addr, f.Barcode
		t, ok := inv.Storage(to)
		if !ok {
			return nil, noElement(inv, e.To)
		}
		e.To = t.Addr
		if !f.Full {
			return nil, ErrSourceEmpty
		}
		if t.Full {
			return nil, fmt.Errorf("%w: %s", ErrDestinationFull, t)
		}
		return []string{"transfer", strconv.Itoa(from), strconv.Itoa(to)}, nil
	})
}

// move reads the status, lets plan check the move against it (filling in
// the kinds of from and to, and the barcode) and name mtx's arguments, and
// runs them. Every failure is a *MoveError.
func (m *MTX) move(ctx context.Context, op string, from, to Addr, plan func(*Inventory, *MoveError) ([]string, error)) error {
	e := &MoveError{Changer: m.device, Op: op, From: from, To: to}
	if err := ctx.Err(); err != nil {
		e.Err = err
		return e
	}
	if err := m.acquire(ctx); err != nil {
		e.Err = err
		return e
	}
	defer m.release()
	inv, err := m.status(ctx)
	if err != nil {
		e.Err = err
		return e
	}
	args, err := plan(inv, e)
	if err != nil {
		e.Err = err
		return e
	}
	if _, err := m.mtx(ctx, args...); err != nil {
		e.Err = err
		return e
	}
	return nil
}

func noElement(inv *Inventory, a Addr) error {
	storage := len(inv.Slots) + len(inv.MailSlots)
	if a.Kind == KindDrive {
		return fmt.Errorf("%w: drive %d: the library has drives 0 to %d", ErrNoElement, a.Number, len(inv.Drives)-1)
	}
	return fmt.Errorf("%w: storage element %d: the library has storage elements 1 to %d", ErrNoElement, a.Number, storage)
}

func (m *MTX) acquire(ctx context.Context) error {
	select {
	case m.robot <- struct{}{}:
		return nil
	case <-ctx.Done():
		return noAnswer(ctx)
	}
}

func (m *MTX) release() { <-m.robot }

func (m *MTX) status(ctx context.Context) (*Inventory, error) {
	out, err := m.mtx(ctx, "status")
	if err != nil {
		return nil, err
	}
	inv, err := ParseStatus(out.Stdout)
	if err != nil {
		return nil, fmt.Errorf("changer %s: %w", m.device, err)
	}
	return inv, nil
}

// mtx runs `mtx -f DEVICE args...`; a non-zero exit is a *CommandError.
func (m *MTX) mtx(ctx context.Context, args ...string) (Output, error) {
	full := append([]string{"-f", m.device}, args...)
	out, err := m.run.Run(ctx, append([]string{m.binary}, full...))
	if err != nil {
		return out, m.runError(ctx, full, err)
	}
	if out.ExitCode != 0 {
		return out, newCommandError(m.device, full, out)
	}
	return out, nil
}

func (m *MTX) runError(ctx context.Context, args []string, err error) error {
	cmd := m.binary + " " + strings.Join(args, " ")
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", cmd, noAnswer(ctx))
	}
	if errors.Is(err, exec.ErrNotFound) {
		return fmt.Errorf("%s: %w: install mtx (apt-get install mtx) or set the path of the mtx binary", cmd, err)
	}
	return fmt.Errorf("%s: %w", cmd, err)
}

// CommandError is an mtx command that exited non-zero. Err is the
// contract's error it means, when it means one, so errors.Is sees it.
type CommandError struct {
	Device   string
	Args     []string // what followed the program name
	ExitCode int
	// Message is mtx's last word on stderr (its FatalError line), such
	// as "Source Element Address 4098 is Empty".
	Message string
	// Sense is the request sense mtx printed, if it printed one.
	Sense *Sense
	Err   error
}

// Sense is a SCSI request sense as mtx prints it.
type Sense struct {
	Key       string // "Illegal Request", "Not Ready", ...
	ASC, ASCQ int    // additional sense code and qualifier
}

func (s *Sense) String() string {
	return fmt.Sprintf("sense key %s, ASC/ASCQ %02X/%02X", s.Key, s.ASC, s.ASCQ)
}

func (e *CommandError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "changer %s: mtx %s exited %d", e.Device, strings.Join(e.Args, " "), e.ExitCode)
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.Sense != nil {
		fmt.Fprintf(&b, " (%s)", e.Sense)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if h := e.hint(); h != "" {
		fmt.Fprintf(&b, "; %s", h)
	}
	return b.String()
}

func (e *CommandError) Unwrap() error { return e.Err }

func (e *CommandError) hint() string {
	switch {
	case errors.Is(e.Err, ErrNoDevice):
		return "check the device: lsscsi -g lists the changer (mediumx) and its /dev/sg device, and the sg module must be loaded"
	case errors.Is(e.Err, ErrDriveBusy):
		return "rewind and eject the tape in the drive (mt offline), then move it"
	case e.Sense != nil && e.Sense.Key == "Not Ready":
		return "the library is not ready: check that it is online and in random mode on its front panel"
	}
	return ""
}

// mtxMessages maps what mtx 1.3.12 prints when it fails (its own checks
// and the sense codes it names) to the contract's errors.
var mtxMessages = []struct {
	re  *regexp.Regexp
	err error
}{
	{regexp.MustCompile(`cannot open SCSI device|is not an sg device`), ErrNoDevice},
	{regexp.MustCompile(`Source Element Address \d+ is Empty|Data Transfer Element \d+ is Empty`), ErrSourceEmpty},
	{regexp.MustCompile(`Destination Element Address \d+ is Already Full|Storage Element \d+ is Already Full|Drive \d+ Full \(Storage Element -?\d+ loaded\)`), ErrDestinationFull},
	{regexp.MustCompile(`Drive needs offline before move`), ErrDriveBusy},
	{regexp.MustCompile(`Invalid <storage-element-number>|illegal <storage-element-number>|illegal <drive-number>|Invalid source|Invalid destination`), ErrNoElement},
	{regexp.MustCompile(`No Source for tape in drive|Do not know which slot`), ErrNoHomeSlot},
}

var senseRE = regexp.MustCompile(`Request Sense: (Sense Key|Additional Sense Code|Additional Sense Qualifier)\s*=\s*(.+)$`)

func newCommandError(device string, args []string, out Output) *CommandError {
	e := &CommandError{Device: device, Args: args, ExitCode: out.ExitCode}
	sc := bufio.NewScanner(bytes.NewReader(out.Stderr))
	var sense Sense
	var haveSense bool
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if m := senseRE.FindStringSubmatch(line); m != nil {
			haveSense = true
			v := strings.TrimSpace(m[2])
			switch m[1] {
			case "Sense Key":
				sense.Key = v
			case "Additional Sense Code":
				n, _ := strconv.ParseUint(v, 16, 8)
				sense.ASC = int(n)
			case "Additional Sense Qualifier":
				n, _ := strconv.ParseUint(v, 16, 8)
				sense.ASCQ = int(n)
			}
			continue
		}
		if isDiagnostic(line) {
			continue
		}
		e.Message = strings.TrimPrefix(line, "mtx: ")
	}
	if haveSense {
		e.Sense = &sense
	}
	for _, m := range mtxMessages {
		if m.re.MatchString(e.Message) {
			e.Err = m.err
			return e
		}
	}
	if e.Sense != nil {
		switch {
		case e.Sense.ASC == 0x3B && e.Sense.ASCQ == 0x0E:
			e.Err = ErrSourceEmpty
		case e.Sense.ASC == 0x3B && e.Sense.ASCQ == 0x0D:
			e.Err = ErrDestinationFull
		case e.Sense.ASC == 0x53 && (e.Sense.ASCQ == 0x02 || e.Sense.ASCQ == 0x03):
			// MEDIUM REMOVAL PREVENTED (by the data transfer element): the
			// drive still has the tape threaded or locked.
			e.Err = ErrDriveBusy
		}
	}
	return e
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
