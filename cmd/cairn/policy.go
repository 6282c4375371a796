package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/cairnbackup/cairn/wire"
)

const policyHelp = `Policies: what Cairn backs up on its own, when, where, and for how long.

A policy names clients (--client NAME, or --label KEY=VALUE for every client
whose agent reports that label: agent --label, or labels in its config),
paths, a schedule and its time zone (--timezone; by default this machine's,
else UTC, never a server's own), pools, and keep rules. The servers run it
(the scheduler on the leader) and expire its backups by its keep rules.

Schedule (--schedule, repeat it for several rules, or one text with a rule a
line): 'Sun 1st 02:00 full', 'Sun 2nd-5th 02:00 differential',
'Mon-Sat 21:00 incremental', 'daily 03:30', 'hourly at :15', '1st day of
month 01:00 full', 'last Sun of month 04:00 full', or 'cron MIN HOUR DOM MON
DOW [LEVEL]'. A rule with no level runs incremental; the first run of a file
set is a full, and --max-full-age (--max-diff-age) promotes a run to full
(differential) when the last one is older.

Durations: 30m, 26h, 14d, 2w, 1d12h. Counts: a number, or unlimited.

Keep rules (as restic's forget): --keep-last N keeps the N newest backups;
--keep-hourly/daily/weekly/monthly/yearly N the newest of each of the N
newest hours/days/...; --keep-within D every backup of the D before the
newest. They apply to the backups of every level; --keep LEVEL:RULE=VALUE
sets one for one level only (--keep full:monthly=12 --keep
incremental:within=14d). A backup any rule keeps is kept, and a backup a
kept one needs for a restore is kept with it. A policy must have a keep
rule: to keep every backup until deleted by hand, say --keep-last unlimited.

Policy files (policy apply -f, policy diff -f) hold a list 'policies:' of
policies with the fields name, description, disabled, clients, labels,
paths, excludes, one_file_system, schedule (a text or a list of rules),
time_zone, catch_up_window, max_full_age, max_differential_age, pool,
pool_full, pool_differential, pool_incremental, priority, rpo, keep,
keep_full, keep_differential, keep_incremental (each with within, last,
hourly, daily, weekly, monthly, yearly), before and after (lists of command,
timeout, on_failure: fail or warn) and command_sources (path, command,
timeout). 'cairn policy show NAME' prints a policy in that form;
examples/policies.yaml is an example.`

func newPolicyCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "policy", Short: "Policies: scheduled backups and how long they are kept", Long: policyHelp}
	c.AddCommand(newPolicyPutCmd(g, true), newPolicyPutCmd(g, false), newPolicyShowCmd(g), newPolicyListCmd(g),
		newPolicyDeleteCmd(g), newPolicyApplyCmd(g), newPolicyDiffCmd(g), newPolicyPreviewCmd(g))
	return c
}

// policyFlags are the flags that make or change a policy: create takes
// them onto an empty policy, set onto the stored one, each only if given.
type policyFlags struct {
	description   string
	disabled      bool
	clients       []string
	labels        []string
	paths         []string
	excludes      []string
	oneFS         bool
	schedule      []string
	timeZone      string
	catchUp       string
	pool          string
	poolFull      string
	poolDiff      string
	poolIncr      string
	priority      int
	rpo           string
	maxFullAge    string
	maxDiffAge    string
	maxChain      int
	keepWithin    string
	keepCounts    map[string]*string
	keep          []string
	app           appOpts
	noApplication bool
}

var keepCountRules = []string{"last", "hourly", "daily", "weekly", "monthly", "yearly"}

