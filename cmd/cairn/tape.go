package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairnbackup/cairn/wire"
)

// labelTimeout is how long one tape may take to label when --timeout is
// not given: a load, a write, a read back and an unload take minutes on a
// real library.
const labelTimeout = 10 * time.Minute

func newMediaCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "media", Short: "Media: label tapes for a pool"}
	var library, slots, pool, requestID string
	var overwrite bool
	label := &cobra.Command{
		Use:   "label --library LIB --slots 1-10 --pool POOL",
		Short: "Label the tapes in slots of a library for a pool (or Scratch)",
		Long: `Label the tapes in slots of a library: each gets a Cairn label naming a new
volume (named by the cartridge's barcode) of the pool, written and read back
by the storage node before the catalog records it. Labeling into Scratch
keeps tapes ready for any tape pool of the library.

A tape that already holds a label (another program's, or a Cairn volume the
catalog does not know) is refused unless --overwrite; a tape the catalog
knows is never relabeled. A tape that fails does not stop the others; the
exit status is non-zero if any failed.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if pool == "" {
				return &usageError{fmt.Errorf("pass --pool NAME (a tape pool, or Scratch)")}
			}
			list, err := parseSlots(slots)
			if err != nil {
				return &usageError{err}
			}
			lg := *g
			if !cmd.Flags().Changed("timeout") {
				lg.timeout = labelTimeout
			}
			return runMediaLabel(cmd.Context(), &lg, library, list, pool, overwrite, requestID)
		},
	}
	f := label.Flags()
	f.StringVar(&library, "library", "", "library (may be left out when there is one)")
	f.StringVar(&slots, "slots", "", "storage slots: 3, 1-10 or 1-4,7")
	f.StringVar(&pool, "pool", "", "tape pool the tapes go to (Scratch: any pool of the library, when it needs one)")
	f.BoolVar(&overwrite, "overwrite", false, "label tapes that hold another label, destroying what they hold")
	f.StringVar(&requestID, "request-id", "", "name this request (a UUID by default; each slot's label is ID-slotN): run the command again with the same id after an unclear answer, and each tape is labeled once")
	bindRetryFor(f, g)
	c.AddCommand(label)
	return c
}

// parseSlots reads "3", "1-10" or "1-4,7".
func parseSlots(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("pass --slots, e.g. --slots 1-10")
	}
	var out []int
	seen := map[int]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(strings.TrimSpace(lo))
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(strings.TrimSpace(hi))
		}
		if err != nil || a < 1 || b < a {
			return nil, fmt.Errorf("slots %q are not understood; use numbers from 1 and ranges like 1-10", s)
		}
		if b-a > 10000 {
			return nil, fmt.Errorf("slot range %s is too long", part)
		}
		for n := a; n <= b; n++ {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	return out, nil
}

// labelResult is one slot's outcome, for --json.
type labelResult struct {
	Slot    int              `json:"slot"`
	Request string           `json:"request_id"`
	Volume  *wire.VolumeInfo `json:"volume,omitempty"`
	Error   *wire.Error      `json:"error,omitempty"`
}

func runMediaLabel(ctx context.Context, g *globals, library string, slots []int, pool string, overwrite bool, requestID string) error {
	nc, err := g.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	var results []labelResult
	failed, unknown := 0, 0
	base := newStart(requestID)
	for _, slot := range slots {
		var resp wire.MediaLabelResp
		st := base
		st.RequestID = fmt.Sprintf("%s-slot%d", base.RequestID, slot)
		err := g.start(ctx, nc, wire.OpMediaLabel, fmt.Sprintf("the label of slot %d", slot), st, func(st wire.Start) any {
			return wire.MediaLabelReq{Library: library, Slot: slot, Pool: pool, Overwrite: overwrite, Start: st}
		}, &resp)
		r := labelResult{Slot: slot, Request: st.RequestID}
		if wire.CodeOf(err) == wire.CodeOutcomeUnknown {
			unknown++
		}
		if err != nil {
			failed++
			r.Error = wire.AsError(err)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		} else {
			r.Volume = &resp.Volume
		}
		results = append(results, r)
		if g.json {
			continue
		}
		if r.Error != nil {
			fmt.Fprintf(g.out, "slot %d: not labeled: %s\n", slot, r.Error.Message)
			if r.Error.Hint != "" {
				fmt.Fprintf(g.out, "         hint: %s\n", r.Error.Hint)
			}
		} else {
			fmt.Fprintf(g.out, "slot %d: %s labeled as volume %s of pool %s\n", slot, r.Volume.Barcode, r.Volume.Name, r.Volume.Pool)
		}
	}
	if g.json {
		if err := printJSON(g.out, results); err != nil {
			return err
		}
	}
	if unknown > 0 {
		return wire.Errorf(wire.CodeOutcomeUnknown, fmt.Sprintf("run the same command again with --request-id %s: each tape is labeled once", base.RequestID),
			"%d of %d tapes not confirmed labeled (%d failed)", unknown, len(slots), failed-unknown)
	}
	if failed > 0 {
		return wire.Errorf(wire.CodeAborted, "see the lines above for each tape; fix them and label those slots again",
			"%d of %d tapes not labeled", failed, len(slots))
	}
	return nil
}

func newLibraryCmd(g *globals) *cobra.Command {
	var library string
	c := &cobra.Command{Use: "library", Short: "Tape libraries: inventory and moves of cartridges"}
	c.PersistentFlags().StringVar(&library, "library", "", "library (may be left out when there is one)")
	status := &cobra.Command{
		Use:   "status",
		Short: "Show a library's drives and slots, with the volume each tape holds",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runLibraryStatus(cmd.Context(), g, library)
		},
	}
	var drive, slot, from, to int
	var barcode, requestID string
	move := func(use, short string, build func(cmd *cobra.Command) (wire.LibraryMoveReq, error)) *cobra.Command {
		c := &cobra.Command{
			Use: use, Short: short, Args: noArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				req, err := build(cmd)
				if err != nil {
					return &usageError{err}
				}
				req.Library = library
				req.Start = newStart(requestID)
				lg := *g
				if !cmd.Flags().Changed("timeout") {
					lg.timeout = labelTimeout
				}
				return runLibraryMove(cmd.Context(), &lg, req)
			},
		}
		bindRequestID(c.Flags(), &requestID, g)
		return c
	}
	changed := func(cmd *cobra.Command, name string) bool { return cmd.Flags().Changed(name) }
	load := move("load --drive N (--slot N | --barcode B)", "Load a tape into a drive", func(cmd *cobra.Command) (wire.LibraryMoveReq, error) {
		if !changed(cmd, "drive") || changed(cmd, "slot") == changed(cmd, "barcode") {
			return wire.LibraryMoveReq{}, fmt.Errorf("pass --drive N and one of --slot N or --barcode B")
		}
		return wire.LibraryMoveReq{Op: wire.MoveLoad, Drive: drive, Slot: slot, Barcode: barcode}, nil
	})
	load.Flags().IntVar(&drive, "drive", 0, "drive number (from 0)")
	load.Flags().IntVar(&slot, "slot", 0, "slot the tape is in")
	load.Flags().StringVar(&barcode, "barcode", "", "barcode of the tape")
	unload := move("unload --drive N [--slot N]", "Unload a drive into a slot (its home slot by default)", func(cmd *cobra.Command) (wire.LibraryMoveReq, error) {
		if !changed(cmd, "drive") {
			return wire.LibraryMoveReq{}, fmt.Errorf("pass --drive N")
		}
		return wire.LibraryMoveReq{Op: wire.MoveUnload, Drive: drive, Slot: slot}, nil
	})
	unload.Flags().IntVar(&drive, "drive", 0, "drive number (from 0)")
	unload.Flags().IntVar(&slot, "slot", 0, "slot to put the tape in (its home slot when not given)")
	transfer := move("transfer --from N --to N", "Move a tape from one slot to another", func(cmd *cobra.Command) (wire.LibraryMoveReq, error) {
		if !changed(cmd, "from") || !changed(cmd, "to") {
			return wire.LibraryMoveReq{}, fmt.Errorf("pass --from SLOT and --to SLOT")
		}
		return wire.LibraryMoveReq{Op: wire.MoveTransfer, Slot: from, To: to}, nil
	})
	transfer.Flags().IntVar(&from, "from", 0, "slot the tape is in")
	transfer.Flags().IntVar(&to, "to", 0, "empty slot to move it to")
	imp := move("import", "Move every tape in the mail slots into free slots", func(*cobra.Command) (wire.LibraryMoveReq, error) {
		return wire.LibraryMoveReq{Op: wire.MoveImport}, nil
	})
	export := move("export (--barcode B | --slot N)", "Move a tape to a mail slot, to take it out (to the vault)", func(cmd *cobra.Command) (wire.LibraryMoveReq, error) {
		if changed(cmd, "slot") == changed(cmd, "barcode") {
			return wire.LibraryMoveReq{}, fmt.Errorf("pass one of --barcode B or --slot N")
		}
		return wire.LibraryMoveReq{Op: wire.MoveExport, Slot: slot, Barcode: barcode}, nil
	})
	export.Flags().IntVar(&slot, "slot", 0, "slot of the tape")
	export.Flags().StringVar(&barcode, "barcode", "", "barcode of the tape")
	online := move("online --drive N", "Bring a drive that was taken offline back into use", func(cmd *cobra.Command) (wire.LibraryMoveReq, error) {
		if !changed(cmd, "drive") {
			return wire.LibraryMoveReq{}, fmt.Errorf("pass --drive N")
		}
		return wire.LibraryMoveReq{Op: wire.MoveOnline, Drive: drive}, nil
	})
	online.Flags().IntVar(&drive, "drive", 0, "drive number (from 0)")
	c.AddCommand(status, load, unload, transfer, imp, export, online)
	return c
}

func runLibraryMove(ctx context.Context, g *globals, req wire.LibraryMoveReq) error {
	nc, err := g.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	var resp wire.LibraryMoveResp
	err = g.start(ctx, nc, wire.OpLibraryMove, "the library "+req.Op, req.Start, func(st wire.Start) any {
		r := req
		r.Start = st
		return r
	}, &resp)
	if err != nil {
		return err
	}
	if g.json {
		return printJSON(g.out, resp)
	}
	if len(resp.Moves) == 0 {
		switch req.Op {
		case wire.MoveOnline:
			fmt.Fprintf(g.out, "drive %d is back in use\n", req.Drive)
		case wire.MoveImport:
			fmt.Fprintln(g.out, "no tape in the mail slots: nothing imported")
		default:
			fmt.Fprintln(g.out, "nothing moved")
		}
		return nil
	}
	for _, m := range resp.Moves {
		fmt.Fprintf(g.out, "%s: %s -> %s\n", m.Barcode, m.From, m.To)
	}
	if req.Op == wire.MoveExport {
		fmt.Fprintln(g.out, "take the tape out of the mail slot; the catalog then records it in the vault")
	}
	return nil
}

func libraryStatus(ctx context.Context, g *globals, library string) (wire.LibraryStatusResp, error) {
	var resp wire.LibraryStatusResp
	err := g.request(ctx, wire.OpLibraryStatus, wire.LibraryStatusReq{Library: library}, &resp)
	return resp, err
}

func runLibraryStatus(ctx context.Context, g *globals, library string) error {
	resp, err := libraryStatus(ctx, g, library)
	if err != nil {
		return err
	}
	if g.json {
		if err := printJSON(g.out, resp.Libraries); err != nil {
			return err
		}
		return unanswered(resp)
	}
	for i, l := range resp.Libraries {
		if i > 0 {
			fmt.Fprintln(g.out)
		}
		if l.Error != nil {
			fmt.Fprintf(g.out, "LIBRARY %s on storage node %s: no answer: %s\n", l.Library, l.Node, l.Error.Message)
			if l.Error.Hint != "" {
				fmt.Fprintf(g.out, "  hint: %s\n", l.Error.Hint)
			}
			continue
		}
		full, mailFull, mail := 0, 0, 0
		for _, s := range l.Slots {
			if s.Mail {
				mail++
				if s.Full {
					mailFull++
				}
			} else if s.Full {
				full++
			}
		}
		fmt.Fprintf(g.out, "LIBRARY %s on storage node %s (%s): %d drives, %d of %d slots full, %d of %d mail slots full\n",
			l.Library, l.Node, l.Changer, len(l.Drives), full, len(l.Slots)-mail, mailFull, mail)
		dt := newTable(g.out, "DRIVE", "STATE", "TAPE", "JOB", "DOING")
		printDrives(dt, l, false)
		dt.flush()
		fmt.Fprintln(g.out)
		t := newTable(g.out, "SLOT", "TAPE", "VOLUME", "POOL", "STATE")
		for _, s := range l.Slots {
			name := strconv.Itoa(s.Number)
			if s.Mail {
				name = "mail " + name
			}
			tape := "-"
			switch {
			case s.Full && s.Barcode == "":
				tape = "(no barcode)"
			case s.Full:
				tape = s.Barcode
			}
			volume, pool, state := dash(s.Volume), dash(s.Pool), dash(s.State)
			if s.Full && s.Volume == "" {
				volume = "(not labeled)"
			}
			t.row(name, tape, volume, pool, state)
		}
		t.flush()
	}
	return unanswered(resp)
}

// unanswered fails a listing in which some library's node did not answer,
// after the others were shown, so that scripts notice.
func unanswered(resp wire.LibraryStatusResp) error {
	var names []string
	for _, l := range resp.Libraries {
		if l.Error != nil {
			names = append(names, l.Library+" ("+l.Node+")")
		}
	}
	if len(names) == 0 {
		return nil
	}
	return fmt.Errorf("no status from library %s: see the reason above; the other libraries answered", strings.Join(names, ", "))
}

// printDrives prints the drives of a library; long adds the device and
// the drive's figures.
func printDrives(t *table, l wire.LibraryStatus, long bool) {
	for _, d := range l.Drives {
		state := d.State
		if d.Reason != "" {
			state += ": " + d.Reason
		}
		var flags []string
		if d.WriteProtected {
			flags = append(flags, "write-protected")
		}
		if d.CleaningRequested {
			flags = append(flags, "needs cleaning")
		}
		if len(flags) > 0 {
			state += " (" + strings.Join(flags, ", ") + ")"
		}
		job := "-"
		if d.Job != 0 {
			job = strconv.FormatUint(d.Job, 10)
		}
		if long {
			t.row(l.Library, d.Number, dash(d.Device), state, dash(d.Barcode), job, dash(d.Doing),
				humanBytes(d.BytesWritten), humanBytes(d.BytesRead), d.Loads, d.Locates, d.Stops, d.SoftErrors)
		} else {
			t.row(d.Number, state, dash(d.Barcode), job, dash(d.Doing))
		}
	}
}

func newDriveCmd(g *globals) *cobra.Command {
	var library string
	c := &cobra.Command{Use: "drive", Short: "Tape drives: their state and figures"}
	status := &cobra.Command{
		Use:   "status",
		Short: "Show every tape drive: state, tape, job, and its figures since its node started",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := libraryStatus(cmd.Context(), g, library)
			if err != nil {
				return err
			}
			if g.json {
				type drive struct {
					Library string `json:"library"`
					Node    string `json:"node"`
					wire.DriveInfo
				}
				var out []drive
				for _, l := range resp.Libraries {
					for _, d := range l.Drives {
						out = append(out, drive{Library: l.Library, Node: l.Node, DriveInfo: d})
					}
				}
				if err := printJSON(g.out, out); err != nil {
					return err
				}
				return unanswered(resp)
			}
			sort.Slice(resp.Libraries, func(i, j int) bool { return resp.Libraries[i].Library < resp.Libraries[j].Library })
			t := newTable(g.out, "LIBRARY", "DRIVE", "DEVICE", "STATE", "TAPE", "JOB", "DOING", "WRITTEN", "READ", "LOADS", "LOCATES", "STOPS", "SOFT ERRORS")
			for _, l := range resp.Libraries {
				if l.Error != nil {
					t.row(l.Library, "-", "-", "no answer: "+l.Error.Message, "-", "-", "-", "-", "-", "-", "-", "-", "-")
				}
				printDrives(t, l, true)
			}
			if err := t.flush(); err != nil {
				return err
			}
			return unanswered(resp)
		},
	}
	status.Flags().StringVar(&library, "library", "", "only the drives of this library")
	c.AddCommand(status)
	return c
}
