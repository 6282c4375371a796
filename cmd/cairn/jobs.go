package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/wire"
)

type backupOpts struct {
	client   string
	paths    []string
	excludes []string
	level    string
	pool     string
	wait     bool
	// skipNodump leaves out what carries the nodump inode flag.
	skipNodump bool
	// oneFileSystem keeps the walk on the filesystem of each path.
	oneFileSystem bool
	requestID     string
	app           appOpts
}

// appOpts are the flags of a backup's application steps and command
// sources.
type appOpts struct {
	before, after []string
	stepTimeout   time.Duration
	beforeFailure string
	afterFailure  string
	sources       []string
	sourceTimeout time.Duration
}

func (a *appOpts) bind(f *pflag.FlagSet) {
	f.StringArrayVar(&a.before, "before", nil, "command to run on the client before the backup (see above); repeat for several, run in order")
	f.StringArrayVar(&a.after, "after", nil, "command to run on the client after the backup, even one that failed; repeat for several")
	f.DurationVar(&a.stepTimeout, "step-timeout", 10*time.Minute, "how long each --before and --after command may run before it is stopped")
	f.StringVar(&a.beforeFailure, "before-failure", "fail", "what a failing --before command does to the backup: fail (nothing is backed up) or warn")
	f.StringVar(&a.afterFailure, "after-failure", "warn", "what a failing --after command does to the backup: warn, or fail (nothing is committed)")
	f.StringArrayVar(&a.sources, "command-source", nil, "PATH=COMMAND: store the output of COMMAND, run on the client, as the file PATH of the backup; repeat for several")
	f.DurationVar(&a.sourceTimeout, "source-timeout", 0, "how long each --command-source command may run before it is stopped (0: no limit)")
}

// application is what the flags ask for, checked.
func (a *appOpts) application() (wire.Application, error) {
	var app wire.Application
	failJob := func(flag, v string, def bool) (bool, error) {
		switch v {
		case "fail":
			return true, nil
		case "warn":
			return false, nil
		case "":
			return def, nil
		}
		return false, &usageError{fmt.Errorf("--%s %q: give fail or warn", flag, v)}
	}
	if a.stepTimeout <= 0 && len(a.before)+len(a.after) > 0 {
		return app, &usageError{fmt.Errorf("--step-timeout %s: give a positive duration, like 5m", a.stepTimeout)}
	}
	if a.sourceTimeout < 0 {
		return app, &usageError{fmt.Errorf("--source-timeout %s: give a positive duration, or 0 for no limit", a.sourceTimeout)}
	}
	bf, err := failJob("before-failure", a.beforeFailure, true)
	if err != nil {
		return app, err
	}
	af, err := failJob("after-failure", a.afterFailure, false)
	if err != nil {
		return app, err
	}
	for _, c := range a.before {
		app.Before = append(app.Before, wire.AppStep{Command: c, Timeout: a.stepTimeout, FailJob: bf})
	}
	for _, c := range a.after {
		app.After = append(app.After, wire.AppStep{Command: c, Timeout: a.stepTimeout, FailJob: af})
	}
	for _, s := range a.sources {
		p, c, ok := strings.Cut(s, "=")
		if !ok || !filepath.IsAbs(p) || strings.TrimSpace(c) == "" {
			return app, &usageError{fmt.Errorf("--command-source %q: give PATH=COMMAND, PATH the absolute path to store the output as ('/db/app.sql=/usr/bin/pg_dump app')", s)}
		}
		app.Sources = append(app.Sources, wire.CommandSource{Path: fileindex.Path(p), Command: c, Timeout: a.sourceTimeout})
	}
	return app, nil
}