func (o *policyFlags) bind(f *pflag.FlagSet, set bool) {
	f.StringVar(&o.description, "description", "", "what the policy is for")
	f.BoolVar(&o.disabled, "disabled", false, "keep the policy but run nothing (--disabled=false runs it again)")
	f.StringArrayVar(&o.clients, "client", nil, "client to back up; repeat for several")
	f.StringArrayVar(&o.labels, "label", nil, "KEY=VALUE: back up every client whose agent reports this label; repeat: all of them")
	f.StringArrayVar(&o.paths, "path", nil, "absolute path on the clients; repeat for several")
	f.StringArrayVar(&o.excludes, "exclude", nil, "pattern of names or paths to leave out (see 'cairn backup --help'); repeat for several")
	f.BoolVar(&o.oneFS, "one-file-system", false, "stay on the filesystem of each path")
	f.StringArrayVar(&o.schedule, "schedule", nil, "a rule of the schedule ('Mon-Sat 21:00 incremental'); repeat for several")
	f.StringVar(&o.timeZone, "timezone", "", "IANA time zone the schedule runs in and days are cut in (default: this machine's, else UTC)")
	f.StringVar(&o.catchUp, "catch-up-window", "", "how late a run missed while no server led may still start (default 6h)")
	f.StringVar(&o.pool, "pool", "", "pool the runs write to")
	f.StringVar(&o.poolFull, "pool-full", "", "pool the full runs write to instead of --pool")
	f.StringVar(&o.poolDiff, "pool-differential", "", "pool the differential runs write to instead of --pool")
	f.StringVar(&o.poolIncr, "pool-incremental", "", "pool the incremental runs write to instead of --pool")
	f.IntVar(&o.priority, "priority", 0, "order of queued runs: the higher first")
	f.StringVar(&o.rpo, "rpo", "", "age the newest good backup of each client may reach before it breaches the target (26h)")
	f.StringVar(&o.maxFullAge, "max-full-age", "", "run a full when the last full is older than this (35d)")
	f.StringVar(&o.maxDiffAge, "max-diff-age", "", "run a differential instead of an incremental when the last full or differential is older than this (8d)")
	f.IntVar(&o.maxChain, "max-chain", 0, "fold a client's chain into a synthetic full once a restore of its newest backup reads this many sessions (0: no bound)")
	f.StringVar(&o.keepWithin, "keep-within", "", "keep every backup of this long before the newest (14d)")
	o.keepCounts = map[string]*string{}
	for _, r := range keepCountRules {
		v := new(string)
		o.keepCounts[r] = v
		what := map[string]string{"last": "the N newest backups", "hourly": "the newest backup of each of the N newest hours",
			"daily": "the newest of each of the N newest days", "weekly": "the newest of each of the N newest weeks",
			"monthly": "the newest of each of the N newest months", "yearly": "the newest of each of the N newest years"}[r]
		f.StringVar(v, "keep-"+r, "", "keep "+what+" (a number, or unlimited)")
	}
	f.StringArrayVar(&o.keep, "keep", nil, "LEVEL:RULE=VALUE: a keep rule for one level (full:monthly=12, incremental:within=14d); repeat for several")
	o.app.bind(f)
	if set {
		f.BoolVar(&o.noApplication, "no-application", false, "drop the policy's commands (--before, --after, --command-source)")
	}
}

var appFlagNames = []string{"before", "after", "step-timeout", "before-failure", "after-failure", "command-source", "source-timeout"}

