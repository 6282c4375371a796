package server

import (
	"context"
	"fmt"
	"maps"
	"math"
	"strings"
	"time"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/retention"
	"github.com/cairnbackup/cairn/schedule"
	"github.com/cairnbackup/cairn/server/orchestrator"
	"github.com/cairnbackup/cairn/wire"
)

// The expiry pass: on the leader, every ExpiryInterval of the server's
// clock (and on 'cairn prune'), package retention decides on the backups of
// every client and file set that a policy with a retention covers; backups
// no policy covers (ad hoc ones) are kept until deleted by hand. The expired
// ones go to the catalog in batches, one OpExpireBackups command each, which
// checks holds, dependents and running restores again as it applies
// (catalog/DESIGN.md, "Expiry"). Then the disk volumes no backup is on any
// more are deleted by the storage node that owns them, and forgotten
// (storagenode/DESIGN.md, "Deleting volumes").

// An expiry command holds the catalog's applier while it applies, and
// every other change (a job's start, a backup's commit) waits behind it.
// What a backup costs to expire grows with the catalog: on five years of
// 10,000 clients never expired, commands of 2,000 backups held it up to
// 4.4 s under load (bench/README.md, "The catalog at scale"). So a pass
// sizes each command by how long the one before took to apply: it starts
// small, doubles while commands take less than half of hold, and shrinks
// in proportion when one takes longer, between min and max backups. The
// bound on max keeps each transaction and Raft entry small, and a pass
// over a big catalog many commands, each of which stands on its own.
type expirySizing struct {
	start, min, max int
	hold            time.Duration
}

var defaultExpirySizing = expirySizing{start: 250, min: 25, max: 2000, hold: 250 * time.Millisecond}

// next is the size of the command after one of n backups, cut to size or
// shorter (the last of a plan), that took took to apply. A command that
// was not slow never makes the next one smaller: a short last one says
// nothing against the size.
func (z *expirySizing) next(size, n int, took time.Duration) int {
	switch {
	case took > z.hold:
		n = int(int64(n) * int64(z.hold) / int64(took))
	case took < z.hold/2:
		n = max(2*n, size)
	default:
		n = max(n, size)
	}
	return min(max(n, z.min), z.max)
}

// expiryChunk bounds the decisions the pass plans at once: it plans whole
// clients until it has this many, expires them, and goes on after the last
// client planned, so that its memory (some 15 MB) and its read
// transactions stay small however big the catalog
// (catalog.PlanExpiryFrom). It is big enough that a first pass over years
// of history expires a hundred clients' nights together, which lie side by
// side in the catalog (ExpiryPlan.Batches).
const expiryChunk = 100_000

// pruneBudget bounds the time 'cairn prune' spends before it answers, well
// within the command's default timeout (30s): a first pass over years of
// backups takes minutes, and goes on in the next pass (or the next 'cairn
// prune') from where the catalog stands then.
const pruneBudget = 20 * time.Second

// volumeDeleteTimeout bounds a storage node's deletion of one volume file.
const volumeDeleteTimeout = 30 * time.Second

// retentions is the retention of each client's file sets, as the policies
// say, and the policy that says it.
type retentions struct {
	byGroup map[[2]string]*retentionOf
}

type retentionOf struct {
	policy retention.Policy
	names  []string
}

// newRetentions reads the retention of every client and file set from the
// policies. Two policies that cover one client's file set (the same paths)
// keep what either keeps: each rule is taken at its larger setting.
func newRetentions(policies []catalog.Policy, applies func(p *catalog.Policy, client string) bool, clients []string) (*retentions, error) {
	r := &retentions{byGroup: map[[2]string]*retentionOf{}}
	for i := range policies {
		p := &policies[i]
		if p.Retention.All == (catalog.KeepRules{}) && len(p.Retention.Levels) == 0 {
			continue // no retention: its backups stay until deleted by hand
		}
		rp, err := p.RetentionPolicy()
		if err != nil {
			return nil, err
		}
		fs := p.FileSet()
		for _, c := range clients {
			if !applies(p, c) {
				continue
			}
			k := [2]string{c, fs}
			if cur := r.byGroup[k]; cur != nil {
				cur.policy = unionRetention(cur.policy, rp)
				cur.names = append(cur.names, p.Name)
				continue
			}
			r.byGroup[k] = &retentionOf{policy: rp, names: []string{p.Name}}
		}
	}
	return r, nil
}

