package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/disk"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/volchain"
	"github.com/cairnbackup/cairn/wire"
)

// offlineSet is the volumes given to 'cairn volume ls' or 'volume
// extract', each read once however often and in whatever order it was
// given, and the sessions they hold.
type offlineSet struct {
	set    *volchain.Set
	byID   map[uuid.UUID]*offlineVolume
	damage []string
}

// whatToGive is the hint of every error that a volume not given causes.
const whatToGive = "give every volume of the chain, in any order (volume extract FILE --volume FILE ...; 'cairn volume ls VOL...' lists the sessions a pile of volumes holds, no key needed; 'cairn volume list' on a server says where each volume is)"

func openSet(ctx context.Context, g *globals, paths []string, keyFile string, needKeys bool, s3 s3Source) (*offlineSet, error) {
	var opened []*offlineVolume
	fail := func(err error) (*offlineSet, error) {
		for _, ov := range opened {
			ov.Close()
		}
		return nil, err
	}
	of := map[*volchain.Volume]*offlineVolume{}
	var vs []*volchain.Volume
	paths, inDir, err := volumeFiles(paths)
	if err != nil {
		return nil, err
	}
	var skipped []string
	for _, p := range paths {
		ov, err := openOffline(ctx, p, keyFile, needKeys, s3)
		if err != nil && inDir[p] && errors.Is(err, volume.ErrNotVolume) {
			// A blank cartridge of a library, a file that is no volume:
			// only a file named on its own must be one.
			skipped = append(skipped, fmt.Sprintf("%s is not a volume, passed over: %v", p, err))
			continue
		}
		if err != nil {
			return fail(err)
		}
		opened = append(opened, ov)
		v := &volchain.Volume{Name: p, Label: ov.vol.Label(), Parts: ov.parts}
		of[v] = ov
		vs = append(vs, v)
	}
	s := &offlineSet{set: volchain.Gather(vs), byID: map[uuid.UUID]*offlineVolume{}}
	for _, v := range s.set.Volumes {
		ov := of[v]
		// The set points into the parts it was given: the volume's own.
		s.byID[v.Label.VolumeID] = ov
		s.damage = append(s.damage, ov.warnDamage(g)...)
	}
	for _, ov := range opened {
		if s.byID[ov.vol.Label().VolumeID] != ov {
			ov.Close()
		}
	}
	for _, w := range append(skipped, s.set.Twice...) {
		fmt.Fprintf(g.errOut, "warning: %s\n", printable(w))
		s.damage = append(s.damage, w)
	}
	return s, nil
}

func (s *offlineSet) Close() {
	for _, ov := range s.byID {
		ov.Close()
	}
}

// of is the opened volume a part of the set lies on.
func (s *offlineSet) of(p volchain.Part) *offlineVolume { return s.byID[p.Vol.Label.VolumeID] }

// opener opens, for a session's reader, the volumes of the set.
func (s *offlineSet) opener() volume.Opener {
	return func(id uuid.UUID) (io.ReaderAt, error) {
		ov := s.byID[id]
		if ov == nil {
			return nil, fmt.Errorf("the session continues on volume %s, which is not among the volumes given", id)
		}
		return ov.opener()(id)
	}
}

// sessionRead is one read of a session's entries: from the trailer of
// its final part, over all its parts given, or, when that part is not
// given (or is its only one), from each part alone.
type sessionRead struct {
	ov   *offlineVolume
	p    *volume.PartInfo
	refs []volume.PartRef
}

func (s *offlineSet) reads(ss *volchain.Session) []sessionRead {
	var out []sessionRead
	f := ss.Final()
	for _, part := range ss.Parts {
		r := sessionRead{ov: s.of(part), p: part.Info, refs: []volume.PartRef{part.Info.Ref()}}
		if f != nil && len(ss.Parts) > 1 && !part.Info.HeaderLost {
			if part.Info != f.Info {
				continue // its entries are in the final part's trailer
			}
			r.refs = contiguous(ss)
		}
		out = append(out, r)
	}
	return out
}

