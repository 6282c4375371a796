package catalog

import (
	"encoding/json"
	"time"

	"go.etcd.io/bbolt"
)

// Alerts: what the leader owes the administrator, and what it last told
// them, per condition (an RPO target's breach, a record of missed runs).
// The leader raises an alert in the same command as the change it is
// about (OpRecordRuns) or on its own (OpRaiseAlert); it is then owed until
// the leader that handed it to the sinks records it sent (OpAlertSent). A
// new leader sends what is owed and nothing else, so an alert is neither
// lost with a leader that died before it went out nor sent again by the
// next. DESIGN.md, "Alerts".

// Alert kinds the catalog treats apart: a breach is remembered once sent,
// since it is the state the next assessment compares with; every other
// kind is forgotten once sent.
const AlertRPOBreach = "rpo_breach"

// Alert is one condition's alert: owed while Sent is zero.
type Alert struct {
	// Condition names what the alert is about (its kind family and
	// subject); the catalog holds one alert per condition.
	Condition string `json:"condition"`
	Kind      string `json:"kind"`
	Client    string `json:"client,omitempty"`
	Policy    string `json:"policy,omitempty"`
	// Event is the alert as the sinks get it (alert.Event's JSON): the
	// catalog keeps it as it is, to hand it over as it was raised.
	Event json.RawMessage `json:"event"`
	// Seq is the raise's number, from a counter of the catalog: the
	// record of its sending names it, so a late one for an alert since
	// raised again changes nothing.
	Seq    uint64    `json:"seq"`
	Raised time.Time `json:"raised"`
	Sent   time.Time `json:"sent,omitzero"`
}

// Owed reports whether the alert is still to be sent.
func (a Alert) Owed() bool { return a.Sent.IsZero() }

// AlertRaise raises an alert of a condition.
type AlertRaise struct {
	Condition string          `json:"condition"`
	Kind      string          `json:"kind"`
	Client    string          `json:"client,omitempty"`
	Policy    string          `json:"policy,omitempty"`
	Event     json.RawMessage `json:"event"`
	// Replaces is the kind of the condition's alert the raise expects to
	// find, "" for none: a raise that finds another is refused, so two
	// leaders that saw the same change raise it once, and a breach's end
	// is not raised over its beginning before that was sent.
	Replaces string `json:"replaces,omitempty"`
}

// AlertSent records that an alert was handed to every sink that takes it.
type AlertSent struct {
	Condition string `json:"condition"`
	Seq       uint64 `json:"seq"`
}

var keyNextAlert = []byte("next_alert")

func (a *applier) raiseAlert(r *AlertRaise, checked bool) error {
	if r == nil {
		return missing(OpRaiseAlert)
	}
	if r.Condition == "" || r.Kind == "" || !json.Valid(r.Event) {
		return refuse(CodeInvalidArgument, "", "an alert needs a condition, a kind and its event as JSON")
	}
	var old Alert
	found, err := getJSON(a.tx, bAlerts, []byte(r.Condition), &old)
	if err != nil {
		return err
	}
	if checked {
		have := ""
		if found {
			have = old.Kind
		}
		if have != r.Replaces {
			return refuse(CodeWrongState, "", "the alert of %q is %q, not %q", r.Condition, have, r.Replaces)
		}
	}
	meta := a.tx.Bucket(bMeta)
	seq := getU64(meta, keyNextAlert) + 1
	if err := meta.Put(keyNextAlert, u64(seq)); err != nil {
		return err
	}
	n := Alert{Condition: r.Condition, Kind: r.Kind, Client: r.Client, Policy: r.Policy, Event: r.Event, Seq: seq, Raised: a.now}
	return putJSON(a.tx, bAlerts, []byte(r.Condition), &n)
}

func (a *applier) alertSent(s *AlertSent) error {
	if s == nil {
		return missing(OpAlertSent)
	}
	var al Alert
	found, err := getJSON(a.tx, bAlerts, []byte(s.Condition), &al)
	if err != nil || !found || al.Seq != s.Seq || !al.Owed() {
		return err // raised again since, or a retry: nothing to do
	}
	if al.Kind != AlertRPOBreach {
		return a.tx.Bucket(bAlerts).Delete([]byte(s.Condition))
	}
	al.Sent = a.now
	return putJSON(a.tx, bAlerts, []byte(s.Condition), &al)
}

// Alerts returns the alerts the catalog holds, in condition order: those
// owed, and the breaches sent and not yet over.
func (s *Store) Alerts() ([]Alert, error) {
	var out []Alert
	err := s.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bAlerts)
		if b == nil {
			return nil // a read-only catalog of an older format
		}
		return b.ForEach(func(k, v []byte) error {
			var al Alert
			if err := jsonUnmarshal(bAlerts, k, v, &al); err != nil {
				return err
			}
			out = append(out, al)
			return nil
		})
	})
	return out, err
}