func newBackupCmd(g *globals) *cobra.Command {
	var o backupOpts
	c := &cobra.Command{
		Use:   "backup --client NAME --path DIR [--path DIR...]",
		Short: "Back up paths of a client",
		Long: `Back up paths of a client to a pool.

Levels: full (everything), incremental (what changed since the last backup of
the same paths, the default), differential (what changed since the last full).
A backup builds only on backups of the same file set (the same paths and
excludes) in the same pool, so each pool holds whole chains (a tape pool's
tapes restore without the disk pool): an incremental or differential with no
full of its file set in its pool runs as a full, and the job log says so.

--exclude leaves out what a pattern matches, a directory with all it holds:
  *.tmp, node_modules   without a slash: a name, at any depth
  var/cache             with a slash: a path below each --path (anchored there)
  /var/cache            with a leading slash: that absolute path
  cache/                a trailing slash: directories only
  **/build/*.o          each part is a shell glob (*, ?, [a-z]); ** is any
                        number of directories, none included
A pattern that left nothing out is a warning in the job log: most likely a
typo.

--skip-nodump leaves out the files and directories that carry the nodump
flag (chattr +d), a directory with all it holds, as dump(8) does; the job
log counts them. --one-file-system stays on the filesystem of each --path, as
tar does: a mount point below it is kept as an empty directory. Sockets are
never backed up (the job log names them).
Inode flags (chattr: immutable, append only, nodump, noatime...) are backed
up and restored.

Application steps: --before runs a command on the client once the storage
node took the backup and before anything is read (quiesce a database, take
a snapshot); --after runs one once everything was read, before the backup
is committed, and always, also when the backup or a --before failed (undo
the quiesce). Each has --step-timeout; a failing --before fails the backup
unless --before-failure warn, a failing --after only warns unless
--after-failure fail. They see CAIRN_JOB_ID, CAIRN_JOB_LEVEL, CAIRN_CLIENT
and CAIRN_STEP, an --after also CAIRN_JOB_STATUS (success or failed) and
CAIRN_JOB_ERROR; the last lines of their output go to the job log.

--command-source PATH=COMMAND stores what COMMAND writes to its standard
output as the file PATH of the backup (mode 0600, owner root, the time it
ran), outside the --path trees: '/db/app.sql=/usr/bin/pg_dump app'. A
command that exits non-zero fails the backup, which then commits nothing;
the end of its stderr goes to the job log.

The agent runs only the commands its own configuration allows
(allowed_command_dirs, allowed_commands; nothing by default), with their
programs' absolute paths and without a shell: a command line is split into
arguments at spaces, with '...', "..." and \ quoting, and one with |, >, $
or another character only a shell understands is refused (see 'cairn agent
--help').`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.client == "" {
				return &usageError{fmt.Errorf("pass --client NAME (see 'cairn client list')")}
			}
			if len(o.paths) == 0 {
				return &usageError{fmt.Errorf("pass --path DIR, once per directory to back up")}
			}
			_, err := runBackup(cmd.Context(), g, o)
			return err
		},
	}
	f := c.Flags()
	f.StringVar(&o.client, "client", "", "client to back up")
	f.StringArrayVar(&o.paths, "path", nil, "absolute path on the client; repeat for several")
	f.StringArrayVar(&o.excludes, "exclude", nil, "pattern of names or paths to leave out (see above); repeat for several")
	f.BoolVar(&o.skipNodump, "skip-nodump", false, "leave out files and directories with the nodump flag (chattr +d)")
	f.BoolVar(&o.oneFileSystem, "one-file-system", false, "stay on the filesystem of each --path: a mount point below one is kept as an empty directory")
	o.app.bind(f)
	f.StringVar(&o.level, "level", "incremental", "full, incremental or differential")
	f.StringVar(&o.pool, "pool", "", "pool to write to (the client's default pool when empty)")
	bindWaitFlags(c, g, &o.wait, false)
	bindRequestID(f, &o.requestID, g)

	addBackupAdminCmds(c, g)
	return c
}