func (r *retentions) retentionFor(client, fileSet string) (*retention.Policy, bool) {
	if e := r.byGroup[[2]string{client, fileSet}]; e != nil {
		return &e.policy, true
	}
	return nil, false
}

func (r *retentions) policyOf(client, fileSet string) string {
	if e := r.byGroup[[2]string{client, fileSet}]; e != nil {
		return strings.Join(e.names, ", ")
	}
	return ""
}

// unionRetention keeps what either policy keeps: every rule at the larger
// of its two settings (unlimited, -1, is the largest).
func unionRetention(a, b retention.Policy) retention.Policy {
	out := a
	out.Rules = unionRules(a.Rules, b.Rules)
	if len(b.Levels) > 0 {
		out.Levels = maps.Clone(a.Levels)
		if out.Levels == nil {
			out.Levels = map[schedule.Level]retention.Rules{}
		}
		for l, r := range b.Levels {
			out.Levels[l] = unionRules(out.Levels[l], r)
		}
	}
	return out
}

func unionRules(a, b retention.Rules) retention.Rules {
	n := func(x, y int) int {
		if x == retention.Unlimited || y == retention.Unlimited {
			return retention.Unlimited
		}
		return max(x, y)
	}
	return retention.Rules{Within: max(a.Within, b.Within), Last: n(a.Last, b.Last), Hourly: n(a.Hourly, b.Hourly),
		Daily: n(a.Daily, b.Daily), Weekly: n(a.Weekly, b.Weekly), Monthly: n(a.Monthly, b.Monthly), Yearly: n(a.Yearly, b.Yearly)}
}

// currentRetentions reads the policies as the catalog holds them now, and
// the clients each covers (by name or by the labels their agent reports).
func (s *Server) currentRetentions() (*retentions, error) {
	if s.retentionsHook != nil {
		return s.retentionsHook()
	}
	policies, err := s.store.Policies()
	if err != nil {
		return nil, err
	}
	clients, err := s.store.Clients()
	if err != nil {
		return nil, err
	}
	labels := make(map[string]map[string]string, len(clients))
	names := make([]string, len(clients))
	for i, c := range clients {
		names[i] = c.Name
		labels[c.Name] = c.Labels
	}
	return newRetentions(policies, func(p *catalog.Policy, c string) bool { return p.AppliesTo(c, labels[c]) }, names)
}

// jobPruneInterval is how often the expiry pass prunes the jobs too: that
// reads every job record older than job_history, and a day more of old
// jobs is nothing against it.
const jobPruneInterval = 24 * time.Hour

// expiryLoop runs the expiry pass every ExpiryInterval while this server
// leads, and prunes the jobs every jobPruneInterval of them.
func (s *Server) expiryLoop(ctx context.Context) {
	t := s.clock.NewTicker(s.cfg.ExpiryInterval)
	defer t.Stop()
	var pruned time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		lctx, ok := s.decide()
		if !ok {
			continue
		}
		resp, err := s.expire(lctx, false, 0)
		switch {
		case err != nil:
			s.log.Warn("expiry pass failed; the next one tries again", "err", err)
		case resp.Expired > 0 || resp.Kept > 0 || len(resp.Volumes) > 0 || len(resp.Pending) > 0:
			s.log.Info("expiry pass", "expired", resp.Expired, "kept", resp.Kept, "volumes", resp.Volumes, "waiting", len(resp.Pending))
		}
		if s.cfg.JobHistory > 0 && (pruned.IsZero() || s.clock.Since(pruned) >= jobPruneInterval) {
			pruned = s.clock.Now()
			n, err := s.pruneJobs(lctx, pruned.Add(-s.cfg.JobHistory))
			switch {
			case err != nil:
				s.log.Warn("pruning the jobs failed; the next day's pass tries again", "pruned", n, "err", err)
			case n > 0:
				s.log.Info("pruned the jobs ended before the job history without a backup", "jobs", n, "job_history", s.cfg.JobHistory)
			}
		}
		s.expiryMu.Lock()
		trace := s.expiryTrace
		s.expiryMu.Unlock()
		if trace != nil {
			trace(resp, err)
		}
	}
}

