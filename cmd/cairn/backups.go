package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/wire"
)

// The backups as an administrator manages them: 'cairn backup list, show,
// hold, release, delete' and 'cairn prune'.

func addBackupAdminCmds(c *cobra.Command, g *globals) {
	c.AddCommand(newBackupListCmd(g), newBackupShowCmd(g), newBackupConsolidateCmd(g), newBackupHoldCmd(g, true), newBackupHoldCmd(g, false), newBackupDeleteCmd(g))
}

type backupListOpts struct {
	client, fileSet, path, policy string
}

func newBackupListCmd(g *globals) *cobra.Command {
	var o backupListOpts
	list := &cobra.Command{
		Use:   "list",
		Short: "List backups (points in time you can restore)",
		Long: `List backups, newest first: their client and file set (the paths backed up
together, which chain), level and base, time, size, pool and state, whether
a legal hold keeps them, and why the expiry pass would expire them now
(EXPIRES; '-' for a backup it keeps, or that no policy's retention covers).`,
		Example: "  cairn backup list --client web1 --path /etc",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBackupList(cmd.Context(), g, o)
		},
	}
	f := list.Flags()
	f.StringVar(&o.client, "client", "", "only backups of this client")
	f.StringVar(&o.fileSet, "fileset", "", "only backups of this file set (its id, as the list shows it)")
	f.StringVar(&o.path, "path", "", "only backups whose paths hold this path")
	f.StringVar(&o.policy, "policy", "", "only backups of this policy's file set")
	return list
}

func runBackupList(ctx context.Context, g *globals, o backupListOpts) error {
	if o.path != "" {
		p, err := fileindex.Unescape(o.path)
		if err != nil {
			return &usageError{fmt.Errorf("--path %q: %w", o.path, err)}
		}
		o.path = p
	}
	backups, err := listBackups(ctx, g, wire.BackupListReq{Client: o.client, FileSet: o.fileSet, Path: o.path, Policy: o.policy})
	if err != nil {
		return err
	}
	if g.json {
		return printJSON(g.out, nonNil(backups))
	}
	t := newTable(g.out, "BACKUP", "CLIENT", "FILESET", "PATHS", "LEVEL", "BASE", "TIME", "BYTES", "STORED", "POOL", "STATE", "HELD", "EXPIRES")
	for _, b := range backups {
		base := "-"
		if b.Parent != 0 {
			base = strconv.FormatUint(b.Parent, 10)
		}
		if b.Consolidates != 0 {
			base = "synth:" + strconv.FormatUint(b.Consolidates, 10)
		}
		held := "-"
		if b.Hold != nil {
			held = "yes"
			if b.Hold.Client != "" {
				held = "client"
			}
		}
		expires := "-"
		if b.Expires != "" {
			expires = b.Expires
		}
		fs := b.FileSet
		if len(fs) > 8 {
			fs = fs[:8]
		}
		t.row(b.ID, b.Client, fs, shortPaths(fileindex.Strings(b.Paths), 40), b.Level, base, humanTime(b.StartTime),
			humanBytes(b.Bytes), humanBytes(b.StoredBytes), b.Pool, b.State, held, expires)
	}
	return t.flush()
}

// shortPaths joins paths, cut to about width characters with the count of
// those left out.
func shortPaths(paths []string, width int) string {
	var b strings.Builder
	for i, p := range paths {
		p = printable(p)
		if i > 0 && b.Len()+len(p)+1 > width {
			fmt.Fprintf(&b, " +%d", len(paths)-i)
			break
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p)
	}
	return b.String()
}

// listBackups gets the backups, newest first, in as many pages as it takes.
func listBackups(ctx context.Context, g *globals, req wire.BackupListReq) ([]wire.BackupInfo, error) {
	nc, err := g.connect()
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	var backups []wire.BackupInfo
	for {
		var resp wire.BackupListResp
		if err := g.call(ctx, nc, wire.OpBackupList, req, &resp); err != nil {
			return nil, err
		}
		backups = append(backups, resp.Backups...)
		if !resp.More || len(resp.Backups) == 0 {
			return backups, nil
		}
		req.Before = resp.Backups[len(resp.Backups)-1].ID
	}
}

