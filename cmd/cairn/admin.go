package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/keyring"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/wire"
)

func newStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the server that answers, the storage nodes and agents it hears, and the clients past their RPO",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st wire.StatusResp
			if err := g.request(cmd.Context(), wire.OpStatus, wire.Empty{}, &st); err != nil {
				return err
			}
			if g.json {
				return printJSON(g.out, st)
			}
			t := newTable(g.out, "SERVER", "STATE", "LEADER", "TERM", "APPLIED", "VERSION")
			t.row(st.Server, st.RaftState, st.Leader, st.Term, st.AppliedIndex, st.Version)
			if err := t.flush(); err != nil {
				return err
			}
			if st.CatalogError != "" {
				fmt.Fprintf(g.out, "catalog stopped: %s\n", st.CatalogError)
			}
			for _, o := range st.OtherGroups {
				fmt.Fprintf(g.out, "WARNING: server %s (%s) of ANOTHER GROUP %s runs on this NATS: see 'cairn cluster status'\n", o.Name, o.RaftAddr, o.Group)
			}
			if err := printLiveness(g.out, st); err != nil {
				return err
			}
			return printRPOSummary(g.out, st)
		},
	}
}

// printLiveness shows the storage nodes and agents as the answering server
// hears them: what an administrator looks at first in the morning.
func printLiveness(w io.Writer, st wire.StatusResp) error {
	if st.Agents == nil {
		return nil // a server older than the liveness in its status
	}
	if len(st.Nodes) == 0 {
		fmt.Fprintln(w, "storage nodes: none has registered")
	} else {
		t := newTable(w, "STORAGE NODE", "STATE", "LAST SEEN", "STREAMS", "VERSION")
		for _, n := range st.Nodes {
			state := "OFFLINE"
			switch {
			case n.Online && n.Draining:
				state = "draining"
			case n.Online:
				state = "online"
			}
			t.row(n.ID, state, humanTime(n.LastSeen), n.Streams, orDash(n.Version))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	a := *st.Agents
	line := fmt.Sprintf("agents: %d online, %d offline", a.Online, a.Offline)
	if a.Offline > 0 {
		line += " (" + strings.Join(a.Named, ", ")
		if a.Offline > len(a.Named) {
			line += fmt.Sprintf(" and %d more", a.Offline-len(a.Named))
		}
		line += "; 'cairn client list' shows when each was last seen)"
	}
	_, err := fmt.Fprintln(w, line)
	return err
}

func newClientCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "client", Short: "Clients: the hosts that run an agent"}
	c.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List clients",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runClientList(cmd.Context(), g)
		},
	})
	return c
}

func runClientList(ctx context.Context, g *globals) error {
	nc, err := g.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	var clients []wire.ClientInfo
	for req := (wire.ClientListReq{}); ; {
		var resp wire.ClientListResp
		if err := g.call(ctx, nc, wire.OpClientList, req, &resp); err != nil {
			return err
		}
		clients = append(clients, resp.Clients...)
		if !resp.More || len(resp.Clients) == 0 {
			break
		}
		req.After = resp.Clients[len(resp.Clients)-1].Name
	}
	if g.json {
		return printJSON(g.out, nonNil(clients))
	}
	t := newTable(g.out, "CLIENT", "HOST", "STATUS", "BACKUPS", "LAST BACKUP", "RPO", "VERSION", "LABELS")
	for _, c := range clients {
		status := "offline"
		if c.Online {
			status = "online"
		}
		host := c.Hostname
		if c.Duplicate != "" {
			status = "DUPLICATE"
			var hosts []string
			for _, in := range c.Instances {
				hosts = append(hosts, fmt.Sprintf("%s(pid %d)", in.Hostname, in.PID))
			}
			host = strings.Join(hosts, ",")
		}
		var labels []string
		for _, k := range sortedKeys(c.Labels) {
			labels = append(labels, k+"="+c.Labels[k])
		}
		t.row(c.Name, host, status, c.Backups, humanTime(c.LastBackup), rpoCell(c.RPO), c.Version, orDash(strings.Join(labels, ",")))
	}
	if err := t.flush(); err != nil {
		return err
	}
	for _, c := range clients {
		if c.Duplicate != "" {
			fmt.Fprintf(g.errOut, "warning: %s\nhint: %s\n", c.Duplicate, wire.HintFor(wire.CodeDuplicateAgent))
		}
	}
	return nil
}

