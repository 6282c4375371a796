package main

import (
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/buildinfo"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/wire"
)

func TestVersion(t *testing.T) {
	ctx := context.Background()
	for _, args := range [][]string{{"--version"}, {"version"}} {
		code, out, stderr := cli(ctx, args...)
		if code != 0 || stderr != "" {
			t.Fatalf("%v: exit %d, stderr %q", args, code, stderr)
		}
		for _, want := range []string{
			"cairn " + buildinfo.Version() + "\n",
			"commit", buildinfo.Commit(),
			runtime.Version(),
			"volume format", "writes version 5 on disk, 5 on tape, reads 1 to 5\n",
			"index segments", "catalog commands",
			"wire messages     version 1\n",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("%v does not say %q:\n%s", args, want, out)
			}
		}
	}

	code, out, stderr := cli(ctx, "--version", "--json")
	if code != 0 || stderr != "" {
		t.Fatalf("--version --json: exit %d, stderr %q", code, stderr)
	}
	var v versionInfo
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("--version --json is not the JSON object: %v\n%s", err, out)
	}
	if v.Version != buildinfo.Version() || v.Commit != buildinfo.Commit() || v.Go != runtime.Version() ||
		v.Volume.Writes != volume.FormatVersion || v.Volume.Reads[0] != 1 || len(v.Volume.WritesOn) != 2 || v.Volume.WritesOn[0] != (mediumVersion{"disk", volume.FormatVersion}) || v.Volume.WritesOn[1] != (mediumVersion{"tape", volume.FormatVersion}) || v.Volume.Reads[len(v.Volume.Reads)-1] != volume.FormatVersion ||
		v.IndexSegment.Writes != fileindex.SegmentVersion || v.CatalogCommand.Writes != catalog.CommandVersion || v.Wire != wire.Version {
		t.Errorf("--version --json says %+v", v)
	}

	// Without --version the root command still shows its help.
	if code, out, _ := cli(ctx); code != 0 || !strings.Contains(out, "Roles:") {
		t.Errorf("cairn with no arguments: exit %d, %q", code, out)
	}
}
