// Package volchain puts a client's backups back together from a pile of
// volumes with no catalog: the sessions the volumes hold (a session may
// span several, a volume may be given twice), the chain of sessions a
// point in time is made of (its full, the differential after it if any,
// the incrementals after that), and where each block a large file kept
// from an earlier session lies. The chain follows the parent backup each
// part header names, as the catalog's parents; in volumes written before
// headers named it, it is found by level and time, as the scheduler made
// it (an incremental builds on the backup before it, a differential on
// the full), which cannot tell apart two file sets of one client.
//
// It reads nothing but the part headers and ends that volume.Volume.Parts
// found, and says what is missing before anything is read: a session the
// volumes given do not hold, or a part of one, named with what the
// volumes given say about it, so that an administrator knows which
// volume to look for.
package volchain

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/media/volume"
)

// Volume is a volume given: its label, where it was given (a path, an
// s3:// address) and the parts Volume.Parts found on it.
type Volume struct {
	Name  string
	Label volume.Label
	Parts []volume.PartInfo
}

// String names the volume as an administrator finds it: by its label
// (a tape's barcode), its id, and where it was given.
func (v *Volume) String() string {
	name := v.Label.Name
	if v.Label.Barcode != "" && v.Label.Barcode != name {
		name += " (barcode " + v.Label.Barcode + ")"
	}
	return fmt.Sprintf("volume %s [%s] at %s", name, v.Label.VolumeID, v.Name)
}

// Part is a session part on a volume given.
type Part struct {
	Vol  *Volume
	Info *volume.PartInfo
}

// Session is a session with the parts of it the volumes given hold.
type Session struct {
	ID uuid.UUID
	// Header is the PartHeader of a part whose header is intact: client,
	// level, time, key. When every part lost it, only ID is known, and
	// Created is zero.
	Header volume.PartHeader
	// Parts are the parts given, by part number, one per number.
	Parts []Part
}

// Final is the session's final part (the one with the index), or nil
// when it is not given or damage took its PartEnd.
func (s *Session) Final() *Part {
	for i := range s.Parts {
		if pe := s.Parts[i].Info.PartEnd; pe != nil && pe.Final {
			return &s.Parts[i]
		}
	}
	return nil
}

// Absent says which parts of the session the volumes given do not hold,
// "" when they hold all of it. A part torn by damage or a cut counts as
// given: that is damage, which the reading names.
func (s *Session) Absent() string {
	have := map[int]*volume.PartInfo{}
	for _, p := range s.Parts {
		have[p.Info.Header.Part] = p.Info
	}
	last := s.Parts[len(s.Parts)-1]
	if f := s.Final(); f != nil {
		var gaps []string
		for n := 0; n < f.Info.Header.Part; n++ {
			if have[n] != nil {
				continue
			}
			gap := fmt.Sprint(n)
			// The part after it names the volume it lies on.
			if next := have[n+1]; next != nil && !next.HeaderLost && next.Header.PrevVolume != uuid.Nil {
				gap += fmt.Sprintf(" (on volume [%s])", next.Header.PrevVolume)
			}
			gaps = append(gaps, gap)
		}
		if len(gaps) == 0 {
			return ""
		}
		return fmt.Sprintf("its part %s (of parts 0 to %d; the last lies on %s)", strings.Join(gaps, ", "), f.Info.Header.Part, f.Vol)
	}
	if last.Info.PartEnd == nil {
		return "" // torn: the session never went on, or damage cut it
	}
	return fmt.Sprintf("its parts after part %d, which lies on %s and says the session goes on on another volume", last.Info.Header.Part, last.Vol)
}

// Torn tells whether the session ends torn: its last part given has no
// PartEnd and no final part is given. Such a session was never committed
// (its writer died) or the volume it ends on was cut short; a later
// backup does not build on it, so a chain passes over it.
func (s *Session) Torn() bool {
	return s.Final() == nil && s.Parts[len(s.Parts)-1].Info.Torn
}

// Set is what a pile of volumes holds.
type Set struct {
	// Volumes are the volumes given, each once, oldest first.
	Volumes []*Volume
	// Twice names each volume given more than once and which copy is
	// read.
	Twice []string
	// Sessions are the sessions found, oldest first.
	Sessions []*Session
}

