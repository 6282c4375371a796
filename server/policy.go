package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/retention"
	"github.com/cairnbackup/cairn/schedule"
	"github.com/cairnbackup/cairn/wire"
)

// Policies: the admin API stores them in the catalog, which checks them
// (catalog/policy_apply.go); these handlers convert, name the refusals in
// the wire's codes, and compute previews from the local catalog.

func (s *Server) routePolicyAPI(r *wire.Router) {
	r.Handle(wire.OpPolicyCreate, wire.Typed(s.policyCreate))
	r.Handle(wire.OpPolicySet, wire.Typed(s.policySet))
	r.Handle(wire.OpPolicyApply, wire.Typed(s.policyApply))
	r.Handle(wire.OpPolicyShow, wire.Typed(s.policyShow))
	r.Handle(wire.OpPolicyGet, wire.Typed(s.policyShow))
	r.Handle(wire.OpPolicyList, wire.Typed(s.policyList))
	r.Handle(wire.OpPolicyDelete, wire.Typed(s.policyDelete))
	r.Handle(wire.OpPolicyPreview, wire.Typed(s.policyPreview))
}

// catalogPolicy and wirePolicy convert through JSON: the two types
// declare the same fields under the same names (TestPolicyIsCarried holds
// it), so a field one of them gains and the other lacks fails that test,
// never silently drops.
func catalogPolicy(p wire.Policy) (catalog.Policy, error) {
	var out catalog.Policy
	return out, convertJSON(p, &out)
}

func wirePolicy(p catalog.Policy) (wire.Policy, error) {
	var out wire.Policy
	if err := convertJSON(p, &out); err != nil {
		return out, fmt.Errorf("policy %s: %w", p.Name, err)
	}
	return out, nil
}

func convertJSON(from, to any) error {
	b, err := json.Marshal(from)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, to)
}

func (s *Server) putPolicy(ctx context.Context, req wire.PolicyPutReq, mode catalog.PutMode) (wire.Policy, error) {
	if err := wire.ValidateName("policy", req.Policy.Name); err != nil {
		return wire.Policy{}, err
	}
	p, err := catalogPolicy(req.Policy)
	if err != nil {
		return wire.Policy{}, wire.Errorf(wire.CodeInvalidArgument, "", "policy %s: %v", req.Policy.Name, err)
	}
	if _, err := s.apply(ctx, &catalog.Command{Op: catalog.OpPutPolicy, PolicyPut: &catalog.PolicyPut{
		Policy: p, Mode: mode, IfUpdated: req.IfUpdated,
	}}); err != nil {
		return wire.Policy{}, err
	}
	stored, err := s.store.Policy(p.Name)
	if err != nil {
		return wire.Policy{}, catalogError(err)
	}
	s.log.Info("policy stored", "policy", p.Name, "mode", mode)
	return wirePolicy(*stored)
}

func (s *Server) policyCreate(ctx context.Context, _ string, req wire.PolicyPutReq) (wire.Policy, error) {
	return s.putPolicy(ctx, req, catalog.PutCreate)
}

func (s *Server) policySet(ctx context.Context, _ string, req wire.PolicyPutReq) (wire.Policy, error) {
	return s.putPolicy(ctx, req, catalog.PutReplace)
}

// policyApply stores a file's policies in one catalog change, so that one
// the catalog refuses leaves every policy as it was.
func (s *Server) policyApply(ctx context.Context, _ string, req wire.PolicyApplyReq) (wire.PolicyApplyResp, error) {
	var resp wire.PolicyApplyResp
	cmd := &catalog.PolicyApply{Prune: req.Prune}
	given := map[string]bool{}
	for _, wp := range req.Policies {
		if err := wire.ValidateName("policy", wp.Name); err != nil {
			return resp, err
		}
		p, err := catalogPolicy(wp)
		if err != nil {
			return resp, wire.Errorf(wire.CodeInvalidArgument, "", "policy %s: %v", wp.Name, err)
		}
		cmd.Policies = append(cmd.Policies, p)
		given[p.Name] = true
	}
	before, err := s.store.Policies()
	if err != nil {
		return resp, err
	}
	if _, err := s.apply(ctx, &catalog.Command{Op: catalog.OpApplyPolicies, PolicyApply: cmd}); err != nil {
		return resp, err
	}
	old := map[string]catalog.Policy{}
	for _, p := range before {
		old[p.Name] = p
		if req.Prune && !given[p.Name] {
			resp.Deleted = append(resp.Deleted, p.Name)
		}
	}
	for _, p := range cmd.Policies {
		o, ok := old[p.Name]
		switch {
		case !ok:
			resp.Created = append(resp.Created, p.Name)
		case o.Updated.Equal(s.storedUpdated(p.Name)):
			resp.Unchanged = append(resp.Unchanged, p.Name)
		default:
			resp.Changed = append(resp.Changed, p.Name)
		}
	}
	s.log.Info("policies applied", "created", resp.Created, "changed", resp.Changed, "deleted", resp.Deleted)
	return resp, nil
}