// runBackup starts a backup and, with wait, follows it to its end. It
// returns the job as it ended (or as it started).
func runBackup(ctx context.Context, g *globals, o backupOpts) (*wire.JobInfo, error) {
	app, err := o.app.application()
	if err != nil {
		return nil, err
	}
	nc, err := g.connect()
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	var started wire.JobStarted
	err = g.start(ctx, nc, wire.OpBackupStart, "the backup of "+o.client, newStart(o.requestID), func(st wire.Start) any {
		return wire.BackupStartReq{Client: o.client, Paths: fileindex.Paths(o.paths), Excludes: fileindex.Paths(o.excludes), Level: o.level, Pool: o.pool,
			SkipNodump: o.skipNodump, OneFileSystem: o.oneFileSystem, Application: app, Start: st}
	}, &started)
	if err != nil {
		return nil, err
	}
	return afterStart(ctx, g, nc, "backup", started, o.wait)
}

// afterStart says what a start did, or follows its job with wait. A
// repeated request's job may have ended since: a failure fails the command.
func afterStart(ctx context.Context, g *globals, nc *nats.Conn, kind string, started wire.JobStarted, wait bool) (*wire.JobInfo, error) {
	from := ""
	if fs := started.FileSet; fs != nil {
		from = fmt.Sprintf("from backup %d, file set %s", started.BackupID, describeFileSet(fs))
	}
	if wait {
		if from != "" && !g.json {
			fmt.Fprintf(g.out, "%s job %d %s\n", kind, started.JobID, from)
		}
		return waitJob(ctx, g, nc, started.JobID)
	}
	var ended error
	switch started.State {
	case "", "queued", "running", "success", "warning":
	default:
		ended = wire.Errorf(wire.CodeWrongState, fmt.Sprintf("see why with 'cairn job show %d'", started.JobID),
			"%s job %d of request %s %s", kind, started.JobID, started.RequestID, started.State)
	}
	if g.json {
		if err := printJSON(g.out, started); err != nil {
			return nil, err
		}
		return nil, ended
	}
	what := kind
	if started.Level != "" {
		what = started.Level + " " + kind
	}
	verb := "started"
	if started.Waiting != "" {
		verb = "queued"
	}
	if started.Repeated {
		verb = "request " + started.RequestID + " already " + verb
	}
	switch {
	case ended != nil:
	case started.Waiting != "":
		fmt.Fprintf(g.out, "%s %s job %d, waiting: %s; follow it with 'cairn job show %d'\n", verb, what, started.JobID, started.Waiting, started.JobID)
	default:
		fmt.Fprintf(g.out, "%s %s job %d; follow it with 'cairn job show %d'\n", verb, what, started.JobID, started.JobID)
	}
	if from != "" && ended == nil {
		fmt.Fprintf(g.out, "  %s\n", from)
	}
	return &wire.JobInfo{ID: started.JobID, State: started.State}, ended
}

type restoreOpts struct {
	client       string
	backupID     uint64
	fileSet      string
	at           string
	to           string
	targetClient string
	force        bool
	devices      bool
	wait         bool
	paths        []string
	requestID    string
}

func (o *restoreOpts) pointInTime() (wire.PointInTime, error) {
	pit := wire.PointInTime{Client: o.client, BackupID: o.backupID, FileSet: o.fileSet}
	if o.fileSet != "" && o.backupID != 0 {
		return pit, &usageError{fmt.Errorf("pass --backup or --fileset, not both: a backup is of one file set")}
	}
	if o.at != "" {
		if o.backupID != 0 {
			return pit, &usageError{fmt.Errorf("pass --backup or --at, not both")}
		}
		t, err := parseTime(o.at)
		if err != nil {
			return pit, err
		}
		pit.At = t
	}
	return pit, nil
}

