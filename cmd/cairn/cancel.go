package main

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairnbackup/cairn/wire"
)

// cancelWait bounds how long 'cairn job cancel' waits for a running job to
// stop: the leader orders its node and agent (10 s each at most), and a
// change of leader in between takes a few seconds more.
const cancelWait = 2 * time.Minute

func newJobCancelCmd(g *globals) *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a job: a queued one at once, a running one once it is stopped",
		Long: `Cancel a job. A queued job ends as canceled at once. A running backup or
restore (one waiting for a tape too) is stopped at its storage node and its
agent: a backup's session is rolled back, leaving nothing of it in the
catalog, and the drive is given back. The job's log says who canceled it and
why (--reason). The command waits until the job has ended; it exits 0 when
the job was canceled, 1 when it had ended already or ended otherwise first.`,
		Example: "  cairn job cancel 42 --reason 'wrong paths'",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil || id == 0 {
				return &usageError{fmt.Errorf("job id %q is not a job number", args[0])}
			}
			return runJobCancel(cmd.Context(), g, id, reason)
		},
	}
	c.Flags().StringVar(&reason, "reason", "", "why the job is canceled, for its log")
	return c
}

// canceller names who cancels for the job's log: the admin's NATS name,
// and the account and host the command runs as.
func (g *globals) canceller() string {
	name, err := g.adminName()
	if err != nil {
		name = "admin"
	}
	who := "?"
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	if host, err := os.Hostname(); err == nil {
		who += "@" + host
	}
	return fmt.Sprintf("%s (%s)", name, who)
}

func runJobCancel(ctx context.Context, g *globals, id uint64, reason string) error {
	nc, err := g.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	var j wire.JobInfo
	if err := g.call(ctx, nc, wire.OpJobCancel, wire.JobCancelReq{ID: id, By: g.canceller(), Reason: reason}, &j); err != nil {
		return err
	}
	deadline := time.Now().Add(cancelWait)
	for j.State == "queued" || j.State == "running" {
		if time.Now().After(deadline) {
			return wire.Errorf(wire.CodeTimeout, fmt.Sprintf("see how it goes with 'cairn job show %d'", id),
				"the cancel of job %d is recorded, but the job has not stopped after %s", id, cancelWait)
		}
		select {
		case <-ctx.Done():
			return interrupted(ctx, id)
		case <-time.After(jobPollInterval):
		}
		var now wire.JobInfo
		if err := g.call(ctx, nc, wire.OpJobShow, wire.JobShowReq{ID: id}, &now); err != nil {
			if !wire.Transient(err) {
				return err
			}
			continue // the servers elect a leader: the job is as it was
		}
		j = now
	}
	if j.State != "canceled" {
		return wire.Errorf(wire.CodeWrongState, fmt.Sprintf("see it with 'cairn job show %d'", id),
			"job %d ended as %s before the cancel took effect", id, j.State)
	}
	if g.json {
		return printJSON(g.out, &j)
	}
	_, err = fmt.Fprintf(g.out, "%s job %d canceled: %s\n", j.Type, j.ID, j.Error)
	return err
}
