package catalog

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/bbolt"

	"github.com/cairnbackup/cairn/retention"
	"github.com/cairnbackup/cairn/schedule"
)

// Expiry: OpExpireBackups removes backups from the catalog, with their
// index segments, for the expiry pass (what package retention expires) or
// for an operator's 'cairn backup delete'. The leader computes the list;
// the applier checks it again against the catalog as of its place in the
// log, because a hold, a new incremental or a restore may have come in
// between:
//
//   - a backup on hold (its own or its client's) stays;
//   - a backup that a backup staying builds on stays (its dependents are
//     every backup naming it as parent that is not aborted);
//   - a backup that a queued or running restore reads (any backup of the
//     chain of the restore's backup) stays.
//
// The expiry pass's batch expires what may go and reports the rest
// (ApplyResult.Kept); an operator's deletion is all or nothing, refused
// naming what keeps it. Every expired backup leaves a record in the expiry
// history (Expiries). A volume that no backup is on any more becomes
// VolumeExpired (a disk volume: its node deletes the file, then
// OpForgetVolume removes it) or VolumeRecyclable (a tape: the next backup of
// its pool that needs a new tape may relabel it). DESIGN.md, "Expiry".

// BackupsExpire lists the backups to remove.
type BackupsExpire struct {
	Backups []ExpiringBackup `json:"backups"`
	// By is who expires them: "expiry pass", or the operator who deletes.
	By string `json:"by,omitempty"`
	// Manual is an operator's deletion: all of Backups go, or none.
	Manual bool `json:"manual,omitempty"`
}

// ExpiringBackup is one backup to remove, and why.
type ExpiringBackup struct {
	ID     uint64 `json:"id"`
	Reason string `json:"reason"`
}

// VolumeForget removes a volume that is expired and whose file its
// storage node has deleted.
type VolumeForget struct {
	VolumeID uuid.UUID `json:"volume_id"`
}

// ExpiryKept is a backup the expiry command was asked to remove and kept.
type ExpiryKept struct {
	ID     uint64 `json:"id"`
	Reason string `json:"reason"`
}

// MaxExpiries bounds the expiry history; the oldest records go first.
const MaxExpiries = 100_000

// Expiry is one record of the expiry history: a backup that left the
// catalog, when, why and on whose order.
type Expiry struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Backup    uint64    `json:"backup"`
	Client    string    `json:"client"`
	FileSet   string    `json:"file_set"`
	Level     Level     `json:"level"`
	StartTime time.Time `json:"start_time"`
	Pool      string    `json:"pool"`
	Bytes     int64     `json:"bytes"`
	Reason    string    `json:"reason"`
	By        string    `json:"by"`
}

var keyNextExpiry = []byte("next_expiry")

// restoreReads is every backup a queued or running restore reads, and the
// restore that reads it.
func restoreReads(tx *bbolt.Tx) (map[uint64]uint64, error) {
	reads := map[uint64]uint64{}
	err := tx.Bucket(bJobsActive).ForEach(func(k, _ []byte) error {
		var j Job
		ok, err := getJSON(tx, bJobs, k, &j)
		if err != nil || !ok || j.Type != JobRestore {
			return err
		}
		for id := j.BackupID; id != 0; {
			reads[id] = j.ID
			var b Backup
			ok, err := getJSON(tx, bBackups, u64(id), &b)
			if err != nil || !ok || b.Parent >= id {
				return err
			}
			id = b.Parent
		}
		return nil
	})
	return reads, err
}

// children maps each backup of a client to the backups naming it as parent
// that are not aborted: what a restore of them would read it for.
func children(tx *bbolt.Tx, client string) (map[uint64][]uint64, error) {
	out := map[uint64][]uint64{}
	idx, err := timeIndex(tx)
	if err != nil {
		return nil, err
	}
	// Every backup of the client, with no decode but of the parent and
	// the state: a command of the first pass asks this of a hundred
	// clients of five years each.
	c := idx.Cursor()
	prefix := clientPrefix(client)
	aborted := []byte(BackupAborted)
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		parent, _, state, _, ok := splitTimeValue(v)
		if !ok || len(k) < len(prefix)+8 {
			return nil, badTimeEntry(k)
		}
		if parent != 0 && !bytes.Equal(state, aborted) {
			id := binary.BigEndian.Uint64(k[len(k)-8:])
			out[parent] = append(out[parent], id)
		}
	}
	return out, nil
}

