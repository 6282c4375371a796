package main

import (
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/wire"
)

// TestPrintPruneSaysWhatItLeftOut: a pass that listed only some of what it
// expired, or stopped at its time limit, says so and what to do.
func TestPrintPruneSaysWhatItLeftOut(t *testing.T) {
	var out strings.Builder
	printPrune(&out, wire.PruneResp{Expired: 5000, Unlisted: 4000, More: true})
	for _, want := range []string{"(4000 more not listed: see 'cairn prune --history')", "5000 backups expired", "run 'cairn prune' again"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("prune printed %q, without %q", out.String(), want)
		}
	}
	out.Reset()
	printPrune(&out, wire.PruneResp{DryRun: true, Expired: 5000, Unlisted: 4000})
	if s := out.String(); !strings.Contains(s, "(4000 more not listed)\n") || strings.Contains(s, "--history") || strings.Contains(s, "again") {
		t.Errorf("a dry run printed %q", s)
	}
	out.Reset()
	printPrune(&out, wire.PruneResp{Expired: 2})
	if s := out.String(); s != "2 backups expired\n" {
		t.Errorf("a whole pass printed %q", s)
	}
}
