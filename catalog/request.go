package catalog

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// Starts: a client names each start (backup, restore, tape label) with a
// request id of its choosing. The command that carries it out records the
// id with what it made, in its own transaction, so a repeat of the request
// finds the job or volume instead of making another. A job starts pending
// and runs only once accepted (OpAcceptJob), which the server does just
// before it answers: a start whose caller was told it failed was never
// accepted, and the leader voids it (OpVoidJobs). DESIGN.md, "Starts".

// requestTimeKey orders the request index by the time a request was
// recorded, so forgetting old ones reads only those.
func requestTimeKey(t time.Time, id string) []byte {
	return append(u64(uint64(t.UnixNano())), id...)
}

func (a *applier) request(id string) (*Request, error) {
	var r Request
	ok, err := getJSON(a.tx, bRequests, []byte(id), &r)
	if err != nil || !ok {
		return nil, err
	}
	return &r, nil
}

// knownRequest answers a command whose request id the catalog knows with
// what its first command made, and returns that request; nil when the id
// is new (or the command carries none). The same id for another kind of
// command, or with other parameters, is another request under an id
// already taken, and is refused.
func (a *applier) knownRequest(key *RequestKey, op Op) (*Request, error) {
	if key == nil {
		return nil, nil
	}
	if err := validName("request id", key.ID); err != nil {
		return nil, err
	}
	r, err := a.request(key.ID)
	if err != nil || r == nil {
		return nil, err
	}
	if r.Op != op || (r.Digest != "" && key.Digest != "" && r.Digest != key.Digest) {
		what := fmt.Sprintf("job %d", r.JobID)
		if r.Op == OpLabelTape {
			what = fmt.Sprintf("the label of volume %s", r.VolumeID)
		}
		return nil, refuse(CodeAlreadyExists, "give each request its own id: only a repeat of the very same request may reuse one",
			"request id %q already started %s, with other parameters", key.ID, what)
	}
	a.res.Repeat = true
	a.res.JobID, a.res.VolumeID = r.JobID, r.VolumeID
	return r, nil
}

// recordRequest indexes the request a command carried out, with what it
// made (r's JobID or VolumeID).
func (a *applier) recordRequest(key *RequestKey, r *Request) error {
	if key == nil {
		return nil
	}
	r.ID, r.Digest, r.Time = key.ID, key.Digest, a.now
	if err := putJSON(a.tx, bRequests, []byte(r.ID), r); err != nil {
		return err
	}
	return a.tx.Bucket(bRequestsByTime).Put(requestTimeKey(r.Time, r.ID), nil)
}

func (a *applier) acceptJob(acc *JobAccept) error {
	j, err := a.job(acc.JobID)
	if err != nil {
		return err
	}
	if j == nil {
		return refuse(CodeNotFound, "", "job %d does not exist", acc.JobID)
	}
	a.res.JobID = j.ID
	switch j.State {
	case JobPending:
	case JobVoid:
		return refuse(CodeWrongState, "start it again: nothing of it ran",
			"job %d was voided at %s: %s", j.ID, j.Ended.UTC().Format(time.RFC3339), j.Error)
	default:
		return nil // accepted before: a repeat of the request
	}
	old := *j
	j.State = JobQueued
	return a.putJob(&old, j)
}

func (a *applier) voidJobs(v *JobsVoid) error {
	if v.Reason == "" {
		return refuse(CodeInvalidArgument, "", "voiding jobs needs a reason")
	}
	for _, id := range v.JobIDs {
		j, err := a.job(id)
		if err != nil {
			return err
		}
		// Listed by a leader a moment ago: one accepted since, or newer
		// than the cutoff, is not for voiding.
		if j == nil || j.State != JobPending || j.Created.After(v.CreatedBefore) {
			continue
		}
		old := *j
		j.State, j.Ended, j.Error, j.Waiting = JobVoid, a.now, v.Reason, ""
		if j.Type == JobBackup {
			b, err := a.backup(j.BackupID)
			if err != nil {
				return err
			}
			if b != nil && b.State == BackupWriting {
				if err := a.dropBackup(b); err != nil {
					return err
				}
			}
		}
		if err := a.appendLog(j, []LogLine{{Time: a.now, Level: "warning", Msg: "voided, never ran: " + v.Reason}}); err != nil {
			return err
		}
		if err := a.putJob(&old, j); err != nil {
			return err
		}
	}
	return nil
}

func (a *applier) forgetRequests(f *RequestsForget) error {
	byTime := a.tx.Bucket(bRequestsByTime)
	end := u64(uint64(f.Before.UnixNano()))
	var keys [][]byte
	c := byTime.Cursor()
	for k, _ := c.First(); k != nil && bytes.Compare(k[:8], end) < 0; k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	// Deleting under a live cursor skips keys in bbolt, hence the two passes.
	for _, k := range keys {
		if err := byTime.Delete(k); err != nil {
			return err
		}
		id := k[8:]
		// The id may have been recorded again since (forgotten, then
		// reused): only the entry of this time goes.
		var r Request
		ok, err := getJSON(a.tx, bRequests, id, &r)
		if err != nil {
			return err
		}
		if ok && r.Time.UnixNano() == int64(binary.BigEndian.Uint64(k[:8])) {
			if err := a.tx.Bucket(bRequests).Delete(id); err != nil {
				return err
			}
		}
	}
	return nil
}

// Request returns what the request with this id started.
func (s *Store) Request(id string) (*Request, error) {
	return getOne[Request](s, bRequests, []byte(id), fmt.Sprintf("request %q", id))
}

// OldestRequest is when the oldest request id still known was recorded;
// zero when none is.
func (s *Store) OldestRequest() (time.Time, error) {
	var t time.Time
	err := s.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bRequestsByTime)
		if b == nil {
			return nil // a format 1 catalog, opened read-only
		}
		if k, _ := b.Cursor().First(); k != nil {
			t = time.Unix(0, int64(binary.BigEndian.Uint64(k[:8]))).UTC()
		}
		return nil
	})
	return t, err
}
