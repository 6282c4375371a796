package changer

import (
	"bufio"
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// StatusError is `mtx status` output that ParseStatus does not understand.
// A status read wrongly would send the robot to the wrong element, so the
// parser refuses what it does not know instead of guessing.
type StatusError struct {
	Line   int // 1-based; 0 for the output as a whole
	Text   string
	Reason string
}

func (e *StatusError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("mtx status output: %s", e.Reason)
	}
	return fmt.Sprintf("mtx status output, line %d %q: %s", e.Line, e.Text, e.Reason)
}

// The shapes of mtx 1.3.12's Status() printf calls, loosened where
// libraries and builds in the field differ:
//
//	"  Storage Changer %s:%d Drives, %d Slots ( %d Import/Export )"
//	"Data Transfer Element %d:" then "Empty", or "Full (Storage Element %d Loaded)"
//	    or "Full (Unknown Storage Element Loaded)", then ":VolumeTag = %s"
//	    and ":AlternateVolumeTag = %s" when the library reports them
//	"      Storage Element %d%s:%s" with " IMPORT/EXPORT" and "Full " or
//	    "Empty", then ":VolumeTag=%s" and ":AlternateVolumeTag=%s"
//
// Slot tags have no blanks around '=' and drive tags have them; "Full "
// keeps its trailing blank. Patched builds and wrapper scripts print
// every combination of those blanks, so the patterns accept any.
var (
	headerRE  = regexp.MustCompile(`^Storage Changer (.*?)\s*:\s*(\d+) Drives?, (\d+) Slots? \(\s*(\d+) Import/Export\s*\)$`)
	driveRE   = regexp.MustCompile(`^Data Transfer Element (\d+)\s*:\s*(Full|Empty)(.*)$`)
	storageRE = regexp.MustCompile(`^Storage Element (\d+)( IMPORT/EXPORT)?\s*:\s*(Full|Empty)(.*)$`)
	sourceRE  = regexp.MustCompile(`^\s*\((?:Storage Element (\d+)|Unknown Storage Element) Loaded\)`)
	// A tag runs to the next ":AlternateVolumeTag" or the end of the line.
	// Tags are printed with %s from a 36-byte field that libraries pad
	// with blanks, and some labels have blanks inside ("CLN 001"), so
	// blanks are trimmed at the ends only.
	tagsRE = regexp.MustCompile(`^\s*(?::\s*VolumeTag\s*=(.*?))?(?::\s*AlternateVolumeTag\s*=(.*))?$`)
)