// contiguous are the parts of a session that end with its final part and
// hold its stream without a gap: what one reader reads. A part cut short
// (a volume copied in part, or torn by damage) leaves a gap; the parts
// before it are read by readers of their own.
func contiguous(ss *volchain.Session) []volume.PartRef {
	var refs []volume.PartRef
	for i := len(ss.Parts) - 1; i >= 0; i-- {
		r := ss.Parts[i].Info.Ref()
		if len(refs) > 0 && r.StreamEnd != refs[0].StreamStart {
			break
		}
		refs = append([]volume.PartRef{r}, refs...)
	}
	return refs
}

// run are the parts of the session of p given that hold its stream
// without a gap on either side of p: what one reader of a block that
// starts in p reads, since the block may go on in the next part.
func (s *offlineSet) run(p volchain.Part) []volume.PartRef {
	ss, err := s.set.Session(p.Info.Header.SessionID.String())
	if err != nil {
		return []volume.PartRef{p.Info.Ref()}
	}
	i := slices.IndexFunc(ss.Parts, func(q volchain.Part) bool { return q.Info == p.Info })
	lo, hi := i, i
	for lo > 0 && ss.Parts[lo-1].Info.StreamEnd() == ss.Parts[lo].Info.Header.StreamStart && !ss.Parts[lo-1].Info.Torn {
		lo--
	}
	for hi+1 < len(ss.Parts) && ss.Parts[hi].Info.StreamEnd() == ss.Parts[hi+1].Info.Header.StreamStart && !ss.Parts[hi].Info.Torn {
		hi++
	}
	var refs []volume.PartRef
	for _, q := range ss.Parts[lo : hi+1] {
		refs = append(refs, q.Info.Ref())
	}
	return refs
}

// covers tells whether the parts refs hold stream offset off.
func covers(refs []volume.PartRef, off uint64) bool {
	return slices.ContainsFunc(refs, func(r volume.PartRef) bool { return r.StreamStart <= off && off < r.StreamEnd })
}

// point is a point in time asked for with --at: a session of the set, or
// a time, the last session of the client at or before it.
func (s *offlineSet) point(at, client string) (*volchain.Session, error) {
	if ss, err := s.set.Session(at); err == nil {
		if client != "" && ss.Header.Client != client {
			return nil, wire.Errorf(wire.CodeInvalidArgument, "leave out --client, or give a session of that client",
				"session %s is of client %s, not %s", ss.ID, ss.Header.Client, client)
		}
		return ss, nil
	} else if errors.Is(err, volchain.ErrAmbiguous) {
		return nil, wire.Errorf(wire.CodeInvalidArgument, "", "--at: %w", err)
	}
	t, err := parseTime(at)
	if err != nil {
		return nil, &usageError{fmt.Errorf("--at %q is neither a session on the volumes given nor a time (%s)", at, atForms)}
	}
	ss, err := s.set.At(client, t)
	if errors.Is(err, volchain.ErrAmbiguous) {
		return nil, wire.Errorf(wire.CodeInvalidArgument, "pass --client NAME", "%w", err)
	}
	if err != nil {
		return nil, wire.Errorf(wire.CodeNotFound, "'cairn volume ls VOL...' lists the sessions of the volumes given", "%w", err)
	}
	return ss, nil
}

// chain is the sessions the point in time at is made of, oldest first.
// Its full missing is an error that says what to give; a part of one
// missing is for the reader to name, with the files that need it.
func (s *offlineSet) chain(at *volchain.Session) ([]*volchain.Session, error) {
	chain, err := s.set.Chain(at)
	if err != nil {
		return nil, s.missingError(err)
	}
	return chain, nil
}

