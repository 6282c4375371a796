package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairnbackup/cairn/devstack"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/wire"
)

type demoOpts struct {
	dir     string
	keep    bool
	verbose bool
}

func newDemoCmd(g *globals) *cobra.Command {
	var o demoOpts
	c := &cobra.Command{
		Use:   "demo",
		Short: "Back up and restore a sample tree through the whole system, and verify it",
		Long: `Start the whole system in a temporary directory, make a sample tree (text,
random data, a large sparse file, symlinks, hard links, an empty directory,
odd names), run a full backup, change the tree, run an incremental, restore
both points in time into new directories and check every byte and every
piece of metadata against the tree as it was. Then label tapes of the
emulated library, back the tree up to the tape pool (small cartridges, so
the backup spans two tapes), restore it from tape and check it again.
Exits non-zero on any mismatch.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDemo(cmd.Context(), g, o)
		},
	}
	c.Flags().StringVar(&o.dir, "dir", "", "work in this directory instead of a temporary one")
	c.Flags().BoolVar(&o.keep, "keep", false, "keep the work directory (state, volumes, restores) afterwards")
	c.Flags().BoolVar(&o.verbose, "verbose", false, "show the roles' logs")
	return c
}

// demoStep times a phase of the demo for the report.
type demoStep struct {
	name  string
	job   *wire.JobInfo
	took  time.Duration
	bytes int64
}

func runDemo(ctx context.Context, g *globals, o demoOpts) (err error) {
	dir := o.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "cairn-demo-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	defer func() {
		if o.keep || err != nil {
			fmt.Fprintf(g.out, "work directory kept: %s\n", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	say := func(format string, args ...any) { fmt.Fprintf(g.out, "==> "+format+"\n", args...) }
	logOut := io.Discard
	if o.verbose {
		logOut = g.errOut
	}
	say("starting the all-in-one system in %s", dir)
	st, err := devstack.Start(ctx, devstack.Config{
		Dir: filepath.Join(dir, "state"), Client: "demo", Logger: slog.New(slog.NewTextHandler(logOut, nil)),
		// Cartridges of 24 MiB that warn 15 MiB before their end (room for
		// two 1 MiB spool chunks and what follows them), so the backup to
		// tape spans two of them.
		CartridgeBytes: demoCartridgeBytes, EarlyWarningBytes: demoEarlyWarningBytes, SpoolChunkBytes: 1 << 20,
	})
	if err != nil {
		return err
	}
	defer st.Close()
	dg := *g
	dg.natsURL, dg.natsAuth, dg.natsAdmin = st.URL(), st.AdminAuth, st.Admin
	dg.json = false
	quiet := dg
	quiet.out = io.Discard

	src := filepath.Join(dir, "source")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	say("making a sample tree in %s", src)
	if err := sample.Generate(src, sample.DemoSpec()); err != nil {
		return fmt.Errorf("make sample tree: %w", err)
	}
	snapFull, err := sample.Snapshot(src)
	if err != nil {
		return err
	}
	say("%d entries, %d files, %s", len(snapFull.Items), snapFull.Files(), humanBytes(snapFull.Bytes))

	var steps []demoStep
	step := func(name string, bytes int64, f func() (*wire.JobInfo, error)) (*wire.JobInfo, error) {
		say("%s", name)
		t0 := time.Now()
		j, err := f()
		if we := (*warningsError)(nil); errors.As(err, &we) && j != nil {
			// The demo checks what came back itself: warnings are for
			// the report, not a reason to stop.
			say("%s", we.Error())
			err = nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		steps = append(steps, demoStep{name: name, job: j, took: time.Since(t0), bytes: bytes})
		return j, nil
	}
	full, err := step("full backup", snapFull.Bytes, func() (*wire.JobInfo, error) {
		return runBackup(ctx, &dg, backupOpts{client: "demo", paths: []string{src}, level: "full", wait: true})
	})
	if err != nil {
		return err
	}
	say("changing the tree: edits, new files, deletions, a renamed file, a file turned directory")
	if err := sample.Change(src, 2); err != nil {
		return err
	}
	snapIncr, err := sample.Snapshot(src)
	if err != nil {
		return err
	}
	incr, err := step("incremental backup", snapIncr.Bytes, func() (*wire.JobInfo, error) {
		return runBackup(ctx, &dg, backupOpts{client: "demo", paths: []string{src}, level: "incremental", wait: true})
	})
	if err != nil {
		return err
	}

	check := func(name string, backup *wire.JobInfo, want *sample.Manifest) error {
		to := filepath.Join(dir, "restore-"+name)
		_, err := step("restore of the "+name+" backup", want.Bytes, func() (*wire.JobInfo, error) {
			return runRestore(ctx, &dg, restoreOpts{client: "demo", backupID: backup.ID, to: to, wait: true})
		})
		if err != nil {
			return err
		}
		got, err := sample.Snapshot(filepath.Join(to, src))
		if err != nil {
			return fmt.Errorf("read the restored tree: %w", err)
		}
		if diffs := sample.Compare(want, got); len(diffs) > 0 {
			return fmt.Errorf("the restore of the %s backup differs from the tree it backed up:\n  %s", name, strings.Join(diffs, "\n  "))
		}
		say("verified: %d entries of the %s backup identical in content and metadata", len(want.Items), name)
		return nil
	}
	if err := check("full", full, snapFull); err != nil {
		return err
	}
	if err := check("incremental", incr, snapIncr); err != nil {
		return err
	}

	// One file from the full backup alone, read by seeking to its blocks.
	one := filepath.Join(src, "deep", "a", "b", "c", "d", "e", "f", "g", "bottom.txt")
	oneTo := filepath.Join(dir, "restore-one")
	if _, err := runRestore(ctx, &quiet, restoreOpts{client: "demo", backupID: full.ID, to: oneTo, wait: true, paths: []string{one}}); err != nil {
		return fmt.Errorf("single-file restore: %w", err)
	}
	if got, err := os.ReadFile(filepath.Join(oneTo, one)); err != nil || string(got) != "the bottom of a deep tree\n" {
		return fmt.Errorf("single-file restore brought back %q, %v", got, err)
	}
	say("verified: a single file restored on its own")

	// The volumes are readable with no server: export the key and list one.
	keyFile := filepath.Join(dir, "escrow-keys.json")
	if err := runKeyExport(ctx, &quiet, keyFile, false); err != nil {
		return err
	}
	vols, _ := filepath.Glob(filepath.Join(st.PoolDir(), "*.cvol"))
	if len(vols) == 0 {
		return errors.New("no volume files in the pool directory")
	}
	n, err := countVolumeEntries(vols[0], keyFile)
	if err != nil {
		return fmt.Errorf("read volume %s without the catalog: %w", vols[0], err)
	}
	say("verified: %s lists %d entries with no server, using the escrowed key", filepath.Base(vols[0]), n)

	// Tape: label, back up to the tape pool, restore from tape.
	pool := st.Config.TapePool
	say("labeling the tapes in slots 1-4 of library %s for pool %s", devstack.Library, pool)
	if err := runMediaLabel(ctx, &dg, devstack.Library, []int{1, 2, 3, 4}, pool, false, ""); err != nil {
		return fmt.Errorf("label tapes: %w", err)
	}
	tapeJob, err := step("full backup to tape", snapIncr.Bytes, func() (*wire.JobInfo, error) {
		return runBackup(ctx, &dg, backupOpts{client: "demo", paths: []string{src}, level: "full", pool: pool, wait: true})
	})
	if err != nil {
		return err
	}
	if tapeJob.Tape == nil {
		return fmt.Errorf("the backup to tape pool %s reports no tape figures", pool)
	}
	if err := check("tape", tapeJob, snapIncr); err != nil {
		return err
	}

	report(g.out, steps, full, incr, vols, tapeJob)
	return nil
}

// The demo's cartridges: small, so that its backup spans two tapes.
const (
	demoCartridgeBytes    = 24 << 20
	demoEarlyWarningBytes = 15 << 20
)

func report(w io.Writer, steps []demoStep, full, incr *wire.JobInfo, vols []string, tapeJob *wire.JobInfo) {
	fmt.Fprintln(w, "\nREPORT")
	t := newTable(w, "STEP", "FILES", "BYTES", "TIME", "RATE", "STORED", "RATIO")
	for _, s := range steps {
		j := s.job
		stored, ratio := "-", "-"
		if j.StoredBytes > 0 {
			stored = humanBytes(j.StoredBytes)
			ratio = fmt.Sprintf("%.2f", float64(j.Bytes)/float64(j.StoredBytes))
		}
		t.row(s.name, j.Files, humanBytes(j.Bytes), humanDuration(s.took), rate(j.Bytes, s.took), stored, ratio)
	}
	t.flush()
	names := make([]string, 0, len(vols))
	for _, v := range vols {
		names = append(names, filepath.Base(v))
	}
	fmt.Fprintf(w, "volumes written: %s\n", strings.Join(names, ", "))
	if tapeJob != nil && tapeJob.Tape != nil {
		fmt.Fprintf(w, "tapes written: %s; %s\n", strings.Join(tapeJob.Volumes, ", "), tapeFigures(tapeJob.Tape))
	}
	fmt.Fprintln(w, "demo passed: every restored byte and every piece of metadata matches")
}
