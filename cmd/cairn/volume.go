package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/cairnbackup/cairn/agent"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/keyring"
	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/volchain"
	"github.com/cairnbackup/cairn/wire"
)

func newVolumeCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "volume", Short: "Volumes: list them, or read a volume file with no server"}
	var pool string
	list := &cobra.Command{
		Use:   "list",
		Short: "List volumes in the catalog",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runVolumeList(cmd.Context(), g, pool)
		},
	}
	list.Flags().StringVar(&pool, "pool", "", "only volumes of this pool")
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a volume of the catalog and the parts of sessions on it",
		Long: `Show a volume of the catalog (a tape by its barcode) and the parts of
backup sessions on it, in the order they lie there. A part marked TORN is one
in which the medium failed: it has no end marker, and its session goes on in
its next part, on another volume.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runVolumeShow(cmd.Context(), g, args[0])
		},
	}

	var keyFile string
	var sessionsOnly bool
	var s3 s3Source
	var lsAt, lsClient string
	ls := &cobra.Command{
		Use:   "ls FILE... --key-file KEYS",
		Short: "List the sessions and files on volume files, with no server or catalog",
		Long: `List the sessions and files on a volume file, with no server or catalog.
A volume of an S3 pool is read in place: give s3://BUCKET/PREFIX/NAME and
--s3-endpoint, with the credentials in --s3-credentials-file or the
environment. An emulated library's cartridge file (BARCODE.tape) is read
as a tape, in a drive of its own.

Given several volumes, or a directory of volume files (in any order; one
given twice is read once), it lists
the sessions they hold, each with its client, level and the volumes its parts
lie on, and needs no key. With --at (a session, or a time and, when the
volumes hold several clients, --client) it lists the files of the tree as it
was at that point: the chain of sessions it is made of (the full, the
differential after it, the incrementals after that), each file with the
session and volume it comes from and, for a large file an incremental kept
blocks of, the sessions and volumes those lie in. What the volumes given do
not hold is named, with what to give, and makes the exit code 1.

