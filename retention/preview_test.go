package retention

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/schedule"
)

// TestPreview foresees three weeks of a new fileset whose first run falls
// on a Thursday: that run is promoted to full, and incrementals start to
// expire once they and everything that needs them are over 7 days older than
// the newest backup.
func TestPreview(t *testing.T) {
	s, err := schedule.Parse("Sun 02:00 full\nMon-Sat 02:00 incremental", "UTC")
	if err != nil {
		t.Fatal(err)
	}
	policy := &Policy{Levels: map[schedule.Level]Rules{
		schedule.Incremental: {Within: 7 * 24 * time.Hour},
		schedule.Full:        {Last: 2},
	}}
	// An older fileset of the same client, which the preview leaves out.
	other := Backup{ID: 40, Time: time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC), Level: schedule.Full, Client: "web1", FileSet: "old", State: Complete}
	from := time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)
	got := Preview(s, from, from.AddDate(0, 0, 18), Group{"web1", "etc"}, []Backup{other}, policy, schedule.Limits{})
	var lines []string
	for _, f := range got {
		line := fmt.Sprintf("%s %s backup %d", f.Time.Format("Mon 01-02"), f.Level, f.Backup)
		if f.Promoted != "" {
			line += " (" + f.Promoted + ")"
		}
		for _, d := range f.Expires {
			line += fmt.Sprintf(", expires %d", d.ID)
		}
		lines = append(lines, line)
	}
	want := []string{
		"Thu 03-05 full backup 41 (promoted to full: no full of this fileset yet)",
		"Fri 03-06 incremental backup 42",
		"Sat 03-07 incremental backup 43",
		"Sun 03-08 full backup 44",
		"Mon 03-09 incremental backup 45",
		"Tue 03-10 incremental backup 46",
		"Wed 03-11 incremental backup 47",
		"Thu 03-12 incremental backup 48",
		"Fri 03-13 incremental backup 49",
		"Sat 03-14 incremental backup 50",
		"Sun 03-15 full backup 51, expires 41, expires 42, expires 43",
		"Mon 03-16 incremental backup 52",
		"Tue 03-17 incremental backup 53",
		"Wed 03-18 incremental backup 54",
		"Thu 03-19 incremental backup 55",
		"Fri 03-20 incremental backup 56",
		"Sat 03-21 incremental backup 57",
		"Sun 03-22 full backup 58, expires 44, expires 45, expires 46, expires 47, expires 48, expires 49, expires 50",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}