// pruneJobs drops the records and logs of the jobs that ended before
// endedBefore and have no backup in the catalog but an aborted one (see
// catalog.JobsPrune), a batch of catalog.MaxJobsPrune to a command, as
// the chunked expiry does. It returns how many went.
func (s *Server) pruneJobs(ctx context.Context, endedBefore time.Time) (int, error) {
	n := 0
	for after := uint64(0); ; {
		ids, next, err := s.store.PrunableJobs(endedBefore, after, catalog.MaxJobsPrune)
		if err != nil {
			return n, err
		}
		if len(ids) > 0 {
			res, err := s.apply(ctx, &catalog.Command{Op: catalog.OpPruneJobs, PruneJobs: &catalog.JobsPrune{IDs: ids, EndedBefore: endedBefore}})
			if err != nil {
				return n, err
			}
			n += res.Pruned
		}
		if next == 0 {
			return n, nil
		}
		after = next
	}
}

// prune answers 'cairn prune': the pass now, or what it would do.
func (s *Server) prune(ctx context.Context, _ string, req wire.PruneReq) (wire.PruneResp, error) {
	if !req.DryRun && !s.deciding() {
		return wire.PruneResp{}, wire.Errorf(wire.CodeNotLeader, "", "this server does not lead")
	}
	return s.expire(ctx, req.DryRun, pruneBudget)
}

// expire plans the expiry with package retention and, unless dryRun,
// carries it out: the expiry commands, then the volumes emptied. It goes
// through the clients a chunk at a time (expiryChunk) and, given a budget,
// stops after the chunk that passes it (PruneResp.More).
func (s *Server) expire(ctx context.Context, dryRun bool, budget time.Duration) (wire.PruneResp, error) {
	s.expiryMu.Lock()
	defer s.expiryMu.Unlock()
	rets, err := s.currentRetentions()
	if err != nil {
		return wire.PruneResp{}, err
	}
	resp := wire.PruneResp{DryRun: dryRun, Groups: []wire.PruneGroup{}}
	pg, err := newPage(s.pageBytes(), resp)
	if err != nil {
		return resp, err
	}
	start := s.clock.Now()
	size := s.sizing().start // carried from chunk to chunk of the pass
	for after := ""; ; {
		plan, next, err := s.store.PlanExpiryFrom(after, expiryChunk, rets.retentionFor, true)
		if err != nil {
			return resp, err
		}
		where, err := s.listExpiry(&resp, pg, plan, rets)
		if err != nil {
			return resp, err
		}
		if dryRun {
			resp.Expired += len(plan.Decisions)
		} else if err := s.applyExpiry(ctx, &resp, plan, where, &size); err != nil {
			return resp, err
		}
		if next == "" {
			break
		}
		after = next
		if budget > 0 && s.clock.Since(start) >= budget {
			resp.More = true
			break
		}
	}
	if !dryRun {
		resp.Volumes, resp.Pending = s.reclaimVolumes(ctx)
	}
	return resp, nil
}

// listExpiry adds the plan's decisions to the answer, by client and file
// set, while they fit in one message; it counts the others as Unlisted. It
// returns where each listed backup is (group, entry).
func (s *Server) listExpiry(resp *wire.PruneResp, pg *page, plan *catalog.ExpiryPlan, rets *retentions) (map[uint64][2]int, error) {
	where := map[uint64][2]int{}
	for _, d := range plan.Decisions {
		entry := wire.PruneBackup{ID: d.ID, Level: string(d.Level), StartTime: d.Time, Reason: d.Why()}
		n := len(resp.Groups)
		newGroup := n == 0 || resp.Groups[n-1].Client != d.Client || resp.Groups[n-1].FileSet != d.FileSet
		var g wire.PruneGroup
		if newGroup {
			g = wire.PruneGroup{Client: d.Client, FileSet: d.FileSet, Policy: rets.policyOf(d.Client, d.FileSet)}
			if b, err := s.store.Backup(d.ID); err == nil {
				g.Paths = fileindex.Strings(b.Paths)
			}
			g.Expire = []wire.PruneBackup{entry}
		}
		var fits bool
		var err error
		if newGroup {
			fits, err = pg.add(g)
		} else {
			fits, err = pg.add(entry)
		}
		if err != nil {
			return where, err
		}
		if !fits || resp.Unlisted > 0 {
			resp.Unlisted++
			continue
		}
		if newGroup {
			resp.Groups = append(resp.Groups, g)
			n++
		} else {
			resp.Groups[n-1].Expire = append(resp.Groups[n-1].Expire, entry)
		}
		where[d.ID] = [2]int{n - 1, len(resp.Groups[n-1].Expire) - 1}
	}
	return where, nil
}

// sizing is how the pass sizes its commands.
func (s *Server) sizing() *expirySizing {
	if s.expirySizing != nil {
		return s.expirySizing
	}
	return &defaultExpirySizing
}