// storedUpdated is when the stored policy name last changed: the catalog
// keeps that time when a put changes nothing.
func (s *Server) storedUpdated(name string) time.Time {
	if p, err := s.store.Policy(name); err == nil {
		return p.Updated
	}
	return time.Time{}
}

func (s *Server) policyByName(name string) (*catalog.Policy, error) {
	p, err := s.store.Policy(name)
	if err != nil {
		if errors.Is(err, catalog.ErrNotFound) {
			return nil, wire.Errorf(wire.CodeNotFound, "list policies with 'cairn policy list'", "policy %q does not exist", name)
		}
		return nil, err
	}
	return p, nil
}

func (s *Server) policyShow(_ context.Context, _ string, req wire.PolicyNameReq) (wire.Policy, error) {
	p, err := s.policyByName(req.Name)
	if err != nil {
		return wire.Policy{}, err
	}
	return wirePolicy(*p)
}

func (s *Server) policyList(context.Context, string, wire.Empty) (wire.PolicyListResp, error) {
	ps, err := s.store.Policies()
	if err != nil {
		return wire.PolicyListResp{}, err
	}
	resp := wire.PolicyListResp{Policies: []wire.Policy{}}
	for _, p := range ps {
		wp, err := wirePolicy(p)
		if err != nil {
			return resp, err
		}
		resp.Policies = append(resp.Policies, wp)
	}
	return resp, nil
}

// policyDelete deletes a policy and says how many backups it leaves: they
// stay until deleted by hand, since no retention covers them any more.
func (s *Server) policyDelete(ctx context.Context, _ string, req wire.PolicyNameReq) (wire.PolicyDeleteResp, error) {
	p, err := s.policyByName(req.Name)
	if err != nil {
		return wire.PolicyDeleteResp{}, err
	}
	clients, err := s.policyClients(p)
	if err != nil {
		return wire.PolicyDeleteResp{}, err
	}
	if _, err := s.apply(ctx, &catalog.Command{Op: catalog.OpDeletePolicy, PolicyDelete: &catalog.PolicyDelete{Name: req.Name}}); err != nil {
		return wire.PolicyDeleteResp{}, err
	}
	resp := wire.PolicyDeleteResp{Name: req.Name}
	for _, c := range clients {
		bs, err := s.store.Backups(catalog.BackupFilter{Client: c, FileSet: p.FileSet(), States: []catalog.BackupState{catalog.BackupComplete}})
		if err == nil {
			resp.Backups += len(bs)
		}
	}
	s.log.Info("policy deleted", "policy", req.Name, "backups_kept", resp.Backups)
	return resp, nil
}

