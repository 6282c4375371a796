package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/cairnbackup/cairn/agent"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/keyring"
	"github.com/cairnbackup/cairn/media/volume"
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

	var keyFile string
	var sessionsOnly bool
	ls := &cobra.Command{
		Use:   "ls FILE --key-file KEYS",
		Short: "List the sessions and files on a volume file, with no server or catalog",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runVolumeLs(cmd.Context(), g, args[0], keyFile, sessionsOnly)
		},
	}
	ls.Flags().StringVar(&keyFile, "key-file", "", "key file written by 'cairn key export'")
	ls.Flags().BoolVar(&sessionsOnly, "sessions", false, "list sessions only, not their files (needs no key)")

	var xo extractOpts
	extract := &cobra.Command{
		Use:   "extract FILE --to DIR --key-file KEYS [PATH...]",
		Short: "Restore files from a volume file, with no server or catalog",
		Long: `Restore files from a volume file with no server or catalog, as bextract does.

Every session on the volume is read in order, so a later session's version of
a file replaces an earlier one; --session picks one. Files land under DIR
with their full original path. Block and character device nodes are created
only with --devices (as root, for a volume you trust); without it each is left
out, named, and the command exits non-zero.`,
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
	extract.Flags().StringVar(&xo.session, "session", "", "read only this session (its id or id prefix)")
	extract.Flags().BoolVar(&xo.force, "force", false, "restore into a directory that is not empty")
	extract.Flags().BoolVar(&xo.devices, "devices", false, "create block and character device nodes (refused without it: only for a volume you trust)")
	c.AddCommand(list, ls, extract)
	return c
}

// offlineVolume is a volume file opened with no catalog.
type offlineVolume struct {
	f     *os.File
	vol   *volume.Volume
	parts []volume.PartInfo
	keys  *keyring.File
	path  string
}

func openOffline(path, keyFile string, needKeys bool) (*offlineVolume, error) {
	const whereVolumes = "give the path of a volume file (NAME.cvol); 'cairn volume list' shows where each volume is"
	f, err := os.Open(path)
	if err != nil {
		return nil, wire.Errorf(wire.CodeIO, whereVolumes, "open volume file: %v", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, wire.Errorf(wire.CodeIO, whereVolumes, "volume file %s: %v", path, err)
	}
	vol, err := volume.OpenVolume(f, st.Size())
	if err != nil {
		f.Close()
		return nil, wire.Errorf(wire.CodeCorrupt, whereVolumes, "%s: %v", path, err)
	}
	parts, err := vol.Parts()
	if err != nil {
		f.Close()
		return nil, wire.Errorf(wire.CodeCorrupt, "the volume is damaged where the message says; restore from another backup or copy of it",
			"%s: %v", path, err)
	}
	ov := &offlineVolume{f: f, vol: vol, parts: parts, path: path}
	if keyFile != "" {
		if ov.keys, err = keyring.ReadFile(keyFile); err != nil {
			f.Close()
			return nil, wire.Errorf(wire.CodeKey, "pass --key-file with the file 'cairn key export' wrote", "%v", err)
		}
	} else if needKeys && len(parts) > 0 {
		f.Close()
		return nil, wire.Errorf(wire.CodeKey, "pass --key-file with the file 'cairn key export' wrote",
			"the sessions on %s are encrypted with key %q; no key file given", path, parts[0].Header.KeyID)
	}
	return ov, nil
}

func (ov *offlineVolume) Close() error { return ov.f.Close() }

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
			"%v", err)
	}
	return k, nil
}

