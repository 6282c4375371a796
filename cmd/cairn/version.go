package main

import (
	"fmt"
	"runtime"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/buildinfo"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/wire"
)

// versionInfo is what 'cairn --version' says: which build this is, and the
// versions of every format it writes and reads, so an administrator can
// tell before an upgrade whether old media and a mixed-version group still
// work together.
type versionInfo struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
	Go      string `json:"go"`
	OS      string `json:"os"`
	Arch    string `json:"arch"`
	// Volume is the on-media format (media/volume/FORMAT.md): every
	// version read, forever; written at the newest on disk and at
	// version 1 on tape, where a part must fill whole tape records.
	Volume formatVersions `json:"volume_format"`
	// IndexSegment is the encoding of the file index in session trailers
	// and in the catalog.
	IndexSegment formatVersions `json:"index_segment_format"`
	// CatalogCommand is the encoding of the catalog's Raft log entries:
	// a server refuses entries of a version it does not know.
	CatalogCommand formatVersions `json:"catalog_command_format"`
	// Wire is the version of the NATS message envelope.
	Wire int `json:"wire_version"`
}

type formatVersions struct {
	// Writes is the newest version written.
	Writes int `json:"writes"`
	// WritesOn, when the version written depends on the medium, says
	// which each one gets.
	WritesOn []mediumVersion `json:"writes_on,omitempty"`
	Reads    []int           `json:"reads"`
}

type mediumVersion struct {
	Medium  string `json:"medium"`
	Version int    `json:"version"`
}

func currentVersion() versionInfo {
	// FORMAT.md, section 10: a reader reads every volume any earlier
	// version wrote; version 0 was never written.
	var volumeReads []int
	for v := 1; v <= volume.FormatVersion; v++ {
		volumeReads = append(volumeReads, v)
	}
	return versionInfo{
		Version: buildinfo.Version(), Commit: buildinfo.Commit(),
		Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		Volume: formatVersions{Writes: volume.FormatVersion, Reads: volumeReads, WritesOn: []mediumVersion{
			{Medium: "disk", Version: volume.FormatVersion}, {Medium: "tape", Version: volume.FormatVersion},
		}},
		IndexSegment:   formatVersions{Writes: fileindex.SegmentVersion, Reads: []int{fileindex.SegmentVersion}},
		CatalogCommand: formatVersions{Writes: catalog.CommandVersion, Reads: []int{catalog.CommandVersion}},
		Wire:           wire.Version,
	}
}

func runVersion(g *globals) error {
	v := currentVersion()
	if g.json {
		return printJSON(g.out, v)
	}
	fmt.Fprintf(g.out, "cairn %s\n", v.Version)
	for _, l := range [][2]any{
		{"commit", v.Commit},
		{"built with", fmt.Sprintf("%s %s/%s", v.Go, v.OS, v.Arch)},
		{"volume format", v.Volume},
		{"index segments", v.IndexSegment},
		{"catalog commands", v.CatalogCommand},
		{"wire messages", fmt.Sprintf("version %d", v.Wire)},
	} {
		fmt.Fprintf(g.out, "  %-18s%v\n", l[0], l[1])
	}
	return nil
}

func (f formatVersions) String() string {
	reads := fmt.Sprint(f.Reads[0])
	if n := len(f.Reads); n > 1 {
		reads = fmt.Sprintf("%d to %d", f.Reads[0], f.Reads[n-1])
	}
	if len(f.WritesOn) == 0 {
		return fmt.Sprintf("writes version %d, reads %s", f.Writes, reads)
	}
	var on []string
	for _, m := range f.WritesOn {
		on = append(on, fmt.Sprintf("%d on %s", m.Version, m.Medium))
	}
	return fmt.Sprintf("writes version %s, reads %s", strings.Join(on, ", "), reads)
}

// addVersion gives the root command --version, and the same as the command
// 'cairn version'; both take --json.
func addVersion(root *cobra.Command, g *globals) {
	var show bool
	root.Flags().BoolVar(&show, "version", false, "print the version, the commit and the format versions this build writes and reads")
	root.RunE = func(cmd *cobra.Command, args []string) error {
		if !show {
			return cmd.Help()
		}
		return runVersion(g)
	}
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the version, the commit and the format versions this build writes and reads",
		Args:  noArgs,
		RunE:  func(*cobra.Command, []string) error { return runVersion(g) },
	})
}