func newRestoreCmd(g *globals) *cobra.Command {
	var o restoreOpts
	c := &cobra.Command{
		Use:   "restore --client NAME --to DIR [--backup ID|--at TIME] [--fileset ID] [PATH...]",
		Short: "Restore a backup, a subtree or single files into a directory",
		Long: `Restore a backup, a subtree or single files into a directory of a client.

Files come back under DIR with their full original path (DIR/etc/hosts for
/etc/hosts). Without --backup, the latest backup that holds every PATH is
used: backups chain per file set (the paths and excludes they were made
with), and the latest of the file set that holds them is taken, whatever was
backed up since of other paths; --fileset ID (a prefix of the id 'cairn job
show' and 'cairn ls' print) picks the file set. --at picks the latest backup
made at or before a time: now, yesterday (this time yesterday), '1 hour
ago', '3 days ago', 'yesterday 22:00', '2026-11-23 10:00' (local time) or
RFC 3339. Single files are read by seeking to their blocks, not by reading
volumes from the start.

The directories above a chosen path come back too, with the mode, owner,
times and flags they had, when the restore creates them (~/.ssh restored
alone does not sit in a home open to all); one that exists already in DIR
(a restore in place, or --force into a live tree) is left exactly as it is.
A chosen directory that exists gets its backed-up metadata.

PATH is a name as 'cairn ls' prints it: \xHH for a byte that is not UTF-8,
\n and the like for control characters, \\ for a backslash.

Block and character device nodes are created only with --devices: the agent
restores as root, and a device node from a backup you do not trust gives its
owner the disk or memory it names. Without it each is left out and named. A
restore that leaves any entry out ends failed, and the command exits
non-zero.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.client == "" {
				return &usageError{fmt.Errorf("pass --client NAME (see 'cairn client list')")}
			}
			if o.to == "" {
				return &usageError{fmt.Errorf("pass --to DIR, an empty directory on the client")}
			}
			for _, a := range args {
				p, err := argPath(a)
				if err != nil {
					return err
				}
				o.paths = append(o.paths, p)
			}
			_, err := runRestore(cmd.Context(), g, o)
			return err
		},
	}
	f := c.Flags()
	f.StringVar(&o.client, "client", "", "client whose backup to restore")
	f.Uint64Var(&o.backupID, "backup", 0, "backup id (see 'cairn backup list')")
	f.StringVar(&o.at, "at", "", "restore the tree as it was at this time: "+atForms)
	f.StringVar(&o.fileSet, "fileset", "", "restore from the latest backup of this file set (an id or a prefix of one)")
	f.StringVar(&o.to, "to", "", "absolute directory on the target client to restore into")
	f.StringVar(&o.targetClient, "target-client", "", "restore onto another client")
	f.BoolVar(&o.force, "force", false, "restore into a directory that is not empty")
	f.BoolVar(&o.devices, "devices", false, "create block and character device nodes (refused without it: only for a backup you trust)")
	bindWaitFlags(c, g, &o.wait, true)
	bindRequestID(f, &o.requestID, g)
	return c
}

func runRestore(ctx context.Context, g *globals, o restoreOpts) (*wire.JobInfo, error) {
	pit, err := o.pointInTime()
	if err != nil {
		return nil, err
	}
	if !filepath.IsAbs(o.to) {
		return nil, &usageError{fmt.Errorf("--to %q must be an absolute path on the target client", o.to)}
	}
	nc, err := g.connect()
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	var started wire.JobStarted
	err = g.start(ctx, nc, wire.OpRestoreStart, "the restore of "+o.client+" to "+o.to, newStart(o.requestID), func(st wire.Start) any {
		return wire.RestoreStartReq{PointInTime: pit, Paths: fileindex.Paths(o.paths), TargetClient: o.targetClient, To: o.to, Force: o.force, Devices: o.devices, Start: st}
	}, &started)
	if err != nil {
		return nil, err
	}
	return afterStart(ctx, g, nc, "restore", started, o.wait)
}

// waitJob follows a job to its end: its progress (live on a terminal, a
// line every g.progressEvery elsewhere), a summary at the end, and an error
// unless it succeeded (a *warningsError when it ended with warnings). A
// signal stops the waiting, not the job: it returns an *interruptedError.
func waitJob(ctx context.Context, g *globals, nc *nats.Conn, id uint64) (*wire.JobInfo, error) {
	var prog *progressReporter
	if !g.json {
		prog = newProgressReporter(g.out, isTerminal(g.out), g.progressEvery, id)
	}
	var lostSince time.Time
	retry := jobPollInterval // the pause before the next try after no answer
	for {
		var j wire.JobInfo
		err := g.call(ctx, nc, wire.OpJobShow, wire.JobShowReq{ID: id}, &j)
		wait := jobPollInterval
		switch {
		case err == nil:
			lostSince, retry = time.Time{}, jobPollInterval
			if j.State != "queued" && j.State != "running" {
				if prog != nil {
					prog.done()
				}
				if j.LogNext != 0 {
					// The summary shows the warnings of the whole log.
					whole, err := showJob(ctx, g, nc, id)
					if err != nil {
						return nil, err
					}
					j = *whole
				}
				return &j, jobOutcome(g, &j)
			}
			if prog != nil {
				prog.update(time.Now(), &j)
			}
		case ctx.Err() != nil:
			return nil, stopWaiting(ctx, prog, id)
		case !wire.Transient(err):
			return nil, err
		default:
			// The servers restart or elect a leader: the job is where
			// it was, and a script waiting for it should not take the
			// silence for its end.
			now := time.Now()
			if lostSince.IsZero() {
				lostSince = now
				if prog != nil {
					prog.lost(err)
				}
			}
			if now.Sub(lostSince) >= waitOutage {
				if prog != nil {
					prog.done()
				}
				return nil, wire.Errorf(wire.CodeOutcomeUnknown,
					fmt.Sprintf("the job goes on if the servers run; once one answers, follow it with 'cairn job show %d'", id),
					"stopped waiting for job %d: no server answered for %s: %w", id, waitOutage, err)
			}
			wait, retry = retry, min(2*retry, 2*time.Second)
		}
		select {
		case <-ctx.Done():
			return nil, stopWaiting(ctx, prog, id)
		case <-time.After(wait):
		}
	}
}

// stopWaiting ends a --wait that ctx ended, leaving the job alone.
func stopWaiting(ctx context.Context, prog *progressReporter, id uint64) error {
	if prog != nil {
		prog.done()
	}
	return interrupted(ctx, id)
}

// jobPollInterval is how often --wait asks for the job. Every job waited
// for ends on average half of it late: at 250 ms that was an eighth of a
// second on each backup and restore (a quarter of a second of a small
// one), for a request that costs the server a catalog read.
const jobPollInterval = 50 * time.Millisecond

// waitOutage is how long --wait goes on asking for its job while no server
// answers (a restart of the servers, an election without a majority)
// before it gives up and says the outcome is unknown.
var waitOutage = 5 * time.Minute

// defaultProgressEvery is how often --wait prints a progress line when not
// on a terminal: often enough that a job run from cron or CI shows it is
// alive, seldom enough that an hour's job logs a few hundred lines.
const defaultProgressEvery = 10 * time.Second

// bindWaitFlags adds --wait and --progress-interval.
func bindWaitFlags(c *cobra.Command, g *globals, wait *bool, waitDefault bool) {
	f := c.Flags()
	f.BoolVar(wait, "wait", waitDefault, "wait for the job to end, showing progress; exit 3 if it ended with warnings, 130 on Ctrl-C (the job goes on)")
	f.DurationVar(&g.progressEvery, "progress-interval", defaultProgressEvery,
		"with --wait and not on a terminal: print a progress line this often (0: only when the job starts or stops waiting for something)")
}

// jobOutcome prints a job's summary and returns an error unless it
// succeeded: a *warningsError when it ended with warnings.
func jobOutcome(g *globals, j *wire.JobInfo) error {
	if g.json {
		if err := printJSON(g.out, j); err != nil {
			return err
		}
	} else {
		printSummary(g.out, j)
	}
	switch j.State {
	case "success":
		return nil
	case "warning":
		return &warningsError{job: j}
	}
	msg := j.Error
	if msg == "" {
		msg = "the job " + j.State
	}
	return &wire.Error{Code: j.ErrorCode, Message: fmt.Sprintf("%s job %d %s: %s", j.Type, j.ID, j.State, msg), Hint: j.Hint}
}

// maxLostShown bounds the lost entries a job's summary names; the job's
// log ('cairn job show') has the rest.
const maxLostShown = 20

func printSummary(w io.Writer, j *wire.JobInfo) {
	d := j.Ended.Sub(j.Started)
	fmt.Fprintf(w, "%s job %d %s: ", j.Type, j.ID, j.State)
	if j.Level != "" {
		// The level it ran at, which is not always the one asked for: a
		// backup with no full to build on in its pool runs as a full.
		fmt.Fprintf(w, "%s, ", j.Level)
	}
	if j.Entries > 0 {
		fmt.Fprintf(w, "%d of %d entries restored, %d lost; ", j.Restored, j.Entries, j.Lost)
	}
	fmt.Fprintf(w, "%d files, %s in %s (%s)", j.Files, humanBytes(j.Bytes), humanDuration(d), rate(j.Bytes, d))
	if j.StoredBytes > 0 {
		fmt.Fprintf(w, ", stored %s (ratio %.2f)", humanBytes(j.StoredBytes), float64(j.Bytes)/float64(j.StoredBytes))
	}
	if len(j.Volumes) > 0 {
		fmt.Fprintf(w, " on %s", strings.Join(j.Volumes, ", "))
	}
	fmt.Fprintln(w)
	if j.Tape != nil {
		fmt.Fprintf(w, "  tape: %s\n", tapeFigures(j.Tape))
	}
	shown := 0
	for _, l := range j.Log {
		if lostLine(l) {
			if shown < maxLostShown {
				fmt.Fprintf(w, "  %s\n", printableLog(l.Msg))
			}
			shown++
			continue
		}
		if l.Level == "warning" || l.Level == "error" {
			fmt.Fprintf(w, "  %s: %s\n", l.Level, printableLog(l.Msg))
		}
	}
	if more := max(j.Lost, int64(shown)) - maxLostShown; more > 0 {
		fmt.Fprintf(w, "  ... and %d more lost entries: 'cairn job show %d' names them\n", more, j.ID)
	}
}

// lostLine is a job log line that names a lost entry, or says how many
// more there are.
func lostLine(l wire.JobLogLine) bool {
	return l.Level == "error" && (strings.HasPrefix(l.Msg, "lost: ") || strings.HasPrefix(l.Msg, "... and ") && strings.Contains(l.Msg, "more lost entries"))
}

type lsOpts struct {
	client    string
	backupID  uint64
	fileSet   string
	at        string
	recursive bool
	long      bool
}

func newLsCmd(g *globals) *cobra.Command {
	var o lsOpts
	c := &cobra.Command{
		Use:   "ls --client NAME [--backup ID|--at TIME] [--fileset ID] [PATH]",
		Short: "Browse the files of a backup in the catalog",
		Long: `Browse the files of a backup in the catalog: the entries in PATH (/ when
not given), or the whole subtree with -R.

Without --backup, the latest backup that holds PATH is browsed: backups chain
per file set (the paths and excludes they were made with), and the latest of
the file set that holds PATH is taken, whatever was backed up since of other
paths. The first line names the backup and its file set. --fileset ID (a
prefix of the id printed) picks the file set; --at the latest backup made at
or before a time.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.client == "" {
				return &usageError{fmt.Errorf("pass --client NAME (see 'cairn client list')")}
			}
			p := "/"
			if len(args) == 1 {
				var err error
				if p, err = argPath(args[0]); err != nil {
					return err
				}
			}
			return runLs(cmd.Context(), g, o, p)
		},
	}
	f := c.Flags()
	f.StringVar(&o.client, "client", "", "client whose backup to browse")
	f.Uint64Var(&o.backupID, "backup", 0, "backup id (the latest that holds PATH when not given)")
	f.StringVar(&o.at, "at", "", "browse the tree as it was at this time: "+atForms)
	f.StringVar(&o.fileSet, "fileset", "", "browse the latest backup of this file set (an id or a prefix of one)")
	f.BoolVarP(&o.recursive, "recursive", "R", false, "list the whole subtree")
	return c
}

