package changertest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/cairnbackup/cairn/media/changer"
)

// MTXDevice simulates a SCSI library behind the mtx command line. It is a
// changer.Runner: given `mtx -f PATH status|load|unload|transfer ...` or
// `mtx --version`, it answers what mtx 1.3.12 prints for a library in its
// state (the same text on the same stream, the same exit codes), makes
// the move, and keeps count of the commands. It checks what mtx checks
// itself, and answers the rest as a library does, with a request sense.
//
// Its mail slots are the last storage elements, and its SCSI element
// addresses (which mtx prints in sense-based errors) follow a common
// layout: drives from 256, slots from 4096, mail slots from 16.
type MTXDevice struct {
	path string

	mu       sync.Mutex
	drives   []mtxDrive
	storage  []string // barcode per storage element, "" when empty
	mail     int      // the last mail storage elements are mail slots
	calls    [][]string
	stuck    chan struct{}
	misread  map[string]string
	phantoms map[int]string
	held     map[int]bool
}

type mtxDrive struct {
	barcode string
	source  int
}

// NewMTXDevice returns a library at path laid out as s.
func NewMTXDevice(path string, s Setup) *MTXDevice {
	d := &MTXDevice{
		path:     path,
		drives:   make([]mtxDrive, s.Drives),
		storage:  make([]string, s.Slots+s.MailSlots),
		mail:     s.MailSlots,
		misread:  map[string]string{},
		phantoms: map[int]string{},
		held:     map[int]bool{},
	}
	for n, b := range s.Cartridges {
		if n < 1 || n > len(d.storage) {
			panic(fmt.Sprintf("changertest: cartridge %s in storage element %d of %d", b, n, len(d.storage)))
		}
		d.storage[n-1] = b
	}
	return d
}

var _ changer.Runner = (*MTXDevice)(nil)
var _ Faults = (*MTXDevice)(nil)

// Calls returns the argument lists run so far.
func (d *MTXDevice) Calls() [][]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([][]string(nil), d.calls...)
}

// StickRobot makes moves hang until their context ends or the robot is
// freed; status still answers, from the library's memory.
func (d *MTXDevice) StickRobot(stuck bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case stuck && d.stuck == nil:
		d.stuck = make(chan struct{})
	case !stuck && d.stuck != nil:
		close(d.stuck)
		d.stuck = nil
	}
}

// Misread makes status report barcode as as ("" to read it right).
func (d *MTXDevice) Misread(barcode, as string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if as == "" {
		delete(d.misread, barcode)
	} else {
		d.misread[barcode] = as
	}
}

// Phantom makes the empty storage element n report full with barcode.
func (d *MTXDevice) Phantom(n int, barcode string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if n < 1 || n > len(d.storage) || d.storage[n-1] != "" {
		return fmt.Errorf("changertest: storage element %d is not an empty element", n)
	}
	d.phantoms[n] = barcode
	return nil
}

// HoldDrive makes the drive refuse to give up its cartridge, as a drive
// with its tape threaded does: the library answers the move with MEDIUM
// REMOVAL PREVENTED BY DATA TRANSFER ELEMENT.
func (d *MTXDevice) HoldDrive(drive int, hold bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.held[drive] = hold
}

// result is what one mtx run prints, and its exit code.
type result struct {
	stdout, stderr strings.Builder
	code           int
}

// fatal is mtx's FatalError: the message on stderr and exit 1.
func (r *result) fatal(format string, args ...any) {
	fmt.Fprintf(&r.stderr, format, args...)
	r.code = 1
}