// apply sets on p what the flags given say.
func (o *policyFlags) apply(f *pflag.FlagSet, p *wire.Policy) error {
	given := f.Changed
	usage := func(format string, args ...any) error { return &usageError{fmt.Errorf(format, args...)} }
	if given("description") {
		p.Description = o.description
	}
	if given("disabled") {
		p.Disabled = o.disabled
	}
	if given("client") {
		p.Clients = o.clients
	}
	if given("label") {
		labels, err := wire.ParseLabels(o.labels)
		if err != nil {
			return usage("--label: %v", err)
		}
		p.ClientLabels = labels
	}
	if given("path") {
		p.Paths = nil
		for _, x := range o.paths {
			p.Paths = append(p.Paths, cleanPolicyPath(x))
		}
	}
	if given("exclude") {
		p.Excludes = o.excludes
	}
	if given("one-file-system") {
		p.OneFileSystem = o.oneFS
	}
	if given("schedule") {
		p.Schedule = strings.Join(o.schedule, "\n")
	}
	if given("timezone") {
		p.TimeZone = o.timeZone
	}
	if given("pool") {
		p.Pool = o.pool
	}
	for flag, level := range map[string]string{"pool-full": "full", "pool-differential": "differential", "pool-incremental": "incremental"} {
		v := map[string]string{"pool-full": o.poolFull, "pool-differential": o.poolDiff, "pool-incremental": o.poolIncr}[flag]
		if !given(flag) {
			continue
		}
		if p.LevelPools == nil {
			p.LevelPools = map[string]string{}
		}
		if v == "" {
			delete(p.LevelPools, level)
		} else {
			p.LevelPools[level] = v
		}
	}
	if given("priority") {
		p.Priority = o.priority
	}
	if given("max-chain") {
		p.MaxChain = o.maxChain
	}
	for _, d := range []struct {
		flag, text string
		to         *time.Duration
	}{{"catch-up-window", o.catchUp, &p.CatchUpWindow}, {"rpo", o.rpo, &p.RPO}, {"max-full-age", o.maxFullAge, &p.MaxFullAge},
		{"max-diff-age", o.maxDiffAge, &p.MaxDifferentialAge}, {"keep-within", o.keepWithin, &p.Retention.All.Within}} {
		if !given(d.flag) {
			continue
		}
		if d.text == "" || d.text == "0" {
			*d.to = 0
			continue
		}
		v, err := parseAge(d.text)
		if err != nil {
			return usage("--%s: %v", d.flag, err)
		}
		*d.to = v
	}
	for _, r := range keepCountRules {
		if !given("keep-" + r) {
			continue
		}
		n, err := parseCount(*o.keepCounts[r])
		if err != nil {
			return usage("--keep-%s: %v", r, err)
		}
		*keepRule(&p.Retention.All, r) = n
	}
	for _, k := range o.keep {
		if err := setKeep(p, k); err != nil {
			return usage("--keep %q: %v", k, err)
		}
	}
	appGiven := slices.ContainsFunc(appFlagNames, given)
	if o.noApplication && appGiven {
		return usage("--no-application drops the commands: give it without --before, --after or --command-source")
	}
	if o.noApplication {
		p.Application = nil
	}
	if appGiven {
		// The steps and sources are replaced as a whole: each step's
		// timeout and failure policy come from the flags beside it.
		app, err := o.app.application()
		if err != nil {
			return err
		}
		p.Application = &app
		if len(app.Before)+len(app.After)+len(app.Sources) == 0 {
			p.Application = nil
		}
	}
	return nil
}

// keepRule is the count of rule r ("daily") in k.
func keepRule(k *wire.KeepRules, r string) *int {
	return map[string]*int{"last": &k.Last, "hourly": &k.Hourly, "daily": &k.Daily, "weekly": &k.Weekly, "monthly": &k.Monthly, "yearly": &k.Yearly}[r]
}

// setKeep sets one level's rule written LEVEL:RULE=VALUE; a value of 0
// drops it.
func setKeep(p *wire.Policy, s string) error {
	lr, v, ok := strings.Cut(s, "=")
	level, rule, ok2 := strings.Cut(lr, ":")
	if !ok || !ok2 {
		return fmt.Errorf("write LEVEL:RULE=VALUE, such as full:monthly=12 or incremental:within=14d")
	}
	switch level {
	case "full", "differential", "incremental":
	default:
		return fmt.Errorf("level %q: the levels are full, differential and incremental", level)
	}
	r := p.Retention.Levels[level]
	if rule == "within" {
		d := time.Duration(0)
		if v != "0" {
			var err error
			if d, err = parseAge(v); err != nil {
				return err
			}
		}
		r.Within = d
	} else {
		to := keepRule(&r, rule)
		if to == nil {
			return fmt.Errorf("rule %q: the rules are within, last, hourly, daily, weekly, monthly and yearly", rule)
		}
		n, err := parseCount(v)
		if err != nil {
			return err
		}
		*to = n
	}
	if p.Retention.Levels == nil {
		p.Retention.Levels = map[string]wire.KeepRules{}
	}
	p.Retention.Levels[level] = r
	if r == (wire.KeepRules{}) {
		delete(p.Retention.Levels, level)
	}
	return nil
}

