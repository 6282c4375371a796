package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"time"
	// A policy's time zone is checked as every server applies the command,
	// so every server must know the same zones: with the zone database
	// built in, a server whose system lacks a zone (a slim container) finds
	// it there, and none refuses a policy another accepted.
	_ "time/tzdata"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/retention"
	"github.com/cairnbackup/cairn/schedule"
)

// Policies: OpPutPolicy stores one whole policy, OpDeletePolicy removes one.
// The applier checks everything a later run depends on, so that what the
// scheduler and the expiry pass read back is a policy they can carry out:
// the schedule parses, the zone is known, the retention keeps something,
// the pools and the clients it names exist. Deleting a policy leaves its
// backups alone: nothing expires them any more (see DESIGN.md, "Policies").

// PutMode says whether OpPutPolicy may create the policy, replace it, or
// both; it is how 'policy create' of a name that exists and 'policy set' of
// one that does not are refused in log order, on every server alike.
type PutMode string

const (
	// PutCreate refuses a name that exists (already_exists).
	PutCreate PutMode = "create"
	// PutReplace refuses a name that does not exist (not_found).
	PutReplace PutMode = "replace"
	// PutAny creates or replaces, as 'policy apply' does.
	PutAny PutMode = "any"
)

// PolicyPut stores Policy under its name, as Mode allows.
type PolicyPut struct {
	Policy Policy  `json:"policy"`
	Mode   PutMode `json:"mode"`
	// IfUpdated, when not zero, replaces only the version of the policy
	// last updated then: 'policy set' reads a policy, changes the fields
	// it was given and writes it back, and a change made by someone else
	// in between is refused (wrong_state) instead of lost.
	IfUpdated time.Time `json:"if_updated,omitzero"`
}

// PolicyDelete removes the policy Name.
type PolicyDelete struct {
	Name string `json:"name"`
}

// PolicyApply stores every one of Policies (creating or replacing each) and,
// with Prune, deletes every other policy: all in one change, or nothing
// when one of them is refused ('cairn policy apply -f').
type PolicyApply struct {
	Policies []Policy `json:"policies"`
	Prune    bool     `json:"prune,omitempty"`
}