// missingError maps what volchain says is missing to the error the
// administrator reads: not found, with what to give.
func (s *offlineSet) missingError(err error) error {
	var me *volchain.MissingError
	if errors.As(err, &me) {
		s.set.Explain(me)
		return wire.Errorf(wire.CodeNotFound, whatToGive, "%w\nnothing was extracted", me)
	}
	if errors.Is(err, volchain.ErrNoSession) {
		return wire.Errorf(wire.CodeNotFound, "'cairn volume ls VOL...' lists the sessions of the volumes given", "%w", err)
	}
	return err
}

// describeSession is a session's line in a listing of several volumes:
// where its parts lie and what of it is not given.
func describeSession(ss *volchain.Session) (where, state string) {
	var at []string
	for _, p := range ss.Parts {
		at = append(at, fmt.Sprintf("part %d on %s", p.Info.Header.Part, p.Vol.Label.Name))
	}
	state = "complete"
	if a := ss.Absent(); a != "" {
		state = "not given: " + a
	}
	for _, p := range ss.Parts {
		if p.Info.Torn {
			state = fmt.Sprintf("part %d on %s is torn: %s", p.Info.Header.Part, p.Vol.Label.Name, p.Info.TornReason)
		}
	}
	return strings.Join(at, ", "), state
}

// createdText is when a session was made, or that its headers lost it.
func createdText(t time.Time) string {
	if t.IsZero() {
		return "unknown (part header damaged)"
	}
	return humanTime(t)
}

// chainFile is a file of the tree at a point, in 'volume ls --at': its
// entry, where it comes from and where the blocks it kept lie.
type chainFile struct {
	fileindex.Entry
	From       string        `json:"from_session"`
	FromVolume string        `json:"from_volume"`
	BlocksFrom []blockSource `json:"blocks_from,omitempty"`
}

type blockSource struct {
	Session uuid.UUID `json:"session"`
	Volume  string    `json:"volume,omitempty"` // "" when not given
	Problem string    `json:"problem,omitempty"`
}

type setSession struct {
	Session uuid.UUID `json:"session"`
	Client  string    `json:"client"`
	Level   string    `json:"level"`
	// Backup is the session's backup id; Parent the backup it builds on
	// (0 for a full, or when the volume is older than headers naming it).
	Backup  uint64    `json:"backup_id"`
	Parent  uint64    `json:"parent_backup,omitempty"`
	Created time.Time `json:"created"`
	KeyID   string    `json:"key_id"`
	Parts   string    `json:"parts"`
	State   string    `json:"state"`
}

type setVolume struct {
	Given string       `json:"given"`
	Label volume.Label `json:"label"`
	Parts int          `json:"parts"`
}

type setListing struct {
	Volumes  []setVolume  `json:"volumes"`
	Sessions []setSession `json:"sessions"`
	// At is the session of the point in time asked for; Chain the
	// sessions its tree is made of, oldest first; Files the tree.
	At       *uuid.UUID  `json:"at,omitempty"`
	Chain    []uuid.UUID `json:"chain,omitempty"`
	Files    []chainFile `json:"files,omitempty"`
	Lost     []lostEntry `json:"lost,omitempty"`
	Missing  []string    `json:"missing,omitempty"`
	Warnings []string    `json:"warnings,omitempty"`
}