func parseBackupID(arg string) (uint64, error) {
	id, err := strconv.ParseUint(arg, 10, 64)
	if err != nil || id == 0 {
		return 0, &usageError{fmt.Errorf("backup id %q is not a backup number (see 'cairn backup list')", arg)}
	}
	return id, nil
}

func newBackupShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a backup: its hold, what builds on it, and what retention says of it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseBackupID(args[0])
			if err != nil {
				return err
			}
			var resp wire.BackupShowResp
			if err := g.request(cmd.Context(), wire.OpBackupShow, wire.BackupShowReq{BackupID: id}, &resp); err != nil {
				return err
			}
			if g.json {
				return printJSON(g.out, resp)
			}
			b := resp.Backup
			w := g.out
			fmt.Fprintf(w, "backup:     %d\nclient:     %s\nfile set:   %s (%s)\nlevel:      %s\n", b.ID, printable(b.Client), b.FileSet,
				shortPaths(fileindex.Strings(b.Paths), 200), b.Level)
			if b.Parent != 0 {
				fmt.Fprintf(w, "base:       %d\n", b.Parent)
			}
			if b.Consolidates != 0 {
				fmt.Fprintf(w, "synthetic:  folds the chain up to backup %d, made on the storage node without the client\n", b.Consolidates)
			}
			fmt.Fprintf(w, "time:       %s\nstate:      %s\npool:       %s\nvolumes:    %s\nbytes:      %s (%s stored)\n",
				humanTime(b.StartTime), b.State, b.Pool, strings.Join(b.Volumes, ", "), humanBytes(b.Bytes), humanBytes(b.StoredBytes))
			if h := b.Hold; h != nil {
				what := "this backup"
				if h.Client != "" {
					what = "its client"
				}
				fmt.Fprintf(w, "hold:       on %s since %s by %s: %s\n", what, humanTime(h.Time), printable(h.By), printable(h.Reason))
			}
			if len(resp.Dependents) > 0 {
				fmt.Fprintf(w, "dependents: %s\n", joinUints(resp.Dependents))
			}
			ret := resp.Retention
			if ret == "" {
				ret = "no policy's retention covers its file set: kept until deleted by hand"
			}
			fmt.Fprintf(w, "retention:  %s\n", ret)
			return nil
		},
	}
}

func joinUints(ids []uint64) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatUint(id, 10)
	}
	return strings.Join(s, ", ")
}

func newBackupHoldCmd(g *globals, hold bool) *cobra.Command {
	var client, reason string
	use, short, op := "hold ID|--client NAME", "Put a backup, or every backup of a client, on legal hold: it never expires", wire.OpBackupHold
	if !hold {
		use, short, op = "release ID|--client NAME", "Release a legal hold", wire.OpBackupRelease
	}
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Long: short + `.

A held backup, and every backup of a held client, is kept whatever the
retention says, cannot be deleted, and keeps the backups it builds on.`,
		Example: "  cairn backup hold 412 --reason 'case 4711'\n  cairn backup hold --client web1\n  cairn backup release 412",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := wire.HoldReq{Client: client, Reason: reason, By: g.canceller()}
			if len(args) == 1 {
				id, err := parseBackupID(args[0])
				if err != nil {
					return err
				}
				req.BackupID = id
			}
			if (req.BackupID == 0) == (client == "") {
				return &usageError{fmt.Errorf("give a backup id or --client NAME, not both")}
			}
			what := fmt.Sprintf("backup %d", req.BackupID)
			if client != "" {
				what = fmt.Sprintf("client %s", printable(client))
			}
			if !hold {
				if err := g.request(cmd.Context(), op, req, nil); err != nil {
					return err
				}
				if g.json {
					return printJSON(g.out, req)
				}
				fmt.Fprintf(g.out, "released the hold on %s\n", what)
				return nil
			}
			var h wire.HoldInfo
			if err := g.request(cmd.Context(), op, req, &h); err != nil {
				return err
			}
			if g.json {
				return printJSON(g.out, h)
			}
			fmt.Fprintf(g.out, "%s is on legal hold; release it with 'cairn backup release'\n", what)
			return nil
		},
	}
	c.Flags().StringVar(&client, "client", "", "hold every backup of this client, present and future")
	if hold {
		c.Flags().StringVar(&reason, "reason", "", "why, for whoever wonders later")
	}
	return c
}

