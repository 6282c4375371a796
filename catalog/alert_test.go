package catalog

import (
	"encoding/json"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

func owedConditions(t *testing.T, s *Store) map[string]Alert {
	t.Helper()
	als, err := s.Alerts()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]Alert{}
	for _, a := range als {
		out[a.Condition] = a
	}
	return out
}

// A breach is raised once (a second raise expecting none is refused), is
// owed until sent, and stays as the state sent; its end is raised only over
// it, and forgotten once sent. A record of its sending for an older raise
// changes nothing.
func TestAlertRaisedOnceAndForgottenWhenSent(t *testing.T) {
	c := newTestCatalog(t)
	ev := json.RawMessage(`{"kind":"rpo_breach"}`)
	breach := &AlertRaise{Condition: "rpo\x00web\x00nightly", Kind: AlertRPOBreach, Client: "web", Policy: "nightly", Event: ev}
	c.must(&Command{Op: OpRaiseAlert, Alert: breach})
	c.refused(CodeWrongState, &Command{Op: OpRaiseAlert, Alert: breach})
	al := owedConditions(t, c.s)[breach.Condition]
	if !al.Owed() || al.Seq != 1 || al.Client != "web" || string(al.Event) != string(ev) {
		t.Fatalf("raised: %+v", al)
	}
	resolved := &AlertRaise{Condition: breach.Condition, Kind: "rpo_resolved", Event: json.RawMessage(`{}`), Replaces: AlertRPOBreach}
	c.must(&Command{Op: OpAlertSent, AlertSent: &AlertSent{Condition: breach.Condition, Seq: al.Seq}})
	if al := owedConditions(t, c.s)[breach.Condition]; al.Owed() || al.Kind != AlertRPOBreach {
		t.Fatalf("sent breach: %+v", al)
	}
	c.must(&Command{Op: OpRaiseAlert, Alert: resolved})
	c.must(&Command{Op: OpAlertSent, AlertSent: &AlertSent{Condition: breach.Condition, Seq: al.Seq}}) // late: the breach's
	if al := owedConditions(t, c.s)[breach.Condition]; !al.Owed() || al.Kind != "rpo_resolved" || al.Seq != 2 {
		t.Fatalf("resolved: %+v", al)
	}
	c.must(&Command{Op: OpAlertSent, AlertSent: &AlertSent{Condition: breach.Condition, Seq: 2}})
	if als := owedConditions(t, c.s); len(als) != 0 {
		t.Fatalf("after the end was sent: %+v", als)
	}
	c.refused(CodeInvalidArgument, &Command{Op: OpRaiseAlert, Alert: &AlertRaise{Condition: "x", Kind: "missed_run", Event: json.RawMessage(`{`)}})
}

// A missed_run alert is raised with its runs, all or nothing: a record
// refused (its run recorded already) raises nothing.
func TestMissedRunAlertIsRecordedWithItsRuns(t *testing.T) {
	c := newTestCatalog(t)
	at := time.Date(2026, 3, 2, 21, 0, 0, 0, time.UTC)
	rec := func(cond string) *Command {
		return &Command{Op: OpRecordRuns, Runs: &RunsRecord{
			Runs:  []Run{{Policy: "nightly", Client: "web", Scheduled: at, State: RunMissed, Reason: "down"}},
			Alert: &AlertRaise{Condition: cond, Kind: "missed_run", Event: json.RawMessage(`{"kind":"missed_run"}`)},
		}}
	}
	c.must(rec("missed\x00a"))
	c.refused(CodeAlreadyExists, rec("missed\x00b"))
	als := owedConditions(t, c.s)
	if len(als) != 1 || !als["missed\x00a"].Owed() {
		t.Fatalf("alerts %+v", als)
	}
}

// A catalog of format 6 has no alerts bucket: read as it is, it owes no
// alert; opened for writing, it gets the bucket and format 7.
func TestFormat6CatalogGetsTheAlerts(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	path := c.s.Path()
	err := c.s.db.Update(func(tx *bbolt.Tx) error {
		if err := tx.DeleteBucket(bAlerts); err != nil {
			return err
		}
		return tx.Bucket(bMeta).Put(keyFormat, u64(6))
	})
	if err != nil {
		t.Fatal(err)
	}
	c.s.Close()
	ro, err := OpenReadOnly(path)
	if err != nil {
		t.Fatalf("read-only open of format 6: %v", err)
	}
	if als, err := ro.Alerts(); err != nil || len(als) != 0 {
		t.Fatalf("alerts of format 6: %v, %v", als, err)
	}
	ro.Close()
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	c.s = s
	c.must(&Command{Op: OpRaiseAlert, Alert: &AlertRaise{Condition: "c", Kind: "missed_run", Event: json.RawMessage(`{}`)}})
	var f uint64
	s.view(func(tx *bbolt.Tx) error { f = getU64(tx.Bucket(bMeta), keyFormat); return nil })
	if f != storeFormat || storeFormat != 7 {
		t.Fatalf("format %d after the upgrade", f)
	}
}