func (a *applier) expireBackups(e *BackupsExpire) error {
	batch := slices.Clone(e.Backups)
	// Children have larger ids than their parents (Chain): deciding from the
	// largest down decides every dependent before the backup it needs.
	slices.SortFunc(batch, func(x, y ExpiringBackup) int { return cmp.Compare(y.ID, x.ID) })
	batch = slices.CompactFunc(batch, func(x, y ExpiringBackup) bool { return x.ID == y.ID })
	reads, err := restoreReads(a.tx)
	if err != nil {
		return err
	}
	inBatch := map[uint64]bool{}
	for _, x := range batch {
		inBatch[x.ID] = true
	}
	kids := map[string]map[uint64][]uint64{}
	going := map[uint64]bool{}
	var gone []*Backup
	var reasons []string
	for _, x := range batch {
		b, err := a.backup(x.ID)
		if err != nil {
			return err
		}
		if b == nil {
			if e.Manual {
				return refuse(CodeNotFound, "list backups with 'cairn backup list'", "backup %d does not exist", x.ID)
			}
			continue // expired by an earlier command: a retried batch
		}
		keep := ""
		if b.State == BackupWriting {
			keep = "it is being written"
		} else if h, err := heldBy(a.tx, b); err != nil {
			return err
		} else if h != nil {
			keep = fmt.Sprintf("%s is on legal hold", h.What())
			if h.Reason != "" {
				keep += " (" + h.Reason + ")"
			}
			keep += ": release it with 'cairn backup release'"
		}
		if job, ok := reads[b.ID]; ok && keep == "" {
			keep = fmt.Sprintf("restore job %d reads it", job)
		}
		if keep == "" {
			ks, ok := kids[b.Client]
			if !ok {
				if ks, err = children(a.tx, b.Client); err != nil {
					return err
				}
				kids[b.Client] = ks
			}
			var staying []uint64
			for _, c := range ks[b.ID] {
				if !going[c] {
					staying = append(staying, c)
				}
			}
			if len(staying) > 0 {
				slices.Sort(staying)
				keep = fmt.Sprintf("backups %s build on it", joinIDs(staying))
				if len(staying) == 1 {
					keep = fmt.Sprintf("backup %d builds on it", staying[0])
				}
				if e.Manual && !allIn(staying, inBatch) {
					return refuse(CodeWrongState, "delete its dependents too with --with-dependents, or delete them first",
						"backup %d cannot be deleted: %s", b.ID, keep)
				}
			}
		}
		if keep != "" {
			if e.Manual {
				return refuse(CodeWrongState, "", "backup %d cannot be deleted: %s", b.ID, keep)
			}
			a.res.Kept = append(a.res.Kept, ExpiryKept{ID: b.ID, Reason: keep})
			continue
		}
		going[b.ID] = true
		gone = append(gone, b)
		reasons = append(reasons, x.Reason)
	}
	// Oldest first, so the history reads in the order the backups were made.
	slices.Reverse(gone)
	slices.Reverse(reasons)
	vols := map[uuid.UUID]bool{}
	for i, b := range gone {
		if err := a.removeBackup(b, reasons[i], e.By); err != nil {
			return err
		}
		for _, p := range b.Parts {
			vols[p.VolumeID] = true
		}
		a.res.Expired = append(a.res.Expired, b.ID)
	}
	slices.Sort(a.res.Expired)
	ids := make([]uuid.UUID, 0, len(vols))
	for id := range vols {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(x, y uuid.UUID) int { return bytes.Compare(x[:], y[:]) })
	for _, id := range ids {
		if err := a.volumeMaybeEmpty(id); err != nil {
			return err
		}
	}
	return nil
}

func allIn(ids []uint64, set map[uint64]bool) bool {
	for _, id := range ids {
		if !set[id] {
			return false
		}
	}
	return true
}