// targetState is a remote target in one cell: where, whether the node
// reaches it, its throughput while in use and its errors.
func targetState(t *wire.TargetStatus) string {
	state := "not tried yet"
	if t.Tried {
		state = "reachable"
		if !t.Reachable {
			state = "UNREACHABLE"
		}
	}
	s := fmt.Sprintf("%s %s, write %s/s, read %s/s, %d errors", t.Addr, state, humanBytes(int64(t.WriteRate())), humanBytes(int64(t.ReadRate())), t.Errors)
	if t.AppendOnly {
		s += ", append-only"
	}
	if t.Tried && !t.Reachable && t.LastError != "" {
		s += ": " + t.LastError
	}
	return s
}

func newPoolCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "pool", Short: "Pools: sets of volumes backups are written to"}
	c.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List pools with their usage",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var resp wire.PoolListResp
			if err := g.request(cmd.Context(), wire.OpPoolList, wire.Empty{}, &resp); err != nil {
				return err
			}
			if g.json {
				return printJSON(g.out, resp.Pools)
			}
			t := newTable(g.out, "POOL", "TYPE", "COMPRESSION", "NODES", "VOLUMES", "USED", "RECLAIMABLE", "LOCKED", "FREE", "MAX VOLUME", "WHERE", "TARGET")
			for _, p := range resp.Pools {
				var nodes, dirs, targets []string
				for _, n := range p.Nodes {
					name := n.Name
					if !n.Online {
						name += " (offline)"
					}
					nodes = append(nodes, name)
					dirs = append(dirs, n.Dir)
					if n.Target != nil {
						targets = append(targets, targetState(n.Target))
					}
				}
				if len(targets) == 0 {
					targets = []string{"-"}
				}
				maxv := "unlimited"
				if catalog.PoolType(p.Type).HasLibrary() {
					maxv = "a cartridge"
				}
				if p.MaxVolumeBytes > 0 {
					maxv = humanBytes(p.MaxVolumeBytes)
				}
				t.row(p.Name, p.Type, p.Compression, strings.Join(nodes, ", "), p.Volumes, humanBytes(p.UsedBytes), humanBytes(p.ReclaimableBytes), humanBytes(p.LockedBytes), humanBytes(p.FreeBytes), maxv, strings.Join(dirs, ", "), strings.Join(targets, "; "))
			}
			return t.flush()
		},
	})
	c.AddCommand(newPoolSetCmd(g))
	return c
}

func newPoolSetCmd(g *globals) *cobra.Command {
	var codec string
	c := &cobra.Command{
		Use:   "set POOL --compression zstd|s2|none",
		Short: "Change a pool's compression",
		Long: `Change what compresses the data of a pool's backups: zstd (the default: the
smallest), s2 (compresses two to three times as fast, at the cost of storing more: about 35% of
text where zstd stores 23%) or none (for data that is compressed already, such
as media files or compressed dumps). The change applies to the backups that
start after it; what is written keeps what it was written with, and restores
as before.`,
		Example: "  cairn pool set Default --compression s2",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("compression") {
				return &usageError{errors.New("pass --compression zstd, s2 or none")}
			}
			if err := volume.CheckCompression(codec); err != nil {
				return &usageError{fmt.Errorf("--compression: %w", err)}
			}
			return runPoolSet(cmd.Context(), g, args[0], codec)
		},
	}
	c.Flags().StringVar(&codec, "compression", "", "what compresses the pool's new backups: zstd, s2 or none")
	return c
}

func runPoolSet(ctx context.Context, g *globals, pool, codec string) error {
	var resp wire.PoolSetResp
	if err := g.request(ctx, wire.OpPoolSet, wire.PoolSetReq{Name: pool, Compression: codec}, &resp); err != nil {
		return err
	}
	if g.json {
		return printJSON(g.out, resp)
	}
	_, err := fmt.Fprintf(g.out, "pool %s: compression %s, for the backups that start from now on\n", resp.Name, resp.Compression)
	return err
}

func runVolumeList(ctx context.Context, g *globals, pool string) error {
	nc, err := g.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	var vols []wire.VolumeInfo
	for req := (wire.VolumeListReq{Pool: pool}); ; {
		var resp wire.VolumeListResp
		if err := g.call(ctx, nc, wire.OpVolumeList, req, &resp); err != nil {
			return err
		}
		vols = append(vols, resp.Volumes...)
		if !resp.More || len(resp.Volumes) == 0 {
			break
		}
		req.After = resp.Volumes[len(resp.Volumes)-1].Name
	}
	if g.json {
		return printJSON(g.out, nonNil(vols))
	}
	t := newTable(g.out, "VOLUME", "POOL", "STATE", "BYTES", "SESSIONS", "LAST WRITTEN", "WHERE")
	for _, v := range vols {
		state := v.State
		if v.Error != "" {
			state += ": " + v.Error
		}
		where := v.Path
		if catalog.PoolType(v.MediaType).HasLibrary() {
			// The barcode is the name; where the cartridge is matters more.
			where = fmt.Sprintf("tape %s: %s", v.Barcode, dash(v.Location))
			if v.Location != "vault" && v.Library != "" {
				where += " of " + v.Library
			}
		}
		t.row(v.Name, v.Pool, state, humanBytes(v.Bytes), v.Sessions, humanTime(v.LastWritten), where)
	}
	return t.flush()
}