func runLs(ctx context.Context, g *globals, o lsOpts, p string) error {
	ro := restoreOpts{client: o.client, backupID: o.backupID, at: o.at, fileSet: o.fileSet}
	pit, err := ro.pointInTime()
	if err != nil {
		return err
	}
	nc, err := g.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	req := wire.TreeListReq{PointInTime: pit, Path: fileindex.Path(p), Recursive: o.recursive}
	// Each page is printed as it comes, so that the listing of a directory
	// of millions of files (or -R of a whole backup) holds one page in
	// memory, not all of them: a table aligns its columns page by page.
	var out lsPrinter = &lsTable{g: g}
	if g.json {
		out = &lsJSON{w: bufio.NewWriterSize(g.out, 64<<10)}
	}
	var resp wire.TreeListResp
	for page := 0; ; page++ {
		// A fresh answer each page: decoding into the last one would
		// keep, in each entry, the fields this page's omits (an owner's
		// name, a link's target) from the entry at its place before.
		resp = wire.TreeListResp{}
		if err := g.call(ctx, nc, wire.OpTreeList, req, &resp); err != nil {
			if page > 0 {
				_ = out.abort() // what was listed before the error, said to be short
			}
			return err
		}
		if page == 0 {
			out.begin(&resp.Backup)
		}
		if err := out.entries(resp.Entries); err != nil {
			return err
		}
		if !resp.More || len(resp.Entries) == 0 {
			break
		}
		req.After = resp.Entries[len(resp.Entries)-1].Path
		// The next pages are of the backup the first one found, even if
		// another completes meanwhile.
		req.PointInTime = wire.PointInTime{Client: o.client, BackupID: resp.Backup.ID}
	}
	return out.end()
}