// entries returns a part's file index: the trailer of a final part, or
// what the data blocks say for a part without one.
func (ov *offlineVolume) entries(ctx context.Context, p *volume.PartInfo, key *volume.Key) ([]fileindex.Entry, bool, error) {
	if p.PartEnd != nil && p.PartEnd.Final {
		it, err := volume.ReadIndex(ov.f, key, *p)
		if err != nil {
			return nil, false, err
		}
		es, err := fileindex.Collect(it)
		return es, false, err
	}
	r := volume.NewSessionReader(p.Header.SessionID, key, []volume.PartRef{p.Ref()}, ov.opener(), volume.ReaderOptions{})
	defer r.Close()
	var es []fileindex.Entry
	err := r.RecoverIndex(ctx, func(e fileindex.Entry) error {
		es = append(es, e)
		return nil
	}, func(*volume.CorruptBlockError) error { return nil })
	return es, true, err
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

type sessionListing struct {
	Session uuid.UUID         `json:"session"`
	Part    int               `json:"part"`
	JobID   uint64            `json:"job_id"`
	Client  string            `json:"client"`
	Level   string            `json:"level"`
	Created time.Time         `json:"created"`
	KeyID   string            `json:"key_id"`
	State   string            `json:"state"`
	Offset  int64             `json:"offset"`
	Bytes   int64             `json:"bytes"`
	Entries []fileindex.Entry `json:"entries,omitempty"`
}

func partState(p *volume.PartInfo) string {
	switch {
	case p.Torn:
		return "torn: " + p.TornReason
	case p.PartEnd != nil && !p.PartEnd.Final:
		return "continues on another volume"
	}
	return "complete"
}

func runVolumeLs(ctx context.Context, g *globals, path, keyFile string, sessionsOnly bool) error {
	ov, err := openOffline(path, keyFile, !sessionsOnly)
	if err != nil {
		return err
	}
	defer ov.Close()
	l := ov.vol.Label()
	var out []sessionListing
	for i := range ov.parts {
		p := &ov.parts[i]
		s := sessionListing{
			Session: p.Header.SessionID, Part: p.Header.Part, JobID: p.Header.JobID, Client: p.Header.Client,
			Level: p.Header.Level, Created: p.Header.Created, KeyID: p.Header.KeyID, State: partState(p),
			Offset: p.VolumeStart, Bytes: p.End - p.VolumeStart,
		}
		if !sessionsOnly {
			key, err := ov.key(p)
			if err != nil {
				return err
			}
			if s.Entries, _, err = ov.entries(ctx, p, key); err != nil {
				return fmt.Errorf("session %s: %w", p.Header.SessionID, err)
			}
		}
		out = append(out, s)
	}
	if g.json {
		return printJSON(g.out, map[string]any{"label": l, "sessions": out})
	}
	fmt.Fprintf(g.out, "volume %s (%s) pool %s, block size %d, created %s, %d session parts\n",
		l.Name, l.VolumeID, l.Pool, l.BlockSize, humanTime(l.Created), len(out))
	for _, s := range out {
		fmt.Fprintf(g.out, "\nsession %s part %d: job %d, client %s, %s, %s, %s at offset %d, key %s\n",
			s.Session, s.Part, s.JobID, s.Client, s.Level, humanTime(s.Created), s.State, s.Offset, s.KeyID)
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
	}
	return nil
}

// countVolumeEntries reads a volume's file indexes with a key file, as
// 'cairn volume ls' does.
func countVolumeEntries(path, keyFile string) (int, error) {
	ov, err := openOffline(path, keyFile, true)
	if err != nil {
		return 0, err
	}
	defer ov.Close()
	n := 0
	for i := range ov.parts {
		key, err := ov.key(&ov.parts[i])
		if err != nil {
			return 0, err
		}
		es, _, err := ov.entries(context.Background(), &ov.parts[i], key)
		if err != nil {
			return 0, err
		}
		n += len(es)
	}
	return n, nil
}

type extractOpts struct {
	file, keyFile, to, session string
	paths                      []string
	force, devices             bool
}

func runVolumeExtract(ctx context.Context, g *globals, o extractOpts) error {
	ov, err := openOffline(o.file, o.keyFile, true)
	if err != nil {
		return err
	}
	defer ov.Close()
	// Every key is checked before anything is written, so a wrong key
	// leaves no partial files behind.
	type job struct {
		p    *volume.PartInfo
		key  *volume.Key
		locs []fileindex.Location
		ents []fileindex.Entry
	}
	var jobs []job
	for i := range ov.parts {
		p := &ov.parts[i]
		if o.session != "" && !strings.HasPrefix(p.Header.SessionID.String(), o.session) {
			continue
		}
		key, err := ov.key(p)
		if err != nil {
			return err
		}
		ents, _, err := ov.entries(ctx, p, key)
		if err != nil {
			return fmt.Errorf("session %s: %w", p.Header.SessionID, err)
		}
		sel := fileindex.WithinAny(o.paths)
		j := job{p: p, key: key}
		for _, e := range ents {
			if e.Type != fileindex.TypeDeleted && sel(&e) {
				j.ents = append(j.ents, e)
				j.locs = append(j.locs, e.Loc)
			}
		}
		if len(j.locs) > 0 {
			jobs = append(jobs, j)
		}
	}
	if len(jobs) == 0 {
		if o.session != "" {
			return wire.Errorf(wire.CodeNotFound, "list the sessions with 'cairn volume ls --sessions'", "no session %s on %s holds what was asked", o.session, o.file)
		}
		return wire.Errorf(wire.CodeNotFound, "list the files with 'cairn volume ls'", "nothing on %s matches %s", o.file, strings.Join(o.paths, ", "))
	}
	r, err := agent.NewRestorer(agent.RestoreOptions{Root: o.to, Force: o.force, Devices: o.devices})
	if err != nil {
		var ne *agent.TargetNotEmptyError
		if errors.As(err, &ne) {
			return wire.Errorf(wire.CodeTargetNotEmpty, "", "%v", err)
		}
		return err
	}
	t0 := time.Now()
	for _, j := range jobs {
		sr := volume.NewSessionReader(j.p.Header.SessionID, j.key, []volume.PartRef{j.p.Ref()}, ov.opener(), volume.ReaderOptions{Workers: 2})
		err := sr.ReadEntries(ctx, j.locs, r.Record, func(cbe *volume.CorruptBlockError) error {
			for _, e := range j.ents {
				if e.Loc.Seq <= cbe.Seq && cbe.Seq <= e.Loc.EndSeq {
					r.Damaged(e.Path, cbe.Error())
				}
			}
			return nil
		})
		sr.Close()
		if err != nil {
			r.Finish()
			return fmt.Errorf("session %s: %w", j.p.Header.SessionID, err)
		}
	}
	st, err := r.Finish()
	if err != nil {
		return err
	}
	if g.json {
		if err := printJSON(g.out, st); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(g.out, "extracted %d files, %d directories, %d links, %s in %s\n",
			st.Files, st.Dirs, st.Links, humanBytes(st.Bytes), humanDuration(time.Since(t0)))
		for _, w := range st.Warnings {
			fmt.Fprintf(g.out, "warning: %s: %s\n", w.Path, w.Err)
		}
	}
	if st.DamagedCount > 0 {
		var lines []string
		for _, d := range st.Damaged {
			lines = append(lines, d.Path+": "+d.Reason)
		}
		sort.Strings(lines)
		return wire.Errorf(wire.CodeCorrupt, "", "%d entries were not extracted because their data is damaged:\n  %s", st.DamagedCount, strings.Join(lines, "\n  "))
	}
	if st.Refused > 0 {
		return wire.Errorf(wire.CodeRefused, "", "%d entries were not extracted (refused, or the target would not take them); the warnings name each and why", st.Refused)
	}
	return nil
}
