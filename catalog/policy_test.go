package catalog

import (
	"testing"
	"time"

	"github.com/cairnbackup/cairn/schedule"
)

func TestPolicyConvertsForTheSchedulerAndRetention(t *testing.T) {
	p := Policy{
		Name: "web", Paths: []string{"/srv", "/etc"}, Excludes: []string{"/srv/tmp"},
		Schedule: "Sun 1st 02:00 full\nMon-Sat 21:00 incremental", TimeZone: "Europe/Berlin",
		Pool: "disk", LevelPools: map[Level]string{LevelFull: "tape"},
		MaxFullAge: 35 * 24 * time.Hour,
		Retention: PolicyRetention{
			All:    KeepRules{Last: 3},
			Levels: map[Level]KeepRules{LevelIncremental: {Within: 14 * 24 * time.Hour}},
		},
	}
	if got := p.PoolFor(LevelFull); got != "tape" {
		t.Errorf("full pool = %q, want tape", got)
	}
	if got := p.PoolFor(LevelIncremental); got != "disk" {
		t.Errorf("incremental pool = %q, want disk", got)
	}
	if p.FileSet() != FileSetOf([]string{"/etc", "/srv"}, []string{"/srv/tmp"}) {
		t.Error("a policy's file set depends on the order of its paths")
	}
	rp, err := p.RetentionPolicy()
	if err != nil {
		t.Fatal(err)
	}
	if rp.Rules.Last != 3 || rp.Levels[schedule.Incremental].Within != 14*24*time.Hour || rp.Location.String() != "Europe/Berlin" {
		t.Errorf("retention = %+v", rp)
	}
	if err := rp.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if _, err := p.ParsedSchedule(); err != nil {
		t.Errorf("schedule: %v", err)
	}
	if p.Limits().MaxFullAge != p.MaxFullAge {
		t.Error("limits not carried")
	}
	p.TimeZone = "Mars/Olympus"
	if _, err := p.RetentionPolicy(); err == nil {
		t.Error("an unknown time zone is accepted")
	}
}

// TestEmptyTimeZoneIsUTC: a policy stored without a time zone runs and cuts
// days in UTC on every server, not in each leader's local zone, so that two
// leaders in different zones compute the same runs.
func TestEmptyTimeZoneIsUTC(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	local := time.Local
	time.Local = ny // the zone of a leader elsewhere
	t.Cleanup(func() { time.Local = local })
	p := Policy{Name: "web", Schedule: "daily 21:00 incremental"}
	s, err := p.ParsedSchedule()
	if err != nil {
		t.Fatal(err)
	}
	run, ok := s.Next(time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC))
	if !ok || !run.Time.Equal(time.Date(2026, 3, 2, 21, 0, 0, 0, time.UTC)) || s.Location() != time.UTC {
		t.Fatalf("next run %v (%v) in %v, want 2026-03-02 21:00 UTC", run.Time, ok, s.Location())
	}
	loc, err := p.Location()
	if err != nil || loc != time.UTC {
		t.Fatalf("location %v, %v", loc, err)
	}
}
