package wire

import "time"

// OpRunList lists the runs the scheduler recorded: each scheduled run of a
// policy for a client, and what became of it (started as a job, skipped
// because the previous one still ran, missed while no server led).
const OpRunList = "run.list"

// RunListReq filters run.list; empty fields match everything.
type RunListReq struct {
	Policy string   `json:"policy,omitempty"`
	Client string   `json:"client,omitempty"`
	States []string `json:"states,omitempty"`
	Limit  int      `json:"limit,omitempty"`
}

// RunListResp answers run.list, newest scheduled first.
type RunListResp struct {
	Runs []RunInfo `json:"runs"`
	More bool      `json:"more,omitempty"`
}

// RunInfo is a scheduled run (catalog.Run) and, once started, the state of
// its job.
type RunInfo struct {
	Policy    string    `json:"policy"`
	Client    string    `json:"client"`
	Scheduled time.Time `json:"scheduled"`
	// Asked is the level the schedule gave the run, Level the one it ran
	// at; Promotion says why they differ.
	Asked     string `json:"asked"`
	Level     string `json:"level"`
	Promotion string `json:"promotion,omitempty"`
	// State is starting, dispatched, skipped, missed or failed; Reason says
	// why a run was skipped, missed or failed.
	State    string    `json:"state"`
	Reason   string    `json:"reason,omitempty"`
	JobID    uint64    `json:"job_id,omitempty"`
	JobState string    `json:"job_state,omitempty"`
	Recorded time.Time `json:"recorded"`
	// Warning is what the leader found wrong before the run started: its
	// pool could not take it (alert pool_short).
	Warning string `json:"warning,omitempty"`
}