// Gather groups the parts of the volumes into sessions. Neither the order
// the volumes are given in nor a volume given twice changes what it
// finds: a volume is known by its id, and of two copies the one holding
// more (a copy cut short holds less) is read.
func Gather(vols []*Volume) *Set {
	s := &Set{}
	byID := map[uuid.UUID]*Volume{}
	for _, v := range vols {
		id := v.Label.VolumeID
		other := byID[id]
		if other == nil {
			byID[id] = v
			continue
		}
		keep, drop := other, v
		if better(v, other) {
			keep, drop = v, other
		}
		byID[id] = keep
		s.Twice = append(s.Twice, fmt.Sprintf("%s and %s are the same volume (%s [%s]): %s is read", keep.Name, drop.Name, keep.Label.Name, id, keep.Name))
	}
	for _, v := range byID {
		s.Volumes = append(s.Volumes, v)
	}
	slices.Sort(s.Twice)
	slices.SortFunc(s.Volumes, func(a, b *Volume) int {
		return cmp.Or(first(a).Compare(first(b)), a.Label.Created.Compare(b.Label.Created), strings.Compare(a.Label.VolumeID.String(), b.Label.VolumeID.String()))
	})
	sessions := map[uuid.UUID]*Session{}
	for _, v := range s.Volumes {
		for i := range v.Parts {
			p := &v.Parts[i]
			id := p.Header.SessionID
			if id == uuid.Nil {
				continue // torn inside its header: nothing says whose it was
			}
			ss := sessions[id]
			if ss == nil {
				ss = &Session{ID: id}
				sessions[id] = ss
				s.Sessions = append(s.Sessions, ss)
			}
			if !p.HeaderLost && ss.Header.Created.IsZero() {
				ss.Header = p.Header
			}
			ss.add(Part{Vol: v, Info: p})
		}
	}
	for _, ss := range s.Sessions {
		ss.Header.SessionID = ss.ID
	}
	// Sessions whose headers are all lost keep their place on the
	// volumes: the sort is stable, and they compare equal to all.
	slices.SortStableFunc(s.Sessions, func(a, b *Session) int {
		if a.Header.Created.IsZero() || b.Header.Created.IsZero() {
			return 0
		}
		return cmp.Or(a.Header.Created.Compare(b.Header.Created), strings.Compare(a.ID.String(), b.ID.String()))
	})
	return s
}

// better tells which of two copies of one volume to read: the one with
// more parts, then the one whose parts reach further.
func better(a, b *Volume) bool {
	if len(a.Parts) != len(b.Parts) {
		return len(a.Parts) > len(b.Parts)
	}
	if ea, eb := end(a), end(b); ea != eb {
		return ea > eb
	}
	return a.Name < b.Name
}

func end(v *Volume) int64 {
	if len(v.Parts) == 0 {
		return 0
	}
	p := v.Parts[len(v.Parts)-1]
	if p.Torn {
		return p.End - 1 // a whole part reaches further than a torn one of the same end
	}
	return p.End
}

// first is when the volume's first session that says so was made.
func first(v *Volume) time.Time {
	for i := range v.Parts {
		if c := v.Parts[i].Header.Created; !c.IsZero() && !v.Parts[i].HeaderLost {
			return c
		}
	}
	return time.Time{}
}

// add keeps one part per part number: the same part on two volumes (a
// copy) is read from the one that holds more of it.
func (s *Session) add(p Part) {
	if p.Info.HeaderLost && p.Info.PartEnd == nil {
		// Nothing says which part it is: it is kept as a part of its own.
		s.Parts = append([]Part{p}, s.Parts...)
		return
	}
	n := p.Info.Header.Part
	i, found := slices.BinarySearchFunc(s.Parts, n, func(q Part, n int) int { return cmp.Compare(q.Info.Header.Part, n) })
	if found && s.Parts[i].Info.HeaderLost && s.Parts[i].Info.PartEnd == nil {
		found = false
	}
	if !found {
		s.Parts = slices.Insert(s.Parts, i, p)
		return
	}
	if q := s.Parts[i]; q.Info.StreamEnd() < p.Info.StreamEnd() || q.Info.Torn && !p.Info.Torn {
		s.Parts[i] = p
	}
}

