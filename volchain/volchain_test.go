package volchain

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/media/volume"
)

// pile builds volumes as volume.Volume.Parts finds them: each session
// part given by its session, part number, level, hour of the day and
// stream range.
type part struct {
	session        int
	n              int
	level          string
	client         string
	hour           int
	start, end     uint64
	final, torn    bool
	prev           uuid.UUID
	headerLostOnly bool
	backup, parent uint64
}

func vol(name string, id uuid.UUID, parts ...part) *Volume {
	v := &Volume{Name: "/pile/" + name + ".cvol", Label: volume.Label{VolumeID: id, Name: name}}
	for _, p := range parts {
		client := p.client
		if client == "" {
			client = "web01"
		}
		pi := volume.PartInfo{VolumeID: id, Header: volume.PartHeader{
			SessionID: sid(p.session), Part: p.n, Client: client, Level: p.level, StreamStart: p.start,
			Created: time.Date(2026, 12, 1, p.hour, 0, 0, 0, time.UTC), PrevVolume: p.prev,
			FirstSeq: p.start / 10, BackupID: p.backup, ParentBackup: p.parent,
		}, DataStart: int64(p.start), End: int64(p.end), LastSeq: p.end/10 - 1} // a block per 10 bytes
		if p.torn {
			pi.Torn, pi.TornReason = true, "the volume ends"
		} else {
			pi.PartEnd = &volume.PartEnd{SessionID: sid(p.session), Part: p.n, Final: p.final, StreamEnd: p.end}
		}
		if p.headerLostOnly {
			pi.HeaderLost, pi.Header.Created, pi.Header.Client, pi.Header.Level = true, time.Time{}, "", ""
		}
		v.Parts = append(v.Parts, pi)
	}
	return v
}

func sid(n int) uuid.UUID { return uuid.UUID{0: byte(n), 15: 1} }

var v1, v2, v3, v4 = uuid.UUID{1}, uuid.UUID{2}, uuid.UUID{3}, uuid.UUID{4}

// The week of one client: a full spanning A and B, incrementals on B, a
// differential, an incremental torn (its writer died) and one more on C;
// another client's full on C.
func week() []*Volume {
	return []*Volume{
		vol("A", v1, part{session: 1, level: "full", hour: 0, start: 0, end: 100}),
		vol("B", v2,
			part{session: 1, n: 1, level: "full", hour: 0, start: 100, end: 150, final: true, prev: v1},
			part{session: 2, level: "incremental", hour: 1, end: 10, final: true},
			part{session: 3, level: "incremental", hour: 2, end: 10, final: true}),
		vol("C", v3,
			part{session: 6, level: "incremental", hour: 3, end: 20, torn: true},
			part{session: 4, level: "differential", hour: 3, end: 20, final: true},
			part{session: 5, level: "incremental", hour: 4, end: 10, final: true},
			part{session: 9, level: "full", client: "db02", hour: 5, end: 10, final: true}),
	}
}

func ids(ss []*Session) []uuid.UUID {
	var out []uuid.UUID
	for _, s := range ss {
		out = append(out, s.ID)
	}
	return out
}

// Neither the order of the volumes nor one given twice changes what is
// found: the same sessions, the same chains.
func TestGatherIgnoresOrderAndTwice(t *testing.T) {
	want := Gather(week())
	if got := ids(want.Sessions); !slices.Equal(got, []uuid.UUID{sid(1), sid(2), sid(3), sid(4), sid(6), sid(5), sid(9)}) {
		t.Fatalf("sessions %v", got)
	}
	w := week()
	shuffled := []*Volume{w[2], w[0], w[1], week()[0]}
	got := Gather(shuffled)
	if !slices.Equal(ids(got.Sessions), ids(want.Sessions)) {
		t.Errorf("shuffled with A twice: sessions %v, want %v", ids(got.Sessions), ids(want.Sessions))
	}
	if len(got.Twice) != 1 || !strings.Contains(got.Twice[0], "are the same volume") || len(got.Volumes) != 3 {
		t.Errorf("A given twice: %q, %d volumes", got.Twice, len(got.Volumes))
	}
	if len(got.Sessions[0].Parts) != 2 || got.Sessions[0].Absent() != "" {
		t.Errorf("the full spans A and B: %d parts, absent %q", len(got.Sessions[0].Parts), got.Sessions[0].Absent())
	}
}

