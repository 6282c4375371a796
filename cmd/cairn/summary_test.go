package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/wire"
)

// The summary of a restore that lost entries says how many it restored and
// lost, names the first maxLostShown, says how many more there are, and
// shows a hostile name escaped.
func TestSummaryBoundsTheLostEntries(t *testing.T) {
	j := &wire.JobInfo{ID: 7, Type: "restore", State: "failed", Entries: 500, Restored: 100, Lost: 400, Files: 90}
	j.Log = append(j.Log, wire.JobLogLine{Level: "error", Msg: "lost: /d/evil\x1b[2J: block seq 3 is damaged"})
	for i := range 30 {
		j.Log = append(j.Log, wire.JobLogLine{Level: "error", Msg: fmt.Sprintf("lost: /d/f%02d: block seq 3 is damaged", i)})
	}
	j.Log = append(j.Log, wire.JobLogLine{Level: "error", Msg: "... and 369 more lost entries not listed here"},
		wire.JobLogLine{Level: "warning", Msg: "/d/x: mode not restored"})
	var out bytes.Buffer
	printSummary(&out, j)
	s := out.String()
	for _, want := range []string{
		"restore job 7 failed: 100 of 500 entries restored, 400 lost",
		"  lost: /d/evil\\x1b[2J: block seq 3",
		"  lost: /d/f18: ",
		"  ... and 380 more lost entries: 'cairn job show 7' names them",
		"  warning: /d/x: mode not restored",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("the summary does not say %q:\n%s", want, s)
		}
	}
	if n := strings.Count(s, "\n  lost: "); n != maxLostShown || strings.Contains(s, "/d/f19") {
		t.Errorf("%d lost entries named, want %d:\n%s", n, maxLostShown, s)
	}
}
