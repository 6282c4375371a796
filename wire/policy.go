package wire

import "time"

// Policy operations (cairn.api.policy.<op>). Writes go to the leader; show,
// list and preview are answered by any server from its own catalog.
const (
	OpPolicyCreate = "policy.create"
	OpPolicySet    = "policy.set"
	OpPolicyApply  = "policy.apply"
	OpPolicyShow   = "policy.show"
	// OpPolicyGet is OpPolicyShow answered by the leader, for a change
	// made on top of what it reads: a follower's copy may lag the
	// policy's last change, which the change's IfUpdated would then
	// refuse.
	OpPolicyGet     = "policy.get"
	OpPolicyList    = "policy.list"
	OpPolicyDelete  = "policy.delete"
	OpPolicyPreview = "policy.preview"
)

// Policy is a backup policy as the catalog stores it (catalog.Policy):
// the same fields under the same JSON names, so one converts to the other
// field for field (server.TestPolicyIsCarried holds it). Durations are
// nanoseconds, as time.Duration encodes.
type Policy struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Disabled    bool   `json:"disabled,omitempty"`

	Clients      []string          `json:"clients,omitempty"`
	ClientLabels map[string]string `json:"client_labels,omitempty"`

	Paths         []string     `json:"paths"`
	Excludes      []string     `json:"excludes,omitempty"`
	OneFileSystem bool         `json:"one_file_system,omitempty"`
	Application   *Application `json:"application,omitempty"`

	Schedule           string        `json:"schedule"`
	TimeZone           string        `json:"time_zone,omitempty"`
	CatchUpWindow      time.Duration `json:"catch_up_window,omitempty"`
	MaxFullAge         time.Duration `json:"max_full_age,omitempty"`
	MaxDifferentialAge time.Duration `json:"max_differential_age,omitempty"`
	// MaxChain folds a chain into a synthetic full once a restore of its
	// newest backup reads this many sessions; 0 is no bound.
	MaxChain int `json:"max_chain,omitempty"`

	Pool string `json:"pool"`
	// LevelPools maps a level (full, differential, incremental) to the
	// pool its runs write to instead of Pool.
	LevelPools map[string]string `json:"level_pools,omitempty"`
	Priority   int               `json:"priority,omitempty"`
	RPO        time.Duration     `json:"rpo,omitempty"`

	Retention PolicyRetention `json:"retention"`

	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// KeepRules are a retention's keep rules; a count of -1 is unlimited.
type KeepRules struct {
	Within  time.Duration `json:"within,omitempty"`
	Last    int           `json:"last,omitempty"`
	Hourly  int           `json:"hourly,omitempty"`
	Daily   int           `json:"daily,omitempty"`
	Weekly  int           `json:"weekly,omitempty"`
	Monthly int           `json:"monthly,omitempty"`
	Yearly  int           `json:"yearly,omitempty"`
}

// PolicyRetention is a policy's retention: All over every level, Levels
// for one level each.
type PolicyRetention struct {
	All    KeepRules            `json:"all,omitzero"`
	Levels map[string]KeepRules `json:"levels,omitempty"`
}

// PolicyPutReq asks policy.create or policy.set to store Policy. For
// policy.set, IfUpdated (when not zero) is the Updated of the version the
// change was made to: a policy changed meanwhile is refused (wrong_state)
// rather than overwritten.
type PolicyPutReq struct {
	Policy    Policy    `json:"policy"`
	IfUpdated time.Time `json:"if_updated,omitzero"`
}

// PolicyApplyReq asks policy.apply to store every one of Policies, or none
// of them when one is refused; with Prune, every policy not among them is
// deleted in the same change.
type PolicyApplyReq struct {
	Policies []Policy `json:"policies"`
	Prune    bool     `json:"prune,omitempty"`
}

// PolicyApplyResp says what policy.apply changed, by name.
type PolicyApplyResp struct {
	Created   []string `json:"created,omitempty"`
	Changed   []string `json:"changed,omitempty"`
	Unchanged []string `json:"unchanged,omitempty"`
	Deleted   []string `json:"deleted,omitempty"`
}

// PolicyNameReq names a policy (policy.show, policy.delete).
type PolicyNameReq struct {
	Name string `json:"name"`
}

// PolicyListResp answers policy.list, by name.
type PolicyListResp struct {
	Policies []Policy `json:"policies"`
}

// PolicyDeleteResp answers policy.delete: Backups is how many backups the
// policy's clients hold of its file set, all of which stay until deleted by
// hand.
type PolicyDeleteResp struct {
	Name    string `json:"name"`
	Backups int    `json:"backups"`
}

// PolicyPreviewReq asks what a policy would do in the next Days days, for
// Client only when set.
type PolicyPreviewReq struct {
	Name   string `json:"name"`
	Days   int    `json:"days"`
	Client string `json:"client,omitempty"`
}

// PolicyPreviewResp lists the runs a policy would make, in time order, and
// what the expiry after each would expire. From is the server's time the
// preview starts at.
type PolicyPreviewResp struct {
	Policy   string    `json:"policy"`
	TimeZone string    `json:"time_zone"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	Clients  []string  `json:"clients"`
	// Disabled: the policy runs nothing now; the runs are those it makes
	// once enabled.
	Disabled bool         `json:"disabled,omitempty"`
	Runs     []PreviewRun `json:"runs"`
	// More says the runs did not all fit one answer: those shown are the
	// first in time order.
	More bool `json:"more,omitempty"`
}

// PreviewRun is one foreseen run of a policy on one client.
type PreviewRun struct {
	Client string    `json:"client"`
	Time   time.Time `json:"time"`
	// Asked is the level the schedule asks for; Level the one the run
	// takes after promotion, Promoted why it differs.
	Asked    string `json:"asked"`
	Level    string `json:"level"`
	Promoted string `json:"promoted,omitempty"`
	Pool     string `json:"pool"`
	// Backup numbers the foreseen backup: above every real backup's id.
	Backup  uint64          `json:"backup"`
	Expires []PreviewExpiry `json:"expires,omitempty"`
}

// PreviewExpiry is a backup the expiry pass after a run would expire.
type PreviewExpiry struct {
	Backup uint64    `json:"backup"`
	Time   time.Time `json:"time"`
	Level  string    `json:"level"`
	// Foreseen is set for a backup of an earlier run of the preview, not
	// one the catalog holds.
	Foreseen bool   `json:"foreseen,omitempty"`
	Why      string `json:"why"`
}