// Of two copies of one volume, the one cut short is not the one read,
// whichever comes first.
func TestGatherReadsTheWholeCopy(t *testing.T) {
	whole := vol("B", v2, part{session: 2, level: "full", end: 10, final: true}, part{session: 3, level: "incremental", hour: 1, end: 10, final: true})
	cut := vol("B", v2, part{session: 2, level: "full", end: 10, final: true}, part{session: 3, level: "incremental", hour: 1, end: 4, torn: true})
	cut.Name = "/pile/B-copy.cvol"
	for _, vs := range [][]*Volume{{whole, cut}, {cut, whole}} {
		s := Gather(vs)
		if len(s.Volumes) != 1 || s.Volumes[0] != whole {
			t.Errorf("read %s, want the whole copy", s.Volumes[0].Name)
		}
	}
}

func TestChain(t *testing.T) {
	s := Gather(week())
	for at, want := range map[int][]int{
		1: {1},       // the full alone
		2: {1, 2},    // an earlier point
		3: {1, 2, 3}, // the full and the incrementals after it
		4: {1, 4},    // a differential folds the incrementals before it
		5: {1, 4, 5}, // an incremental after it builds on it, not on one torn
		6: {1, 4, 6}, // one torn, asked for, is read as far as it goes
		9: {9},       // another client's chain is its own
	} {
		ss, err := s.Session(sid(at).String())
		if err != nil {
			t.Fatal(err)
		}
		chain, err := s.Chain(ss)
		var w []uuid.UUID
		for _, n := range want {
			w = append(w, sid(n))
		}
		if err != nil || !slices.Equal(ids(chain), w) {
			t.Errorf("chain at session %d: %v, %v; want %v", at, ids(chain), err, w)
		}
	}
	// The full not given: the chain goes back as far as it can, and says
	// what is missing.
	noFull := Gather(week()[2:])
	at, _ := noFull.Session(sid(5).String())
	chain, err := noFull.Chain(at)
	var me *MissingError
	if !errors.As(err, &me) || !me.Missing[0].Full || len(chain) != 2 || !strings.Contains(err.Error(), "full backup of client web01") {
		t.Errorf("chain with the full not given: %v, %v", ids(chain), err)
	}
	// A time, with two clients on the volumes: say which.
	if _, err := s.At("", time.Date(2026, 12, 1, 3, 30, 0, 0, time.UTC)); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("At with two clients and none named: %v", err)
	}
	if ss, err := s.At("web01", time.Date(2026, 12, 1, 3, 30, 0, 0, time.UTC)); err != nil || ss.ID != sid(4) {
		t.Errorf("At 03:30 of web01: %v, %v; want the differential", ss, err)
	}
}

// A block is found in the part that holds its stream offset; one in a
// part not given is missing, named by the volume the part after it
// names; one past a part cut short is lost to the cut.
func TestLocate(t *testing.T) {
	s := Gather(week())
	if p, err := s.Locate(sid(1), 120, 12, 12); err != nil || p.Vol.Label.Name != "B" {
		t.Errorf("offset 120 of the full: %v, %v; want its part on B", p.Vol, err)
	}
	// A block that starts at the end of A goes on on B.
	if p, err := s.Locate(sid(1), 95, 9, 10); err != nil || p.Vol.Label.Name != "A" {
		t.Errorf("offset 95 of the full, to block 10: %v, %v; want its part on A", p.Vol, err)
	}
	if _, err := Gather([]*Volume{week()[0]}).Locate(sid(1), 95, 9, 10); !errors.Is(err, ErrMissing) {
		t.Errorf("a block going on on B, B not given: %v", err)
	}
	noA := Gather(week()[1:])
	_, err := noA.Locate(sid(1), 50, 5, 5)
	var me *MissingError
	if !errors.As(err, &me) || !errors.Is(err, ErrMissing) || me.Missing[0].Known == nil {
		t.Fatalf("offset 50 with A not given: %v", err)
	}
	me.Add(me.Missing[0], Need{Session: sid(3), Path: "/db/main.db"})
	if msg := me.Error(); !strings.Contains(msg, "its part 0 (on volume ["+v1.String()+"])") || !strings.Contains(msg, "/db/main.db") {
		t.Errorf("missing part 0: %s", msg)
	}
	_, err = noA.Locate(sid(7), 0, 0, 0)
	if !errors.As(err, &me) || me.Missing[0].Known != nil {
		t.Fatalf("a session on no volume: %v", err)
	}
	m := me.Missing[0]
	m.Where = noA.Around("web01", time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC))
	if msg := m.String(); !strings.Contains(msg, "no volume given holds any of it") || !strings.Contains(msg, sid(3).String()) || !strings.Contains(msg, "volume B") {
		t.Errorf("a session on no volume: %s", msg)
	}
	cut := Gather([]*Volume{vol("A", v1, part{session: 1, level: "full", end: 60, torn: true}), week()[1]})
	_, err = cut.Locate(sid(1), 80, 8, 8)
	var ce *CutError
	if !errors.As(err, &ce) || !strings.Contains(ce.Error(), "volume A") {
		t.Errorf("offset 80 past A cut at 60: %v", err)
	}
	if _, err = cut.Locate(sid(1), 50, 5, 10); !errors.As(err, &ce) {
		t.Errorf("a block from before the cut of A on into B: %v", err)
	}
	// The full's last part not given: the part before says it goes on.
	noB := Gather([]*Volume{week()[0]})
	if a := noB.Sessions[0].Absent(); !strings.Contains(a, "after part 0, which lies on volume A") {
		t.Errorf("the full's last part not given: %q", a)
	}
}