func oneName(what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != 1 {
			return &usageError{fmt.Errorf("%s takes one argument, the %s's name (see 'cairn policy list')", cmd.CommandPath(), what)}
		}
		return nil
	}
}

func newPolicyPutCmd(g *globals, create bool) *cobra.Command {
	var o policyFlags
	c := &cobra.Command{
		Use:   "create NAME --client C|--label K=V --path P --schedule RULE --pool P --keep-... [flags]",
		Short: "Create a policy",
		Long: `Create a policy: clients (--client, --label), paths, a schedule, a pool and
at least one keep rule. See 'cairn policy --help' for the schedule, the
durations and the keep rules. The commands around each run (--before,
--after, --command-source) are those of 'cairn backup'.`,
		Args: oneName("policy"),
	}
	if !create {
		c.Use = "set NAME [flags]"
		c.Short = "Change a policy: only what the flags given say"
		c.Long = `Change a policy: each flag given replaces that field (a list flag such as
--path or --client replaces the whole list), the others stay as they are.
--keep-RULE and --keep LEVEL:RULE=VALUE set one rule each; 0 drops it. Any of
--before, --after, --command-source and their timeouts and failure policies
replaces the commands as a whole; --no-application drops them. A change made
by someone else since this one read the policy is refused, not lost.`
	}
	c.RunE = func(cmd *cobra.Command, args []string) error {
		return runPolicyPut(cmd.Context(), g, cmd.Flags(), &o, args[0], create)
	}
	o.bind(c.Flags(), !create)
	return c
}

func runPolicyPut(ctx context.Context, g *globals, f *pflag.FlagSet, o *policyFlags, name string, create bool) error {
	nc, err := g.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	req := wire.PolicyPutReq{Policy: wire.Policy{Name: name}}
	op := wire.OpPolicyCreate
	if !create {
		op = wire.OpPolicySet
		if f.NFlag() == 0 {
			return &usageError{fmt.Errorf("give the flags of what to change (see 'cairn policy set --help')")}
		}
		if err := g.call(ctx, nc, wire.OpPolicyGet, wire.PolicyNameReq{Name: name}, &req.Policy); err != nil {
			return err
		}
		req.IfUpdated = req.Policy.Updated
	}
	if err := o.apply(f, &req.Policy); err != nil {
		return err
	}
	var zoneFrom string
	if create && !f.Changed("timezone") {
		// An empty zone is UTC on every server; the administrator who
		// wrote "21:00" meant this machine's 21:00.
		req.Policy.TimeZone, zoneFrom = machineZone("/")
	}
	var stored wire.Policy
	if err := g.call(ctx, nc, op, req, &stored); err != nil {
		return err
	}
	if g.json {
		return printJSON(g.out, stored)
	}
	verb := "created"
	if !create {
		verb = "changed"
	}
	fmt.Fprintf(g.out, "%s policy %s; see what it will do with 'cairn policy preview %s'\n", verb, stored.Name, stored.Name)
	if zoneFrom != "" {
		fmt.Fprintf(g.out, "its schedule runs in time zone %s (from %s); change it with --timezone\n", stored.TimeZone, zoneFrom)
	}
	return nil
}

func newPolicyShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show a policy, in the form of a policy file (or JSON with --json)",
		Args:  oneName("policy"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var p wire.Policy
			if err := g.request(cmd.Context(), wire.OpPolicyShow, wire.PolicyNameReq{Name: args[0]}, &p); err != nil {
				return err
			}
			if g.json {
				return printJSON(g.out, p)
			}
			out, err := marshalPolicies([]wire.Policy{p})
			if err != nil {
				return err
			}
			fmt.Fprintf(g.out, "# created %s, changed %s\n", humanTime(p.Created), humanTime(p.Updated))
			_, err = g.out.Write(out)
			return err
		},
	}
}

func newPolicyListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List policies",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var resp wire.PolicyListResp
			if err := g.request(cmd.Context(), wire.OpPolicyList, wire.Empty{}, &resp); err != nil {
				return err
			}
			if g.json {
				return printJSON(g.out, resp.Policies)
			}
			t := newTable(g.out, "POLICY", "CLIENTS", "PATHS", "SCHEDULE", "POOL", "KEEP", "STATE", "CHANGED")
			for _, p := range resp.Policies {
				who := slices.Clone(p.Clients)
				for _, k := range sortedKeys(p.ClientLabels) {
					who = append(who, k+"="+p.ClientLabels[k])
				}
				sched := strings.Split(p.Schedule, "\n")
				schedule := sched[0]
				if len(sched) > 1 {
					schedule += fmt.Sprintf(" (+%d)", len(sched)-1)
				}
				state := "enabled"
				if p.Disabled {
					state = "disabled"
				}
				t.row(p.Name, strings.Join(who, ","), strings.Join(p.Paths, ","), schedule, p.Pool, keepSummary(p.Retention), state, humanTime(p.Updated))
			}
			return t.flush()
		},
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// keepSummary writes a retention short: "daily 14, full: monthly 12".
func keepSummary(r wire.PolicyRetention) string {
	rules := func(k wire.KeepRules) []string {
		var out []string
		if k.Within != 0 {
			out = append(out, "within "+formatAge(k.Within))
		}
		for _, name := range keepCountRules {
			switch n := *keepRule(&k, name); n {
			case 0:
			case -1:
				out = append(out, name+" unlimited")
			default:
				out = append(out, name+" "+strconv.Itoa(n))
			}
		}
		return out
	}
	parts := rules(r.All)
	for _, l := range sortedKeys(r.Levels) {
		if rs := rules(r.Levels[l]); len(rs) > 0 {
			parts = append(parts, l+": "+strings.Join(rs, " "))
		}
	}
	return strings.Join(parts, ", ")
}

func newPolicyDeleteCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a policy; its backups stay until deleted by hand",
		Long: `Delete a policy. Nothing runs for it any more, and nothing expires its
backups either: they stay, restorable, until deleted by hand. A policy
created again with the same paths and excludes takes them back.`,
		Args: oneName("policy"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var resp wire.PolicyDeleteResp
			if err := g.request(cmd.Context(), wire.OpPolicyDelete, wire.PolicyNameReq{Name: args[0]}, &resp); err != nil {
				return err
			}
			if g.json {
				return printJSON(g.out, resp)
			}
			fmt.Fprintf(g.out, "deleted policy %s; its %d backups stay until deleted by hand ('cairn backup list')\n", resp.Name, resp.Backups)
			return nil
		},
	}
}

// readPolicyFile reads the policies of a policy file, "-" for stdin.
func readPolicyFile(name string, stdin io.Reader) ([]wire.Policy, error) {
	var data []byte
	var err error
	if name == "-" {
		data, err = io.ReadAll(io.LimitReader(stdin, maxPolicyFile+1))
		name = "stdin"
	} else {
		data, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, err
	}
	return parsePolicyFile(name, data)
}