// runVolumeLsChain is 'cairn volume ls' of several volumes, or of a point
// in time: the sessions found, and with --at the tree as it was then.
func runVolumeLsChain(ctx context.Context, g *globals, paths []string, keyFile, at, client string, s3 s3Source) error {
	vs, err := openSet(ctx, g, paths, keyFile, at != "", s3)
	if err != nil {
		return err
	}
	defer vs.Close()
	out := setListing{Warnings: vs.damage}
	for _, v := range vs.set.Volumes {
		out.Volumes = append(out.Volumes, setVolume{Given: v.Name, Label: v.Label, Parts: len(v.Parts)})
	}
	for _, ss := range vs.set.Sessions {
		where, state := describeSession(ss)
		out.Sessions = append(out.Sessions, setSession{Session: ss.ID, Client: ss.Header.Client, Level: ss.Header.Level,
			Backup: ss.Header.BackupID, Parent: ss.Header.ParentBackup,
			Created: ss.Header.Created, KeyID: ss.Header.KeyID, Parts: where, State: state})
	}
	var miss volchain.MissingError
	var lost []lostEntry
	var unnamed int64
	if at != "" {
		point, err := vs.point(at, client)
		if err != nil {
			return err
		}
		out.At = &point.ID
		chain, err := vs.set.Chain(point)
		var me *volchain.MissingError
		if errors.As(err, &me) {
			miss.Add(me.Missing[0])
		} else if err != nil {
			return vs.missingError(err)
		}
		type found struct {
			e    fileindex.Entry
			ss   *volchain.Session
			part *volume.PartInfo
		}
		tree := map[string]found{}
		for _, ss := range chain {
			out.Chain = append(out.Chain, ss.ID)
			if ss.Absent() != "" {
				miss.Add(volchain.Missing{Session: ss.ID, Known: ss})
			}
			for _, rd := range vs.reads(ss) {
				pi, _, err := rd.ov.index(ctx, rd.p)
				if err != nil {
					return err
				}
				for _, e := range pi.Entries {
					if e.Type == fileindex.TypeDeleted {
						delete(tree, e.Path)
					} else {
						tree[e.Path] = found{e, ss, rd.p}
					}
				}
				for _, l := range append(pi.Lost, pi.Continues...) {
					lost = append(lost, lostEntry{Session: ss.ID, Path: l.Path, Reason: l.Reason})
				}
				unnamed += max(pi.Unnamed, 0)
			}
		}
		for _, f := range tree {
			cf := chainFile{Entry: f.e, From: f.ss.ID.String(), FromVolume: vs.byVolumeName(f.part.VolumeID)}
			if bl := f.e.Blocks; bl != nil {
				seen := map[blockSource]bool{}
				for bi, b := range bl.Blocks {
					if b.Session == 0 {
						continue
					}
					sid := uuid.UUID(bl.SessionOf(bi, [16]byte{}))
					src := blockSource{Session: sid}
					part, err := vs.set.Locate(sid, b.Loc.Off, b.Loc.Seq, b.Loc.EndSeq)
					var me *volchain.MissingError
					var ce *volchain.CutError
					switch {
					case errors.As(err, &me):
						miss.Add(me.Missing[0], volchain.Need{Session: f.ss.ID, Path: f.e.Path})
						src.Problem = "MISSING"
					case errors.As(err, &ce):
						src.Volume, src.Problem = ce.Part.Vol.Label.Name, "CUT SHORT"
						lost = append(lost, lostEntry{Session: f.ss.ID, Path: f.e.Path, Reason: "blocks of it are lost: " + ce.Error()})
					case err != nil:
						return err
					default:
						src.Volume = part.Vol.Label.Name
					}
					if !seen[src] {
						seen[src] = true
						cf.BlocksFrom = append(cf.BlocksFrom, src)
					}
				}
			}
			out.Files = append(out.Files, cf)
		}
		slices.SortFunc(out.Files, func(a, b chainFile) int { return fileindex.Compare(a.Path, b.Path) })
	}
	vs.set.Explain(&miss)
	for _, m := range miss.Missing {
		out.Missing = append(out.Missing, m.String())
	}
	out.Lost = lost
	if g.json {
		if err := printJSON(g.out, out); err != nil {
			return err
		}
	} else {
		printSetListing(g, &out)
	}
	if len(miss.Missing) > 0 {
		return wire.Errorf(wire.CodeNotFound, whatToGive, "%w", &miss)
	}
	return lostError(lost, unnamed, nil, "cannot be read whole")
}