type backupDeleteOpts struct {
	withDependents bool
	yes            bool
	in             io.Reader // the operator's answer; a terminal only
}

func newBackupDeleteCmd(g *globals) *cobra.Command {
	o := backupDeleteOpts{in: os.Stdin}
	c := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a backup from the catalog now",
		Long: `Delete a backup from the catalog now, with its file index; its volumes'
space comes back once no backup is on them (a disk volume is deleted, a tape
becomes recyclable).

A backup that others build on (incrementals and differentials whose restore
reads it) is refused, naming them, unless --with-dependents, which deletes
them too once you confirm (--yes, or an answer on the terminal). A backup on
legal hold, or one a running restore reads, is refused.`,
		Example: "  cairn backup delete 412\n  cairn backup delete 400 --with-dependents --yes",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseBackupID(args[0])
			if err != nil {
				return err
			}
			return runBackupDelete(cmd.Context(), g, id, o)
		},
	}
	c.Flags().BoolVar(&o.withDependents, "with-dependents", false, "delete the backups that build on it too")
	c.Flags().BoolVar(&o.yes, "yes", false, "do not ask for confirmation")
	return c
}

func runBackupDelete(ctx context.Context, g *globals, id uint64, o backupDeleteOpts) error {
	if o.withDependents && !o.yes {
		var show wire.BackupShowResp
		if err := g.request(ctx, wire.OpBackupShow, wire.BackupShowReq{BackupID: id}, &show); err != nil {
			return err
		}
		if len(show.Dependents) > 0 {
			if !isTerminalReader(o.in) {
				return &usageError{fmt.Errorf("backup %d has dependents %s: pass --yes to delete them too, or run this on a terminal to confirm",
					id, joinUints(show.Dependents))}
			}
			fmt.Fprintf(g.errOut, "delete backup %d and the backups that build on it, %s? [y/N] ", id, joinUints(show.Dependents))
			answer, _ := bufio.NewReader(o.in).ReadString('\n')
			if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
				return wire.Errorf(wire.CodeAborted, "nothing was deleted", "not confirmed")
			}
		}
	}
	var resp wire.BackupDeleteResp
	if err := g.request(ctx, wire.OpBackupDelete, wire.BackupDeleteReq{BackupID: id, WithDependents: o.withDependents, By: g.canceller()}, &resp); err != nil {
		return err
	}
	if g.json {
		return printJSON(g.out, resp)
	}
	fmt.Fprintf(g.out, "deleted backups %s\n", joinUints(resp.Deleted))
	for _, p := range resp.Pending {
		fmt.Fprintf(g.out, "waiting: %s; 'cairn prune' tries again\n", p)
	}
	return nil
}

