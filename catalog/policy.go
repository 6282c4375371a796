package catalog

import (
	"fmt"
	"slices"
	"time"

	"github.com/cairnbackup/cairn/retention"
	"github.com/cairnbackup/cairn/schedule"
)

// Policy is what an administrator asks Cairn to back up on its own: which
// clients and paths, when and at which level (Schedule), to which pool, and
// for how long the restore points stay (Retention). The scheduler on the
// leader turns it into runs, the expiry pass into expiries; both compute from
// the policy as stored here, so 'cairn policy preview' foresees what they do.
//
// A policy's backups chain per client and file set: the file set of a policy
// run is FileSetOf(Paths, Excludes), so changing a policy's paths or excludes
// starts a new chain with a full, as Bacula does on a FileSet change, and an
// ad hoc backup of the same paths shares the chain.
type Policy struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Disabled keeps the policy and its backups but runs nothing: the
	// scheduler skips it and records no missed runs while it is disabled.
	Disabled bool `json:"disabled,omitempty"`

	// Clients names clients; ClientLabels selects every client whose agent
	// reports all of these labels. The policy applies to the union.
	Clients      []string          `json:"clients,omitempty"`
	ClientLabels map[string]string `json:"client_labels,omitempty"`

	Paths         []string     `json:"paths"`
	Excludes      []string     `json:"excludes,omitempty"`
	OneFileSystem bool         `json:"one_file_system,omitempty"`
	Application   *Application `json:"application,omitempty"`

	// Schedule is the text package schedule parses, evaluated in TimeZone
	// (an IANA name; empty is UTC, never a server's local zone, so that
	// leaders in different zones compute the same runs). 'cairn policy
	// create' without --timezone stores the zone of the machine it runs on
	// when it has an IANA name, else UTC.
	Schedule string `json:"schedule"`
	TimeZone string `json:"time_zone,omitempty"`
	// CatchUpWindow is how late a run missed while no server led may still
	// start (schedule.Schedule.CatchUp); zero uses DefaultCatchUpWindow.
	CatchUpWindow time.Duration `json:"catch_up_window,omitempty"`
	// MaxFullAge and MaxDifferentialAge promote a run (schedule.Limits).
	MaxFullAge         time.Duration `json:"max_full_age,omitempty"`
	MaxDifferentialAge time.Duration `json:"max_differential_age,omitempty"`
	// MaxChain folds a client's chain into a synthetic full once a restore
	// of its newest backup reads this many sessions (schedule.Limits);
	// zero is no bound.
	MaxChain int `json:"max_chain,omitempty"`

	// Pool receives every run; LevelPools overrides it for a level.
	Pool       string           `json:"pool"`
	LevelPools map[Level]string `json:"level_pools,omitempty"`
	// Priority orders queued runs: the higher first.
	Priority int `json:"priority,omitempty"`
	// RPO is the age the newest good restore point of each of the policy's
	// clients may reach before the client is said to breach it; zero is no
	// target.
	RPO time.Duration `json:"rpo,omitempty"`

	Retention PolicyRetention `json:"retention"`

	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// DefaultCatchUpWindow is how late a missed run may still start when the
// policy does not say.
const DefaultCatchUpWindow = 6 * time.Hour

// KeepRules are retention.Rules as the catalog stores them.
type KeepRules struct {
	Within  time.Duration `json:"within,omitempty"`
	Last    int           `json:"last,omitempty"`
	Hourly  int           `json:"hourly,omitempty"`
	Daily   int           `json:"daily,omitempty"`
	Weekly  int           `json:"weekly,omitempty"`
	Monthly int           `json:"monthly,omitempty"`
	Yearly  int           `json:"yearly,omitempty"`
}

// PolicyRetention is retention.Policy as the catalog stores it: All counts
// restore points of every level, Levels those of one level only.
type PolicyRetention struct {
	All    KeepRules           `json:"all,omitzero"`
	Levels map[Level]KeepRules `json:"levels,omitempty"`
}

func (k KeepRules) rules() retention.Rules {
	return retention.Rules{Within: k.Within, Last: k.Last, Hourly: k.Hourly, Daily: k.Daily,
		Weekly: k.Weekly, Monthly: k.Monthly, Yearly: k.Yearly}
}

// Location is the policy's time zone, in which its schedule runs and its
// retention cuts days.
func (p *Policy) Location() (*time.Location, error) {
	if p.TimeZone == "" {
		return time.UTC, nil
	}
	loc, err := time.LoadLocation(p.TimeZone)
	if err != nil {
		return nil, fmt.Errorf("policy %q: time zone %q: %w", p.Name, p.TimeZone, err)
	}
	return loc, nil
}

// ParsedSchedule parses the policy's schedule in its time zone.
func (p *Policy) ParsedSchedule() (*schedule.Schedule, error) {
	s, err := schedule.Parse(p.Schedule, p.TimeZone)
	if err != nil {
		return nil, fmt.Errorf("policy %q: schedule: %w", p.Name, err)
	}
	return s, nil
}

// RetentionPolicy is the policy's retention for package retention.
func (p *Policy) RetentionPolicy() (retention.Policy, error) {
	loc, err := p.Location()
	if err != nil {
		return retention.Policy{}, err
	}
	rp := retention.Policy{Rules: p.Retention.All.rules(), Location: loc}
	if len(p.Retention.Levels) > 0 {
		rp.Levels = make(map[schedule.Level]retention.Rules, len(p.Retention.Levels))
		for l, k := range p.Retention.Levels {
			rp.Levels[schedule.Level(l)] = k.rules()
		}
	}
	return rp, nil
}

// Limits are the policy's promotion bounds.
func (p *Policy) Limits() schedule.Limits {
	return schedule.Limits{MaxFullAge: p.MaxFullAge, MaxDifferentialAge: p.MaxDifferentialAge, MaxChain: p.MaxChain}
}

// FileSet is the file set of the policy's backups (FileSetOf).
func (p *Policy) FileSet() string { return FileSetOf(p.Paths, p.Excludes) }

// PoolFor is the pool a run of level l writes to.
func (p *Policy) PoolFor(l Level) string {
	if pool, ok := p.LevelPools[l]; ok && pool != "" {
		return pool
	}
	return p.Pool
}

// Pools are the pools the policy's runs write to: Pool and every level's,
// each once, in that order. A run's chain spans them.
func (p *Policy) Pools() []string {
	var out []string
	for _, l := range []Level{"", LevelFull, LevelSyntheticFull, LevelDifferential, LevelIncremental} {
		if pool := p.PoolFor(l); pool != "" && !slices.Contains(out, pool) {
			out = append(out, pool)
		}
	}
	return out
}
