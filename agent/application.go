package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/tmpfile"
	"github.com/cairnbackup/cairn/wire"
)

// A backup's application steps and command sources (wire.Application) run
// around the reading of its files:
//
//  1. every command is checked against the agent's CommandPolicy before
//     anything runs, so a refused one fails the job with nothing run;
//  2. once the storage node accepted the backup, the before-steps run in
//     order, then the command sources, each into a spool file;
//  3. the files are walked and sent, the spooled sources among them at
//     their place in index order;
//  4. the after-steps run, every one of them, whatever happened since the
//     before-steps started (a quiesce must be undone even when the backup
//     failed or was stopped), before the storage node is asked to commit:
//     an after-step that fails the job keeps the backup from being
//     committed;
//  5. the backup is committed, or fails and is rolled back.
//
// The data connection is idle while commands run (a dump may take hours),
// so the agent sends keepalives meanwhile: the storage node ends a stream
// whose agent sends nothing for its idle timeout.

// defaultStepTimeout is the timeout of an application step whose order
// gives none.
const defaultStepTimeout = 10 * time.Minute

// appRun is the application part of one backup job.
type appRun struct {
	a     *Agent
	o     wire.RunBackup
	grace time.Duration
	start time.Time

	notes    []string // info lines for the job log
	warnings []string
	spooled  []SpooledFile
}

func (a *Agent) newAppRun(o wire.RunBackup) *appRun {
	return &appRun{a: a, o: o, grace: a.killGrace}
}

// check refuses an order whose commands the agent's configuration does not
// allow, or whose sources are stored at paths that cannot be.
func (r *appRun) check() error {
	policy := r.a.cfg.CommandPolicy()
	lines := make([]string, 0, len(r.o.Before)+len(r.o.After)+len(r.o.Sources))
	for _, s := range r.o.Before {
		lines = append(lines, s.Command)
	}
	for _, s := range r.o.After {
		lines = append(lines, s.Command)
	}
	seen := map[string]bool{}
	for _, s := range r.o.Sources {
		lines = append(lines, s.Command)
		p := string(s.Path)
		if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
			return wire.Errorf(wire.CodeInvalidArgument, "give a command source a clean absolute path, as it should be restored",
				"command source path %q is not a clean absolute path", fileindex.Escape(p))
		}
		if seen[p] {
			return wire.Errorf(wire.CodeInvalidArgument, "give each command source its own path", "two command sources are stored as %s", fileindex.Escape(p))
		}
		seen[p] = true
		for _, root := range r.o.Paths {
			if fileindex.Within(p, string(root)) || fileindex.Within(string(root), p) {
				return wire.Errorf(wire.CodeInvalidArgument, "give a command source a path outside the paths the backup walks",
					"command source %s and %s, a path of the backup, lie one inside the other", fileindex.Escape(p), fileindex.Escape(string(root)))
			}
		}
	}
	for _, l := range lines {
		if _, err := policy.Argv(l); err != nil {
			return r.a.refusal(err)
		}
	}
	return nil
}

// refusal is the job's error for a command the policy refused, with a
// hint that names the setting that would allow it and where it is set.
func (a *Agent) refusal(err error) error {
	var re *CommandRefusedError
	if !errors.As(err, &re) {
		return err
	}
	file := "the agent's config file (its --config)"
	if a.cfg.ConfigFile != "" {
		file = "the agent's config file " + a.cfg.ConfigFile
	}
	var fix string
	switch re.Setting {
	case settingDirs:
		fix = fmt.Sprintf("to allow it, add the directory of its program to %s (or the whole line to %s) in %s, or give --%s, and restart the agent",
			settingDirs, settingCommands, file, strings.ReplaceAll(settingDirs, "_", "-"))
	case settingShell:
		fix = fmt.Sprintf("run a script of an allowed directory instead, or list the line in %s and set %s in %s, and restart the agent",
			settingCommands, settingShell, file)
	default:
		fix = fmt.Sprintf("list the command in %s in %s, and restart the agent", settingCommands, file)
	}
	return wire.Errorf(wire.CodeCommandRefused, fix, "client %s: %w", a.cfg.Name, err)
}

// env is the environment of a command of the job, besides the agent's.
func (r *appRun) env(step string) []string {
	return []string{
		"CAIRN_JOB_ID=" + strconv.FormatUint(r.o.JobID, 10),
		"CAIRN_JOB_LEVEL=" + r.o.Level,
		"CAIRN_CLIENT=" + r.a.cfg.Name,
		"CAIRN_STEP=" + step,
	}
}

