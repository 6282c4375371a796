package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairnbackup/cairn/wire"
)

// newJobRunsCmd is 'cairn job runs': what the scheduler did with each
// run of the policies, next to the jobs it started. A skipped or missed
// run has no job, so it shows here and not in 'cairn job list'.
func newJobRunsCmd(g *globals) *cobra.Command {
	var req wire.RunListReq
	c := &cobra.Command{
		Use:   "runs",
		Short: "List the scheduled runs of the policies, newest first: started, skipped, missed or failed, and why",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runJobRuns(cmd.Context(), g, req)
		},
	}
	f := c.Flags()
	f.StringVar(&req.Policy, "policy", "", "only the runs of this policy")
	f.StringVar(&req.Client, "client", "", "only the runs for this client")
	f.StringSliceVar(&req.States, "state", nil, "only runs in these states (starting, dispatched, skipped, missed, failed)")
	f.IntVar(&req.Limit, "limit", 50, "at most this many runs")
	return c
}

func runJobRuns(ctx context.Context, g *globals, req wire.RunListReq) error {
	var resp wire.RunListResp
	if err := g.request(ctx, wire.OpRunList, req, &resp); err != nil {
		return err
	}
	if g.json {
		return printJSON(g.out, nonNil(resp.Runs))
	}
	t := newTable(g.out, "SCHEDULED", "POLICY", "CLIENT", "LEVEL", "STATE", "JOB", "WHY")
	for _, r := range resp.Runs {
		level := r.Level
		if r.Asked != "" && r.Asked != r.Level {
			level = r.Asked + "->" + r.Level
		}
		job := "-"
		if r.JobID != 0 {
			job = strconv.FormatUint(r.JobID, 10)
			if r.JobState != "" {
				job += " (" + r.JobState + ")"
			}
		}
		why := r.Reason
		if why == "" {
			why = r.Promotion
		}
		if r.Warning != "" {
			why = strings.TrimPrefix(why+"; ", "; ") + "warning: " + r.Warning
		}
		t.row(humanTime(r.Scheduled), r.Policy, r.Client, level, r.State, job, dash(why))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if resp.More {
		fmt.Fprintln(g.out, "... and older runs: raise --limit, or narrow with --policy and --client")
	}
	return nil
}

// runJobQueue is 'cairn job list --queued': the queued jobs in the order
// the leader serves them (priority, then scheduled time, then id), each
// with what it waits for.
func runJobQueue(ctx context.Context, g *globals, req wire.JobListReq) error {
	req.States = []string{"queued"}
	nc, err := g.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	var resp wire.JobListResp
	if err := g.call(ctx, nc, wire.OpJobList, req, &resp); err != nil {
		return err
	}
	jobs := resp.Jobs
	when := func(j *wire.JobInfo) time.Time {
		if !j.Scheduled.IsZero() {
			return j.Scheduled
		}
		return j.Created
	}
	slices.SortStableFunc(jobs, func(a, b wire.JobInfo) int {
		if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
			return c
		}
		if c := when(&a).Compare(when(&b)); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	if g.json {
		return printJSON(g.out, nonNil(jobs))
	}
	t := newTable(g.out, "ID", "CLIENT", "POLICY", "PRIORITY", "LEVEL", "POOL", "QUEUED", "WAITING FOR")
	for _, j := range jobs {
		t.row(j.ID, j.Client, dash(j.Policy), j.Priority, dash(j.Level), dash(j.Pool), humanTime(when(&j)), dash(j.Waiting))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if resp.More {
		fmt.Fprintln(g.out, "... and more queued jobs: raise --limit")
	}
	return nil
}