// A part whose header damage took keeps its own place: nothing says
// which part it is, and it is not taken for another.
func TestHeaderLostPartIsKept(t *testing.T) {
	s := Gather([]*Volume{
		vol("A", v1, part{session: 1, level: "full", end: 100}),
		vol("D", v4, part{session: 1, n: 0, start: 100, end: 150, torn: true, headerLostOnly: true}),
	})
	if len(s.Sessions) != 1 || len(s.Sessions[0].Parts) != 2 {
		t.Fatalf("sessions %d, parts %d", len(s.Sessions), len(s.Sessions[0].Parts))
	}
}

// Sessions whose headers name their parents chain as the catalog did: two
// file sets of one client, whose sessions interleave, are two chains; a
// parent not given is named by its backup id.
func TestChainByParents(t *testing.T) {
	pile := []*Volume{vol("P", v1,
		part{session: 1, level: "full", hour: 0, end: 10, final: true, backup: 1},
		part{session: 2, level: "full", hour: 1, end: 10, final: true, backup: 2},
		part{session: 3, level: "incremental", hour: 2, end: 10, final: true, backup: 3, parent: 1},
		part{session: 4, level: "incremental", hour: 3, end: 10, final: true, backup: 4, parent: 2},
		part{session: 5, level: "differential", hour: 4, end: 10, final: true, backup: 5, parent: 1},
		part{session: 6, level: "incremental", hour: 5, end: 10, final: true, backup: 6, parent: 5})}
	s := Gather(pile)
	for at, want := range map[int][]uuid.UUID{
		3: {sid(1), sid(3)},
		4: {sid(2), sid(4)},
		6: {sid(1), sid(5), sid(6)},
	} {
		ss, _ := s.Session(sid(at).String())
		chain, err := s.Chain(ss)
		if err != nil || !slices.Equal(ids(chain), want) {
			t.Errorf("chain at session %d: %v, %v; want %v", at, ids(chain), err, want)
		}
	}
	pile[0].Parts = slices.Delete(pile[0].Parts, 4, 5) // the differential
	s = Gather(pile)
	ss, _ := s.Session(sid(6).String())
	chain, err := s.Chain(ss)
	var me *MissingError
	if !errors.As(err, &me) || me.Missing[0].Backup != 5 || !strings.Contains(err.Error(), "backup 5 of client web01, which backup 6") || len(chain) != 1 {
		t.Errorf("chain with its differential not given: %v, %v", ids(chain), err)
	}
}

// A session none of whose parts are given is named by the volume the
// chains recorded in the headers of later sessions put it on.
func TestExplainByRecordedChain(t *testing.T) {
	pile := []*Volume{vol("C", v3, part{session: 5, level: "incremental", hour: 4, end: 10, final: true, backup: 5, parent: 4})}
	pile[0].Parts[0].Header.Chain = []volume.ChainPart{
		{Session: sid(1), Backup: 1, Volume: v1, Name: "Default-0001"},
		{Session: sid(4), Backup: 4, Volume: v2, Name: "Default-0002"},
	}
	s := Gather(pile)
	ss, _ := s.Session(sid(5).String())
	_, err := s.Chain(ss)
	var me *MissingError
	if !errors.As(err, &me) {
		t.Fatalf("chain with its parent not given: %v", err)
	}
	s.Explain(me)
	if msg := me.Error(); !strings.Contains(msg, "backup 4") || !strings.Contains(msg, "Default-0002 ["+v2.String()+"]") || strings.Contains(msg, "Default-0001") {
		t.Errorf("the parent not given: %s", msg)
	}
	_, err = s.Locate(sid(1), 0, 0, 0)
	if !errors.As(err, &me) {
		t.Fatalf("a block of the full: %v", err)
	}
	me.Add(me.Missing[0], Need{Session: sid(5), Path: "/db/main.db"})
	s.Explain(me)
	if msg := me.Error(); !strings.Contains(msg, "Default-0001 ["+v1.String()+"]") || !strings.Contains(msg, "/db/main.db") {
		t.Errorf("the full's session not given: %s", msg)
	}
}