// lsPrinter prints a listing page by page; abort ends one a page's error
// cut short.
type lsPrinter interface {
	begin(b *wire.BackupInfo)
	entries(es []wire.EntryInfo) error
	abort() error
	end() error
}

type lsTable struct {
	g *globals
	t *table
}

func (l *lsTable) begin(b *wire.BackupInfo) {
	fmt.Fprintf(l.g.out, "backup %d of %s, %s, %s, file set %s\n", b.ID, b.Client, b.Level, humanTime(b.StartTime),
		describeFileSet(&wire.FileSetInfo{ID: b.FileSet, Paths: b.Paths, Excludes: b.Excludes}))
	l.t = newTable(l.g.out, "MODE", "OWNER", "SIZE", "MODIFIED", "BACKUP", "PATH")
}

func (l *lsTable) entries(es []wire.EntryInfo) error {
	for i := range es {
		e := &es[i]
		name := string(e.Path)
		switch e.Type {
		case "dir":
			name += "/"
		case "symlink":
			name += " -> " + string(e.Target)
		case "hardlink":
			name += " => " + string(e.Target)
		}
		owner := e.User
		if owner == "" {
			owner = strconv.Itoa(int(e.UID))
		}
		group := e.Group
		if group == "" {
			group = strconv.Itoa(int(e.GID))
		}
		l.t.row(modeString(e.Type, e.Mode), owner+":"+group, humanBytes(e.Size), humanTime(e.MTime), e.Backup, name)
	}
	return l.t.flush()
}