func (a *applier) applyPolicies(c *PolicyApply) error {
	keep := make(map[string]bool, len(c.Policies))
	for i := range c.Policies {
		name := c.Policies[i].Name
		if keep[name] {
			return refuse(CodeInvalidArgument, "give each policy once", "policy %s is given twice", name)
		}
		keep[name] = true
		// A refusal rolls back the policies put before it.
		if err := a.putPolicy(&PolicyPut{Policy: c.Policies[i], Mode: PutAny}); err != nil {
			return err
		}
	}
	if !c.Prune {
		return nil
	}
	var gone [][]byte
	if err := a.tx.Bucket(bPolicies).ForEach(func(k, _ []byte) error {
		if !keep[string(k)] {
			gone = append(gone, slices.Clone(k))
		}
		return nil
	}); err != nil {
		return err
	}
	for _, k := range gone {
		if err := a.tx.Bucket(bPolicies).Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func (a *applier) policy(name string) (*Policy, error) {
	var p Policy
	ok, err := getJSON(a.tx, bPolicies, []byte(name), &p)
	if err != nil || !ok {
		return nil, err
	}
	return &p, nil
}

func (a *applier) putPolicy(c *PolicyPut) error {
	n := c.Policy
	if err := validName("policy", n.Name); err != nil {
		return err
	}
	old, err := a.policy(n.Name)
	if err != nil {
		return err
	}
	switch c.Mode {
	case PutCreate:
		if old != nil {
			return refuse(CodeAlreadyExists, "change it with 'cairn policy set', or choose another name",
				"policy %s already exists", n.Name)
		}
	case PutReplace:
		if old == nil {
			return refuse(CodeNotFound, "create it with 'cairn policy create', or list policies with 'cairn policy list'",
				"policy %s does not exist", n.Name)
		}
	case PutAny:
	default:
		return refuse(CodeInvalidArgument, "upgrade this server to the leader's version", "policy %s: put mode %q is not known", n.Name, c.Mode)
	}
	if !c.IfUpdated.IsZero() && (old == nil || !old.Updated.Equal(c.IfUpdated)) {
		return refuse(CodeWrongState, "someone changed the policy meanwhile: see 'cairn policy show', then run the change again",
			"policy %s changed since it was read", n.Name)
	}
	if err := a.checkPolicy(&n); err != nil {
		return err
	}
	n.Created, n.Updated = a.now, a.now
	if old != nil {
		n.Created = old.Created
		if old.sameAs(&n) {
			// Applying the same file twice changes nothing, not even
			// the time of the last change.
			n.Updated = old.Updated
		}
	}
	return putJSON(a.tx, bPolicies, []byte(n.Name), &n)
}

// sameAs reports whether p and q are the same policy but for when they
// were created and changed. They are compared as stored, so an empty list
// and none are the same.
func (p *Policy) sameAs(q *Policy) bool {
	a, b := *p, *q
	a.Created, a.Updated, b.Created, b.Updated = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	ja, errA := json.Marshal(&a)
	jb, errB := json.Marshal(&b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

func (a *applier) deletePolicy(d *PolicyDelete) error {
	old, err := a.policy(d.Name)
	if err != nil {
		return err
	}
	if old == nil {
		return refuse(CodeNotFound, "list policies with 'cairn policy list'", "policy %s does not exist", d.Name)
	}
	return a.tx.Bucket(bPolicies).Delete([]byte(d.Name))
}

// checkPolicy refuses a policy the scheduler or the expiry pass could not
// carry out as written. Every refusal names the policy and the field.
func (a *applier) checkPolicy(p *Policy) error {
	bad := func(hint, format string, args ...any) error {
		return refuse(CodeInvalidArgument, hint, "policy %s: "+format, append([]any{p.Name}, args...)...)
	}
	if p.Description != "" && len(p.Description) > 1024 {
		return bad("keep the description under 1024 bytes", "description is %d bytes long", len(p.Description))
	}

	// What to back up.
	if len(p.Clients) == 0 && len(p.ClientLabels) == 0 {
		return bad("name clients (--client NAME) or select them by label (--label KEY=VALUE)", "it names no client")
	}
	for _, c := range p.Clients {
		cl, err := a.client(c)
		if err != nil {
			return err
		}
		if cl == nil {
			// Bacula refuses an unknown client too: a misspelt name
			// would back up nothing, silently, for ever. A machine
			// whose agent has not started yet is selected by a label
			// its agent will report.
			return refuse(CodeUnknownClient, "list clients with 'cairn client list'; for a machine whose agent has not registered yet, select it with --label KEY=VALUE and set the label in its agent's config",
				"policy %s: client %q is not known", p.Name, c)
		}
	}
	if dup := firstDuplicate(p.Clients); dup != "" {
		return bad("name each client once", "client %s is named twice", dup)
	}
	for _, k := range slices.Sorted(maps.Keys(p.ClientLabels)) {
		if err := validLabel(k, p.ClientLabels[k]); err != nil {
			return bad("write labels as KEY=VALUE, the key of letters, digits, '.', '-', '_' and '/'", "%v", err)
		}
	}
	if len(p.Paths) == 0 {
		return bad("give the paths to back up (--path DIR)", "it has no path")
	}
	for _, x := range p.Paths {
		if !path.IsAbs(x) || path.Clean(x) != x {
			return bad("give clean absolute paths, as they are on the client", "path %q is not a clean absolute path", fileindex.Escape(x))
		}
	}
	if dup := firstDuplicate(p.Paths); dup != "" {
		return bad("give each path once", "path %s is given twice", fileindex.Escape(dup))
	}
	for _, x := range p.Excludes {
		if _, err := fileindex.ParseExclude(x); err != nil {
			return bad("see 'cairn backup --help' for the patterns --exclude takes", "exclude: %v", err)
		}
	}
	if p.Application != nil {
		if err := p.Application.Check(p.Paths); err != nil {
			var e *Error
			if errors.As(err, &e) {
				return refuse(e.Code, e.Hint, "policy %s: %s", p.Name, e.Msg)
			}
			return err
		}
	}

	// When.
	if _, err := schedule.Parse(p.Schedule, p.TimeZone); err != nil {
		var ze *schedule.ZoneError
		if errors.As(err, &ze) {
			return bad("use an IANA name such as Europe/Berlin or UTC", "time zone %q is not known", p.TimeZone)
		}
		return bad("see 'cairn policy --help' for the rules a schedule takes", "schedule: %v", err)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"catch-up window", p.CatchUpWindow}, {"maximum full age", p.MaxFullAge},
		{"maximum differential age", p.MaxDifferentialAge}, {"RPO", p.RPO}} {
		if d.v < 0 {
			return bad("give a positive duration, or none", "%s %s is negative", d.name, d.v)
		}
	}

	if p.MaxChain < 0 || p.MaxChain == 1 {
		return bad("give 2 or more (a full and one backup on it), or 0 for no bound", "maximum chain length %d", p.MaxChain)
	}

	// Where.
	if p.Pool == "" {
		for _, l := range []Level{LevelFull, LevelDifferential, LevelIncremental} {
			if p.LevelPools[l] == "" {
				return bad("give a pool (--pool NAME) for every level", "it names no pool for %s backups", l)
			}
		}
	}
	pools := []string{p.Pool}
	for _, l := range slices.Sorted(maps.Keys(p.LevelPools)) {
		if !l.Valid() {
			return bad("the levels are full, differential and incremental", "a pool for level %q", l)
		}
		pools = append(pools, p.LevelPools[l])
	}
	for _, name := range pools {
		if name == "" {
			continue
		}
		pool, err := a.pool(name)
		if err != nil {
			return err
		}
		if pool == nil {
			return refuse(CodeNotFound, "list pools with 'cairn pool list'", "policy %s: pool %q does not exist", p.Name, name)
		}
	}

	// How long.
	rp, err := p.RetentionPolicy()
	if err != nil {
		return bad("", "%v", err)
	}
	if err := rp.Validate(); err != nil {
		if errors.Is(err, retention.ErrKeepsNothing) {
			return bad("set a keep rule (--keep-daily 14, --keep-within 30d ...); to keep every backup until it is deleted by hand, say so: --keep-last unlimited",
				"its retention has no keep rule, and nothing may expire by accident")
		}
		return bad("counts are numbers of periods, or unlimited; durations are positive", "retention: %v", err)
	}
	return nil
}

func firstDuplicate(xs []string) string {
	seen := make(map[string]bool, len(xs))
	for _, x := range xs {
		if seen[x] {
			return x
		}
		seen[x] = true
	}
	return ""
}

// validLabel checks a client label: the key is a short word (as Kubernetes
// writes label keys), the value any text without a NUL or a newline.
func validLabel(k, v string) error {
	if k == "" || len(k) > 63 {
		return fmt.Errorf("label key %q must have 1 to 63 bytes", k)
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' || r == '/') {
			return fmt.Errorf("label key %q holds %q", k, r)
		}
	}
	if len(v) > 255 {
		return fmt.Errorf("label %s: value of %d bytes, at most 255", k, len(v))
	}
	for _, r := range v {
		if r == 0 || r == '\n' {
			return fmt.Errorf("label %s: value holds a NUL or a newline", k)
		}
	}
	return nil
}

// Check refuses application steps and command sources that cannot be run
// as given for a backup of paths: a backup start and a policy check the
// same way.
func (a *Application) Check(paths []string) error {
	for _, steps := range [][]AppStep{a.Before, a.After} {
		for _, s := range steps {
			if s.Command == "" {
				return refuse(CodeInvalidArgument, "give each --before and --after a command", "an application step has no command")
			}
			if s.Timeout < 0 {
				return refuse(CodeInvalidArgument, "give a positive timeout, or none for the agent's default", "application step %q has a negative timeout", s.Command)
			}
		}
	}
	seen := map[fileindex.Path]bool{}
	for _, s := range a.Sources {
		p := string(s.Path)
		if s.Command == "" || !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
			return refuse(CodeInvalidArgument, "give a command source as PATH=COMMAND, PATH the absolute path the output is stored as",
				"command source %q=%q: it needs a clean absolute path and a command", fileindex.Escape(p), s.Command)
		}
		if seen[s.Path] {
			return refuse(CodeInvalidArgument, "give each command source its own path", "two command sources are stored as %s", fileindex.Escape(p))
		}
		seen[s.Path] = true
		if s.Timeout < 0 {
			return refuse(CodeInvalidArgument, "give a positive timeout, or none", "command source %s has a negative timeout", fileindex.Escape(p))
		}
		for _, root := range paths {
			if fileindex.Within(p, root) || fileindex.Within(root, p) {
				return refuse(CodeInvalidArgument, "store a command source outside the paths the backup walks, where no file of the walk can take its place",
					"command source %s and %s, a path of the backup, lie one inside the other", fileindex.Escape(p), fileindex.Escape(root))
			}
		}
	}
	return nil
}

// Policy returns the policy called name.
func (s *Store) Policy(name string) (*Policy, error) {
	return getOne[Policy](s, bPolicies, []byte(name), fmt.Sprintf("policy %q", name))
}

// Policies returns every policy, by name.
func (s *Store) Policies() ([]Policy, error) { return getAll[Policy](s, bPolicies) }

// PoliciesOf returns the policies that apply to client, by name: those
// that name it, and those whose labels its agent reports, all of them. A
// client the catalog does not know has no labels.
func (s *Store) PoliciesOf(client string) ([]Policy, error) {
	c, err := s.Client(client)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	var labels map[string]string
	if c != nil {
		labels = c.Labels
	}
	all, err := s.Policies()
	if err != nil {
		return nil, err
	}
	var out []Policy
	for _, p := range all {
		if p.AppliesTo(client, labels) {
			out = append(out, p)
		}
	}
	return out, nil
}

// AppliesTo reports whether the policy covers the client called name whose
// agent reports labels.
func (p *Policy) AppliesTo(name string, labels map[string]string) bool {
	if slices.Contains(p.Clients, name) {
		return true
	}
	if len(p.ClientLabels) == 0 {
		return false
	}
	for k, v := range p.ClientLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
