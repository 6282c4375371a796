package catalog

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/bbolt"

	"github.com/cairnbackup/cairn/fileindex"
)

// applier applies one command inside one write transaction. Everything it
// writes depends only on the command and the catalog: never on the clock,
// randomness or the server it runs on.
type applier struct {
	tx  *bbolt.Tx
	now time.Time
	res *ApplyResult
}

func (a *applier) apply(c *Command) error {
	switch c.Op {
	case OpRegisterClient:
		return a.registerClient(c.Client)
	case OpRegisterNode:
		return a.registerNode(c.Node)
	case OpCreatePool:
		return a.createPool(c.Pool)
	case OpPutKey:
		return a.putKey(c.Key)
	case OpCreateJob:
		if rec, err := a.knownRequest(c.Request, OpCreateJob); err != nil || rec != nil {
			return err
		}
		return a.createJob(c.Job, c.Request)
	case OpUpdateJob:
		return a.updateJob(c.JobUpdate)
	case OpAppendJobLog:
		return a.appendJobLog(c.JobLog)
	case OpCreateVolume:
		return a.createVolume(c.Volume)
	case OpUpdateVolume:
		return a.updateVolume(c.VolumeUpdate)
	case OpAddIndexSegment:
		return a.addIndexSegment(c.Segment)
	case OpCommitBackup:
		return a.commitBackup(c.Commit)
	case OpAbortBackup:
		return a.abortBackup(c.Abort)
	case OpDispatchJob:
		return a.dispatchJob(c.Dispatch)
	case OpRequeueJob:
		return a.requeueJob(c.Requeue)
	case OpLabelTape:
		if rec, err := a.knownRequest(c.Request, OpLabelTape); err != nil || rec != nil {
			return err
		}
		return a.labelTape(c.TapeLabel, c.Request)
	case OpMoveTape:
		return a.moveTape(c.TapeMove)
	case OpAssignTape:
		return a.assignTape(c.TapeAssign)
	case OpInitGroup:
		return a.initGroup(c.Group)
	case OpCancelJob:
		return a.cancelJob(c.Cancel)
	case OpRotateSecrets:
		return a.rotateSecrets(c.Rotation)
	case OpAcceptJob:
		return a.acceptJob(c.Accept)
	case OpVoidJobs:
		return a.voidJobs(c.Void)
	case OpForgetRequests:
		return a.forgetRequests(c.Forget)
	}
	return refuse(CodeInvalidArgument, "upgrade this server to the leader's version", "unknown catalog operation %q", c.Op)
}

func missing(op Op) error {
	return refuse(CodeInvalidArgument, "", "catalog operation %s without its payload", op)
}

// validName refuses names that cannot be keys: empty, too long, or holding
// the 0 byte that separates a name from an id in the indexes.
func validName(kind, name string) error {
	switch {
	case name == "":
		return refuse(CodeInvalidArgument, "", "%s name is empty", kind)
	case len(name) > 255:
		return refuse(CodeInvalidArgument, "use a name of at most 255 bytes", "%s name %.40q… is too long", kind, name)
	case strings.ContainsRune(name, 0):
		return refuse(CodeInvalidArgument, "", "%s name %q holds a NUL byte", kind, name)
	}
	return nil
}

// ---- gets and puts that keep the indexes ----

func (a *applier) client(name string) (*Client, error) {
	var c Client
	ok, err := getJSON(a.tx, bClients, []byte(name), &c)
	if err != nil || !ok {
		return nil, err
	}
	return &c, nil
}

func (a *applier) pool(name string) (*Pool, error) {
	var p Pool
	ok, err := getJSON(a.tx, bPools, []byte(name), &p)
	if err != nil || !ok {
		return nil, err
	}
	return &p, nil
}

func (a *applier) job(id uint64) (*Job, error) {
	var j Job
	ok, err := getJSON(a.tx, bJobs, u64(id), &j)
	if err != nil || !ok {
		return nil, err
	}
	return &j, nil
}

func (a *applier) backup(id uint64) (*Backup, error) {
	var b Backup
	ok, err := getJSON(a.tx, bBackups, u64(id), &b)
	if err != nil || !ok {
		return nil, err
	}
	return &b, nil
}

func (a *applier) volume(id uuid.UUID) (*Volume, error) {
	var v Volume
	ok, err := getJSON(a.tx, bVolumes, id[:], &v)
	if err != nil || !ok {
		return nil, err
	}
	return &v, nil
}

// putJob stores j (old is its previous version, nil for a new job) and keeps
// the client index, the active index and the state counters.
func (a *applier) putJob(old, j *Job) error {
	stored := *j
	stored.Log = nil
	if err := putJSON(a.tx, bJobs, u64(j.ID), &stored); err != nil {
		return err
	}
	if old == nil {
		if err := a.tx.Bucket(bJobsByClient).Put(nameKey(j.Client, j.ID), nil); err != nil {
			return err
		}
	}
	if old != nil && old.State == j.State {
		return nil
	}
	active := a.tx.Bucket(bJobsActive)
	if j.State.Done() {
		if err := active.Delete(u64(j.ID)); err != nil {
			return err
		}
	} else if err := active.Put(u64(j.ID), nil); err != nil {
		return err
	}
	if old != nil {
		if err := addCount(a.tx, "job", string(old.State), -1); err != nil {
			return err
		}
	}
	return addCount(a.tx, "job", string(j.State), 1)
}

func (a *applier) putBackup(old, b *Backup) error {
	if err := putJSON(a.tx, bBackups, u64(b.ID), b); err != nil {
		return err
	}
	if old == nil {
		if err := a.tx.Bucket(bBackupsByClient).Put(nameKey(b.Client, b.ID), nil); err != nil {
			return err
		}
	}
	if old != nil && old.State == b.State {
		return nil
	}
	if old != nil {
		if err := addCount(a.tx, "backup", string(old.State), -1); err != nil {
			return err
		}
	}
	return addCount(a.tx, "backup", string(b.State), 1)
}

// heldKey indexes the volumes a job holds, so releasing them needs no scan.
func heldKey(job uint64, vol uuid.UUID) []byte { return append(u64(job), vol[:]...) }