func newPolicyApplyCmd(g *globals) *cobra.Command {
	var file string
	var prune, yes bool
	c := &cobra.Command{
		Use:   "apply -f FILE [--prune --yes]",
		Short: "Store the policies of a file: all of them, or none when one is refused",
		Long: `Store the policies of a policy file (see 'cairn policy --help' for its
fields, 'cairn policy diff -f' for what it would change). The servers check
every policy and store all of them in one change, or none when one is
refused: the error names the policy and the field. Policies not in the file
stay, unless --prune, which deletes them in the same change (their backups
stay until deleted by hand) and asks for --yes.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return &usageError{fmt.Errorf("pass -f FILE, the policy file to apply (- for stdin)")}
			}
			ps, err := readPolicyFile(file, cmd.InOrStdin())
			if err != nil {
				return err
			}
			nc, err := g.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			if prune && !yes {
				var list wire.PolicyListResp
				if err := g.call(cmd.Context(), nc, wire.OpPolicyList, wire.Empty{}, &list); err != nil {
					return err
				}
				gone := pruned(list.Policies, ps)
				if len(gone) > 0 {
					return &usageError{fmt.Errorf("--prune would delete the policies %s, which %s does not hold: add --yes to delete them", strings.Join(gone, ", "), file)}
				}
			}
			var resp wire.PolicyApplyResp
			if err := g.call(cmd.Context(), nc, wire.OpPolicyApply, wire.PolicyApplyReq{Policies: ps, Prune: prune}, &resp); err != nil {
				var we *wire.Error
				if errors.As(err, &we) {
					we.Message = file + ": " + we.Message
				}
				return err
			}
			if g.json {
				return printJSON(g.out, resp)
			}
			for _, l := range []struct {
				what  string
				names []string
			}{{"created", resp.Created}, {"changed", resp.Changed}, {"unchanged", resp.Unchanged}, {"deleted", resp.Deleted}} {
				for _, n := range l.names {
					fmt.Fprintf(g.out, "%s policy %s\n", l.what, n)
				}
			}
			if len(resp.Deleted) > 0 {
				fmt.Fprintln(g.out, "the backups of deleted policies stay until deleted by hand")
			}
			return nil
		},
	}
	c.Flags().StringVarP(&file, "file", "f", "", "policy file (- for stdin)")
	c.Flags().BoolVar(&prune, "prune", false, "delete the policies the file does not hold")
	c.Flags().BoolVar(&yes, "yes", false, "with --prune: delete them without asking")
	return c
}

// pruned are the names of have that want lacks.
func pruned(have, want []wire.Policy) []string {
	var out []string
	for _, p := range have {
		if !slices.ContainsFunc(want, func(q wire.Policy) bool { return q.Name == p.Name }) {
			out = append(out, p.Name)
		}
	}
	return out
}

// differsError is a diff that found differences: exit status 5, which a
// script tells from a failure (1).
type differsError struct{ n int }

func (e *differsError) Error() string {
	return fmt.Sprintf("%d policies differ", e.n)
}

func newPolicyDiffCmd(g *globals) *cobra.Command {
	var file string
	var prune bool
	c := &cobra.Command{
		Use:   "diff -f FILE [--prune]",
		Short: "Show what 'policy apply -f FILE' would change",
		Long: `Show what 'cairn policy apply -f FILE' would change: policies the file adds
(+) and changes (~, with each field's value now and in the file). With
--prune, as apply --prune, the policies the servers hold that the file
lacks are deleted (-); without it they are kept, and listed apart.
Exit status: 0 when applying would change nothing, 5 when it would change
something, 1 on an error (a file that does not read, no server).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return &usageError{fmt.Errorf("pass -f FILE, the policy file to compare (- for stdin)")}
			}
			ps, err := readPolicyFile(file, cmd.InOrStdin())
			if err != nil {
				return err
			}
			var list wire.PolicyListResp
			if err := g.request(cmd.Context(), wire.OpPolicyList, wire.Empty{}, &list); err != nil {
				return err
			}
			d, err := diffPolicies(list.Policies, ps, prune)
			if err != nil {
				return err
			}
			if g.json {
				if err := printJSON(g.out, d); err != nil {
					return err
				}
			} else {
				printPolicyDiff(g.out, d)
			}
			if n := len(d.Added) + len(d.Changed) + len(d.Removed); n > 0 {
				return &differsError{n: n}
			}
			return nil
		},
	}
	c.Flags().StringVarP(&file, "file", "f", "", "policy file (- for stdin)")
	c.Flags().BoolVar(&prune, "prune", false, "as apply --prune: the policies the file lacks would be deleted")
	return c
}

