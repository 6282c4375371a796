package catalog

import (
	"bytes"
)

// The group's identity and keys: the group id, KEK fingerprint and ticket
// keys written once by the first leader (OpInitGroup) and changed only by a
// rotation (OpRotateSecrets), and the data keys, stored wrapped (OpPutKey).
// The KEK itself is never in the log.

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