// isTerminalReader reports whether r is a terminal, where a person can
// answer a question. A character device is not enough: /dev/null is one,
// and a script's empty stdin must not read as "no" from a person.
func isTerminalReader(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func newPruneCmd(g *globals) *cobra.Command {
	var dryRun, history bool
	var client string
	c := &cobra.Command{
		Use:   "prune [--dry-run | --history]",
		Short: "Expire what the policies' retention no longer keeps, now",
		Long: `Run the expiry pass now, as the leader does every expiry_interval: in every
client's file set that a policy with a retention covers, the backups no keep
rule keeps, and that no kept backup builds on, no hold covers and no restore
reads, leave the catalog with their file index. Backups no policy covers
(ad hoc ones) are kept until deleted by hand. Disk volumes no backup is on
any more are deleted by their storage node; tapes become recyclable.

--dry-run says what the pass would expire now and why, grouped by client and
file set; --history lists what expired (or was deleted), newest first.`,
		Example: "  cairn prune --dry-run\n  cairn prune\n  cairn prune --history --client web1",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if history {
				return runPruneHistory(cmd.Context(), g, client)
			}
			if client != "" {
				return &usageError{fmt.Errorf("--client goes with --history")}
			}
			var resp wire.PruneResp
			if err := g.request(cmd.Context(), wire.OpPrune, wire.PruneReq{DryRun: dryRun}, &resp); err != nil {
				return err
			}
			if g.json {
				return printJSON(g.out, resp)
			}
			printPrune(g.out, resp)
			return nil
		},
	}
	c.Flags().BoolVar(&dryRun, "dry-run", false, "say what would expire and why, and change nothing")
	c.Flags().BoolVar(&history, "history", false, "list the backups that expired or were deleted")
	c.Flags().StringVar(&client, "client", "", "with --history: only this client's")
	c.MarkFlagsMutuallyExclusive("dry-run", "history")
	return c
}

func printPrune(w io.Writer, r wire.PruneResp) {
	verb := "expired"
	if r.DryRun {
		verb = "would expire"
	}
	for _, g := range r.Groups {
		policy := ""
		if g.Policy != "" {
			policy = ", policy " + g.Policy
		}
		fmt.Fprintf(w, "%s: %s (file set %s%s)\n", printable(g.Client), shortPaths(g.Paths, 60), g.FileSet, policy)
		for _, b := range g.Expire {
			if b.Refused != "" {
				fmt.Fprintf(w, "  %d %s %s  kept: %s\n", b.ID, b.Level, humanTime(b.StartTime), b.Refused)
				continue
			}
			fmt.Fprintf(w, "  %d %s %s  %s: %s\n", b.ID, b.Level, humanTime(b.StartTime), verb, b.Reason)
		}
	}
	switch {
	case r.Unlisted > 0 && r.DryRun:
		fmt.Fprintf(w, "(%d more not listed)\n", r.Unlisted)
	case r.Unlisted > 0:
		fmt.Fprintf(w, "(%d more not listed: see 'cairn prune --history')\n", r.Unlisted)
	}
	fmt.Fprintf(w, "%d backups %s", r.Expired, verb)
	if r.Kept > 0 {
		fmt.Fprintf(w, ", %d kept at the last moment", r.Kept)
	}
	fmt.Fprintln(w)
	if r.More {
		fmt.Fprintln(w, "the pass stopped at its time limit before the last client: run 'cairn prune' again, or let the next expiry pass go on")
	}
	for _, v := range r.Volumes {
		fmt.Fprintf(w, "volume %s reclaimed\n", v)
	}
	for _, p := range r.Pending {
		fmt.Fprintf(w, "waiting: %s\n", p)
	}
}

func runPruneHistory(ctx context.Context, g *globals, client string) error {
	nc, err := g.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	var all []wire.ExpiryRecord
	for req := (wire.PruneHistoryReq{Client: client}); ; {
		var resp wire.PruneHistoryResp
		if err := g.call(ctx, nc, wire.OpPruneHistory, req, &resp); err != nil {
			return err
		}
		all = append(all, resp.Expiries...)
		if !resp.More || len(resp.Expiries) == 0 {
			break
		}
		req.Before = resp.Expiries[len(resp.Expiries)-1].Seq
	}
	if g.json {
		return printJSON(g.out, nonNil(all))
	}
	t := newTable(g.out, "WHEN", "BACKUP", "CLIENT", "FILESET", "LEVEL", "TIME", "STORED", "BY", "WHY")
	for _, e := range all {
		fs := e.FileSet
		if len(fs) > 8 {
			fs = fs[:8]
		}
		t.row(humanTime(e.Time), e.BackupID, e.Client, fs, e.Level, humanTime(e.StartTime), humanBytes(e.Bytes), e.By, e.Reason)
	}
	return t.flush()
}