func joinIDs(ids []uint64) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(id)
	}
	return strings.Join(s, ", ")
}

// removeBackup takes a backup and its index out of the catalog and records
// its expiry.
func (a *applier) removeBackup(b *Backup, reason, by string) error {
	if err := a.deleteBackup(b); err != nil {
		return err
	}
	meta := a.tx.Bucket(bMeta)
	seq := getU64(meta, keyNextExpiry)
	if err := meta.Put(keyNextExpiry, u64(seq+1)); err != nil {
		return err
	}
	rec := Expiry{Seq: seq, Time: a.now, Backup: b.ID, Client: b.Client, FileSet: b.FileSet, Level: b.Level,
		StartTime: b.StartTime, Pool: b.Pool, Bytes: b.StoredBytes, Reason: reason, By: by}
	if err := putJSON(a.tx, bExpiries, u64(seq), &rec); err != nil {
		return err
	}
	if seq >= MaxExpiries {
		return a.tx.Bucket(bExpiries).Delete(u64(seq - MaxExpiries))
	}
	return nil
}

// deleteBackup takes a backup, its index and every entry of it in the
// catalog's indexes and counters out of the catalog.
func (a *applier) deleteBackup(b *Backup) error {
	if err := a.deleteSegments(b.ID); err != nil {
		return err
	}
	if err := indexParts(a.tx, b.ID, b.Parts, nil); err != nil {
		return err
	}
	if err := a.tx.Bucket(bBackups).Delete(u64(b.ID)); err != nil {
		return err
	}
	if err := a.tx.Bucket(bBackupsByClient).Delete(nameKey(b.Client, b.ID)); err != nil {
		return err
	}
	if err := indexBackupTime(a.tx, b, nil); err != nil {
		return err
	}
	if err := a.tx.Bucket(bHolds).Delete(backupHoldKey(b.ID)); err != nil {
		return err
	}
	return addCount(a.tx, "backup", string(b.State), -1)
}

// volumeHasBackups reports whether any backup has a part on the volume.
func volumeHasBackups(tx *bbolt.Tx, id uuid.UUID) bool {
	k, _ := tx.Bucket(bVolumeBackups).Cursor().Seek(id[:])
	return k != nil && bytes.HasPrefix(k, id[:])
}

// volumeMaybeEmpty marks a volume that no backup is on any more: a disk
// volume expired (its node deletes it), a tape recyclable. A volume a job
// writes is left alone: its session is not committed yet.
func (a *applier) volumeMaybeEmpty(id uuid.UUID) error {
	v, err := a.volume(id)
	if err != nil || v == nil {
		return err
	}
	if volumeHasBackups(a.tx, id) || v.WriterJob != 0 {
		return nil
	}
	old := *v
	switch {
	case v.MediaType.HasLibrary() && (v.State == VolumeAppend || v.State == VolumeFull):
		v.State = VolumeRecyclable
	case !v.MediaType.HasLibrary() && (v.State == VolumeAppend || v.State == VolumeFull || v.State == VolumeError):
		// A damaged disk volume goes too: its file is all it is.
		v.State = VolumeExpired
	default:
		// A tape in error stays so: recycled, it would be written again.
		return nil
	}
	a.res.Emptied = append(a.res.Emptied, id)
	return a.putVolume(&old, v)
}

func (a *applier) forgetVolume(f *VolumeForget) error {
	v, err := a.volume(f.VolumeID)
	if err != nil {
		return err
	}
	if v == nil {
		return nil // forgotten before: a retry
	}
	if v.State != VolumeExpired {
		return refuse(CodeWrongState, "", "volume %s is %s: only an expired volume is forgotten", v.Name, v.State)
	}
	if volumeHasBackups(a.tx, v.ID) || v.WriterJob != 0 {
		return refuse(CodeWrongState, "", "volume %s holds backups again", v.Name)
	}
	if err := a.tx.Bucket(bVolumes).Delete(v.ID[:]); err != nil {
		return err
	}
	return a.tx.Bucket(bVolumeNames).Delete([]byte(v.Name))
}

