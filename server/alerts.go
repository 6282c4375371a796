package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cairnbackup/cairn/alert"
	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/rpo"
)

// The alerts the catalog owes (catalog.Alert): the scheduler raises a
// missed_run alert with the runs it records, the RPO check raises the
// beginning and the end of a breach, both through Raft. The leader's
// outbox hands every owed alert to the dispatcher and, once the
// dispatcher is finished with it (delivered, or given up after the last
// attempt), records it sent. A leader that dies before that leaves it owed,
// and the next one sends it; a leader that comes after the record sends
// nothing again. The one window left is between a delivery and its record:
// the alert's id (alert.Event.ID) is the same from every leader, for a
// receiver to drop the second copy. server/DESIGN.md, "Alerts".

// alertOutbox is the state of the outbox the leader runs, shared with the
// dispatcher's workers that report the alerts they are done with.
type alertOutbox struct {
	kick chan struct{} // owed alerts were raised, or sent ones reported

	mu   sync.Mutex
	done []catalog.AlertSent
}

func newAlertOutbox() *alertOutbox { return &alertOutbox{kick: make(chan struct{}, 1)} }

// wake has the outbox look at the catalog again soon; it never blocks.
func (o *alertOutbox) wake() {
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

func (o *alertOutbox) finished(s catalog.AlertSent) {
	o.mu.Lock()
	o.done = append(o.done, s)
	o.mu.Unlock()
	o.wake()
}

func (o *alertOutbox) takeFinished() []catalog.AlertSent {
	o.mu.Lock()
	defer o.mu.Unlock()
	d := o.done
	o.done = nil
	return d
}

// sendAlertsOwed runs the outbox for one leader term: at its start, when
// woken and at every rpoInterval it records what the dispatcher finished
// and hands over what the catalog owes and this term has not handed over.
func (s *Server) sendAlertsOwed(ctx context.Context) {
	t := s.clock.NewTicker(rpoInterval)
	defer t.Stop()
	handed := map[string]uint64{} // condition -> seq, handed to the dispatcher this term
	for {
		s.recordAlertsSent(ctx, handed)
		s.handOverOwed(handed)
		select {
		case <-ctx.Done():
			return
		case <-s.outbox.kick:
		case <-t.C():
		}
	}
}

func (s *Server) recordAlertsSent(ctx context.Context, handed map[string]uint64) {
	for _, d := range s.outbox.takeFinished() {
		if _, err := s.apply(ctx, &catalog.Command{Op: catalog.OpAlertSent, AlertSent: &d}); err != nil {
			// Still owed: the next leader sends it again, or this one
			// once the term's handed-over memory is gone.
			s.log.Warn("could not record an alert sent", "condition", d.Condition, "err", err)
			continue
		}
		if handed[d.Condition] == d.Seq {
			delete(handed, d.Condition)
		}
	}
}

func (s *Server) handOverOwed(handed map[string]uint64) {
	als, err := s.store.Alerts()
	if err != nil {
		s.log.Warn("cannot read the alerts owed", "err", err)
		return
	}
	group := s.groupName()
	for _, al := range als {
		if !al.Owed() || handed[al.Condition] == al.Seq {
			continue
		}
		var e alert.Event
		if err := json.Unmarshal(al.Event, &e); err != nil {
			// Written by a leader of this version: not to be, but an
			// alert that cannot be read is not to block the others.
			s.log.Error("an owed alert does not decode; recorded sent unsent", "condition", al.Condition, "err", err)
			s.outbox.finished(catalog.AlertSent{Condition: al.Condition, Seq: al.Seq})
			handed[al.Condition] = al.Seq
			continue
		}
		e.ID = fmt.Sprintf("%s-%d", group, al.Seq)
		sent := catalog.AlertSent{Condition: al.Condition, Seq: al.Seq}
		if s.alerts == nil { // no sink: nobody to tell
			s.outbox.finished(sent)
			handed[al.Condition] = al.Seq
			continue
		}
		if _, err := s.alerts.SendAck(e, func() { s.outbox.finished(sent) }); err != nil {
			if !errors.Is(err, alert.ErrClosed) {
				s.log.Warn("could not queue an alert", "kind", e.Kind, "client", e.Client, "policy", e.Policy, "err", err)
			}
			continue
		}
		handed[al.Condition] = al.Seq
	}
	for c, seq := range handed {
		if !owes(als, c, seq) {
			delete(handed, c)
		}
	}
}

func owes(als []catalog.Alert, condition string, seq uint64) bool {
	for _, al := range als {
		if al.Condition == condition {
			return al.Seq == seq && al.Owed()
		}
	}
	return false
}

// raiseAlert proposes e as the alert of condition, expecting the
// condition's alert to be of kind replaces ("" for none); the outbox sends
// it. It reports whether the alert was raised: false when another leader
// raised it first, or the previous one is still owed.
func (s *Server) raiseAlert(ctx context.Context, condition, replaces string, e alert.Event) bool {
	body, err := json.Marshal(e)
	if err != nil {
		s.log.Error("encode an alert", "kind", e.Kind, "err", err)
		return false
	}
	_, err = s.apply(ctx, &catalog.Command{Op: catalog.OpRaiseAlert, Alert: &catalog.AlertRaise{
		Condition: condition, Kind: string(e.Kind), Client: e.Client, Policy: e.Policy, Event: body, Replaces: replaces,
	}})
	var ce *catalog.Error
	if errors.As(err, &ce) && ce.Code == catalog.CodeWrongState {
		s.log.Debug("alert not raised: the catalog holds another for its condition", "condition", condition, "kind", e.Kind, "err", err)
		return false
	}
	if err != nil {
		s.log.Warn("could not raise an alert; the next check tries again", "kind", e.Kind, "client", e.Client, "policy", e.Policy, "err", err)
		return false
	}
	s.outbox.wake()
	return true
}

// rpoCondition names the RPO condition of a client under a policy.
func rpoCondition(client, policy string) string { return "rpo\x00" + client + "\x00" + policy }

// breachStatus is the status a breach alert of the catalog was raised
// for, as the RPO tracker remembers it: what its end is said with.
func breachStatus(al catalog.Alert) rpo.Status {
	st := rpo.Status{Target: rpo.Target{Client: al.Client, Policy: al.Policy}, Breach: true}
	var e alert.Event
	if err := json.Unmarshal(al.Event, &e); err == nil {
		st.RPO = time.Duration(e.TargetSeconds) * time.Second
		if e.LastGood != nil {
			st.LastGood = *e.LastGood
		}
	}
	return st
}