// policyDiff is what applying a file would change. Kept are the policies
// the file lacks that apply keeps (without --prune): no change.
type policyDiff struct {
	Added   []string        `json:"added,omitempty"`
	Changed []policyChanged `json:"changed,omitempty"`
	Removed []string        `json:"removed,omitempty"`
	Kept    []string        `json:"kept,omitempty"`
}

type policyChanged struct {
	Name   string        `json:"name"`
	Fields []fieldChange `json:"fields"`
}

type fieldChange struct {
	Field string `json:"field"`
	Now   string `json:"now"`
	File  string `json:"file"`
}

// diffPolicies compares the policies stored with a file's, field by field
// in the file's own form, so a change reads as the file writes it.
func diffPolicies(stored, file []wire.Policy, prune bool) (policyDiff, error) {
	var d policyDiff
	have := map[string]wire.Policy{}
	for _, p := range stored {
		have[p.Name] = p
	}
	for _, p := range file {
		old, ok := have[p.Name]
		if !ok {
			d.Added = append(d.Added, p.Name)
			continue
		}
		a, err := flatPolicy(old)
		if err != nil {
			return d, err
		}
		b, err := flatPolicy(p)
		if err != nil {
			return d, err
		}
		var ch []fieldChange
		for _, k := range sortedKeys(mergeKeys(a, b)) {
			if a[k] != b[k] {
				ch = append(ch, fieldChange{Field: k, Now: a[k], File: b[k]})
			}
		}
		if len(ch) > 0 {
			d.Changed = append(d.Changed, policyChanged{Name: p.Name, Fields: ch})
		}
	}
	if prune {
		d.Removed = pruned(stored, file)
	} else {
		d.Kept = pruned(stored, file)
	}
	return d, nil
}

func mergeKeys(a, b map[string]string) map[string]bool {
	m := map[string]bool{}
	for k := range a {
		m[k] = true
	}
	for k := range b {
		m[k] = true
	}
	return m
}

// flatPolicy is p in its file form, as "field.sub" -> a YAML value.
func flatPolicy(p wire.Policy) (map[string]string, error) {
	p.Created, p.Updated = time.Time{}, time.Time{}
	data, err := yaml.Marshal(filePolicyOf(p))
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	out := map[string]string{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		if mm, ok := v.(map[string]any); ok && !strings.HasSuffix(prefix, "labels") {
			for k, x := range mm {
				walk(strings.TrimPrefix(prefix+"."+k, "."), x)
			}
			return
		}
		b, _ := yaml.Marshal(v)
		out[prefix] = strings.TrimSpace(string(b))
	}
	walk("", m)
	return out, nil
}

func printPolicyDiff(w io.Writer, d policyDiff) {
	for _, n := range d.Added {
		fmt.Fprintf(w, "+ %s (new)\n", n)
	}
	for _, c := range d.Changed {
		fmt.Fprintf(w, "~ %s\n", c.Name)
		for _, f := range c.Fields {
			fmt.Fprintf(w, "    %s: %s -> %s\n", f.Field, oneLine(f.Now), oneLine(f.File))
		}
	}
	for _, n := range d.Removed {
		fmt.Fprintf(w, "- %s (not in the file)\n", n)
	}
	if len(d.Added)+len(d.Changed)+len(d.Removed) == 0 {
		fmt.Fprintln(w, "no change")
	}
	if len(d.Kept) > 0 {
		fmt.Fprintf(w, "not in the file, and kept (apply --prune would delete them): %s\n", strings.Join(d.Kept, ", "))
	}
}

