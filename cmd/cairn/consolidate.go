package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cairnbackup/cairn/wire"
)

type consolidateOpts struct {
	client, fileSet, pool string
	wait                  bool
	requestID             string
}

func newBackupConsolidateCmd(g *globals) *cobra.Command {
	var o consolidateOpts
	c := &cobra.Command{
		Use:   "consolidate",
		Short: "Fold a client's last full and the backups after it into a new full, without the client",
		Long: `Write a synthetic full: the storage node that holds the client's newest chain
(its last full and the incrementals and differentials after it) reads the
tree as it was at the newest of them and writes it as one new full session
to --pool (the chain's full's pool when empty), with no agent involved. The
new full has the point in time of the newest backup it folds in: 'cairn ls'
and 'cairn restore' of that time read it alone, and the next incremental
builds on it. The backups it folded in stay until retention expires them.

A client with backups of several file sets needs --fileset (its id, or a
prefix of it, as 'cairn backup list' shows it). The pool must be one that
the chain's storage node serves: disk to disk, disk to tape and tape to
tape (a library with two drives) all work.`,
		Example: "  cairn backup consolidate --client web1 --pool Tape",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.client == "" {
				return &usageError{fmt.Errorf("pass --client NAME (see 'cairn client list')")}
			}
			_, err := runConsolidate(cmd.Context(), g, o)
			return err
		},
	}
	f := c.Flags()
	f.StringVar(&o.client, "client", "", "client whose chain to consolidate")
	f.StringVar(&o.fileSet, "fileset", "", "file set whose chain to consolidate, when the client has several")
	f.StringVar(&o.pool, "pool", "", "pool to write the new full to (the chain's full's pool when empty)")
	bindWaitFlags(c, g, &o.wait, false)
	bindRequestID(f, &o.requestID, g)
	return c
}

// runConsolidate starts a synthetic full and, with wait, follows it to its
// end.
func runConsolidate(ctx context.Context, g *globals, o consolidateOpts) (*wire.JobInfo, error) {
	nc, err := g.connect()
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	var started wire.JobStarted
	err = g.start(ctx, nc, wire.OpBackupConsolidate, "the synthetic full of "+o.client, newStart(o.requestID), func(st wire.Start) any {
		return wire.BackupConsolidateReq{Client: o.client, FileSet: o.fileSet, Pool: o.pool, Start: st}
	}, &started)
	if err != nil {
		return nil, err
	}
	return afterStart(ctx, g, nc, "synthetic full", started, o.wait)
}