func (a *applier) putVolume(old, v *Volume) error {
	if err := putJSON(a.tx, bVolumes, v.ID[:], v); err != nil {
		return err
	}
	if old == nil || old.Name != v.Name {
		if old != nil {
			if err := a.tx.Bucket(bVolumeNames).Delete([]byte(old.Name)); err != nil {
				return err
			}
		}
		if err := a.tx.Bucket(bVolumeNames).Put([]byte(v.Name), v.ID[:]); err != nil {
			return err
		}
	}
	held := a.tx.Bucket(bVolumesHeld)
	if old != nil && old.WriterJob != 0 && old.WriterJob != v.WriterJob {
		if err := held.Delete(heldKey(old.WriterJob, v.ID)); err != nil {
			return err
		}
	}
	if v.WriterJob != 0 {
		return held.Put(heldKey(v.WriterJob, v.ID), nil)
	}
	return nil
}

// releaseVolumes drops every claim job has on volumes.
func (a *applier) releaseVolumes(job uint64) error {
	var ids []uuid.UUID
	c := a.tx.Bucket(bVolumesHeld).Cursor()
	prefix := u64(job)
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		ids = append(ids, uuid.UUID(k[8:]))
	}
	for _, id := range ids {
		v, err := a.volume(id)
		if err != nil {
			return err
		}
		if v == nil || v.WriterJob != job {
			if err := a.tx.Bucket(bVolumesHeld).Delete(heldKey(job, id)); err != nil {
				return err
			}
			continue
		}
		old := *v
		v.WriterJob = 0
		if err := a.putVolume(&old, v); err != nil {
			return err
		}
	}
	return nil
}

// appendLog adds lines to a job's log, dropping the oldest beyond
// MaxJobLogLines.
func (a *applier) appendLog(j *Job, lines []LogLine) error {
	b := a.tx.Bucket(bJobLog)
	for _, l := range lines {
		if l.Time.IsZero() {
			l.Time = a.now
		}
		seq := uint64(j.LogLines)
		if err := putJSON(a.tx, bJobLog, append(u64(j.ID), u64(seq)...), &l); err != nil {
			return err
		}
		if seq >= MaxJobLogLines {
			if err := b.Delete(append(u64(j.ID), u64(seq-MaxJobLogLines)...)); err != nil {
				return err
			}
		}
		j.LogLines++
	}
	return nil
}

// ---- clients, nodes, pools, keys ----

func (a *applier) registerClient(c *Client) error {
	if err := validName("client", c.Name); err != nil {
		return err
	}
	old, err := a.client(c.Name)
	if err != nil {
		return err
	}
	n := *c
	n.Registered, n.LastSeen = a.now, a.now
	if old != nil {
		n.Registered = old.Registered
		if n.DefaultPool == "" {
			n.DefaultPool = old.DefaultPool
		}
	}
	return putJSON(a.tx, bClients, []byte(n.Name), &n)
}

func (a *applier) registerNode(n *StorageNode) error {
	if err := validName("storage node", n.ID); err != nil {
		return err
	}
	libs := map[string]bool{}
	for _, l := range n.Libraries {
		if err := validName("library", l.Name); err != nil {
			return err
		}
		if libs[l.Name] {
			return refuse(CodeInvalidArgument, "list each library once in the storage node's configuration",
				"storage node %s owns library %s twice", n.ID, l.Name)
		}
		libs[l.Name] = true
	}
	seen := map[string]bool{}
	var create []*Pool
	for _, np := range n.Pools {
		if err := validName("pool", np.Name); err != nil {
			return err
		}
		if seen[np.Name] {
			return refuse(CodeInvalidArgument, "list each pool once in the storage node's configuration",
				"storage node %s serves pool %s twice", n.ID, np.Name)
		}
		seen[np.Name] = true
		typ, ok := ParsePoolType(string(np.Type))
		switch {
		case !ok:
			return refuse(CodeInvalidArgument, "use type disk or tape", "pool %s: type %q is not known", np.Name, np.Type)
		case typ.HasLibrary() && np.Library != "" && !libs[np.Library]:
			return refuse(CodeInvalidArgument, "configure the library on the same storage node as its pools",
				"storage node %s serves %s pool %s in library %s, which it does not own", n.ID, typ, np.Name, np.Library)
		}
		p, err := a.pool(np.Name)
		if err != nil {
			return err
		}
		switch {
		case p == nil:
			np := &Pool{
				Name: np.Name, Type: typ, Nodes: []string{n.ID}, MaxVolumeBytes: np.MaxVolumeBytes, Library: np.Library,
				BlockSize: DefaultBlockSize, BlockRawSize: DefaultBlockRawSize, LabelPrefix: np.Name,
				NextVolume: 1, Compression: true, Created: a.now,
			}
			if !typ.FileBacked() {
				np.MaxVolumeBytes = 0 // a cartridge ends where its tape does
			}
			create = append(create, np)
			continue
		case p.Type != typ:
			return refuse(CodeInvalidArgument, "give the pool another name in the storage node's configuration",
				"storage node %s serves pool %s as a %s pool, but it is a %s pool", n.ID, p.Name, typ, p.Type)
		case typ.HasLibrary() && p.Library != np.Library:
			return refuse(CodeInvalidArgument, "a tape pool lies in one library: give the pool another name",
				"storage node %s serves pool %s in library %q, but the pool is in library %q", n.ID, p.Name, np.Library, p.Library)
		}
		if !p.Serves(n.ID) {
			// Another node joins the pool with volumes of its own.
			p.Nodes = append(p.Nodes, n.ID)
			create = append(create, p)
		}
	}
	var old StorageNode
	found, err := getJSON(a.tx, bNodes, []byte(n.ID), &old)
	if err != nil {
		return err
	}
	rec := *n
	rec.Registered, rec.LastSeen = a.now, a.now
	if found {
		rec.Registered = old.Registered
	}
	if len(libs) > 0 {
		// A library has one owner: the node that announced it last (it
		// moved to this node, or the other node's record is stale).
		if err := a.disownLibraries(n.ID, libs); err != nil {
			return err
		}
	}
	for _, p := range create {
		if err := putJSON(a.tx, bPools, []byte(p.Name), p); err != nil {
			return err
		}
	}
	return putJSON(a.tx, bNodes, []byte(rec.ID), &rec)
}