func oneLine(s string) string {
	if s == "" {
		return "(none)"
	}
	if strings.Contains(s, "\n") {
		return strconv.Quote(s)
	}
	return s
}

func newPolicyPreviewCmd(g *globals) *cobra.Command {
	var days int
	var client string
	c := &cobra.Command{
		Use:   "preview NAME [--days 30] [--client C]",
		Short: "List the runs a policy would make, their level and pool, and what each would expire",
		Long: `List the runs a policy would make in the next days, on each client it
covers (or --client): the time in the policy's zone, the level once
promoted (the first run of a file set is a full; --max-full-age and
--max-diff-age promote), the pool, and the backups the expiry after the run
would expire, with why. It starts from the backups the catalog holds and
supposes every run happens and succeeds.`,
		Args: oneName("policy"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var resp wire.PolicyPreviewResp
			if err := g.request(cmd.Context(), wire.OpPolicyPreview, wire.PolicyPreviewReq{Name: args[0], Days: days, Client: client}, &resp); err != nil {
				return err
			}
			if g.json {
				return printJSON(g.out, resp)
			}
			printPreview(g.out, resp)
			return nil
		},
	}
	c.Flags().IntVar(&days, "days", 30, "how many days ahead")
	c.Flags().StringVar(&client, "client", "", "only this client")
	return c
}

func printPreview(w io.Writer, resp wire.PolicyPreviewResp) {
	loc, err := time.LoadLocation(resp.TimeZone)
	if err != nil {
		loc = time.Local
	}
	fmt.Fprintf(w, "policy %s, %s, from %s to %s, clients: %s\n", resp.Policy, resp.TimeZone,
		resp.From.In(loc).Format("2006-01-02 15:04"), resp.To.In(loc).Format("2006-01-02 15:04"), strings.Join(resp.Clients, ", "))
	if resp.Disabled {
		fmt.Fprintf(w, "the policy is disabled and runs nothing: these are the runs it makes once enabled ('cairn policy set %s --disabled=false')\n", resp.Policy)
	}
	if len(resp.Runs) == 0 {
		fmt.Fprintln(w, "no run")
		return
	}
	var b bytes.Buffer
	t := newTable(&b, "TIME", "CLIENT", "LEVEL", "POOL", "BACKUP", "EXPIRES")
	for _, r := range resp.Runs {
		level := r.Level
		if r.Promoted != "" {
			level += " (" + r.Promoted + ")"
		}
		var exp []string
		for _, e := range r.Expires {
			exp = append(exp, fmt.Sprintf("%d", e.Backup))
		}
		t.row(r.Time.In(loc).Format("Mon 2006-01-02 15:04"), r.Client, level, r.Pool, fmt.Sprintf("(%d)", r.Backup), orDash(strings.Join(exp, ",")))
	}
	t.flush()
	w.Write(b.Bytes())
	var why []string
	for _, r := range resp.Runs {
		for _, e := range r.Expires {
			what := "backup"
			if e.Foreseen {
				what = "foreseen backup"
			}
			why = append(why, fmt.Sprintf("  %s %d (%s of %s, %s) expires after the run of %s: %s", what, e.Backup, e.Level,
				e.Time.In(loc).Format("2006-01-02 15:04"), r.Client, r.Time.In(loc).Format("2006-01-02 15:04"), e.Why))
		}
	}
	if len(why) > 0 {
		fmt.Fprintln(w, "\nexpiries (a backup in parentheses is one a run of this preview makes):")
		for _, l := range why {
			fmt.Fprintln(w, printable(l))
		}
	}
	if resp.More {
		fmt.Fprintln(w, "\nmore runs than one answer holds: narrow --days or --client")
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