func (l *lsTable) abort() error { return l.t.flush() } // the error follows on stderr

func (l *lsTable) end() error { return l.t.flush() }

// lsJSON writes what printJSON would of {"backup": ..., "entries": [...]},
// an entry at a time.
type lsJSON struct {
	w *bufio.Writer
	n int
}

func (l *lsJSON) begin(b *wire.BackupInfo) {
	backup, err := json.MarshalIndent(b, "  ", "  ")
	if err != nil {
		backup = []byte("null")
	}
	fmt.Fprintf(l.w, "{\n  \"backup\": %s,\n  \"entries\": [", backup)
}

func (l *lsJSON) entries(es []wire.EntryInfo) error {
	for i := range es {
		e, err := json.MarshalIndent(lsEntryOf(&es[i]), "    ", "  ")
		if err != nil {
			return err
		}
		if l.n > 0 {
			l.w.WriteByte(',')
		}
		l.w.WriteString("\n    ")
		l.w.Write(e)
		l.n++
	}
	return l.w.Flush()
}

// abort closes the document, so that what was printed stays JSON, and
// marks it incomplete; the error goes to stderr and the exit code says it.
func (l *lsJSON) abort() error { return l.close(",\n  \"incomplete\": true") }

func (l *lsJSON) end() error { return l.close("") }