// disownLibraries drops libs from every other node's record.
func (a *applier) disownLibraries(owner string, libs map[string]bool) error {
	var changed []StorageNode
	err := a.tx.Bucket(bNodes).ForEach(func(k, v []byte) error {
		var n StorageNode
		if err := jsonUnmarshal(bNodes, k, v, &n); err != nil {
			return err
		}
		if n.ID == owner {
			return nil
		}
		kept := slices.DeleteFunc(slices.Clone(n.Libraries), func(l NodeLibrary) bool { return libs[l.Name] })
		if len(kept) != len(n.Libraries) {
			n.Libraries = kept
			changed = append(changed, n)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := range changed {
		if err := putJSON(a.tx, bNodes, []byte(changed[i].ID), &changed[i]); err != nil {
			return err
		}
	}
	return nil
}

func (a *applier) createPool(p *Pool) error {
	if err := validName("pool", p.Name); err != nil {
		return err
	}
	if old, err := a.pool(p.Name); err != nil {
		return err
	} else if old != nil {
		return refuse(CodeAlreadyExists, "choose another name, or list pools with 'cairn pool list'", "pool %s already exists", p.Name)
	}
	n := *p
	typ, ok := ParsePoolType(string(n.Type))
	n.Type = typ
	switch {
	case !ok:
		return refuse(CodeInvalidArgument, "use type disk or tape", "pool %s: type %q is not known", p.Name, p.Type)
	case !typ.HasLibrary() && n.Library != "":
		return refuse(CodeInvalidArgument, "", "%s pool %s cannot be in library %s", typ, p.Name, p.Library)
	case !typ.FileBacked() && n.MaxVolumeBytes != 0:
		return refuse(CodeInvalidArgument, "leave the maximum volume size unset: a cartridge ends where its tape does",
			"%s pool %s: a maximum volume size makes no sense", typ, p.Name)
	}
	if n.BlockSize <= 0 {
		n.BlockSize = DefaultBlockSize
	}
	if n.BlockRawSize <= 0 {
		n.BlockRawSize = DefaultBlockRawSize
	}
	if n.MaxVolumeBytes < 0 {
		return refuse(CodeInvalidArgument, "give a positive size, or 0 for no limit", "pool %s: maximum volume size %d is negative", p.Name, p.MaxVolumeBytes)
	}
	if n.LabelPrefix == "" {
		n.LabelPrefix = n.Name
	}
	if n.NextVolume < 1 {
		n.NextVolume = 1
	}
	if n.KeyID != "" {
		if a.tx.Bucket(bKeys).Get([]byte(n.KeyID)) == nil {
			return refuse(CodeNotFound, "store the key first (put_key), then create the pool", "pool %s: key %s does not exist", p.Name, n.KeyID)
		}
	}
	n.Created = a.now
	return putJSON(a.tx, bPools, []byte(n.Name), &n)
}

// initGroup records the group's identity. It is written once: a second
// leader racing the first, or a replayed command, finds it there and
// changes nothing, so every member keeps the identity the group was formed
// with.
func (a *applier) initGroup(g *Group) error {
	if g.ID == "" || g.KEKFingerprint == "" || len(g.TicketKeys) == 0 {
		return refuse(CodeInvalidArgument, "", "group identity without an id, KEK fingerprint or ticket key")
	}
	for _, k := range g.TicketKeys {
		if len(k) != 32 {
			return refuse(CodeInvalidArgument, "", "group %s: a ticket key of %d bytes, want an ed25519 public key of 32", g.ID, len(k))
		}
	}
	var old Group
	found, err := getJSON(a.tx, bMeta, keyGroup, &old)
	if err != nil {
		return err
	}
	if found {
		if old.ID == g.ID {
			return nil // a retried command
		}
		return refuse(CodeAlreadyExists, "a group keeps its identity for life",
			"this catalog belongs to group %s already, not %s", old.ID, g.ID)
	}
	n := *g
	if n.Created.IsZero() {
		n.Created = a.now
	}
	return putJSON(a.tx, bMeta, keyGroup, &n)
}

// rotateSecrets rewraps every data key and records the group's new KEK
// fingerprint and ticket key, all at once; see SecretsRotation.
func (a *applier) rotateSecrets(r *SecretsRotation) error {
	if r == nil {
		return missing(OpRotateSecrets)
	}
	if r.FromKEK == "" || r.ToKEK == "" || r.FromKEK == r.ToKEK || len(r.TicketKey) != 32 {
		return refuse(CodeInvalidArgument, "", "a secrets rotation needs two different KEK fingerprints and a 32-byte ticket key")
	}
	var g Group
	found, err := getJSON(a.tx, bMeta, keyGroup, &g)
	if err != nil {
		return err
	}
	if !found {
		return refuse(CodeWrongState, "retry once the group has recorded its identity", "the group has no identity yet: nothing to rotate")
	}
	if g.KEKFingerprint == r.ToKEK && len(g.TicketKeys) > 0 && bytes.Equal(g.TicketKeys[0], r.TicketKey) {
		return nil // a retried command
	}
	if g.KEKFingerprint != r.FromKEK {
		return refuse(CodeWrongState, "another rotation ran meanwhile: see 'cairn cluster status', and run it again if needed",
			"the group's key-encryption key is %s, not %s", g.KEKFingerprint, r.FromKEK)
	}
	wrapped := map[string][]byte{}
	for _, k := range r.Keys {
		if len(k.Wrapped) == 0 {
			return refuse(CodeInvalidArgument, "", "key %s has no wrapped material", k.ID)
		}
		wrapped[k.ID] = k.Wrapped
	}
	var ids []string
	if err := a.tx.Bucket(bKeys).ForEach(func(id, _ []byte) error {
		ids = append(ids, string(id))
		return nil
	}); err != nil {
		return err
	}
	updated := make([]Key, len(ids))
	for i, id := range ids {
		w, ok := wrapped[id]
		if !ok {
			return refuse(CodeWrongState, "run the rotation again: it wraps every key the catalog holds then",
				"data key %s is not in the rotation: it was added since", id)
		}
		if _, err := getJSON(a.tx, bKeys, []byte(id), &updated[i]); err != nil {
			return err
		}
		updated[i].Wrapped = w
		delete(wrapped, id)
	}
	for _, k := range r.Keys {
		if _, left := wrapped[k.ID]; left {
			return refuse(CodeNotFound, "", "the rotation rewraps data key %s, which the catalog does not hold", k.ID)
		}
	}
	for i := range updated {
		if err := putJSON(a.tx, bKeys, []byte(updated[i].ID), &updated[i]); err != nil {
			return err
		}
	}
	g.RetiredKEKFingerprints = append(g.RetiredKEKFingerprints, g.KEKFingerprint)
	g.KEKFingerprint = r.ToKEK
	g.TicketKeys = [][]byte{r.TicketKey, g.TicketKeys[0]}
	g.Rotated = a.now
	return putJSON(a.tx, bMeta, keyGroup, &g)
}

func (a *applier) putKey(k *Key) error {
	if err := validName("key", k.ID); err != nil {
		return err
	}
	if len(k.Wrapped) == 0 {
		return refuse(CodeInvalidArgument, "", "key %s has no wrapped material", k.ID)
	}
	var old Key
	found, err := getJSON(a.tx, bKeys, []byte(k.ID), &old)
	if err != nil {
		return err
	}
	if found {
		if bytes.Equal(old.Wrapped, k.Wrapped) && old.Pool == k.Pool {
			return nil // a retried command
		}
		return refuse(CodeAlreadyExists, "a key is never replaced: data written with it needs it; use a new key id",
			"key %s already exists with other material", k.ID)
	}
	n := *k
	if n.Created.IsZero() {
		n.Created = a.now
	}
	return putJSON(a.tx, bKeys, []byte(n.ID), &n)
}

// ---- jobs ----

func (a *applier) nextJobID() (uint64, error) {
	meta := a.tx.Bucket(bMeta)
	id := getU64(meta, keyNextJob)
	if id == 0 {
		id = 1
	}
	return id, meta.Put(keyNextJob, u64(id+1))
}

func (a *applier) createJob(j *Job, req *RequestKey) error {
	if j.Type != JobBackup && j.Type != JobRestore {
		return refuse(CodeInvalidArgument, "", "job type %q is not known: use backup or restore", j.Type)
	}
	c, err := a.client(j.Client)
	if err != nil {
		return err
	}
	if c == nil {
		return refuse(CodeUnknownClient, fmt.Sprintf("start 'cairn agent --name %s' on that host first", j.Client),
			"client %q is not known", j.Client)
	}
	job := *j
	job.Log, job.LogLines = nil, 0
	job.Started, job.Ended = time.Time{}, time.Time{}
	job.RequestID = ""
	if req != nil {
		job.RequestID = req.ID
	}
	switch job.State {
	case "":
		job.State = JobQueued
	case JobPending, JobQueued:
	case JobRunning:
		job.Started = a.now
	default:
		return refuse(CodeInvalidArgument, "", "a new job is pending, queued or running, not %s", job.State)
	}
	job.Created = a.now

	var backup *Backup
	var logLines []LogLine
	switch job.Type {
	case JobBackup:
		if job.Level == "" {
			job.Level = LevelIncremental
		}
		if !job.Level.Valid() {
			return refuse(CodeInvalidArgument, "use full, incremental or differential", "backup level %q is not known", job.Level)
		}
		if len(job.Paths) == 0 {
			return refuse(CodeInvalidArgument, "give at least one path", "backup job for %s has no paths", job.Client)
		}
		pool, err := a.pool(job.Pool)
		if err != nil {
			return err
		}
		if pool == nil {
			return refuse(CodeNotFound, "list pools with 'cairn pool list'", "pool %q does not exist", job.Pool)
		}
		if job.Node != "" && !pool.Serves(job.Node) {
			return refuse(CodeInvalidArgument, "", "storage node %s does not serve pool %s", job.Node, pool.Name)
		}
		fs := FileSetOf(fileindex.Strings(job.Paths), fileindex.Strings(job.Excludes))
		var parent *Backup
		if job.Level != LevelFull {
			parent, err = a.latestComplete(job.Client, fs, pool.Name, job.Level == LevelDifferential)
			if err != nil {
				return err
			}
			if parent == nil {
				// As Bacula and Bareos do ("No prior Full backup Job record
				// found, upgrading to Full"): an incremental or differential
				// with nothing to compare against in its pool is a full.
				logLines = append(logLines, LogLine{Time: a.now, Level: "info", Msg: fmt.Sprintf(
					"no full of this client in pool %s: running a full (a %s of %s builds only on a complete backup of the same paths in the same pool)",
					pool.Name, job.Level, strings.Join(escapeAll(job.Paths), ", "))})
				job.Level = LevelFull
			}
		}
		backup = &Backup{
			Client: job.Client, FileSet: fs, Paths: job.Paths, Excludes: job.Excludes, Level: job.Level,
			StartTime: a.now, KeyID: pool.KeyID, Pool: pool.Name, Node: job.Node, State: BackupWriting,
		}
		if parent != nil {
			backup.Parent = parent.ID
		}
	case JobRestore:
		b, err := a.backup(job.BackupID)
		if err != nil {
			return err
		}
		if b == nil {
			return refuse(CodeNotFound, "list backups with 'cairn backup list'", "backup %d does not exist", job.BackupID)
		}
		if b.State != BackupComplete {
			return refuse(CodeWrongState, "choose a complete backup", "backup %d is %s, not complete", b.ID, b.State)
		}
		if job.Pool == "" {
			job.Pool = b.Pool
		}
		if job.Node == "" {
			job.Node = b.Node
		}
	}

	id, err := a.nextJobID()
	if err != nil {
		return err
	}
	job.ID = id
	if backup != nil {
		backup.ID = id
		job.BackupID = id
		if err := a.putBackup(nil, backup); err != nil {
			return err
		}
	}
	if err := a.appendLog(&job, logLines); err != nil {
		return err
	}
	if err := a.putJob(nil, &job); err != nil {
		return err
	}
	a.res.JobID = id
	return a.recordRequest(req, &Request{Op: OpCreateJob, JobID: id})
}

// latestComplete finds the base of an incremental (the latest complete backup
// of the file set in the pool, any level) or of a differential (the latest
// complete full in the pool). Latest means the latest point in time, not the
// highest id: two runs can complete out of order.
//
// The base is sought in the backup's own pool only, so that every chain
// lies in one pool: a tape pool's chain restores from its tapes alone once
// they are in the vault, and a backup sent to a pool that holds none of the
// file set yet starts there with a full rather than an incremental on a
// full in another pool, which would leave the tapes holding only changes.
func (a *applier) latestComplete(client, fileSet, pool string, fullOnly bool) (*Backup, error) {
	var best *Backup
	err := eachClientBackup(a.tx, client, func(b *Backup) bool {
		if b.State != BackupComplete || b.FileSet != fileSet || b.Pool != pool || (fullOnly && b.Level != LevelFull) {
			return true
		}
		if best == nil || b.StartTime.After(best.StartTime) {
			best = b
		}
		return true
	})
	return best, err
}

func (a *applier) updateJob(u *JobUpdate) error {
	j, err := a.job(u.ID)
	if err != nil {
		return err
	}
	if j == nil {
		return refuse(CodeNotFound, "list jobs with 'cairn job list'", "job %d does not exist", u.ID)
	}
	if j.State.Done() {
		return refuse(CodeWrongState, "", "job %d already ended (%s)", j.ID, j.State)
	}
	if err := j.isAttempt(u.Attempt); err != nil {
		return err
	}
	old := *j
	canceled := false
	if u.State != "" && u.State != j.State {
		if u.State.Valid() && j.Cancel != nil && j.endState(u.State) == JobCanceled {
			// The job stopped on its cancel's account.
			u2 := *u
			u2.State, u2.ErrorCode, u2.Error = JobCanceled, "", j.Cancel.Message()
			u, canceled = &u2, true
		}
		if !u.State.Valid() {
			return refuse(CodeInvalidArgument, "", "job state %q is not known", u.State)
		}
		if u.State == JobQueued || u.State == JobPending || u.State == JobVoid {
			return refuse(CodeWrongState, "", "job %d is %s and cannot be set to %s", j.ID, j.State, u.State)
		}
		if j.State == JobPending {
			// Only an accept (it may run) or a void (it never will) ends
			// pending: anything else could run a job whose caller was told
			// it failed.
			return refuse(CodeWrongState, "", "job %d is pending: its start was not confirmed yet", j.ID)
		}
		if j.Type == JobBackup && (u.State == JobSuccess || u.State == JobWarning) {
			return refuse(CodeWrongState, "a backup succeeds when its storage node commits the session",
				"job %d is a backup: it cannot be set to %s", j.ID, u.State)
		}
		j.State = u.State
		switch {
		case u.State == JobRunning:
			j.Started = a.now
		case u.State.Done():
			j.Ended = a.now
			j.Waiting = "" // an ended job waits for nothing
		}
	}
	if !u.Started.IsZero() {
		j.Started = u.Started
	}
	if !u.Ended.IsZero() {
		j.Ended = u.Ended
	}
	if u.Files != 0 {
		j.Files = u.Files
	}
	if u.Bytes != 0 {
		j.Bytes = u.Bytes
	}
	if u.StoredBytes != 0 {
		j.StoredBytes = u.StoredBytes
	}
	if u.Warnings != 0 {
		j.Warnings = u.Warnings
	}
	if u.Entries != 0 {
		j.Entries, j.Restored, j.Lost = u.Entries, u.Restored, u.Lost
	}
	if u.ErrorCode != "" || canceled {
		j.ErrorCode = u.ErrorCode
	}
	if u.Waiting != nil {
		j.Waiting = *u.Waiting
	}
	if u.Error != "" {
		j.Error = u.Error
	}
	if j.Type == JobBackup {
		b, err := a.backup(j.BackupID)
		if err != nil {
			return err
		}
		if b != nil && b.State == BackupWriting {
			switch {
			case j.State.Done():
				// A backup job that ends without a commit leaves no half
				// backup behind.
				if err := a.dropBackup(b); err != nil {
					return err
				}
			case old.State != JobRunning && j.State == JobRunning:
				ob := *b
				b.StartTime = j.Started
				if err := a.putBackup(&ob, b); err != nil {
					return err
				}
			}
		}
	}
	return a.putJob(&old, j)
}

func (a *applier) appendJobLog(l *JobLog) error {
	j, err := a.job(l.JobID)
	if err != nil {
		return err
	}
	if j == nil {
		return refuse(CodeNotFound, "", "job %d does not exist", l.JobID)
	}
	old := *j
	if err := a.appendLog(j, l.Lines); err != nil {
		return err
	}
	return a.putJob(&old, j)
}

// ---- volumes ----

func (a *applier) createVolume(v *Volume) error {
	if v.ID == uuid.Nil {
		return refuse(CodeInvalidArgument, "", "new volume without an id")
	}
	if old, err := a.volume(v.ID); err != nil {
		return err
	} else if old != nil {
		return refuse(CodeAlreadyExists, "", "volume %s (%s) already exists", old.Name, v.ID)
	}
	pool, err := a.pool(v.Pool)
	if err != nil {
		return err
	}
	if pool == nil {
		return refuse(CodeNotFound, "list pools with 'cairn pool list'", "pool %q does not exist", v.Pool)
	}
	if pool.Type.HasLibrary() {
		return refuse(CodeInvalidArgument, "label tapes with 'cairn media label'",
			"pool %s is a %s pool: its volumes are labeled cartridges", pool.Name, pool.Type)
	}
	n := *v
	if n.Node == "" && len(pool.Nodes) == 1 {
		n.Node = pool.Nodes[0]
	}
	if !pool.Serves(n.Node) {
		return refuse(CodeInvalidArgument, "", "storage node %q does not serve pool %s (served by %s)", n.Node, pool.Name, strings.Join(pool.Nodes, ", "))
	}
	if n.MediaType == "" {
		n.MediaType = pool.Type
	}
	if n.WriterJob != 0 {
		if err := a.checkWriter(n.WriterJob); err != nil {
			return err
		}
	}
	names := a.tx.Bucket(bVolumeNames)
	no := max(pool.NextVolume, 1)
	for names.Get([]byte(volumeName(pool.LabelPrefix, no))) != nil {
		no++
	}
	n.Name = volumeName(pool.LabelPrefix, no)
	n.State = VolumeLabeling
	n.Bytes, n.Sessions, n.Error = 0, 0, ""
	n.Created, n.LastWritten = a.now, time.Time{}
	pool.NextVolume = no + 1
	if err := putJSON(a.tx, bPools, []byte(pool.Name), pool); err != nil {
		return err
	}
	if err := a.putVolume(nil, &n); err != nil {
		return err
	}
	a.res.VolumeID, a.res.VolumeName = n.ID, n.Name
	return nil
}

func volumeName(prefix string, no int) string { return fmt.Sprintf("%s-%04d", prefix, no) }

// checkWriter refuses a job that cannot hold a volume.
func (a *applier) checkWriter(id uint64) error {
	j, err := a.job(id)
	if err != nil {
		return err
	}
	if j == nil {
		return refuse(CodeNotFound, "", "job %d does not exist", id)
	}
	if j.State.Done() {
		return refuse(CodeWrongState, "", "job %d already ended (%s) and cannot hold a volume", id, j.State)
	}
	return nil
}

func (a *applier) updateVolume(u *VolumeUpdate) error {
	v, err := a.volume(u.ID)
	if err != nil {
		return err
	}
	if v == nil {
		return refuse(CodeNotFound, "list volumes with 'cairn media list'", "volume %s does not exist", u.ID)
	}
	old := *v
	if u.State != "" {
		if !u.State.Valid() {
			return refuse(CodeInvalidArgument, "", "volume state %q is not known", u.State)
		}
		v.State = u.State
		if u.State != VolumeError {
			v.Error = ""
		}
	}
	if u.Error != "" {
		v.Error = u.Error
	}
	if u.Bytes != nil {
		if *u.Bytes < 0 {
			return refuse(CodeInvalidArgument, "", "volume %s: negative size %d", v.Name, *u.Bytes)
		}
		if *u.Bytes < v.Bytes && v.Sessions > 0 {
			return refuse(CodeWrongState, "", "volume %s holds %d committed sessions up to byte %d; moving its end back to %d would lose them",
				v.Name, v.Sessions, v.Bytes, *u.Bytes)
		}
		v.Bytes = *u.Bytes
	}
	if !u.LastWritten.IsZero() {
		v.LastWritten = u.LastWritten
	}
	if u.WriterJob != nil && *u.WriterJob != v.WriterJob {
		if w := *u.WriterJob; w != 0 {
			if err := a.checkWriter(w); err != nil {
				return err
			}
			if v.WriterJob != 0 {
				holder, err := a.job(v.WriterJob)
				if err != nil {
					return err
				}
				// A hold by a job that ended is stale and may be taken over.
				if holder != nil && !holder.State.Done() {
					return refuse(CodeWrongState, "", "volume %s is held by job %d", v.Name, v.WriterJob)
				}
			}
			if v.State != VolumeLabeling && v.State != VolumeAppend {
				return refuse(CodeWrongState, "", "volume %s is %s: it takes no more sessions", v.Name, v.State)
			}
		}
		v.WriterJob = *u.WriterJob
	}
	return a.putVolume(&old, v)
}

// ---- backups and their index ----

type segMeta struct {
	First fileindex.Path `json:"first"`
	Last  fileindex.Path `json:"last"`
	Count int            `json:"count"`
	Bytes int            `json:"bytes"`
}

func (a *applier) segMeta(backup uint64, no int) (*segMeta, error) {
	var m segMeta
	ok, err := getJSON(a.tx, bSegMeta, segKey(backup, no), &m)
	if err != nil || !ok {
		return nil, err
	}
	return &m, nil
}

func (a *applier) addIndexSegment(s *IndexSegment) error {
	b, err := a.backup(s.BackupID)
	if err != nil {
		return err
	}
	if b == nil {
		return refuse(CodeNotFound, "", "backup %d does not exist", s.BackupID)
	}
	if b.State != BackupWriting {
		return refuse(CodeWrongState, "", "backup %d is %s: it takes no more index segments", b.ID, b.State)
	}
	if s.Node != "" && s.Node != b.Node {
		return refuse(CodeWrongState, "", "backup %d is not being written on storage node %s", b.ID, s.Node)
	}
	switch {
	case s.Count <= 0 || len(s.Data) == 0:
		return refuse(CodeInvalidArgument, "", "index segment %d of backup %d is empty", s.No, b.ID)
	case s.First == "" || s.Last == "" || fileindex.Compare(string(s.First), string(s.Last)) > 0:
		return refuse(CodeInvalidArgument, "", "index segment %d of backup %d has a bad path range %q..%q", s.No, b.ID, s.First, s.Last)
	case s.No < 0 || s.No > b.Segments:
		return refuse(CodeInvalidArgument, "send a backup's index segments in order, from 0",
			"index segment %d of backup %d arrived before segment %d", s.No, b.ID, b.Segments)
	}
	if s.No < b.Segments {
		// A resent segment: accept it if it is the one stored.
		m, err := a.segMeta(b.ID, s.No)
		if err != nil {
			return err
		}
		if m != nil && m.First == s.First && m.Last == s.Last && m.Count == s.Count &&
			bytes.Equal(getSegData(a.tx, segKey(b.ID, s.No)), s.Data) {
			return nil
		}
		return refuse(CodeAlreadyExists, "", "backup %d already holds a different index segment %d", b.ID, s.No)
	}
	if s.No > 0 {
		prev, err := a.segMeta(b.ID, s.No-1)
		if err != nil {
			return err
		}
		if prev != nil && fileindex.Compare(string(prev.Last), string(s.First)) >= 0 {
			return refuse(CodeInvalidArgument, "", "index segment %d of backup %d starts at %q, not after %q where segment %d ends",
				s.No, b.ID, s.First, prev.Last, s.No-1)
		}
	}
	k := segKey(b.ID, s.No)
	if err := putJSON(a.tx, bSegMeta, k, &segMeta{First: s.First, Last: s.Last, Count: s.Count, Bytes: len(s.Data)}); err != nil {
		return err
	}
	if err := putSegData(a.tx, k, s.Data); err != nil {
		return err
	}
	if err := addCount(a.tx, "index", "segments", 1); err != nil {
		return err
	}
	if err := addCount(a.tx, "index", "bytes", int64(len(s.Data))); err != nil {
		return err
	}
	old := *b
	b.Segments++
	b.Entries += int64(s.Count)
	return a.putBackup(&old, b)
}

func (a *applier) deleteSegments(backup uint64) error {
	prefix := u64(backup)
	var keys [][]byte
	var size int64
	c := a.tx.Bucket(bSegMeta).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var m segMeta
		if err := jsonUnmarshal(bSegMeta, k, v, &m); err != nil {
			return err
		}
		keys = append(keys, bytes.Clone(k))
		size += int64(m.Bytes)
	}
	// Deleting under a live cursor skips keys in bbolt, hence the two passes.
	for _, k := range keys {
		if err := a.tx.Bucket(bSegMeta).Delete(k); err != nil {
			return err
		}
		if err := deleteSegData(a.tx, k); err != nil {
			return err
		}
	}
	if err := addCount(a.tx, "index", "segments", -int64(len(keys))); err != nil {
		return err
	}
	return addCount(a.tx, "index", "bytes", -size)
}

func (a *applier) commitBackup(cm *BackupCommit) error {
	b, err := a.backup(cm.BackupID)
	if err != nil {
		return err
	}
	if b == nil {
		return refuse(CodeNotFound, "", "backup %d does not exist", cm.BackupID)
	}
	if b.State == BackupComplete && b.SessionID == cm.SessionID {
		return nil // a retried commit
	}
	if b.State != BackupWriting {
		return refuse(CodeWrongState, "", "backup %d is %s and cannot be committed", b.ID, b.State)
	}
	if cm.Node != "" && cm.Node != b.Node {
		return refuse(CodeWrongState, "", "backup %d is not being written on storage node %s", b.ID, cm.Node)
	}
	j, err := a.job(b.ID)
	if err != nil {
		return err
	}
	if j == nil {
		return fmt.Errorf("backup %d has no job", b.ID)
	}
	if cm.Segments != b.Segments {
		return refuse(CodeInvalidArgument, "send every index segment before the commit",
			"the commit of backup %d names %d index segments, the catalog holds %d", b.ID, cm.Segments, b.Segments)
	}
	if len(cm.Parts) == 0 {
		return refuse(CodeInvalidArgument, "", "the commit of backup %d names no volume parts", b.ID)
	}
	parts := slices.Clone(cm.Parts)
	slices.SortFunc(parts, func(x, y Part) int { return x.Part - y.Part })
	ends := map[uuid.UUID]int64{}
	starts := map[uuid.UUID][]int64{}
	var order []uuid.UUID
	for _, p := range parts {
		if _, ok := ends[p.VolumeID]; !ok {
			order = append(order, p.VolumeID)
		}
		ends[p.VolumeID] = max(ends[p.VolumeID], p.End)
		starts[p.VolumeID] = append(starts[p.VolumeID], p.VolumeStart)
	}
	for _, id := range cm.Full {
		if _, ok := ends[id]; !ok {
			return refuse(CodeInvalidArgument, "", "the commit of backup %d marks volume %s full, which holds none of its parts", b.ID, id)
		}
	}
	endTime := cm.EndTime
	if endTime.IsZero() {
		endTime = a.now
	}
	for _, id := range order {
		v, err := a.volume(id)
		if err != nil {
			return err
		}
		if v == nil {
			return refuse(CodeNotFound, "", "backup %d: volume %s does not exist", b.ID, id)
		}
		if v.Pool != b.Pool {
			return refuse(CodeInvalidArgument, "", "backup %d writes to pool %s, but volume %s is in pool %s", b.ID, b.Pool, v.Name, v.Pool)
		}
		if ends[id] < v.Bytes {
			return refuse(CodeWrongState, "", "backup %d ends at byte %d of volume %s, before its committed end %d",
				b.ID, ends[id], v.Name, v.Bytes)
		}
		old := *v
		if v.MediaType.Sequential() {
			// Parts on tape are files after file marks: a reader needs every
			// part's start to find the block of an offset.
			for _, st := range starts[id] {
				if st < v.Bytes {
					return refuse(CodeWrongState, "", "backup %d starts a part at byte %d of tape volume %s, before its committed end %d",
						b.ID, st, v.Name, v.Bytes)
				}
			}
			v.PartStarts = append(slices.Clone(v.PartStarts), starts[id]...)
		}
		v.Bytes = ends[id]
		v.Sessions++
		v.LastWritten = endTime
		if v.WriterJob == j.ID {
			v.WriterJob = 0
		}
		if v.State == VolumeLabeling {
			v.State = VolumeAppend
		}
		// A tape marked error during the session (a medium error after
		// its part was written) stays error: full would let it be
		// recycled and written again.
		if slices.Contains(cm.Full, id) && v.State != VolumeError {
			v.State = VolumeFull
		}
		if err := a.putVolume(&old, v); err != nil {
			return err
		}
	}
	if err := a.releaseVolumes(j.ID); err != nil {
		return err
	}

	oldB := *b
	b.Parts = parts
	b.SessionID = cm.SessionID
	b.Files, b.Bytes, b.StoredBytes = cm.Files, cm.Bytes, cm.StoredBytes
	b.EndTime = endTime
	b.State = BackupComplete
	if err := a.putBackup(&oldB, b); err != nil {
		return err
	}

	oldJ := *j
	var lines []LogLine
	if cm.Entries != 0 && cm.Entries != b.Entries {
		lines = append(lines, LogLine{Time: a.now, Level: "warning", Msg: fmt.Sprintf(
			"the session reports %d entries but its index segments hold %d; the catalog keeps the index", cm.Entries, b.Entries)})
	}
	j.Files, j.Bytes, j.StoredBytes = cm.Files, cm.Bytes, cm.StoredBytes
	j.Tape = cm.Tape
	j.Waiting = ""
	j.Warnings = max(j.Warnings, cm.Warnings) + len(lines)
	j.State = JobSuccess
	if j.Warnings > 0 {
		j.State = JobWarning
	}
	if j.Started.IsZero() {
		j.Started = b.StartTime
	}
	j.Ended = endTime
	if err := a.appendLog(j, lines); err != nil {
		return err
	}
	return a.putJob(&oldJ, j)
}

func (a *applier) abortBackup(ab *BackupAbort) error {
	b, err := a.backup(ab.BackupID)
	if err != nil {
		return err
	}
	if b == nil {
		return refuse(CodeNotFound, "", "backup %d does not exist", ab.BackupID)
	}
	switch b.State {
	case BackupAborted:
		return nil // a retried abort
	case BackupComplete:
		return refuse(CodeWrongState, "", "backup %d is complete; it cannot be aborted", b.ID)
	}
	if ab.Attempt != 0 {
		j, err := a.job(b.ID)
		if err != nil {
			return err
		}
		if j != nil {
			if err := j.isAttempt(ab.Attempt); err != nil {
				return err
			}
		}
	}
	if err := a.dropBackup(b); err != nil {
		return err
	}
	j, err := a.job(b.ID)
	if err != nil || j == nil || j.State.Done() {
		return err
	}
	old := *j
	j.State = j.endState(JobFailed)
	j.Ended = a.now
	j.Waiting = ""
	j.ErrorCode, j.Error = ab.Code, ab.Msg
	if j.State == JobCanceled {
		j.ErrorCode, j.Error = "", j.Cancel.Message()
	}
	return a.putJob(&old, j)
}

// dropBackup ends a writing backup as aborted: its index goes, and its job's
// claims on volumes are released. What it wrote beyond the volumes'
// committed ends is overwritten by the next session.
func (a *applier) dropBackup(b *Backup) error {
	if err := a.deleteSegments(b.ID); err != nil {
		return err
	}
	if err := a.releaseVolumes(b.ID); err != nil {
		return err
	}
	old := *b
	b.State = BackupAborted
	b.Segments, b.Entries = 0, 0
	b.EndTime = a.now
	return a.putBackup(&old, b)
}

// isAttempt refuses a change meant for attempt n (when not 0) of a job that
// no longer runs it.
func (j *Job) isAttempt(n int) error {
	if n != 0 && (j.State != JobRunning || j.Attempt != n) {
		return refuse(CodeWrongState, "", "job %d is %s at attempt %d; the change concerned attempt %d", j.ID, j.State, j.Attempt, n)
	}
	return nil
}

func (a *applier) dispatchJob(d *JobDispatch) error {
	j, err := a.job(d.JobID)
	if err != nil {
		return err
	}
	if j == nil {
		return refuse(CodeNotFound, "", "job %d does not exist", d.JobID)
	}
	if j.State == JobRunning && j.Node == d.Node {
		return nil // a retried dispatch
	}
	if j.State != JobQueued {
		return refuse(CodeWrongState, "", "job %d is %s, not queued: it cannot be dispatched", j.ID, j.State)
	}
	old := *j
	j.State, j.Node, j.Waiting = JobRunning, d.Node, ""
	j.Attempt++
	if j.Started.IsZero() {
		j.Started = a.now
	}
	if j.Type == JobBackup {
		b, err := a.backup(j.BackupID)
		if err != nil {
			return err
		}
		if b == nil || b.State != BackupWriting {
			return refuse(CodeWrongState, "", "backup %d of job %d is not being written", j.BackupID, j.ID)
		}
		p, err := a.pool(b.Pool)
		if err != nil {
			return err
		}
		if p == nil || !p.Serves(d.Node) {
			return refuse(CodeInvalidArgument, "", "storage node %s does not serve pool %s", d.Node, b.Pool)
		}
		ob := *b
		b.Node = d.Node
		if old.Started.IsZero() {
			// The point in time a backup represents is when it started.
			b.StartTime = a.now
		}
		if err := a.putBackup(&ob, b); err != nil {
			return err
		}
	}
	if j.Attempt > 1 {
		if err := a.appendLog(j, []LogLine{{Time: a.now, Level: "info", Msg: fmt.Sprintf("attempt %d on storage node %s", j.Attempt, d.Node)}}); err != nil {
			return err
		}
	}
	return a.putJob(&old, j)
}

func (a *applier) requeueJob(r *JobRequeue) error {
	j, err := a.job(r.JobID)
	if err != nil {
		return err
	}
	if j == nil {
		return refuse(CodeNotFound, "", "job %d does not exist", r.JobID)
	}
	if r.Attempt != 0 && r.Attempt != j.Attempt {
		return refuse(CodeWrongState, "", "job %d is at attempt %d; attempt %d is over", j.ID, j.Attempt, r.Attempt)
	}
	if j.State == JobQueued {
		return nil // a retried requeue
	}
	if j.State != JobRunning {
		return refuse(CodeWrongState, "", "job %d is %s: only a running job goes back to the queue", j.ID, j.State)
	}
	old := *j
	if j.Cancel != nil {
		// A canceled job does not run again.
		if err := a.endCanceled(j); err != nil {
			return err
		}
		return a.putJob(&old, j)
	}
	node := j.Node
	j.State, j.Node, j.Waiting = JobQueued, "", r.Reason
	if j.Type == JobBackup {
		b, err := a.backup(j.BackupID)
		if err != nil {
			return err
		}
		if b != nil && b.State == BackupWriting {
			// Nothing of the interrupted session was committed; its index
			// segments go, and the next attempt writes a new session.
			if err := a.deleteSegments(b.ID); err != nil {
				return err
			}
			if err := a.releaseVolumes(b.ID); err != nil {
				return err
			}
			ob := *b
			b.Node, b.Parts, b.Segments, b.Entries = "", nil, 0, 0
			if err := a.putBackup(&ob, b); err != nil {
				return err
			}
		}
	}
	msg := fmt.Sprintf("back in the queue after attempt %d on storage node %s: %s", j.Attempt, node, r.Reason)
	if err := a.appendLog(j, []LogLine{{Time: a.now, Level: "warning", Msg: msg}}); err != nil {
		return err
	}
	return a.putJob(&old, j)
}

// escapeAll writes paths as fileindex.Escape does, for a log line.
func escapeAll(paths []fileindex.Path) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = fileindex.Escape(string(p))
	}
	return out
}