// sense is mtx's PrintRequestSense followed by its FatalError.
func (r *result) sense(key string, asc, ascq byte, format string, args ...any) {
	fmt.Fprintf(&r.stderr, `mtx: Request Sense: Long Report=yes
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
	r.fatal(""+format, args...)
}

const usage = `Usage:
	mtx --version
	mtx [ -f <loader-dev> ] noattach <more commands>
	mtx [ -f <loader-dev> ] inquiry | inventory 
	mtx [ -f <loader-dev> ] [altres] [nobarcode] status
	mtx [ -f <loader-dev> ] [altres] first [<drive#>]
	mtx [ -f <loader-dev> ] [altres] last [<drive#>]
	mtx [ -f <loader-dev> ] [altres] previous [<drive#>]
	mtx [ -f <loader-dev> ] [altres] next [<drive#>]
	mtx [ -f <loader-dev> ] [altres] [invert] load <storage-element-number> [<drive#>]
	mtx [ -f <loader-dev> ] [altres] [invert] unload [<storage-element-number>][<drive#>]
	mtx [ -f <loader-dev> ] [altres] [eepos eepos-number] transfer <storage-element-number> <storage-element-number>
	mtx [ -f <loader-dev> ] [altres] [eepos eepos-number][invert][invert2] exchange <storage-element-number> <storage-element-number>
	mtx [ -f <loader-dev> ] [altres] position <storage-element-number>
	mtx [ -f <loader-dev> ] eject
`

// Run answers one mtx command line (args[0] is the program).
func (d *MTXDevice) Run(ctx context.Context, args []string) (changer.Output, error) {
	if err := ctx.Err(); err != nil {
		return changer.Output{}, err
	}
	d.mu.Lock()
	d.calls = append(d.calls, append([]string(nil), args...))
	var r result
	switch {
	case len(args) == 2 && args[1] == "--version":
		r.fatal("mtx version 1.3.12\n\n%s", usage)
	case len(args) < 4 || args[1] != "-f":
		r.fatal("%s", usage)
	case args[2] != d.path:
		r.fatal("cannot open SCSI device '%s' - No such file or directory\n", args[2])
	default:
		move := d.command(&r, args[3], args[4:])
		if move != nil {
			stuck := d.stuck
			d.mu.Unlock()
			if stuck != nil {
				// A robot that does not answer keeps mtx waiting in the
				// kernel; the runner gives up when the context ends.
				select {
				case <-stuck:
				case <-ctx.Done():
					return changer.Output{}, ctx.Err()
				}
			}
			d.mu.Lock()
			move()
		}
	}
	d.mu.Unlock()
	return changer.Output{Stdout: []byte(r.stdout.String()), Stderr: []byte(r.stderr.String()), ExitCode: r.code}, nil
}

// arg is mtx's get_arg: a number, or -1 for anything else.
func arg(args []string, i int) int {
	if i >= len(args) || args[i] == "" || args[i][0] < '0' || args[i][0] > '9' {
		return -1
	}
	n, _ := strconv.Atoi(args[i])
	return n
}

func (d *MTXDevice) driveAddr(i int) int { return 256 + i }

func (d *MTXDevice) storageAddr(n int) int {
	if slots := len(d.storage) - d.mail; n > slots {
		return 16 + n - slots - 1
	}
	return 4096 + n - 1
}

func (d *MTXDevice) read(b string) string {
	if as, ok := d.misread[b]; ok {
		return as
	}
	return b
}

// reported is storage element n (1-based) as the library reports it.
func (d *MTXDevice) reported(n int) (full bool, tag string) {
	if p, ok := d.phantoms[n]; ok && d.storage[n-1] == "" {
		return true, d.read(p)
	}
	return d.storage[n-1] != "", d.read(d.storage[n-1])
}

// command checks cmd as mtx does and returns the move to make after the
// robot's travel, or nil when it is done (or refused) already.
func (d *MTXDevice) command(r *result, cmd string, args []string) func() {
	switch cmd {
	case "status":
		d.status(r)
	case "load":
		slot, drive := arg(args, 0), arg(args, 1)
		if slot < 1 {
			r.fatal("No source specified\n")
			return nil
		}
		if drive < 0 {
			drive = 0
		}
		if slot > len(d.storage) {
			r.fatal("Invalid <storage-element-number> argument '%d' to 'load' command\n", slot)
			return nil
		}
		if drive >= len(d.drives) {
			r.fatal("illegal <drive-number> argument '%d' to 'load' command\n", drive)
			return nil
		}
		if dr := d.drives[drive]; dr.barcode != "" {
			r.fatal("Drive %d Full (Storage Element %d loaded)\n", drive, dr.source)
			return nil
		}
		fmt.Fprintf(&r.stdout, "Loading media from Storage Element %d into drive %d...", slot, drive)
		return func() {
			switch {
			case d.storage[slot-1] == "":
				r.sense("Illegal Request", 0x3B, 0x0E, "Source Element Address %d is Empty\n", d.storageAddr(slot))
			case d.drives[drive].barcode != "":
				r.sense("Illegal Request", 0x3B, 0x0D, "Destination Element Address %d is Already Full\n", d.driveAddr(drive))
			default:
				d.drives[drive] = mtxDrive{barcode: d.storage[slot-1], source: slot}
				d.storage[slot-1] = ""
				r.stdout.WriteString("done\n")
			}
		}
	case "unload":
		slot, drive := arg(args, 0), arg(args, 1)
		if drive < 0 {
			drive = 0
		}
		if drive >= len(d.drives) {
			r.fatal("illegal <drive-number> argument '%d' to 'unload' command\n", drive)
			return nil
		}
		if slot < 0 {
			slot = d.drives[drive].source
			if slot == 0 {
				r.fatal("No Source for tape in drive %d!\n", drive)
				return nil
			}
		}
		if slot < 1 || slot > len(d.storage) {
			r.fatal("illegal <storage-element-number> argument '%d' to 'unload' command\n", slot)
			return nil
		}
		if d.drives[drive].barcode == "" {
			r.fatal("Data Transfer Element %d is Empty\n", drive)
			return nil
		}
		if full, _ := d.reported(slot); full {
			r.fatal("Storage Element %d is Already Full\n", slot)
			return nil
		}
		fmt.Fprintf(&r.stdout, "Unloading drive %d into Storage Element %d...", drive, slot)
		return func() {
			switch {
			case d.held[drive]:
				r.sense("Illegal Request", 0x53, 0x03, "MOVE MEDIUM from Element Address %d to %d Failed\n", d.driveAddr(drive), d.storageAddr(slot))
			case d.storage[slot-1] != "":
				r.sense("Illegal Request", 0x3B, 0x0D, "Destination Element Address %d is Already Full\n", d.storageAddr(slot))
			default:
				d.storage[slot-1] = d.drives[drive].barcode
				d.drives[drive] = mtxDrive{}
				r.stdout.WriteString("done\n")
			}
		}
	case "transfer":
		from, to := arg(args, 0), arg(args, 1)
		switch {
		case from < 1:
			r.fatal("No source specified\n")
		case to < 1:
			r.fatal("No destination specified\n")
		case from > len(d.storage):
			r.fatal("Invalid source\n")
		case to > len(d.storage):
			r.fatal("Invalid destination\n")
		default:
			return func() {
				toFull, _ := d.reported(to)
				switch {
				case d.storage[from-1] == "":
					r.sense("Illegal Request", 0x3B, 0x0E, "Source Element Address %d is Empty\n", d.storageAddr(from))
				case toFull:
					r.sense("Illegal Request", 0x3B, 0x0D, "Destination Element Address %d is Already Full\n", d.storageAddr(to))
				default:
					d.storage[to-1], d.storage[from-1] = d.storage[from-1], ""
				}
			}
		}
	default:
		r.fatal("%s", usage)
	}
	return nil
}

// status prints what mtx 1.3.12's Status() prints, byte for byte.
func (d *MTXDevice) status(r *result) {
	w := &r.stdout
	fmt.Fprintf(w, "  Storage Changer %s:%d Drives, %d Slots ( %d Import/Export )\n", d.path, len(d.drives), len(d.storage), d.mail)
	for i, dr := range d.drives {
		fmt.Fprintf(w, "Data Transfer Element %d:", i)
		if dr.barcode == "" {
			w.WriteString("Empty\n")
			continue
		}
		if dr.source == 0 {
			w.WriteString("Full (Unknown Storage Element Loaded)")
		} else {
			fmt.Fprintf(w, "Full (Storage Element %d Loaded)", dr.source)
		}
		fmt.Fprintf(w, ":VolumeTag = %s\n", d.read(dr.barcode))
	}
	for n := 1; n <= len(d.storage); n++ {
		ie := ""
		if n > len(d.storage)-d.mail {
			ie = " IMPORT/EXPORT"
		}
		full, tag := d.reported(n)
		state := "Empty"
		if full {
			state = "Full "
		}
		fmt.Fprintf(w, "      Storage Element %d%s:%s", n, ie, state)
		if tag != "" {
			fmt.Fprintf(w, ":VolumeTag=%s", tag)
		}
		w.WriteString("\n")
	}
}