// Session finds a session by its id or a prefix of it.
func (s *Set) Session(prefix string) (*Session, error) {
	var found []*Session
	for _, ss := range s.Sessions {
		if strings.HasPrefix(ss.ID.String(), strings.ToLower(prefix)) {
			found = append(found, ss)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("%w: no session %s on the volumes given", ErrNoSession, prefix)
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("%w: %q is the start of %d sessions' ids (%s, ...): give more of it", ErrAmbiguous, prefix, len(found), found[0].ID)
}

// Clients are the clients whose sessions the volumes hold, sorted.
func (s *Set) Clients() []string {
	var out []string
	for _, ss := range s.Sessions {
		if c := ss.Header.Client; c != "" && !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out
}

// At is the last session of client made at or before t. client may be
// empty when the volumes hold one client's sessions.
func (s *Set) At(client string, t time.Time) (*Session, error) {
	if client == "" {
		cs := s.Clients()
		if len(cs) > 1 {
			return nil, fmt.Errorf("%w: the volumes hold sessions of %d clients (%s): say which", ErrAmbiguous, len(cs), strings.Join(cs, ", "))
		}
		if len(cs) == 1 {
			client = cs[0]
		}
	}
	var best *Session
	for _, ss := range s.Sessions {
		if ss.Header.Client == client && !ss.Header.Created.After(t) && !ss.Header.Created.IsZero() && !ss.Torn() {
			best = ss
		}
	}
	if best == nil {
		return nil, fmt.Errorf("%w: no session of client %q at or before %s on the volumes given", ErrNoSession, client, t.UTC().Format(time.RFC3339))
	}
	return best, nil
}

var (
	// ErrNoSession: no session given matches what was asked.
	ErrNoSession = errors.New("no such session")
	// ErrAmbiguous: what was asked matches more than one.
	ErrAmbiguous = errors.New("ambiguous")
)

// Chain is the sessions a restore of the point in time at reads, oldest
// first. A session whose part header names its parent backup
// (parent_backup) is chained as the catalog chains it: by its parent, and
// that one's, up to a full. One written before headers named it is
// chained by level and time: the last full of its client at or before
// it, the last differential between that full and it, and the
// incrementals after that, passing over sessions that end torn. A chain
// whose link is not given comes back as far as it goes, with a
// *MissingError.
func (s *Set) Chain(at *Session) ([]*Session, error) {
	if at.Header.Created.IsZero() {
		return nil, fmt.Errorf("%w: every part header of session %s is damaged, so when it was made and whose it is are lost: it cannot be placed in a chain", ErrNoSession, at.ID)
	}
	back := []*Session{at} // newest first
	for cur := at; !isFull(cur); {
		h := cur.Header
		if h.ParentBackup == 0 {
			older, err := s.chainByTime(cur)
			slices.Reverse(back)
			return append(older, back[1:]...), err
		}
		parent := s.backup(h.Client, h.ParentBackup)
		if parent == nil {
			slices.Reverse(back)
			return back, &MissingError{Missing: []Missing{{Backup: h.ParentBackup, Of: h.BackupID, Client: h.Client, Before: h.Created}}}
		}
		back = append(back, parent)
		cur = parent
	}
	slices.Reverse(back)
	return back, nil
}

func isFull(ss *Session) bool {
	return ss.Header.Level == "full" || ss.Header.Level == "synthetic-full"
}

// backup is the session of client's backup id: of two (an attempt that
// died, then the one that committed), the one not torn.
func (s *Set) backup(client string, id uint64) *Session {
	var found *Session
	for _, ss := range s.Sessions {
		if ss.Header.Client == client && ss.Header.BackupID == id && (found == nil || found.Torn()) {
			found = ss
		}
	}
	return found
}

// chainByTime is the chain of a session whose header does not name its
// parent, by level and time.
func (s *Set) chainByTime(at *Session) ([]*Session, error) {
	var chain []*Session
	wantDiff := true
	i := slices.Index(s.Sessions, at)
	for ; i >= 0; i-- {
		ss := s.Sessions[i]
		if ss.Header.Client != at.Header.Client || ss.Header.Created.IsZero() || ss != at && ss.Torn() {
			continue
		}
		switch ss.Header.Level {
		case "full", "synthetic-full":
			chain = append(chain, ss)
			slices.Reverse(chain)
			return chain, nil
		case "differential":
			if wantDiff {
				chain = append(chain, ss)
				wantDiff = false
			}
		default:
			// Incrementals before the differential are folded into it.
			if wantDiff {
				chain = append(chain, ss)
			}
		}
	}
	slices.Reverse(chain)
	return chain, &MissingError{Missing: []Missing{{Client: at.Header.Client, Before: chain[0].Header.Created, Full: true}}}
}

// Locate finds the part of session id that holds stream offset off, where
// an entry or a block kept from that session starts, and checks that the
// parts given hold the blocks seq to endSeq, where it lies: its records
// may go on in the next part. A session the volumes do not hold, or do
// not hold a part of that it needs, is a *MissingError; a part given that
// ends before (cut short, or torn by damage) is a *CutError.
func (s *Set) Locate(id uuid.UUID, off, seq, endSeq uint64) (Part, error) {
	p, err := s.locate(id, off)
	if err != nil {
		return p, err
	}
	ss := s.session(id)
	for next := seq; next <= endSeq; {
		var in, before *Part
		for j := range ss.Parts {
			q := &ss.Parts[j]
			if q.Info.Header.FirstSeq <= next && next <= q.Info.LastSeq {
				in = q
				break
			}
			if q.Info.Header.FirstSeq <= next && (before == nil || q.Info.Header.FirstSeq > before.Info.Header.FirstSeq) {
				before = q
			}
		}
		switch {
		case in != nil:
			next = in.Info.LastSeq + 1
		case before != nil && before.Info.Torn:
			return Part{}, &CutError{Part: *before, Off: off}
		default:
			return Part{}, &MissingError{Missing: []Missing{{Session: id, Known: ss}}}
		}
	}
	return p, nil
}

func (s *Set) session(id uuid.UUID) *Session {
	i := slices.IndexFunc(s.Sessions, func(ss *Session) bool { return ss.ID == id })
	if i < 0 {
		return nil
	}
	return s.Sessions[i]
}

func (s *Set) locate(id uuid.UUID, off uint64) (Part, error) {
	ss := s.session(id)
	if ss == nil {
		return Part{}, &MissingError{Missing: []Missing{{Session: id}}}
	}
	var cut *Part
	for j := range ss.Parts {
		p := &ss.Parts[j]
		start := p.Info.Header.StreamStart
		if p.Info.HeaderLost && p.Info.PartEnd == nil {
			start = 0 // unknown: only a PartEnd gives it back
		}
		if start <= off && off < p.Info.StreamEnd() {
			return *p, nil
		}
		if start <= off && p.Info.Torn {
			cut = p
		}
	}
	if cut != nil {
		return Part{}, &CutError{Part: *cut, Off: off}
	}
	return Part{}, &MissingError{Missing: []Missing{{Session: id, Known: ss}}}
}

// CutError is a block that lies past the end of the part of its session
// given: the volume was cut short, or damage tore the part.
type CutError struct {
	Part Part
	Off  uint64
}

func (e *CutError) Error() string {
	return fmt.Sprintf("session %s: its part %d on %s stops at stream offset %d (%s), and the data from offset %d goes on past that",
		e.Part.Info.Header.SessionID, e.Part.Info.Header.Part, e.Part.Vol, e.Part.Info.StreamEnd(), e.Part.Info.TornReason, e.Off)
}

// Missing is a session, or a part of one, that the volumes given do not
// hold and a point in time needs.
type Missing struct {
	// Session is the session missing; Known is what the volumes hold of
	// it, nil when nothing.
	Session uuid.UUID
	Known   *Session
	// Full: the chain's full backup is missing (its id is unknown):
	// Client's last before Before.
	Full bool
	// Backup: the backup Of builds on is missing, a backup of Client
	// made before Before.
	Backup, Of uint64
	Client     string
	Before     time.Time
	// Where says where to look for it, from the sessions given around
	// it (Set.Around).
	Where string
	// Need are the sessions that need it and the files that do.
	Need []Need
}

// Need is a file that needs what is missing.
type Need struct {
	Session uuid.UUID // the session of the file's version
	Path    string
}

// MissingError lists what the volumes given lack for what was asked.
type MissingError struct {
	Missing []Missing
}

// ErrMissing is what every *MissingError is.
var ErrMissing = errors.New("a volume of the chain is missing")

func (e *MissingError) Is(target error) bool { return target == ErrMissing }

func (e *MissingError) Error() string {
	lines := make([]string, 0, len(e.Missing))
	for _, m := range e.Missing {
		lines = append(lines, m.String())
	}
	slices.Sort(lines)
	return "not every volume of the chain is given:\n  " + strings.Join(lines, "\n  ")
}

// String says what is missing and who needs it.
func (m Missing) String() string {
	var b strings.Builder
	switch {
	case m.Full:
		fmt.Fprintf(&b, "the full backup of client %s that the chain before %s builds on: no volume given holds a full of that client before it",
			m.Client, m.Before.UTC().Format(time.RFC3339))
	case m.Backup != 0:
		fmt.Fprintf(&b, "backup %d of client %s, which backup %d (of %s) builds on: no volume given holds it",
			m.Backup, m.Client, m.Of, m.Before.UTC().Format(time.RFC3339))
	case m.Known != nil:
		fmt.Fprintf(&b, "session %s (%s of client %s, %s): %s", m.Session, m.Known.Header.Level, m.Known.Header.Client,
			m.Known.Header.Created.UTC().Format(time.RFC3339), m.Known.Absent())
	default:
		fmt.Fprintf(&b, "session %s: no volume given holds any of it", m.Session)
	}
	if m.Where != "" {
		fmt.Fprintf(&b, " (%s)", m.Where)
	}
	if len(m.Need) > 0 {
		const show = 5
		var files []string
		for _, n := range m.Need[:min(len(m.Need), show)] {
			files = append(files, fmt.Sprintf("%s (of session %s)", n.Path, n.Session))
		}
		if len(m.Need) > show {
			files = append(files, fmt.Sprintf("and %d more", len(m.Need)-show))
		}
		fmt.Fprintf(&b, "; needed by %s", strings.Join(files, ", "))
	}
	return b.String()
}

// Add adds m, or the needs to the Missing of the same session.
func (e *MissingError) Add(m Missing, need ...Need) {
	for i := range e.Missing {
		x := &e.Missing[i]
		if x.Session == m.Session && x.Full == m.Full && x.Backup == m.Backup && x.Client == m.Client {
			for _, n := range need {
				if !slices.Contains(x.Need, n) {
					x.Need = append(x.Need, n)
				}
			}
			return
		}
	}
	m.Need = append(m.Need, need...)
	e.Missing = append(e.Missing, m)
}

// Around says, for a missing session, which sessions of the client the
// volumes hold around the session that needs it, and where: the missing
// one was made before the one that needs it, by the same client, so it
// lies on a volume written between them.
func (s *Set) Around(client string, before time.Time) string {
	var prev *Session
	for _, ss := range s.Sessions {
		if ss.Header.Client == client && ss.Header.Created.Before(before) {
			prev = ss
		}
	}
	if prev == nil {
		return fmt.Sprintf("it is a backup of client %s made before %s, and no earlier session of that client is given", client, before.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("it is a backup of client %s made before %s; the last earlier session of that client given is %s (%s, %s) on %s",
		client, before.UTC().Format(time.RFC3339), prev.ID, prev.Header.Level, prev.Header.Created.UTC().Format(time.RFC3339), prev.Parts[0].Vol)
}

// Explain says, of each missing thing e names that says nothing yet, where
// to look: where the part headers of the sessions given recorded it to
// lie when they were written (PartHeader.Chain), else which sessions of
// its client the volumes given hold around it.
func (s *Set) Explain(e *MissingError) {
	for i := range e.Missing {
		m := &e.Missing[i]
		if m.Where != "" {
			continue
		}
		client, before := m.Client, m.Before
		if len(m.Need) > 0 {
			if ss := s.session(m.Need[0].Session); ss != nil {
				client, before = ss.Header.Client, ss.Header.Created
			}
		}
		if m.Known != nil {
			client = m.Known.Header.Client
		}
		if r := s.recorded(m, client, before); r != "" {
			m.Where = r
		} else if m.Known == nil && client != "" {
			m.Where = s.Around(client, before)
		}
	}
}

// recorded is where the chains recorded in the part headers of client's
// sessions put what m names, "" when none does.
func (s *Set) recorded(m *Missing, client string, before time.Time) string {
	var fullOf *Session // for a full not given: the oldest of the chain given
	for _, ss := range s.Sessions {
		if ss.Header.Client == client && ss.Header.Created.Equal(before) {
			fullOf = ss
		}
	}
	var at []string
	seen := map[uuid.UUID]bool{}
	for _, ss := range s.Sessions {
		if ss.Header.Client != client {
			continue
		}
		oldest := uint64(0)
		for _, c := range ss.Header.Chain {
			if oldest == 0 || c.Backup < oldest {
				oldest = c.Backup
			}
		}
		for _, c := range ss.Header.Chain {
			match := m.Session != uuid.Nil && c.Session == m.Session ||
				m.Backup != 0 && c.Backup == m.Backup ||
				m.Full && ss == fullOf && c.Backup == oldest
			if !match || seen[c.Volume] {
				continue
			}
			seen[c.Volume] = true
			at = append(at, fmt.Sprintf("%s [%s]", c.Name, c.Volume))
		}
	}
	if len(at) == 0 {
		return ""
	}
	return "when later backups of the chain were made, it lay on volume " + strings.Join(at, ", ")
}