// applyExpiry expires a plan's backups, *size of them in the next command
// (expirySizing), and marks in the answer those the catalog kept. The
// plan's order, newest first, is kept across commands: a backup's
// dependents leave in the same command or an earlier one
// (catalog.ExpiryPlan.Batches).
func (s *Server) applyExpiry(ctx context.Context, resp *wire.PruneResp, plan *catalog.ExpiryPlan, where map[uint64][2]int, size *int) error {
	all := plan.Batches(math.MaxInt, "expiry pass")
	if len(all) == 0 {
		return nil
	}
	z := s.sizing()
	for rest := all[0].Backups; len(rest) > 0; {
		n := min(*size, len(rest))
		e := &catalog.BackupsExpire{By: all[0].By, Backups: rest[:n]}
		rest = rest[n:]
		began := s.clock.Now()
		if s.expiryCommands != nil {
			s.expiryCommands(n)
		}
		res, err := s.apply(ctx, &catalog.Command{Op: catalog.OpExpireBackups, Expire: e})
		if err != nil {
			return err
		}
		*size = z.next(*size, n, s.clock.Since(began))
		resp.Expired += len(res.Expired)
		resp.Kept += len(res.Kept)
		for _, k := range res.Kept {
			if w, ok := where[k.ID]; ok {
				resp.Groups[w[0]].Expire[w[1]].Refused = k.Reason
			}
		}
	}
	return nil
}

// reclaimVolumes has every expired disk volume deleted by its storage node
// and then forgotten by the catalog, in that order: a crash in between
// leaves a catalog volume whose file is gone, which the next pass orders
// deleted again (a file already gone is success) and forgets, never a file
// the catalog does not know. It returns the volumes it reclaimed and the
// tapes that are recyclable, and why the others wait. A node that is
// offline, or that could not delete a file, keeps its volumes for a later
// pass. The caller holds expiryMu.
func (s *Server) reclaimVolumes(ctx context.Context) (done, pending []string) {
	vols, err := s.store.Volumes(catalog.VolumeFilter{State: catalog.VolumeExpired})
	if err != nil {
		return nil, []string{fmt.Sprintf("expired volumes not read: %v", err)}
	}
	wait := func(v *catalog.Volume, err error) {
		msg := fmt.Sprintf("volume %s on storage node %s: %v", v.Name, v.Node, err)
		s.log.Warn("expired volume not deleted yet; the next expiry pass tries again", "volume", v.Name, "node", v.Node, "err", err)
		pending = append(pending, msg)
	}
	for i := range vols {
		v := &vols[i]
		if v.MediaType.Locks() && v.LockedUntil.After(s.clock.Now()) {
			// Its objects are locked in the store: a delete would be
			// refused, and no one can bring the date forward.
			wait(v, fmt.Errorf("its objects are locked in the store until %s; it is deleted once that date has passed", v.LockedUntil.UTC().Format(time.RFC3339)))
			continue
		}
		if ok, seen := s.online(s.nodes, v.Node); !ok {
			wait(v, fmt.Errorf("the node is offline (%s)", orchestrator.LastSeen(seen)))
			continue
		}
		patience := volumeDeleteTimeout
		if s.volumeDeleteWait > 0 {
			patience = s.volumeDeleteWait
		}
		octx, cancel := context.WithTimeout(ctx, patience)
		err := wire.RequestIn(octx, s.nc, s.groupName(), wire.NodeSubject(v.Node, wire.OpNodeVolumeDelete),
			wire.VolumeDeleteOrder{Pool: v.Pool, Volume: v.Name, VolumeID: v.ID}, nil)
		cancel()
		if err != nil {
			wait(v, err)
			continue
		}
		if s.afterVolumeDelete != nil {
			if err := s.afterVolumeDelete(v.Name); err != nil {
				return done, append(pending, err.Error()) // a crash, as a test makes one
			}
		}
		if _, err := s.apply(ctx, &catalog.Command{Op: catalog.OpForgetVolume, VolumeForget: &catalog.VolumeForget{VolumeID: v.ID}}); err != nil {
			wait(v, fmt.Errorf("deleted, not forgotten yet: %w", err))
			continue
		}
		s.log.Info("expired volume deleted", "volume", v.Name, "pool", v.Pool, "node", v.Node, "bytes", v.Bytes)
		done = append(done, v.Name)
	}
	tapes, _ := s.store.Volumes(catalog.VolumeFilter{State: catalog.VolumeRecyclable})
	for _, t := range tapes {
		done = append(done, t.Name+" (recyclable)")
	}
	return done, pending
}
