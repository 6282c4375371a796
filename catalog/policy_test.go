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