// Expiries returns the expiry history, newest first: at most limit records
// (0: all) older than before (0: from the newest).
func (s *Store) Expiries(before uint64, limit int) ([]Expiry, error) {
	var out []Expiry
	err := s.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bExpiries)
		if b == nil {
			return nil
		}
		return reverse(b, nil, func(k []byte) (bool, error) {
			if before != 0 && binary.BigEndian.Uint64(k) >= before {
				return true, nil
			}
			var e Expiry
			if err := jsonUnmarshal(bExpiries, k, b.Get(k), &e); err != nil {
				return false, err
			}
			out = append(out, e)
			return limit <= 0 || len(out) < limit, nil
		})
	})
	return out, err
}

// Dependents returns the backups that build on id, directly or through
// others, that are not aborted: what a deletion of id would take along.
func (s *Store) Dependents(id uint64) ([]Backup, error) {
	var out []Backup
	err := s.view(func(tx *bbolt.Tx) error {
		var b Backup
		ok, err := getJSON(tx, bBackups, u64(id), &b)
		if err != nil {
			return err
		}
		if !ok {
			return notFound("backup %d does not exist", id)
		}
		byID := map[uint64]Backup{}
		kids := map[uint64][]uint64{}
		err = eachClientBackup(tx, b.Client, func(c *Backup) bool {
			byID[c.ID] = *c
			if c.Parent != 0 && c.State != BackupAborted {
				kids[c.Parent] = append(kids[c.Parent], c.ID)
			}
			return true
		})
		if err != nil {
			return err
		}
		queue := slices.Clone(kids[id])
		for len(queue) > 0 {
			c := queue[0]
			queue = queue[1:]
			out = append(out, byID[c])
			queue = append(queue, kids[c]...)
		}
		slices.SortFunc(out, func(x, y Backup) int { return cmp.Compare(x.ID, y.ID) })
		return nil
	})
	return out, err
}

// RetentionFor gives the retention of a client's file set, and false when
// none covers it: its backups are kept until deleted by hand.
type RetentionFor func(client, fileSet string) (*retention.Policy, bool)

// ExpiryPlan is what the expiry pass would do now: the decisions on the
// backups of every client and file set that a retention covers.
type ExpiryPlan struct {
	Decisions []retention.Decision
	// Groups counts the client and file sets a retention covers.
	Groups int
	// Backups counts the backups decided on.
	Backups int
}

// Expired are the decisions that expire a backup.
func (p *ExpiryPlan) Expired() []retention.Decision {
	var out []retention.Decision
	for _, d := range p.Decisions {
		if !d.Keep {
			out = append(out, d)
		}
	}
	return out
}

// Batches cuts the expired backups of the plan into expiry commands of at
// most n backups each, newest (largest id) first: a backup's dependents
// have larger ids than it, so they leave in the same command or an earlier
// one, and a chain cut by a batch boundary still goes whole in one pass.
// By id across every client of the plan, not client after client: ids
// follow time, and a night's backups of many clients lie side by side in
// the backups bucket, so a command of a few clients' nights rewrites a few
// pages where one of a single client's years rewrote a page per backup.
func (p *ExpiryPlan) Batches(n int, by string) []*BackupsExpire {
	var expired []*retention.Decision
	for i := range p.Decisions {
		if !p.Decisions[i].Keep {
			expired = append(expired, &p.Decisions[i])
		}
	}
	slices.SortFunc(expired, func(x, y *retention.Decision) int { return cmp.Compare(y.ID, x.ID) })
	var out []*BackupsExpire
	var cur *BackupsExpire
	for _, d := range expired {
		if cur == nil || len(cur.Backups) == n {
			cur = &BackupsExpire{By: by}
			out = append(out, cur)
		}
		cur.Backups = append(cur.Backups, ExpiringBackup{ID: d.ID, Reason: d.Why()})
	}
	return out
}

// PlanExpiry decides, with package retention, on the backups of every
// client and file set that retentionFor covers; the others are not looked
// at. Holds are read from the catalog. With expiredOnly, kept backups are
// left out of the plan (the pass needs only what goes).
func (s *Store) PlanExpiry(retentionFor RetentionFor, expiredOnly bool) (*ExpiryPlan, error) {
	return s.PlanExpiryOf(nil, retentionFor, expiredOnly)
}