func (l *lsJSON) close(extra string) error {
	if l.n > 0 {
		l.w.WriteString("\n  ")
	}
	l.w.WriteString("]" + extra + "\n}\n")
	return l.w.Flush()
}

func modeString(typ string, mode uint32) string {
	c := map[string]byte{"dir": 'd', "symlink": 'l', "fifo": 'p', "chardev": 'c', "blockdev": 'b', "hardlink": 'h'}[typ]
	if c == 0 {
		c = '-'
	}
	b := []byte{c}
	const rwx = "rwxrwxrwx"
	for i := 0; i < 9; i++ {
		if mode&(1<<(8-i)) != 0 {
			b = append(b, rwx[i])
		} else {
			b = append(b, '-')
		}
	}
	if mode&0o4000 != 0 {
		b[3] = map[bool]byte{true: 's', false: 'S'}[b[3] == 'x']
	}
	if mode&0o2000 != 0 {
		b[6] = map[bool]byte{true: 's', false: 'S'}[b[6] == 'x']
	}
	if mode&0o1000 != 0 {
		b[9] = map[bool]byte{true: 't', false: 'T'}[b[9] == 'x']
	}
	return string(b)
}

// describeFileSet writes a file set as the catalog's messages do: its
// short id and its paths.
func describeFileSet(fs *wire.FileSetInfo) string {
	return catalog.DescribeFileSet(fs.ID, fs.Paths, fs.Excludes)
}

// argPath reads a path given on the command line as 'cairn ls' prints it
// (fileindex.Unescape): \xHH for a byte that is not UTF-8, \n and the like
// for control characters, \\ for a backslash; any other byte is itself.
func argPath(a string) (string, error) {
	p, err := fileindex.Unescape(a)
	if err != nil {
		return "", &usageError{fmt.Errorf("cannot read the path (give it as 'cairn ls' prints it): %w", err)}
	}
	return p, nil
}

// lsEntryJSON is an entry as 'cairn ls --json' gives it. A path is a JSON
// string of the name when it is UTF-8; when it is not, which JSON cannot
// hold, path is the name as the table prints it (fileindex.Escape, which
// 'cairn restore' takes back) and path_b64 its bytes in base64. The same
// goes for target.
type lsEntryJSON struct {
	wire.EntryInfo
	Path      string `json:"path"`
	PathB64   []byte `json:"path_b64,omitempty"`
	Target    string `json:"target,omitempty"`
	TargetB64 []byte `json:"target_b64,omitempty"`
}

func lsEntryOf(e *wire.EntryInfo) lsEntryJSON {
	out := lsEntryJSON{EntryInfo: *e}
	out.Path, out.PathB64 = jsonName(string(e.Path))
	out.Target, out.TargetB64 = jsonName(string(e.Target))
	return out
}

// jsonName gives a name for JSON output: itself when it is UTF-8, else its
// printed form and its bytes.
func jsonName(s string) (string, []byte) {
	if utf8.ValidString(s) {
		return s, nil
	}
	return fileindex.Escape(s), []byte(s)
}