A session whose trailer is damaged, or that has none, is listed from its data
blocks (with a warning); entries damage cut are listed as LOST, and make the
exit code 1.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if st, err := os.Stat(args[0]); len(args) > 1 || lsAt != "" || err == nil && st.IsDir() {
				return runVolumeLsChain(cmd.Context(), g, args, keyFile, lsAt, lsClient, s3)
			}
			if lsClient != "" {
				return &usageError{errors.New("--client picks the client of --at TIME; give --at too")}
			}
			return runVolumeLs(cmd.Context(), g, args[0], keyFile, sessionsOnly, s3)
		},
	}
	ls.Flags().StringVar(&lsAt, "at", "", "list the tree as it was at this point: a session (its id or id prefix), or a time ("+atForms+")")
	ls.Flags().StringVar(&lsClient, "client", "", "with --at TIME: the client whose tree, when the volumes hold several")
	ls.Flags().StringVar(&keyFile, "key-file", "", "key file written by 'cairn key export'")
	ls.Flags().BoolVar(&sessionsOnly, "sessions", false, "list sessions only, not their files (needs no key)")
	s3.flags(ls)

	var xo extractOpts
	extract := &cobra.Command{
		Use:   "extract FILE --to DIR --key-file KEYS [--volume FILE...] [--at POINT] [PATH...]",
		Short: "Restore files from a volume file, with no server or catalog",
		Long: `Restore files from a volume file with no server or catalog, as bextract does.

Every session on the volumes given is read in the order they were made, so a
later session's version of a file replaces an earlier one (and a file a later
session marks deleted still comes from the one before); --session reads one
session's own entries. --at reads the tree as it was at a point (a session, or
a time and, when the volumes hold several clients, --client): the chain of
sessions it is made of, the full, the differential after it, the incrementals
after that, where a deleted file stays deleted. An incremental stores only the
changed blocks of a large file and finds the others in the sessions before
it: give the volumes that hold them with --volume (FILE and the volumes are
one pile: their order does not matter, one given twice is read once, and a
directory stands for the volume files in it), and
the file is assembled from all of them and checked against the SHA-256 of its
content. When a session needed, or a part of one, is on no volume given,
nothing is extracted: the error names it, the files that need it, what the
volumes given say of where it lies, and what to give. Files land under DIR
with their full original path. Block and character device nodes are created
only with --devices (as root, for a volume you trust); without it each is left
out, named, and the command exits non-zero.

Keys come from --key-file: each session is read with the key its part header
names, and only the sessions read need theirs.

A damaged volume is read as far as it goes: past a damaged label, part header
or trailer (with a warning), and past damaged blocks. Every entry that cannot
be extracted whole is named with the reason, the summary counts what was
extracted and what was not, and the exit code is 1 when anything asked for was
not extracted.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if xo.to == "" {
				return &usageError{errors.New("pass --to DIR")}
			}
			xo.file, xo.paths, xo.keyFile = args[0], args[1:], keyFile
			return runVolumeExtract(cmd.Context(), g, xo)
		},
	}
	extract.Flags().StringVar(&keyFile, "key-file", "", "key file written by 'cairn key export'")
	extract.Flags().StringVar(&xo.to, "to", "", "directory to restore into")
	extract.Flags().StringVar(&xo.session, "session", "", "read only this session's own entries (its id or id prefix)")
	extract.Flags().StringVar(&xo.at, "at", "", "the tree as it was at this point: a session (its id or id prefix), whose chain is read, or a time ("+atForms+")")
	extract.Flags().StringVar(&xo.client, "client", "", "with --at TIME: the client whose tree, when the volumes hold several")
	extract.Flags().BoolVar(&xo.force, "force", false, "restore into a directory that is not empty")
	extract.Flags().BoolVar(&xo.devices, "devices", false, "create block and character device nodes (refused without it: only for a volume you trust)")
	xo.s3.flags(extract)
	extract.Flags().StringArrayVar(&xo.volumes, "volume", nil, "another volume file of the chain, read with FILE (repeat it): an incremental's large files keep blocks of earlier sessions")
	c.AddCommand(list, show, ls, extract)
	return c
}

// offlineVolume is a volume file opened with no catalog.
type offlineVolume struct {
	f     io.ReaderAt
	close func() error
	vol   *volume.Volume
	parts []volume.PartInfo
	keys  *keyring.File
	path  string
}

func openOffline(ctx context.Context, path, keyFile string, needKeys bool, s3 s3Source) (*offlineVolume, error) {
	const whereVolumes = "give the path of a volume file (NAME.cvol), an emulated tape cartridge file (BARCODE.tape), or s3://BUCKET/PREFIX/NAME with --s3-endpoint for a volume in an S3 pool; 'cairn volume list' shows where each volume is"
	var f interface {
		io.ReaderAt
		io.Closer
	}
	var size int64
	if strings.HasPrefix(path, "s3://") {
		r, err := s3.open(ctx, path)
		if err != nil {
			return nil, err
		}
		f, size = r, r.Size()
	} else if tape.IsCartridgeFile(path) {
		c, err := tape.OpenCartridge(ctx, path)
		if errors.Is(err, tape.ErrBusy) {
			return nil, wire.Errorf(wire.CodeIO, "read a copy of the cartridge file, or unload it from its drive first", "%w", err)
		}
		if err != nil {
			return nil, wire.Errorf(wire.CodeCorrupt, whereVolumes, "%w", err)
		}
		f, size = c, c.Size()
	} else {
		osf, err := os.Open(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, wire.Errorf(wire.CodeNotFound, whereVolumes, "open volume file: %w", err)
		}
		if err != nil {
			return nil, wire.Errorf(wire.CodeIO, whereVolumes, "open volume file: %w", err)
		}
		st, err := osf.Stat()
		if err != nil {
			osf.Close()
			return nil, wire.Errorf(wire.CodeIO, whereVolumes, "volume file %s: %w", path, err)
		}
		f, size = osf, st.Size()
	}
	vol, err := volume.OpenVolume(f, size)
	if err != nil {
		f.Close()
		switch {
		case errors.Is(err, volume.ErrNotVolume):
			// Most likely the wrong file, not a damaged volume.
			return nil, wire.Errorf(wire.CodeInvalidArgument, whereVolumes, "%s: %w", path, err)
		case errors.Is(err, volume.ErrNewerFormat):
			return nil, wire.Errorf(wire.CodeUnsupportedVersion, "upgrade this program to a version that reads the volume's format", "%s: %w", path, err)
		}
		return nil, wire.Errorf(wire.CodeCorrupt, whereVolumes, "%s: %w", path, err)
	}
	parts, err := vol.Parts()
	if err != nil {
		f.Close()
		return nil, wire.Errorf(wire.CodeCorrupt, "the volume is damaged where the message says; restore from another backup or copy of it",
			"%s: %w", path, err)
	}
	ov := &offlineVolume{f: f, close: f.Close, vol: vol, parts: parts, path: path}
	if keyFile != "" {
		if ov.keys, err = keyring.ReadFile(keyFile); err != nil {
			f.Close()
			return nil, wire.Errorf(wire.CodeKey, "pass --key-file with the file 'cairn key export' wrote", "%w", err)
		}
	} else if needKeys && len(parts) > 0 {
		f.Close()
		return nil, wire.Errorf(wire.CodeKey, "pass --key-file with the file 'cairn key export' wrote",
			"the sessions on %s are encrypted with key %q; no key file given", path, parts[0].Header.KeyID)
	}
	return ov, nil
}

func (ov *offlineVolume) Close() error { return ov.close() }

// damage says what is damaged on the volume outside the sessions' data:
// the label, bytes that hold no part, a volume cut short, part headers.
// Reading goes on past all of it; the user is told.
func (ov *offlineVolume) damage() []string {
	var out []string
	for _, d := range ov.vol.Damaged() {
		out = append(out, fmt.Sprintf("%s: %v", ov.path, d))
	}
	for i := range ov.parts {
		if p := &ov.parts[i]; p.HeaderLost {
			out = append(out, fmt.Sprintf("%s: %v", ov.path, p.Damaged[0]))
		}
	}
	return out
}

func (ov *offlineVolume) warnDamage(g *globals) []string {
	ws := ov.damage()
	for _, w := range ws {
		fmt.Fprintf(g.errOut, "warning: %s\n", printable(w))
	}
	return ws
}

// key finds a part's key in the key file and checks it is the right one.
func (ov *offlineVolume) key(p *volume.PartInfo) (*volume.Key, error) {
	id := p.Header.KeyID
	material, ok := ov.keys.Lookup(id)
	if !ok {
		return nil, wire.Errorf(wire.CodeKey, "export the keys again with 'cairn key export', or find the escrow copy that holds this key",
			"session %s on %s needs key %q, which the key file does not hold (it holds: %s)",
			p.Header.SessionID, ov.path, id, strings.Join(ov.keys.IDs(), ", "))
	}
	k := &volume.Key{ID: id, Material: material}
	if err := p.Header.CheckKey(k); err != nil {
		return nil, wire.Errorf(wire.CodeKey, "the key file holds a different key under that id; find the escrow copy from when the volume was written",
			"%w", err)
	}
	return k, nil
}

// index reads a part's file index (the trailer, or rebuilt from the data
// blocks) and returns it with the key that reads the part. A part whose
// header is lost no longer names its key: each key of the key file is
// tried, and the one that decrypts the part is it.
func (ov *offlineVolume) index(ctx context.Context, p *volume.PartInfo) (*volume.PartIndex, *volume.Key, error) {
	if p.Torn && p.End <= p.DataStart {
		pi, err := volume.ReadPartIndex(ctx, ov.f, nil, *p) // nothing to read, no key needed
		return pi, nil, err
	}
	if !p.HeaderLost {
		key, err := ov.key(p)
		if err != nil {
			return nil, nil, err
		}
		pi, err := volume.ReadPartIndex(ctx, ov.f, key, *p)
		if err != nil {
			return nil, nil, fmt.Errorf("session %s: %w", p.Header.SessionID, err)
		}
		return pi, key, nil
	}
	for _, id := range ov.keys.IDs() {
		material, _ := ov.keys.Lookup(id)
		key := &volume.Key{ID: id, Material: material}
		pi, err := volume.ReadPartIndex(ctx, ov.f, key, *p)
		var ke *volume.KeyError
		if errors.As(err, &ke) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("session %s: %w", p.Header.SessionID, err)
		}
		return pi, key, nil
	}
	return nil, nil, wire.Errorf(wire.CodeKey, "find the escrow copy of the key the session was written with",
		"session %s on %s: its part header, which named its key, is damaged, and no key in the key file (%s) decrypts it",
		p.Header.SessionID, ov.path, strings.Join(ov.keys.IDs(), ", "))
}

func (ov *offlineVolume) opener() volume.Opener {
	id := ov.vol.Label().VolumeID
	return func(v uuid.UUID) (io.ReaderAt, error) {
		if v != id {
			return nil, fmt.Errorf("the session continues on volume %s, which is not this file", v)
		}
		return struct{ io.ReaderAt }{ov.f}, nil // hide Close: the file outlives each reader
	}
}

// lostEntry is an entry that a listing or an extract asked for and could
// not produce.
type lostEntry struct {
	Session uuid.UUID `json:"session"`
	Path    string    `json:"path"`
	Reason  string    `json:"reason"`
}

type sessionListing struct {
	Session uuid.UUID `json:"session"`
	Part    int       `json:"part"`
	JobID   uint64    `json:"job_id"`
	Client  string    `json:"client"`
	Level   string    `json:"level"`
	Created time.Time `json:"created"`
	KeyID   string    `json:"key_id"`
	// Compression is what the part's writer aimed at (zstd, s2 or none;
	// empty when the part header is lost): s2 needs a reader of volume
	// format 5.
	Compression string            `json:"compression,omitempty"`
	State       string            `json:"state"`
	Offset      int64             `json:"offset"`
	Bytes       int64             `json:"bytes"`
	Entries     []fileindex.Entry `json:"entries,omitempty"`
	// Index says where the entries come from when not from the trailer.
	Index string `json:"index,omitempty"`
	// Lost are entries whose records damage cut; Unnamed counts those the
	// session had and no block read names (-1: unknown).
	Lost      []lostEntry `json:"lost,omitempty"`
	Unnamed   int64       `json:"unnamed_lost,omitempty"`
	Continues []string    `json:"continues,omitempty"`
}

func partState(p *volume.PartInfo) string {
	var s string
	switch {
	case p.Torn:
		s = "torn: " + p.TornReason
	case p.PartEnd != nil && !p.PartEnd.Final:
		s = "continues on another volume"
	default:
		s = "complete"
	}
	if p.HeaderLost {
		s += ", part header damaged"
	}
	if n := len(p.Damaged); n > 0 && !p.HeaderLost || n > 1 {
		s += fmt.Sprintf(", damaged at %d places", n)
	}
	return s
}

func runVolumeLs(ctx context.Context, g *globals, path, keyFile string, sessionsOnly bool, s3 s3Source) error {
	ov, err := openOffline(ctx, path, keyFile, !sessionsOnly, s3)
	if err != nil {
		return err
	}
	defer ov.Close()
	warnings := ov.warnDamage(g)
	l := ov.vol.Label()
	var out []sessionListing
	var lost []lostEntry
	var unnamed int64
	for i := range ov.parts {
		p := &ov.parts[i]
		s := sessionListing{
			Session: p.Header.SessionID, Part: p.Header.Part, JobID: p.Header.JobID, Client: p.Header.Client,
			Level: p.Header.Level, Created: p.Header.Created, KeyID: p.Header.KeyID, Compression: p.Header.Compression, State: partState(p),
			Offset: p.VolumeStart, Bytes: p.End - p.VolumeStart,
		}
		if !sessionsOnly {
			pi, key, err := ov.index(ctx, p)
			if err != nil {
				return err
			}
			s.Entries = pi.Entries
			if key != nil {
				s.KeyID = key.ID
			}
			if pi.Rebuilt {
				s.Index = "rebuilt from the data blocks: " + pi.Why
			}
			if pi.Rebuilt && (p.PartEnd == nil || p.PartEnd.Final) {
				w := fmt.Sprintf("session %s: the index is %s", p.Header.SessionID, s.Index)
				warnings = append(warnings, w)
				fmt.Fprintf(g.errOut, "warning: %s\n", printable(w))
			}
			for _, le := range pi.Lost {
				s.Lost = append(s.Lost, lostEntry{Session: p.Header.SessionID, Path: le.Path, Reason: le.Reason})
			}
			for _, c := range pi.Continues {
				s.Continues = append(s.Continues, c.Path)
			}
			s.Unnamed = pi.Unnamed
			lost = append(lost, s.Lost...)
			unnamed += max(pi.Unnamed, 0)
		}
		out = append(out, s)
	}
	if g.json {
		if err := printJSON(g.out, map[string]any{"label": l, "sessions": out, "warnings": warnings}); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(g.out, "volume %s (%s) pool %s, format %d, block size %d, parts on multiples of %d, created %s, %d session parts\n",
			l.Name, l.VolumeID, l.Pool, l.FormatVersion, l.BlockSize, l.PartAlignment(), humanTime(l.Created), len(out))
		for _, s := range out {
			if s.Session == uuid.Nil {
				// Torn inside its header: nothing says whose it was.
				fmt.Fprintf(g.out, "\npart at offset %d: %s\n", s.Offset, s.State)
				continue
			}
			fmt.Fprintf(g.out, "\nsession %s part %d: job %d, client %s, %s, %s, %s at offset %d, key %s, compression %s\n",
				s.Session, s.Part, s.JobID, s.Client, s.Level, humanTime(s.Created), s.State, s.Offset, s.KeyID, dash(s.Compression))
			if sessionsOnly {
				continue
			}
			t := newTable(g.out, "MODE", "OWNER", "SIZE", "MODIFIED", "PATH")
			for _, e := range s.Entries {
				name := e.Path
				switch e.Type {
				case fileindex.TypeSymlink:
					name += " -> " + e.Target
				case fileindex.TypeHardlink:
					name += " => " + e.Target
				case fileindex.TypeDeleted:
					name += " (deleted)"
				}
				t.row(modeString(e.Type.String(), e.Mode), fmt.Sprintf("%d:%d", e.UID, e.GID), humanBytes(e.Size), humanTime(time.Unix(0, e.MTime)), name)
			}
			t.flush()
			for _, c := range s.Continues {
				fmt.Fprintf(g.out, "%s (goes on on the session's next volume)\n", printable(c))
			}
			for _, le := range s.Lost {
				fmt.Fprintf(g.out, "LOST %s: %s\n", printable(le.Path), le.Reason)
			}
			if s.Unnamed > 0 {
				fmt.Fprintf(g.out, "LOST %d more entries, whose headers were in damaged blocks\n", s.Unnamed)
			}
		}
	}
	return lostError(lost, unnamed, nil, "cannot be read whole")
}

// lostError is the error a command that could not produce every entry
// asked for ends with: it names each, counts those whose names are lost
// too, adds the notes (losses it cannot count), and makes the exit code
// non-zero.
func lostError(lost []lostEntry, unnamed int64, notes []string, what string) error {
	if len(lost) == 0 && unnamed == 0 && len(notes) == 0 {
		return nil
	}
	lines := make([]string, 0, len(lost)+1+len(notes))
	for _, l := range lost {
		lines = append(lines, printable(l.Path)+": "+l.Reason)
	}
	sort.Strings(lines)
	if unnamed > 0 {
		lines = append(lines, fmt.Sprintf("%d entries whose headers were in damaged blocks, so their names are lost too", unnamed))
	}
	lines = append(lines, notes...)
	head := "the volume is damaged, and what it lost cannot be named"
	if n := int64(len(lost)) + unnamed; n > 0 {
		head = fmt.Sprintf("%d entries %s because their data is damaged", n, what)
	}
	return wire.Errorf(wire.CodeCorrupt, "", "%s:\n  %s", head, strings.Join(lines, "\n  "))
}

// mayHoldAfter tells whether entries selected by paths may sort after
// last in index order: what a part torn after last would have lost. A
// directory's entries follow it contiguously, so only a path after last,
// or one last lies within, may.
func mayHoldAfter(paths []string, last string) bool {
	if len(paths) == 0 || last == "" {
		return true
	}
	for _, q := range paths {
		if fileindex.Compare(q, last) > 0 || fileindex.Within(last, q) {
			return true
		}
	}
	return false
}

// unnamedLoss says what a part lost that no entry name says: the data
// after a tear, and the entries whose headers were in damaged data blocks
// when the PartEnd does not count them. Empty when nothing such is lost,
// or nothing of it can be among paths.
func unnamedLoss(p *volume.PartInfo, pi *volume.PartIndex, paths []string) []string {
	var out []string
	last := ""
	for _, e := range pi.Entries {
		last = e.Path
	}
	for _, l := range pi.Lost {
		if fileindex.Compare(l.Path, last) > 0 {
			last = l.Path
		}
	}
	if p.Torn && mayHoldAfter(paths, last) {
		what := "session " + p.Header.SessionID.String()
		if p.Header.SessionID == uuid.Nil {
			what = fmt.Sprintf("the part at offset %d", p.VolumeStart)
		}
		out = append(out, fmt.Sprintf("%s is torn (%s): what it held after that is not on this volume, and cannot be named", what, p.TornReason))
	}
	if pi.Unnamed < 0 && len(paths) == 0 {
		n := 0
		for _, d := range pi.Damaged {
			if p.PartEnd == nil || !p.PartEnd.Final || d.Seq < p.PartEnd.IndexFirstSeq {
				n++ // a data block, not the trailer
			}
		}
		if n > 0 {
			out = append(out, fmt.Sprintf("session %s: %d data blocks are damaged; entries whose headers were in them cannot be named", p.Header.SessionID, n))
		}
	}
	return out
}

// countVolumeEntries reads a volume's file indexes with a key file, as
// 'cairn volume ls' does.
func countVolumeEntries(path, keyFile string) (int, error) {
	ov, err := openOffline(context.Background(), path, keyFile, true, s3Source{})
	if err != nil {
		return 0, err
	}
	defer ov.Close()
	n := 0
	for i := range ov.parts {
		pi, _, err := ov.index(context.Background(), &ov.parts[i])
		if err != nil {
			return 0, err
		}
		n += len(pi.Entries)
	}
	return n, nil
}

type extractOpts struct {
	file, keyFile, to, session string
	// at is a point in time (a session, or a time), of client's chain.
	at, client     string
	paths          []string
	force, devices bool
	s3             s3Source
	// volumes are the other volumes of the chain: where the blocks of
	// large files that the sessions kept from earlier ones lie.
	volumes []string
}

// extractSummary is what 'volume extract --json' prints: the restore's
// counts, and how many of the entries asked for were not extracted.
type extractSummary struct {
	agent.RestoreStats
	Asked        int64       `json:"asked"`
	NotExtracted int64       `json:"not_extracted"`
	Lost         []lostEntry `json:"lost,omitempty"`
	VolumeDamage []string    `json:"volume_damage,omitempty"`
}

func runVolumeExtract(ctx context.Context, g *globals, o extractOpts) error {
	if o.at != "" && o.session != "" {
		return &usageError{errors.New("--at and --session: give one (--at is the tree as of a point in time, --session one session's own entries)")}
	}
	vs, err := openSet(ctx, g, append([]string{o.file}, o.volumes...), o.keyFile, true, o.s3)
	if err != nil {
		return err
	}
	defer vs.Close()
	damage := vs.damage
	// Every key is checked, and every volume needed found, before anything
	// is written, so a wrong key or a volume not given leaves no partial
	// files behind.
	type job struct {
		ov   *offlineVolume
		p    *volume.PartInfo
		key  *volume.Key
		locs []fileindex.Location
		// paths are the file each location is of; blocks, for the
		// locations of blocks, where they go.
		paths  []string
		blocks map[int]*volume.BlockStart
		ents   []fileindex.Entry
		// refs are the session's parts given, on any of the volumes.
		refs []volume.PartRef
	}
	// The sessions whose entries are extracted: with --at the chain of
	// that point in time, which is the tree as it was then (a later
	// session's version of a file replaces an earlier one, a deletion
	// removes it); with --session that session; else every session, in
	// the order they were made.
	sessions := vs.set.Sessions
	switch {
	case o.at != "":
		at, err := vs.point(o.at, o.client)
		if err != nil {
			return err
		}
		if sessions, err = vs.chain(at); err != nil {
			return err
		}
	case o.session != "":
		sessions = slices.DeleteFunc(slices.Clone(sessions), func(ss *volchain.Session) bool {
			return !strings.HasPrefix(ss.ID.String(), o.session)
		})
	case o.client != "":
		return &usageError{errors.New("--client picks the client of --at TIME; give --at too")}
	}
	// A session a part of which is not given is read from what is; what
	// lies in the parts not given is named, with the files that need it.
	var miss volchain.MissingError
	absent := map[uuid.UUID]*volchain.Session{}
	for _, ss := range sessions {
		if ss.Absent() != "" {
			absent[ss.ID] = ss
		}
	}
	var jobs []*job
	var lost []lostEntry // asked for and not extracted
	var notes []string   // losses no entry name says
	var unnamed, asked int64
	sel := fileindex.WithinAny(o.paths)
	type at struct{ job, ent int }
	newest := map[string]at{}
	for _, ss := range sessions {
		for _, rd := range vs.reads(ss) {
			j := &job{ov: rd.ov, p: rd.p, refs: rd.refs}
			p := j.p
			pi, key, err := j.ov.index(ctx, p)
			if err != nil {
				return err
			}
			if pi.Rebuilt && (p.PartEnd == nil || p.PartEnd.Final) {
				fmt.Fprintf(g.errOut, "warning: session %s: the index is rebuilt from the data blocks: %s\n", p.Header.SessionID, pi.Why)
			}
			j.key = key
			for _, e := range pi.Entries {
				if !sel(&e) {
					continue
				}
				if e.Type == fileindex.TypeDeleted {
					if o.at != "" {
						delete(newest, e.Path) // not in the tree at that point
					}
					continue
				}
				newest[e.Path] = at{len(jobs), len(j.ents)}
				j.ents = append(j.ents, e)
			}
			for _, l := range pi.Lost {
				if sel(&fileindex.Entry{Path: l.Path}) {
					lost = append(lost, lostEntry{Session: p.Header.SessionID, Path: l.Path, Reason: l.Reason})
				}
			}
			for _, l := range pi.Continues {
				if !sel(&fileindex.Entry{Path: l.Path}) {
					continue
				}
				if a := absent[ss.ID]; a != nil {
					miss.Add(volchain.Missing{Session: a.ID, Known: a}, volchain.Need{Session: a.ID, Path: l.Path})
				} else {
					lost = append(lost, lostEntry{Session: p.Header.SessionID, Path: l.Path, Reason: l.Reason})
				}
			}
			if pi.Unnamed > 0 && len(o.paths) == 0 {
				// Whether they are among the paths asked for is lost with
				// their names; asked for everything, they are.
				unnamed += pi.Unnamed
			}
			notes = append(notes, unnamedLoss(p, pi, o.paths)...)
			jobs = append(jobs, j)
		}
	}
	// The job that reads the part holding a block kept from an earlier
	// session: the job of that session's entries when it reads that
	// part, else a job of its own, which reads only blocks.
	source := func(part volchain.Part) (*job, error) {
		for _, k := range jobs {
			if k.p.Header.SessionID == part.Info.Header.SessionID && slices.ContainsFunc(k.refs, func(r volume.PartRef) bool {
				return r.VolumeID == part.Info.VolumeID && r.DataStart == part.Info.DataStart
			}) {
				return k, nil
			}
		}
		k := &job{ov: vs.of(part), p: part.Info, refs: vs.run(part)}
		var err error
		if part.Info.HeaderLost {
			_, k.key, err = k.ov.index(ctx, part.Info)
		} else {
			k.key, err = k.ov.key(part.Info)
		}
		if err != nil {
			return nil, err
		}
		jobs = append(jobs, k)
		return k, nil
	}
	// The blocks a large file kept from earlier sessions come from the
	// parts that hold them, and its earlier versions are not read: they
	// would be replaced, and their data is where the blocks are read.
	for ji := 0; ji < len(jobs); ji++ {
		j := jobs[ji]
		for ei, e := range j.ents {
			if n := newest[e.Path]; n != (at{ji, ei}) {
				if o.at != "" {
					continue // replaced, or deleted, by the time asked for
				}
				if bl := jobs[n.job].ents[n.ent].Blocks; bl != nil && len(bl.Sessions) > 0 {
					continue
				}
			}
			// An entry lies where its FileHeader is: in a part of its
			// session this read does not hold (one cut short before the
			// rest), a part not given, or past a cut.
			into := j
			if sid := j.p.Header.SessionID; !covers(j.refs, e.Loc.Off) || absent[sid] != nil {
				part, err := vs.set.Locate(sid, e.Loc.Off, e.Loc.Seq, e.Loc.EndSeq)
				var me *volchain.MissingError
				var ce *volchain.CutError
				switch {
				case errors.As(err, &me):
					miss.Add(me.Missing[0], volchain.Need{Session: sid, Path: e.Path})
				case errors.As(err, &ce):
					lost = append(lost, lostEntry{Session: sid, Path: e.Path, Reason: ce.Error()})
					continue
				case err != nil:
					return err
				case !covers(j.refs, e.Loc.Off):
					if into, err = source(part); err != nil {
						return err
					}
				}
			}
			into.locs = append(into.locs, e.Loc)
			into.paths = append(into.paths, e.Path)
			asked++
			if e.Blocks == nil {
				continue
			}
			offs := e.Blocks.Offsets()
			cut := map[uuid.UUID]string{}
			for bi, b := range e.Blocks.Blocks {
				off := offs[bi]
				if b.Session == 0 {
					continue
				}
				sid := uuid.UUID(e.Blocks.SessionOf(bi, [16]byte{}))
				part, err := vs.set.Locate(sid, b.Loc.Off, b.Loc.Seq, b.Loc.EndSeq)
				var me *volchain.MissingError
				var ce *volchain.CutError
				switch {
				case errors.As(err, &me):
					miss.Add(me.Missing[0], volchain.Need{Session: j.p.Header.SessionID, Path: e.Path})
					continue
				case errors.As(err, &ce):
					cut[sid] = ce.Error()
					continue
				case err != nil:
					return err
				}
				in, err := source(part)
				if err != nil {
					return err
				}
				if in.blocks == nil {
					in.blocks = map[int]*volume.BlockStart{}
				}
				found := false
				for i, l := range in.locs {
					if bs := in.blocks[i]; bs != nil && bs.Path == e.Path && l.Seq == b.Loc.Seq && l.InBlock == b.Loc.InBlock {
						bs.At, found = append(bs.At, off), true
						break
					}
				}
				if !found {
					in.blocks[len(in.locs)] = &volume.BlockStart{Path: e.Path, Len: b.Loc.Len, At: []int64{off}}
					in.locs = append(in.locs, b.Loc)
					in.paths = append(in.paths, e.Path)
				}
			}
			for _, why := range cut {
				asked-- // counted above, and again with the lost below
				lost = append(lost, lostEntry{Session: j.p.Header.SessionID, Path: e.Path, Reason: "blocks of it are lost: " + why})
				break
			}
		}
	}
	for _, a := range absent {
		if a.Final() == nil {
			// Its index is in the part not given: what the parts not
			// given hold cannot be named, and may be asked for.
			miss.Add(volchain.Missing{Session: a.ID, Known: a})
		}
	}
	if len(miss.Missing) > 0 {
		return vs.missingError(&miss)
	}
	jobs = slices.DeleteFunc(jobs, func(j *job) bool { return len(j.locs) == 0 })
	asked += int64(len(lost)) + unnamed
	if len(jobs) == 0 && asked == 0 && len(notes) == 0 {
		on := o.file
		if len(o.volumes) > 0 {
			on = "the volumes given"
		}
		if o.session != "" {
			return wire.Errorf(wire.CodeNotFound, "list the sessions with 'cairn volume ls --sessions'", "no session %s on %s holds what was asked", o.session, on)
		}
		return wire.Errorf(wire.CodeNotFound, "list the files with 'cairn volume ls'", "nothing on %s matches %s", on, strings.Join(o.paths, ", "))
	}
	r, err := agent.NewRestorer(agent.RestoreOptions{Root: o.to, Force: o.force, Devices: o.devices})
	if err != nil {
		var ne *agent.TargetNotEmptyError
		if errors.As(err, &ne) {
			return wire.Errorf(wire.CodeTargetNotEmpty, "", "%w", err)
		}
		return err
	}
	t0 := time.Now()
	for _, j := range jobs {
		sid := j.p.Header.SessionID
		sr := volume.NewSessionReader(sid, j.key, j.refs, vs.opener(), volume.ReaderOptions{Workers: 2})
		record := func(t volume.RecordType, body []byte) error {
			if t != volume.RecBlockStart {
				return r.Record(t, body)
			}
			i, err := volume.BlockIndex(body)
			if err != nil || j.blocks[i] == nil {
				return fmt.Errorf("session %s: the reader announced a block not asked for", sid)
			}
			return r.Record(t, volume.AppendBlockStartBody(nil, j.blocks[i]))
		}
		err := sr.ReadEntries(ctx, j.locs, record, func(cbe *volume.CorruptBlockError) error {
			for i, l := range j.locs {
				if l.Seq <= cbe.Seq && cbe.Seq <= l.EndSeq {
					r.Damaged(j.paths[i], cbe.Error())
				}
			}
			return nil
		})
		sr.Close()
		var le *volume.LostEntriesError
		if errors.As(err, &le) {
			// The reader names every entry it could not pass on whole.
			at := map[fileindex.Location][]string{}
			for i, l := range j.locs {
				at[l] = append(at[l], j.paths[i])
			}
			for _, l := range le.Lost {
				for _, p := range at[l.Loc] {
					r.Damaged(p, l.Reason)
					lost = append(lost, lostEntry{Session: sid, Path: p, Reason: l.Reason})
				}
			}
			err = nil
		}
		if err != nil {
			r.Finish()
			return fmt.Errorf("session %s: %w", sid, err)
		}
	}
	for _, l := range lost {
		r.Damaged(l.Path, l.Reason) // the restorer removes what it began of it
	}
	st, err := r.Finish()
	if err != nil {
		return err
	}
	// The restorer finds damage of its own too (a hash that does not
	// match, a hard link to a lost file).
	named := map[string]bool{}
	for _, l := range lost {
		named[l.Path] = true
	}
	for _, d := range st.Damaged {
		if !named[d.Path] {
			named[d.Path] = true
			lost = append(lost, lostEntry{Path: d.Path, Reason: d.Reason})
		}
	}
	sum := extractSummary{RestoreStats: st, Asked: asked, NotExtracted: int64(len(lost)) + unnamed, Lost: lost, VolumeDamage: damage}
	extracted := st.Files + st.Dirs + st.Links + st.Specials
	if g.json {
		if err := printJSON(g.out, sum); err != nil {
			return err
		}
	} else {
		specials, missing := "", ""
		if st.Specials > 0 {
			specials = fmt.Sprintf(", %d special files", st.Specials)
		}
		if sum.NotExtracted > 0 {
			missing = fmt.Sprintf("; %d not extracted (damaged)", sum.NotExtracted)
		}
		if st.Refused > 0 {
			missing += fmt.Sprintf("; %d refused (the warnings say why)", st.Refused)
		}
		fmt.Fprintf(g.out, "extracted %d of %d entries (%d files, %d directories, %d links%s, %s) in %s%s\n",
			extracted, asked, st.Files, st.Dirs, st.Links, specials, humanBytes(st.Bytes), humanDuration(time.Since(t0)), missing)
		for _, w := range st.Warnings {
			fmt.Fprintf(g.out, "warning: %s: %s\n", printable(w.Path), w.Err)
		}
	}
	if err := lostError(lost, unnamed, notes, "were not extracted"); err != nil {
		return err
	}
	if st.Refused > 0 {
		return wire.Errorf(wire.CodeRefused, "", "%d entries were not extracted (refused, or the target would not take them); the warnings name each and why", st.Refused)
	}
	return nil
}
