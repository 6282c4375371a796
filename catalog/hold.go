package catalog

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// Legal holds: OpHold puts a backup, or every backup of a client, on hold;
// OpRelease lifts it. A held backup never expires and cannot be deleted,
// whatever the retention says, and neither can the backups it builds on
// (a restore of it reads them). The expiry command checks the holds when it
// is applied, so a hold that lands in the log before an expiry wins even
// when the expiry was computed without it. DESIGN.md, "Expiry".

// Hold is a legal hold on one backup (Backup) or on every backup of a
// client (Client), present and future.
type Hold struct {
	Backup uint64    `json:"backup,omitempty"`
	Client string    `json:"client,omitempty"`
	Reason string    `json:"reason,omitempty"`
	By     string    `json:"by,omitempty"`
	Time   time.Time `json:"time"`
}

// What names the hold's object, for messages.
func (h *Hold) What() string {
	if h.Client != "" {
		return fmt.Sprintf("client %q", h.Client)
	}
	return fmt.Sprintf("backup %d", h.Backup)
}

func holdKey(h *Hold) []byte {
	if h.Client != "" {
		return append([]byte("c"), h.Client...)
	}
	return append([]byte("b"), u64(h.Backup)...)
}

func clientHoldKey(client string) []byte { return append([]byte("c"), client...) }
func backupHoldKey(id uint64) []byte     { return append([]byte("b"), u64(id)...) }

func (a *applier) checkHoldTarget(h *Hold) error {
	switch {
	case (h.Backup == 0) == (h.Client == ""):
		return refuse(CodeInvalidArgument, "name a backup id or a client", "a hold names one backup or one client")
	case h.Client != "":
		c, err := a.client(h.Client)
		if err != nil {
			return err
		}
		if c == nil {
			return refuse(CodeUnknownClient, "list clients with 'cairn client list'", "client %q is not known", h.Client)
		}
	default:
		b, err := a.backup(h.Backup)
		if err != nil {
			return err
		}
		if b == nil {
			return refuse(CodeNotFound, "list backups with 'cairn backup list'", "backup %d does not exist", h.Backup)
		}
	}
	return nil
}

func (a *applier) hold(h *Hold) error {
	if err := a.checkHoldTarget(h); err != nil {
		return err
	}
	n := *h
	n.Time = a.now
	// Holding again replaces the reason: the hold itself is one fact.
	return putJSON(a.tx, bHolds, holdKey(&n), &n)
}

func (a *applier) release(h *Hold) error {
	if (h.Backup == 0) == (h.Client == "") {
		return refuse(CodeInvalidArgument, "name a backup id or a client", "a release names one backup or one client")
	}
	k := holdKey(h)
	if a.tx.Bucket(bHolds).Get(k) == nil {
		return refuse(CodeNotFound, "list holds with 'cairn backup list --held'", "%s is not on hold", h.What())
	}
	return a.tx.Bucket(bHolds).Delete(k)
}

// heldBy is the hold that covers backup b (its own, or its client's), nil
// when none does.
func heldBy(tx *bbolt.Tx, b *Backup) (*Hold, error) {
	holds := tx.Bucket(bHolds)
	if holds == nil {
		return nil, nil // a catalog of format 2, read as is
	}
	for _, k := range [][]byte{backupHoldKey(b.ID), clientHoldKey(b.Client)} {
		if v := holds.Get(k); v != nil {
			var h Hold
			if err := jsonUnmarshal(bHolds, k, v, &h); err != nil {
				return nil, err
			}
			return &h, nil
		}
	}
	return nil, nil
}

// Holds returns every hold: on clients first, by name, then on backups,
// by id.
func (s *Store) Holds() ([]Hold, error) {
	var out []Hold
	err := s.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bHolds)
		if b == nil {
			return nil
		}
		var backups []Hold
		err := b.ForEach(func(k, v []byte) error {
			var h Hold
			if err := jsonUnmarshal(bHolds, k, v, &h); err != nil {
				return err
			}
			if bytes.HasPrefix(k, []byte("b")) && len(k) == 9 {
				h.Backup = binary.BigEndian.Uint64(k[1:])
				backups = append(backups, h)
				return nil
			}
			out = append(out, h)
			return nil
		})
		out = append(out, backups...)
		return err
	})
	return out, err
}

// HoldOf is the hold that covers a backup (its own or its client's), nil
// when none does.
func (s *Store) HoldOf(b *Backup) (*Hold, error) {
	var h *Hold
	err := s.view(func(tx *bbolt.Tx) error {
		var err error
		h, err = heldBy(tx, b)
		return err
	})
	return h, err
}