// output turns a command's output into job log lines.
func output(what string, res commandResult) []string {
	var out []string
	if res.cut {
		out = append(out, what+": (earlier output left out)")
	}
	for _, l := range res.output {
		out = append(out, what+": "+l)
	}
	return out
}

// runSteps runs steps in order. A step that fails with FailJob ends the
// run of before-steps and is returned; any other failure is a warning.
// After-steps (all) run every one whatever the others did.
func (r *appRun) runSteps(ctx context.Context, kind string, steps []wire.AppStep, env []string, all bool) error {
	var first error
	for i, s := range steps {
		what := fmt.Sprintf("%s-step %d", kind, i+1)
		timeout := s.Timeout
		if timeout <= 0 {
			timeout = defaultStepTimeout
		}
		res, err := runCommand(ctx, r.a.cfg.CommandPolicy(), r.grace, commandRun{what: what, line: s.Command, env: env, timeout: timeout})
		if err != nil && ctx.Err() != nil && !all {
			return context.Cause(ctx)
		}
		if err == nil {
			r.notes = append(r.notes, fmt.Sprintf("%s %q ran in %s", what, fileindex.Escape(s.Command), res.took.Round(time.Millisecond)))
			r.notes = append(r.notes, output(what, res)...)
			continue
		}
		if errors.As(err, new(*CommandRefusedError)) {
			err = r.a.refusal(err)
		} else {
			err = wire.Errorf(wire.CodeCommandFailed, "", "client %s: %w", r.a.cfg.Name, err)
		}
		if s.FailJob {
			if first == nil {
				first = err
			}
			if !all {
				return first
			}
			continue
		}
		r.warnings = append(r.warnings, fmt.Sprintf("%v (the step does not fail the job)", err))
	}
	return first
}

// runSources runs the command sources in order, each into a file of the
// spool directory, and keeps the files for the stream. The first that
// fails ends the run and fails the backup.
func (r *appRun) runSources(ctx context.Context) error {
	for _, s := range r.o.Sources {
		what := "command source " + string(s.Path)
		f, err := spoolFile(r.a.cfg.SpoolDir)
		if err != nil {
			return wire.Errorf(wire.CodeIO, "check the agent's spool_dir (or $TMPDIR): it must exist and be writable by the agent",
				"client %s: %s: %w", r.a.cfg.Name, what, err)
		}
		start := time.Now()
		res, err := runCommand(ctx, r.a.cfg.CommandPolicy(), r.grace, commandRun{
			what: what, line: s.Command, env: append(r.env("source"), "CAIRN_SOURCE_PATH="+string(s.Path)), timeout: s.Timeout, stdout: f,
		})
		if err != nil {
			f.Close()
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			if errors.As(err, new(*CommandRefusedError)) {
				return r.a.refusal(err)
			}
			return wire.Errorf(wire.CodeCommandFailed, "the backup commits nothing when a command source fails: run the command on the client as the agent would (as root, from /) to see why, and rerun the backup",
				"client %s: %w", r.a.cfg.Name, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			f.Close()
			return wire.Errorf(wire.CodeIO, "", "client %s: %s: fstat its spool file: %w", r.a.cfg.Name, what, err)
		}
		r.spooled = append(r.spooled, SpooledFile{Path: string(s.Path), File: f, Size: st.Size, MTime: start})
		r.notes = append(r.notes, fmt.Sprintf("%s: %q wrote %d bytes in %s", what, fileindex.Escape(s.Command), st.Size, res.took.Round(time.Millisecond)))
		r.notes = append(r.notes, output(what+" (stderr)", res)...)
	}
	return nil
}

// close drops the spool files.
func (r *appRun) close() {
	for _, s := range r.spooled {
		s.File.Close()
	}
	r.spooled = nil
}

// spoolFile makes a file without a name in dir: nothing is left behind by
// an agent that dies.
func spoolFile(dir string) (*os.File, error) {
	return tmpfile.Open(dir, ".cairn-source-*", "spool file")
}

// keepalive sends keepalive frames on the data connection until the
// returned stop is called, while the agent runs commands and sends
// nothing. stop returns once the goroutine has ended, so the caller
// writes alone again.
func keepalive(conn *dataplane.Conn, interval time.Duration) (stop func()) {
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
			}
			if conn.WriteFrame(dataplane.FrameKeepalive, nil) != nil || conn.Flush() != nil {
				return // the stream's own writes will say why
			}
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}