// partNote says what is special about a part: torn (the medium failed in
// it), or not the session's last.
func partNote(p wire.PartInfo) string {
	switch {
	case p.Torn:
		return "TORN: the medium failed in this part; it has no end marker, and the session goes on in the next part"
	case !p.Final:
		return "the session goes on in the next part"
	}
	return ""
}

func runVolumeShow(ctx context.Context, g *globals, name string) error {
	nc, err := g.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	var resp wire.VolumeShowResp
	if err := g.call(ctx, nc, wire.OpVolumeShow, wire.VolumeShowReq{Name: name}, &resp); err != nil {
		return err
	}
	if g.json {
		resp.Parts = nonNil(resp.Parts)
		return printJSON(g.out, resp)
	}
	printVolume(g.out, &resp)
	return nil
}

func printVolume(w io.Writer, r *wire.VolumeShowResp) {
	v := r.Volume
	kv := newTable(w, "VOLUME", v.Name)
	kv.row("id", v.ID)
	kv.row("pool", v.Pool)
	kv.row("storage node", dash(v.Node))
	kv.row("medium", v.MediaType)
	state := v.State
	if v.Error != "" {
		state += ": " + v.Error
	}
	kv.row("state", state)
	kv.row("bytes", humanBytes(v.Bytes))
	kv.row("sessions", v.Sessions)
	kv.row("created", humanTime(v.Created))
	kv.row("last written", humanTime(v.LastWritten))
	if v.Path != "" {
		kv.row("path", v.Path)
	}
	if catalog.PoolType(v.MediaType).HasLibrary() {
		kv.row("barcode", v.Barcode)
		kv.row("library", dash(v.Library))
		kv.row("location", dash(v.Location))
	}
	kv.flush()
	if len(r.Parts) > 0 {
		fmt.Fprintln(w, "\nPARTS")
		t := newTable(w, "BACKUP", "CLIENT", "PART", "START", "END", "NOTE")
		for _, p := range r.Parts {
			t.row(p.BackupID, p.Client, p.Part, p.VolumeStart, p.End, partNote(p))
		}
		t.flush()
	}
	if r.More {
		fmt.Fprintln(w, "... and more parts after these, which did not fit one answer")
	}
}

func newJobCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "job", Short: "Jobs: backups and restores, running and done"}
	var client, requestID string
	var states []string
	var limit int
	var queued, runs bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List jobs, newest first",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if runs {
				if queued || requestID != "" {
					return &usageError{fmt.Errorf("--runs lists the scheduled runs: leave --queued and --request-id out")}
				}
				return runJobRuns(cmd.Context(), g, wire.RunListReq{Client: client, States: states, Limit: limit})
			}
			if queued {
				if len(states) > 0 {
					return &usageError{fmt.Errorf("--queued lists the queued jobs: leave --state out")}
				}
				return runJobQueue(cmd.Context(), g, wire.JobListReq{Client: client, Limit: limit, RequestID: requestID})
			}
			return runJobList(cmd.Context(), g, wire.JobListReq{Client: client, States: states, Limit: limit, RequestID: requestID})
		},
	}
	list.Flags().BoolVar(&queued, "queued", false, "the queued jobs in the order they will run, and what each waits for")
	list.Flags().BoolVar(&runs, "runs", false, "the policies' scheduled runs instead, skipped and missed ones too, with why ('cairn job runs')")
	list.Flags().StringVar(&client, "client", "", "only jobs of this client")
	list.Flags().StringSliceVar(&states, "state", nil, "only jobs in these states (pending, queued, running, success, warning, failed, canceled, void)")
	list.Flags().StringVar(&requestID, "request-id", "", "only the job the start with this request id made")
	list.Flags().IntVar(&limit, "limit", 50, "at most this many jobs")
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a job with its log",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil {
				return &usageError{fmt.Errorf("job id %q is not a number", args[0])}
			}
			return runJobShow(cmd.Context(), g, id)
		},
	}
	c.AddCommand(list, show, newJobCancelCmd(g), newJobRunsCmd(g))
	return c
}