// policyClients are the clients a policy covers now: those it names, and
// the registered clients whose labels it selects, by name.
func (s *Server) policyClients(p *catalog.Policy) ([]string, error) {
	out := slices.Clone(p.Clients)
	if len(p.ClientLabels) > 0 {
		all, err := s.store.Clients()
		if err != nil {
			return nil, err
		}
		for _, c := range all {
			if p.AppliesTo(c.Name, c.Labels) && !slices.Contains(out, c.Name) {
				out = append(out, c.Name)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// maxPreviewDays bounds a preview: a year and a month shows a yearly rule.
const maxPreviewDays = 400

// policyPreview foresees a policy's runs over the next days for each of its
// clients, from the backups the catalog holds: each run's level once
// promoted, its pool, and what the expiry after it would expire. It runs
// here, not in the CLI, because the history it starts from is every backup
// of the policy's file set on each client, which the server reads locally
// and the CLI would have to page through.
func (s *Server) policyPreview(_ context.Context, _ string, req wire.PolicyPreviewReq) (wire.PolicyPreviewResp, error) {
	p, err := s.policyByName(req.Name)
	if err != nil {
		return wire.PolicyPreviewResp{}, err
	}
	days := req.Days
	if days == 0 {
		days = 30
	}
	if days < 0 || days > maxPreviewDays {
		return wire.PolicyPreviewResp{}, wire.Errorf(wire.CodeInvalidArgument, fmt.Sprintf("give --days from 1 to %d", maxPreviewDays), "%d days is not a preview", req.Days)
	}
	sched, err := p.ParsedSchedule()
	if err != nil {
		return wire.PolicyPreviewResp{}, wire.Errorf(wire.CodeInvalidArgument, "fix it with 'cairn policy set'", "%v", err)
	}
	rp, err := p.RetentionPolicy()
	if err != nil {
		return wire.PolicyPreviewResp{}, wire.Errorf(wire.CodeInvalidArgument, "fix it with 'cairn policy set'", "%v", err)
	}
	clients, err := s.policyClients(p)
	if err != nil {
		return wire.PolicyPreviewResp{}, err
	}
	if req.Client != "" {
		if !slices.Contains(clients, req.Client) {
			return wire.PolicyPreviewResp{}, wire.Errorf(wire.CodeNotFound, "see the clients it covers with 'cairn policy show "+p.Name+"'",
				"policy %s does not cover client %q", p.Name, req.Client)
		}
		clients = []string{req.Client}
	}
	from := s.clock.Now()
	to := from.Add(time.Duration(days) * 24 * time.Hour)
	resp := wire.PolicyPreviewResp{Policy: p.Name, TimeZone: sched.Location().String(), From: from, To: to, Clients: clients, Disabled: p.Disabled, Runs: []wire.PreviewRun{}}
	var runs []wire.PreviewRun
	for _, client := range clients {
		history, err := s.retentionHistory(client, p.FileSet())
		if err != nil {
			return resp, err
		}
		real := map[uint64]bool{}
		for _, b := range history {
			real[b.ID] = true
		}
		g := retention.Group{Client: client, FileSet: p.FileSet()}
		for _, f := range retention.Preview(sched, from, to, g, history, &rp, p.Limits()) {
			run := wire.PreviewRun{
				Client: client, Time: f.Time, Asked: string(f.Run.Level), Level: string(f.Level), Promoted: f.Promoted,
				Pool: p.PoolFor(catalog.Level(f.Level)), Backup: f.Backup,
			}
			for _, d := range f.Expires {
				run.Expires = append(run.Expires, wire.PreviewExpiry{
					Backup: d.ID, Time: d.Time.In(sched.Location()), Level: string(d.Level), Foreseen: !real[d.ID], Why: d.Why(),
				})
			}
			runs = append(runs, run)
		}
	}
	slices.SortStableFunc(runs, func(a, b wire.PreviewRun) int { return a.Time.Compare(b.Time) })
	pg, err := newPage(s.pageBytes(), resp)
	if err != nil {
		return resp, err
	}
	for _, r := range runs {
		if ok, err := pg.add(r); err != nil || !ok {
			resp.More = true
			return resp, err
		}
		resp.Runs = append(resp.Runs, r)
	}
	return resp, nil
}

// retentionHistory is what retention needs of a client's backups of a
// file set. Holds are not known here yet: every backup counts as not held.
func (s *Server) retentionHistory(client, fileSet string) ([]retention.Backup, error) {
	bs, err := s.store.Backups(catalog.BackupFilter{Client: client, FileSet: fileSet})
	if err != nil {
		return nil, err
	}
	out := make([]retention.Backup, 0, len(bs))
	for _, b := range bs {
		out = append(out, retention.Backup{
			ID: b.ID, Time: b.StartTime, Level: schedule.Level(b.Level), Parent: b.Parent,
			Client: b.Client, FileSet: b.FileSet, State: retention.State(b.State),
		})
	}
	return out, nil
}