func printSetListing(g *globals, out *setListing) {
	fmt.Fprintf(g.out, "%d volumes:\n", len(out.Volumes))
	for _, v := range out.Volumes {
		fmt.Fprintf(g.out, "  %s [%s] pool %s, format %d, %d session parts: %s\n", v.Label.Name, v.Label.VolumeID, v.Label.Pool,
			v.Label.FormatVersion, v.Parts, printable(v.Given))
	}
	fmt.Fprintln(g.out)
	t := newTable(g.out, "SESSION", "CLIENT", "BACKUP", "LEVEL", "CREATED", "KEY", "PARTS", "STATE")
	for _, s := range out.Sessions {
		level := s.Level
		if s.Parent != 0 {
			level += fmt.Sprintf(" on %d", s.Parent)
		}
		t.row(s.Session.String(), s.Client, fmt.Sprint(s.Backup), level, createdText(s.Created), s.KeyID, s.Parts, s.State)
	}
	t.flush()
	if out.At == nil {
		return
	}
	var chain []string
	for _, id := range out.Chain {
		chain = append(chain, id.String()[:8])
	}
	fmt.Fprintf(g.out, "\nthe tree as of session %s, made of sessions %s:\n", out.At, strings.Join(chain, ", "))
	t = newTable(g.out, "MODE", "OWNER", "SIZE", "MODIFIED", "PATH", "FROM")
	for _, f := range out.Files {
		name := f.Path
		switch f.Type {
		case fileindex.TypeSymlink:
			name += " -> " + f.Target
		case fileindex.TypeHardlink:
			name += " => " + f.Target
		}
		from := f.From[:8] + " on " + f.FromVolume
		for _, b := range f.BlocksFrom {
			switch b.Problem {
			case "":
				from += fmt.Sprintf(", blocks of %s on %s", b.Session.String()[:8], b.Volume)
			default:
				from += fmt.Sprintf(", blocks of %s %s", b.Session.String()[:8], b.Problem)
			}
		}
		t.row(modeString(f.Type.String(), f.Mode), fmt.Sprintf("%d:%d", f.UID, f.GID), humanBytes(f.Size), humanTime(time.Unix(0, f.MTime)), printable(name), from)
	}
	t.flush()
	for _, le := range out.Lost {
		fmt.Fprintf(g.out, "LOST %s: %s\n", printable(le.Path), le.Reason)
	}
}

// byVolumeName is the label name of a volume of the set.
func (s *offlineSet) byVolumeName(id uuid.UUID) string {
	if ov := s.byID[id]; ov != nil {
		return ov.vol.Label().Name
	}
	return id.String()
}

// volumeFiles is the volumes given, a directory standing for the volume
// files (*.cvol) and emulated cartridges (*.tape) in it: a disk pool, a
// library's cartridges, or the copies an administrator gathered.
func volumeFiles(paths []string) (out []string, inDir map[string]bool, err error) {
	inDir = map[string]bool{}
	for _, p := range paths {
		if st, err := os.Stat(p); strings.HasPrefix(p, "s3://") || err != nil || !st.IsDir() {
			out = append(out, p) // opening it says what is wrong with it
			continue
		}
		var in []string
		// Disk volumes, and emulated cartridges (the library names each
		// by its barcode).
		for _, ext := range []string{disk.Ext, ".tape"} {
			m, err := filepath.Glob(filepath.Join(p, "*"+ext))
			if err != nil {
				return nil, nil, wire.Errorf(wire.CodeInvalidArgument, "", "%s: %w", p, err)
			}
			in = append(in, m...)
		}
		if len(in) == 0 {
			return nil, nil, wire.Errorf(wire.CodeNotFound, "give volume files (NAME"+disk.Ext+", BARCODE.tape), or a directory holding them",
				"directory %s holds no volume files (*%s) or cartridges (*.tape)", p, disk.Ext)
		}
		for _, f := range in {
			inDir[f] = true
		}
		out = append(out, in...)
	}
	return out, inDir, nil
}