func runJobList(ctx context.Context, g *globals, req wire.JobListReq) error {
	nc, err := g.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	limit := req.Limit
	if limit <= 0 {
		limit = 50 // the server's default
	}
	var jobs []wire.JobInfo
	for len(jobs) < limit {
		req.Limit = limit - len(jobs)
		var resp wire.JobListResp
		if err := g.call(ctx, nc, wire.OpJobList, req, &resp); err != nil {
			return err
		}
		jobs = append(jobs, resp.Jobs...)
		if !resp.More || len(resp.Jobs) == 0 {
			break
		}
		req.Before = resp.Jobs[len(resp.Jobs)-1].ID
	}
	if g.json {
		return printJSON(g.out, nonNil(jobs))
	}
	t := newTable(g.out, "ID", "TYPE", "CLIENT", "LEVEL", "STATE", "STARTED", "DURATION", "FILES", "BYTES", "FILE SET")
	for _, j := range jobs {
		dur := "-"
		if !j.Started.IsZero() && !j.Ended.IsZero() {
			dur = humanDuration(j.Ended.Sub(j.Started))
		}
		fs := "-"
		if j.FileSet != nil {
			fs = describeFileSet(j.FileSet)
		}
		t.row(j.ID, j.Type, j.Client, dash(j.Level), j.State, humanTime(j.Started), dur, j.Files, humanBytes(j.Bytes), fs)
	}
	return t.flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func runJobShow(ctx context.Context, g *globals, id uint64) error {
	nc, err := g.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	j, err := showJob(ctx, g, nc, id)
	if err != nil {
		return err
	}
	if g.json {
		return printJSON(g.out, j)
	}
	printJob(g.out, j)
	return nil
}

// showJob gets a job with all of its log, which a long one sends in pages.
func showJob(ctx context.Context, g *globals, nc *nats.Conn, id uint64) (*wire.JobInfo, error) {
	var j wire.JobInfo
	if err := g.call(ctx, nc, wire.OpJobShow, wire.JobShowReq{ID: id}, &j); err != nil {
		return nil, err
	}
	for next := j.LogNext; next != 0; {
		var more wire.JobInfo
		if err := g.call(ctx, nc, wire.OpJobShow, wire.JobShowReq{ID: id, LogFrom: next}, &more); err != nil {
			return nil, err
		}
		if more.LogFrom > next {
			// The job went on logging, and the lines between were dropped
			// (a job keeps its last lines only).
			j.Log = append(j.Log, wire.JobLogLine{Level: "info", Msg: fmt.Sprintf("... %d lines dropped while reading the log", more.LogFrom-next)})
		}
		j.Log = append(j.Log, more.Log...)
		if len(more.Log) == 0 {
			break
		}
		next = more.LogNext
	}
	j.LogNext = 0
	return &j, nil
}

// nonNil makes an empty list print as [] in JSON, as the server sends it.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func printJob(w io.Writer, j *wire.JobInfo) {
	kv := newTable(w, "JOB", strconv.FormatUint(j.ID, 10))
	kv.row("type", j.Type)
	kv.row("client", j.Client)
	if j.Level != "" {
		kv.row("level", j.Level)
	}
	kv.row("state", j.State)
	if j.Policy != "" {
		kv.row("policy", fmt.Sprintf("%s, run scheduled at %s, priority %d", j.Policy, humanTime(j.Scheduled), j.Priority))
	}
	if j.CanceledBy != "" {
		kv.row("canceled by", j.CanceledBy)
		if j.CancelReason != "" {
			kv.row("cancel reason", j.CancelReason)
		}
	}
	if j.Type == "restore" {
		kv.row("from backup", j.BackupID)
		kv.row("to", j.Target)
	}
	if len(j.Paths) > 0 {
		kv.row("paths", strings.Join(fileindex.Strings(j.Paths), ", "))
	}
	if j.FileSet != nil {
		kv.row("file set", describeFileSet(j.FileSet))
	}
	kv.row("pool", dash(j.Pool))
	kv.row("storage node", dash(j.Node))
	kv.row("created", humanTime(j.Created))
	kv.row("started", humanTime(j.Started))
	kv.row("ended", humanTime(j.Ended))
	if !j.Started.IsZero() && !j.Ended.IsZero() {
		d := j.Ended.Sub(j.Started)
		kv.row("duration", humanDuration(d))
		kv.row("rate", rate(j.Bytes, d))
	}
	if j.Entries > 0 {
		kv.row("entries", fmt.Sprintf("%d asked, %d restored, %d lost", j.Entries, j.Restored, j.Lost))
	}
	kv.row("files", j.Files)
	kv.row("bytes", humanBytes(j.Bytes))
	if j.StoredBytes > 0 {
		kv.row("stored", fmt.Sprintf("%s (ratio %.2f)", humanBytes(j.StoredBytes), float64(j.Bytes)/float64(j.StoredBytes)))
	}
	if len(j.Volumes) > 0 {
		kv.row("volumes", strings.Join(j.Volumes, ", "))
	}
	if j.Warnings > 0 {
		kv.row("warnings", j.Warnings)
	}
	if j.Attempt > 1 {
		kv.row("attempt", j.Attempt)
	}
	if j.Waiting != "" {
		kv.row("waiting", j.Waiting)
	}
	if j.RequestID != "" {
		kv.row("request", j.RequestID)
	}
	if t := j.Tape; t != nil {
		kv.row("tape", tapeFigures(t))
	}
	if j.Error != "" {
		kv.row("error", j.Error)
		if j.Hint != "" {
			kv.row("hint", j.Hint)
		}
	}
	if p := j.Progress; p != nil {
		kv.row("progress", fmt.Sprintf("%d files, %s", p.Files, humanBytes(p.Bytes)))
	}
	kv.flush()
	if len(j.Parts) > 0 {
		fmt.Fprintln(w, "\nPARTS")
		t := newTable(w, "VOLUME", "PART", "START", "END", "NOTE")
		for _, p := range j.Parts {
			t.row(p.Volume, p.Part, p.VolumeStart, p.End, partNote(p))
		}
		t.flush()
	}
	if len(j.Log) > 0 {
		fmt.Fprintln(w, "\nLOG")
		for _, l := range j.Log {
			fmt.Fprintf(w, "%s  %-7s  %s\n", l.Time.Local().Format("2006-01-02 15:04:05.000"), l.Level, printableLog(l.Msg))
		}
	}
}