// PlanExpiryOf is PlanExpiry for the backups of clients only (every client
// when nil), which it reads without going through the others': a list of
// a few clients' backups says what would expire of them at the cost of
// those backups, not of the whole catalog.
func (s *Store) PlanExpiryOf(clients []string, retentionFor RetentionFor, expiredOnly bool) (*ExpiryPlan, error) {
	if clients == nil {
		plan, _, err := s.PlanExpiryFrom("", 0, retentionFor, expiredOnly)
		return plan, err
	}
	p := newExpiryPlanner(retentionFor, expiredOnly)
	err := s.view(func(tx *bbolt.Tx) error {
		idx, err := timeIndex(tx)
		if err != nil {
			return err
		}
		c := idx.Cursor()
		for _, name := range slices.Compact(slices.Sorted(slices.Values(clients))) {
			prefix := clientPrefix(name)
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
				if _, err := p.visit(tx, k, v); err != nil {
					return err
				}
			}
		}
		return p.flush(tx)
	})
	return p.plan, err
}

// PlanExpiryFrom is PlanExpiry for the clients after the client named
// after ("": from the first), by name, whole clients at a time, until the
// plan holds limit decisions or more (0: no limit). Next is the last
// client planned, where the following call starts, "" when the plan
// reached the last client. A pass over a big catalog plans and expires it
// a part at a time: it never holds the decisions on every backup, and a
// read transaction never spans the pass.
func (s *Store) PlanExpiryFrom(after string, limit int, retentionFor RetentionFor, expiredOnly bool) (plan *ExpiryPlan, next string, err error) {
	p := newExpiryPlanner(retentionFor, expiredOnly)
	err = s.view(func(tx *bbolt.Tx) error {
		idx, err := timeIndex(tx)
		if err != nil {
			return err
		}
		c := idx.Cursor()
		k, v := c.First()
		if after != "" {
			// Past every key of after: its 0 separator made 1.
			k, v = c.Seek(append([]byte(after), 1))
		}
		for ; k != nil; k, v = c.Next() {
			changed, err := p.visit(tx, k, v)
			if err != nil {
				return err
			}
			if changed && limit > 0 && len(p.plan.Decisions) >= limit {
				next = p.last
				return nil
			}
		}
		return p.flush(tx)
	})
	return p.plan, next, err
}

// expiryPlanner decides on the backups of one client at a time, as the
// index hands them over: by client, file set, then time.
type expiryPlanner struct {
	retentionFor RetentionFor
	expiredOnly  bool
	plan         *ExpiryPlan
	planner      retention.Planner
	decisions    []retention.Decision
	// client is the one being read, sets its backups by file set in the
	// order met; last is the last client decided on.
	client string
	sets   [][]retention.Backup
	last   string
}

func newExpiryPlanner(rf RetentionFor, expiredOnly bool) *expiryPlanner {
	return &expiryPlanner{retentionFor: rf, expiredOnly: expiredOnly, plan: &ExpiryPlan{}}
}

// visit adds an index entry; at a new client it first decides on the one
// before, and reports that it did.
func (p *expiryPlanner) visit(tx *bbolt.Tx, k, v []byte) (bool, error) {
	i := bytes.IndexByte(k, 0)
	if i < 0 {
		return false, fmt.Errorf("catalog %s: bad key %x", bBackupTimes, k)
	}
	changed := false
	if client := k[:i]; string(client) != p.client {
		if err := p.flush(tx); err != nil {
			return false, err
		}
		p.client, changed = string(client), p.client != ""
	}
	e, err := decodeBackupTime(k, v, i+1)
	if err != nil {
		return false, err
	}
	b := retention.Backup{ID: e.ID, Time: e.StartTime, Level: schedule.Level(e.Level), Parent: e.Parent,
		Client: p.client, FileSet: e.FileSet, State: retention.State(e.State)}
	if n := len(p.sets); n == 0 || p.sets[n-1][0].FileSet != e.FileSet {
		p.sets = append(p.sets, nil)
	}
	p.sets[len(p.sets)-1] = append(p.sets[len(p.sets)-1], b)
	return changed, nil
}