// ParseStatus reads the output of `mtx status` into an Inventory.
//
// It accepts what libraries in the field print: volume tags padded with
// blanks or holding blanks, no tags at all (no reader, or an unlabelled
// cartridge), blank tags on empty elements, alternate tags, mail slots
// anywhere in the storage numbering, drives loaded from an unknown
// element, any blanks around ':' and '=', and CRLF line ends. It refuses
// (with a *StatusError) output whose element lines do not match the
// header's counts, are out of order, or are not element lines at all.
func ParseStatus(out []byte) (*Inventory, error) {
	var (
		inv                      Inventory
		header                   bool
		nDrives, nStorage, nMail int
		storageSeen              int
		lineNo                   int
	)
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		lineNo++
		raw := sc.Text()
		line := strings.TrimSpace(raw)
		if line == "" || isDiagnostic(line) {
			continue
		}
		bad := func(format string, args ...any) error {
			return &StatusError{Line: lineNo, Text: strings.TrimRight(raw, "\r"), Reason: fmt.Sprintf(format, args...)}
		}
		if !header {
			m := headerRE.FindStringSubmatch(line)
			if m == nil {
				return nil, bad("expected the \"Storage Changer ...\" header first")
			}
			nDrives, _ = strconv.Atoi(m[2])
			nStorage, _ = strconv.Atoi(m[3])
			nMail, _ = strconv.Atoi(m[4])
			if nMail > nStorage {
				return nil, bad("%d import/export slots among %d storage elements", nMail, nStorage)
			}
			// The counts size the inventory, so they must not exceed what
			// the output can list: every element has a line of its own.
			if lines := bytes.Count(out, []byte{'\n'}) + 1; nDrives > lines || nStorage > lines {
				return nil, bad("%d drives and %d storage elements, in an output of %d lines", nDrives, nStorage, lines)
			}
			header = true
			inv.Drives = make([]Element, 0, nDrives)
			inv.Slots = make([]Element, 0, nStorage-nMail)
			inv.MailSlots = make([]Element, 0, nMail)
			continue
		}
		if m := driveRE.FindStringSubmatch(line); m != nil {
			n, err := strconv.Atoi(m[1])
			if err != nil || n != len(inv.Drives) {
				return nil, bad("drive %s out of order: expected drive %d", m[1], len(inv.Drives))
			}
			if storageSeen > 0 {
				return nil, bad("drive after the storage elements")
			}
			e := Element{Addr: Addr{KindDrive, n}, Full: m[2] == "Full"}
			rest := m[3]
			if e.Full {
				if s := sourceRE.FindStringSubmatch(rest); s != nil {
					if s[1] != "" {
						e.Source, _ = strconv.Atoi(s[1])
					}
					rest = rest[len(s[0]):]
				}
			}
			if err := parseTags(&e, rest); err != "" {
				return nil, bad("%s", err)
			}
			inv.Drives = append(inv.Drives, e)
			continue
		}
		if m := storageRE.FindStringSubmatch(line); m != nil {
			n, err := strconv.Atoi(m[1])
			if err != nil || n != storageSeen+1 {
				return nil, bad("storage element %s out of order: expected %d", m[1], storageSeen+1)
			}
			storageSeen++
			kind := KindSlot
			if m[2] != "" {
				kind = KindMailSlot
			}
			e := Element{Addr: Addr{kind, n}, Full: m[3] == "Full"}
			if err := parseTags(&e, m[4]); err != "" {
				return nil, bad("%s", err)
			}
			if kind == KindMailSlot {
				inv.MailSlots = append(inv.MailSlots, e)
			} else {
				inv.Slots = append(inv.Slots, e)
			}
			continue
		}
		if headerRE.MatchString(line) {
			return nil, bad("a second header")
		}
		return nil, bad("not an element line")
	}
	if err := sc.Err(); err != nil {
		return nil, &StatusError{Reason: err.Error()}
	}
	switch {
	case !header:
		return nil, &StatusError{Reason: "empty: no \"Storage Changer ...\" header"}
	case len(inv.Drives) != nDrives:
		return nil, &StatusError{Reason: fmt.Sprintf("the header announces %d drives, %d are listed (output cut short?)", nDrives, len(inv.Drives))}
	case storageSeen != nStorage:
		return nil, &StatusError{Reason: fmt.Sprintf("the header announces %d storage elements, %d are listed (output cut short?)", nStorage, storageSeen)}
	case len(inv.MailSlots) != nMail:
		return nil, &StatusError{Reason: fmt.Sprintf("the header announces %d import/export slots, %d are marked IMPORT/EXPORT", nMail, len(inv.MailSlots))}
	}
	for i := range inv.Drives {
		// A source the library reports outside its own storage numbering
		// cannot be unloaded to; it is as good as unknown.
		if s := inv.Drives[i].Source; s < 0 || s > nStorage {
			inv.Drives[i].Source = 0
		}
	}
	return &inv, nil
}

// isDiagnostic is whether line is one mtx writes to stderr while it
// reads the element status: a library that reports a unit attention (after
// a power-on or a door opened) makes mtx print its request sense, retry,
// and then print the status. Captures made with 2>&1 hold both.
func isDiagnostic(line string) bool {
	return strings.HasPrefix(line, "mtx: Request Sense:") || strings.HasPrefix(line, "Mode sense (0x1A) for Page 0x1D failed")
}

// parseTags reads the ":VolumeTag=...:AlternateVolumeTag=..." tail of an
// element line into e, and returns what is wrong with it, if anything.
func parseTags(e *Element, rest string) string {
	m := tagsRE.FindStringSubmatch(rest)
	if m == nil {
		return fmt.Sprintf("cannot read %q after the element's state", strings.TrimSpace(rest))
	}
	// An empty element may still print a tag: some libraries report the
	// blank (or stale) tag field of an empty slot. It names no cartridge.
	if e.Full {
		e.Barcode = strings.TrimSpace(m[1])
		e.AltBarcode = strings.TrimSpace(m[2])
	}
	return ""
}
