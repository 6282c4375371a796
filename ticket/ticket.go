// Package ticket is the data plane's authority. The servers sign a short-lived
// ticket for one job, naming the client, the storage node and what the job
// may write or read; the agent presents it on the storage node's data port,
// and the node trusts the ticket, not the client. A ticket is good once.
package ticket

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Op is what a ticket allows.
type Op string

const (
	OpBackup  Op = "backup"
	OpRestore Op = "restore"
)

// Ticket is the signed statement.
type Ticket struct {
	V        int    `json:"v"`
	ID       string `json:"id"` // random; the node refuses an ID it has seen
	JobID    uint64 `json:"job_id"`
	Client   string `json:"client"`
	Node     string `json:"node"`
	Op       Op     `json:"op"`
	Pool     string `json:"pool,omitempty"`
	BackupID uint64 `json:"backup_id,omitempty"`
	// Parent is the backup a backup builds on (its catalog parent, 0 for
	// a full): the node writes it into the session's part headers, so
	// that a reader with no catalog follows the chain as the catalog does.
	Parent uint64 `json:"parent,omitempty"`
	// Chain is where the sessions of the chain the backup builds on lie
	// (its parent's, and theirs, to the full): the node writes it into
	// the session's part headers too, for a reader with no catalog to
	// name the volume of one it is not given.
	Chain []ChainPart `json:"chain,omitempty"`
	Level string      `json:"level,omitempty"`
	KeyID string      `json:"key_id,omitempty"`
	// Attempt is the job's attempt the ticket was issued for: a storage
	// node's report about the session names it, so that a late report
	// about an attempt that is over does not end the one that replaced it.
	Attempt int `json:"attempt,omitempty"`
	// Sessions lists the sessions a restore may read.
	Sessions []string  `json:"sessions,omitempty"`
	Issued   time.Time `json:"issued"`
	Expires  time.Time `json:"expires"`
}

// ChainPart is a part of a session of a backup's chain, on its volume.
type ChainPart struct {
	Session string `json:"session"`
	Backup  uint64 `json:"backup"`
	Volume  string `json:"volume"`
	Name    string `json:"name,omitempty"`
}

// Reason says why a ticket was refused.
type Reason string

const (
	Missing      Reason = "missing"
	Malformed    Reason = "malformed"
	BadSignature Reason = "forged"
	Expired      Reason = "expired"
	Replayed     Reason = "replayed"
	WrongNode    Reason = "wrong_node"
	WrongOp      Reason = "wrong_operation"
)

// Error is a refused ticket.
type Error struct {
	Reason Reason
	JobID  uint64
	Detail string
}

func (e *Error) Error() string {
	job := ""
	if e.JobID != 0 {
		job = fmt.Sprintf(" for job %d", e.JobID)
	}
	switch e.Reason {
	case Missing:
		return "no job ticket presented"
	case BadSignature:
		return "job ticket" + job + " has an invalid signature (forged, or signed by another Cairn cluster)"
	case Expired:
		return "job ticket" + job + " expired " + e.Detail
	case Replayed:
		return "job ticket" + job + " was already used"
	}
	return fmt.Sprintf("job ticket%s rejected (%s): %s", job, e.Reason, e.Detail)
}

// Is matches on the reason.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Reason == e.Reason
}

// NewID returns a random ticket id.
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// Sign encodes t and signs it. Empty V and ID are filled in.
func Sign(t Ticket, key ed25519.PrivateKey) (string, error) {
	if t.V == 0 {
		t.V = 1
	}
	if t.ID == "" {
		t.ID = NewID()
	}
	payload, err := json.Marshal(t)
	if err != nil {
		return "", fmt.Errorf("encode ticket: %w", err)
	}
	sig := ed25519.Sign(key, payload)
	enc := base64.RawURLEncoding
	return enc.EncodeToString(payload) + "." + enc.EncodeToString(sig), nil
}

// Verify checks the signature and the validity period (with skew allowed
// for clocks that differ a little between hosts).
func Verify(s string, pub ed25519.PublicKey, now time.Time, skew time.Duration) (Ticket, error) {
	var t Ticket
	if s == "" {
		return t, &Error{Reason: Missing}
	}
	p, sg, ok := strings.Cut(s, ".")
	enc := base64.RawURLEncoding
	payload, err1 := enc.DecodeString(p)
	sig, err2 := enc.DecodeString(sg)
	// Decoding skips line breaks and ignores stray low bits, so a ticket
	// must also be the one spelling Sign writes of what it decodes to.
	if !ok || err1 != nil || err2 != nil || len(sig) != ed25519.SignatureSize ||
		enc.EncodeToString(payload) != p || enc.EncodeToString(sig) != sg {
		return t, &Error{Reason: Malformed, Detail: "not a Cairn job ticket"}
	}
	if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, payload, sig) {
		// Decode anyway for the job id in the message; it is not trusted.
		_ = json.Unmarshal(payload, &t)
		return Ticket{}, &Error{Reason: BadSignature, JobID: t.JobID}
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	if err := dec.Decode(&t); err != nil {
		return Ticket{}, &Error{Reason: Malformed, Detail: err.Error()}
	}
	if t.V != 1 {
		return Ticket{}, &Error{Reason: Malformed, JobID: t.JobID, Detail: fmt.Sprintf("ticket version %d is not supported", t.V)}
	}
	if now.After(t.Expires.Add(skew)) {
		return Ticket{}, &Error{Reason: Expired, JobID: t.JobID, Detail: fmt.Sprintf("at %s", t.Expires.UTC().Format(time.RFC3339))}
	}
	if t.Issued.After(now.Add(skew)) {
		return Ticket{}, &Error{Reason: Malformed, JobID: t.JobID, Detail: "issued in the future; check the clocks of server and storage node"}
	}
	return t, nil
}
