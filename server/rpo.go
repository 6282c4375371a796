package server

import (
	"context"
	"time"

	"github.com/cairnbackup/cairn/alert"
	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/rpo"
	"github.com/cairnbackup/cairn/wire"
)

// rpoInterval is how often the leader assesses every client's RPO for the
// alerts; `cairn status`, `cairn client list` and the metrics assess it on
// every read.
const rpoInterval = time.Minute

// rpoTargets are the RPO targets of the clients given: each client under
// each enabled policy that covers it and names an RPO. A disabled policy
// runs nothing, so it is not held to a target either.
func (s *Server) rpoTargets(clients []catalog.Client) ([]rpo.Target, error) {
	policies, err := s.store.Policies()
	if err != nil {
		return nil, err
	}
	var out []rpo.Target
	for _, p := range policies {
		if p.Disabled || p.RPO <= 0 {
			continue
		}
		for _, c := range clients {
			if !p.AppliesTo(c.Name, c.Labels) {
				continue
			}
			out = append(out, rpo.Target{Client: c.Name, Policy: p.Name, FileSet: p.FileSet(), RPO: p.RPO,
				Since: later(p.Created, c.Registered)})
		}
	}
	return out, nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// assessRPO judges the RPO targets of the clients given at the clock's now.
func (s *Server) assessRPO(clients []catalog.Client) ([]rpo.Status, error) {
	targets, err := s.rpoTargets(clients)
	if err != nil {
		return nil, err
	}
	return rpo.Assess(s.clock.Now(), targets, s.latestGood)
}

// latestGood is the newest complete backup of a client and file set, by
// job ID: the one the newest start made.
func (s *Server) latestGood(client, fileSet string) (uint64, time.Time, bool, error) {
	bs, err := s.store.Backups(catalog.BackupFilter{Client: client, FileSet: fileSet,
		States: []catalog.BackupState{catalog.BackupComplete}, Limit: 1})
	if err != nil || len(bs) == 0 {
		return 0, time.Time{}, false, err
	}
	return bs[0].ID, bs[0].StartTime, true, nil
}

func wireRPO(st rpo.Status) wire.RPOStatus {
	return wire.RPOStatus{Client: st.Client, Policy: st.Policy, Target: st.RPO, Backup: st.Backup,
		LastGood: st.LastGood, Age: st.Age, Breach: st.Breach}
}

// watchRPO runs on the leader for one term: every rpoInterval of the
// server's clock it assesses every client and raises an alert when a
// breach begins and when it ends. Which breaches were alerted is the
// catalog's (catalog.Alert), not this term's: a breach that goes on is not
// alerted again by a new leader, and one whose alert a leader raised and
// died before sending is sent by the next (alerts.go).
func (s *Server) watchRPO(ctx context.Context) {
	t := s.clock.NewTicker(rpoInterval)
	defer t.Stop()
	for {
		s.checkRPO(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

func (s *Server) checkRPO(ctx context.Context) {
	clients, err := s.store.Clients()
	if err != nil {
		s.log.Warn("cannot assess the RPO of the clients", "err", err)
		return
	}
	sts, err := s.assessRPO(clients)
	if err != nil {
		s.log.Warn("cannot assess the RPO of the clients", "err", err)
		return
	}
	als, err := s.store.Alerts()
	if err != nil {
		s.log.Warn("cannot read the RPO breaches alerted", "err", err)
		return
	}
	var tr rpo.Tracker
	for _, al := range als {
		if al.Kind == catalog.AlertRPOBreach {
			tr.Remember(breachStatus(al))
		}
	}
	began, ended := tr.Update(sts)
	now := s.clock.Now()
	for _, b := range began {
		if s.raiseAlert(ctx, rpoCondition(b.Client, b.Policy), "", alert.NewRPOBreach(now, b.Client, b.Policy, b.LastGood, b.RPO)) {
			s.log.Warn("a client breaches its RPO", "client", b.Client, "policy", b.Policy, "age", b.Age.Round(time.Second), "target", b.RPO, "backup", b.Backup)
		}
	}
	for _, e := range ended {
		if s.raiseAlert(ctx, rpoCondition(e.Client, e.Policy), catalog.AlertRPOBreach, alert.NewRPOResolved(now, e.Client, e.Policy, e.LastGood, e.RPO)) {
			s.log.Info("a client's RPO breach is over", "client", e.Client, "policy", e.Policy)
		}
	}
}

func (s *Server) sendAlert(ev alert.Event) {
	if s.alerts == nil {
		return
	}
	if _, err := s.alerts.Send(ev); err != nil {
		s.log.Warn("could not queue an alert", "kind", ev.Kind, "client", ev.Client, "policy", ev.Policy, "err", err)
	}
}