// flush decides on the backups of the client read so far.
func (p *expiryPlanner) flush(tx *bbolt.Tx) error {
	if len(p.sets) == 0 {
		return nil
	}
	holds := tx.Bucket(bHolds)
	clientHeld := holds != nil && holds.Get(clientHoldKey(p.client)) != nil
	for _, group := range p.sets {
		pol, ok := p.retentionFor(p.client, group[0].FileSet)
		if !ok || pol == nil {
			continue
		}
		for i := range group {
			group[i].Held = clientHeld || (holds != nil && holds.Get(backupHoldKey(group[i].ID)) != nil)
		}
		p.plan.Groups++
		p.plan.Backups += len(group)
		p.decisions = p.planner.PlanGroup(group, pol, p.decisions[:0])
		for _, d := range p.decisions {
			if !p.expiredOnly || !d.Keep {
				p.plan.Decisions = append(p.plan.Decisions, d)
			}
		}
	}
	p.sets = p.sets[:0]
	p.last = p.client
	return nil
}

// TapeRecycle reuses a recyclable tape of a pool for a backup that needs a
// new tape (WriterJob): the tape starts over after its label, as if just
// labeled, and its old sessions are overwritten. With NewID (the leader's
// choice; OpRenewTape), the cartridge becomes a new volume of that id, created now,
// whose label its writer writes over the old one before any data (the
// volume's Relabel names the old one until it reports so): every life of a
// cartridge is a volume of its own, so nothing read from the tape without
// the catalog takes an old session for the new volume's.
type TapeRecycle struct {
	VolumeID  uuid.UUID `json:"volume_id"`
	WriterJob uint64    `json:"writer_job"`
	NewID     uuid.UUID `json:"new_id,omitzero"`
}

func (a *applier) recycleTape(r *TapeRecycle) error {
	v, err := a.volume(r.VolumeID)
	if err != nil {
		return err
	}
	if v == nil && r.NewID != uuid.Nil {
		if nv, err := a.volume(r.NewID); err != nil || (nv != nil && nv.Relabel == r.VolumeID && nv.WriterJob == r.WriterJob) {
			if nv != nil {
				a.res.VolumeID = nv.ID
			}
			return err // a retry
		}
	}
	if v == nil {
		return refuse(CodeNotFound, "", "volume %s does not exist", r.VolumeID)
	}
	if v.State == VolumeAppend && v.WriterJob == r.WriterJob && v.Sessions == 0 {
		return nil // a retry
	}
	switch {
	case !v.MediaType.HasLibrary():
		return refuse(CodeInvalidArgument, "", "volume %s is not a tape", v.Name)
	case v.State != VolumeRecyclable:
		return refuse(CodeWrongState, "", "tape %s is %s, not recyclable", v.Name, v.State)
	case volumeHasBackups(a.tx, v.ID):
		return refuse(CodeWrongState, "", "tape %s holds backups", v.Name)
	}
	if err := a.checkWriter(r.WriterJob); err != nil {
		return err
	}
	old := *v
	v.State = VolumeAppend
	v.Bytes = int64(v.BlockSize)
	v.Sessions = 0
	v.PartStarts = nil
	v.LastWritten = time.Time{}
	v.Error = ""
	v.WriterJob = r.WriterJob
	a.res.VolumeID = v.ID
	if r.NewID == uuid.Nil || r.NewID == v.ID {
		return a.putVolume(&old, v)
	}
	if other, err := a.volume(r.NewID); err != nil || other != nil {
		if err == nil {
			err = refuse(CodeAlreadyExists, "", "volume %s exists already", r.NewID)
		}
		return err
	}
	if err := a.tx.Bucket(bVolumes).Delete(old.ID[:]); err != nil {
		return err
	}
	if old.WriterJob != 0 {
		if err := a.tx.Bucket(bVolumesHeld).Delete(heldKey(old.WriterJob, old.ID)); err != nil {
			return err
		}
	}
	v.ID, v.Relabel, v.Created = r.NewID, old.ID, a.now
	a.res.VolumeID = v.ID
	return a.putVolume(nil, v)
}