// tapeFigures sums up a tape session's drive figures.
func tapeFigures(t *wire.TapeStats) string {
	s := fmt.Sprintf("%s to %d tape(s)", humanBytes(t.DriveBytes), t.Tapes)
	if t.DriveSeconds > 0 {
		s += fmt.Sprintf(" at %.1f MB/s of drive time", float64(t.DriveBytes)/1e6/t.DriveSeconds)
	}
	s += fmt.Sprintf(", %d drive stops", t.Stops)
	if t.Spooled {
		s += ", spooled to disk first"
	}
	return s
}

func newKeyCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "key", Short: "Data keys: export them for escrow"}
	var to string
	var force bool
	export := &cobra.Command{
		Use:   "export --to FILE",
		Short: "Write every data key, in the clear, to a key file for escrow",
		Long: `Write every data key, in the clear, to a key file (mode 0600).

Keep the file offline and safe: it decrypts every volume. With it,
'cairn volume ls' and 'cairn volume extract' read volumes with no server.

It takes a key admin's credential: key export has a NATS subject of its
own (cairn.escrow.key.export) that only the admins named in 'cairn cert
nats-config --key-admins' may use; the admin of 'cairn dev' is one.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if to == "" {
				return &usageError{fmt.Errorf("pass --to FILE")}
			}
			return runKeyExport(cmd.Context(), g, to, force)
		},
	}
	export.Flags().StringVar(&to, "to", "", "key file to write")
	export.Flags().BoolVar(&force, "force", false, "replace an existing file")
	c.AddCommand(export)
	return c
}

func runKeyExport(ctx context.Context, g *globals, to string, force bool) error {
	// Before the keys leave the servers: a file that cannot be written is
	// no reason to send them.
	if err := keyring.CheckFileDir(to); err != nil {
		return err
	}
	var resp wire.KeyExportResp
	if err := g.request(ctx, wire.OpKeyExport, wire.Empty{}, &resp); err != nil {
		return err
	}
	f := &keyring.File{V: 1}
	for _, k := range resp.Keys {
		f.Keys = append(f.Keys, keyring.FileKey{ID: k.ID, Pool: k.Pool, Key: k.Key, Created: k.Created})
	}
	if err := keyring.WriteFile(to, f, force); err != nil {
		return err
	}
	if g.json {
		return printJSON(g.out, map[string]any{"file": to, "keys": len(f.Keys)})
	}
	fmt.Fprintf(g.out, "wrote %d keys to %s; keep it offline and safe\n", len(f.Keys), to)
	return nil
}
