package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/configfile"
	"github.com/cairnbackup/cairn/wire"
)

// A policy file holds policies as an administrator keeps them in version
// control ('cairn policy apply -f'); 'cairn policy show' prints a policy in
// the same form. README.md, "Policies", documents it, and
// examples/policies.yaml is one that TestPolicyFileExample loads.
//
//	policies:
//	  - name: web
//	    clients: [web1]
//	    labels: {role: web}
//	    paths: [/srv, /etc]
//	    schedule: |
//	      Sun 1st 02:00 full
//	      Mon-Sat 21:00 incremental
//	    pool: Default
//	    keep: {daily: 14, weekly: 8}
//	    keep_full: {monthly: 12}
type policyFile struct {
	Policies []filePolicy `yaml:"policies"`
}

// filePolicy is a wire.Policy as a person writes it: durations as "14d",
// counts as numbers or "unlimited", the keep rules of each level in a
// field of their own.
type filePolicy struct {
	Name           string            `yaml:"name"`
	Description    string            `yaml:"description,omitempty"`
	Disabled       bool              `yaml:"disabled,omitempty"`
	Clients        []string          `yaml:"clients,omitempty,flow"`
	Labels         map[string]string `yaml:"labels,omitempty,flow"`
	Paths          []string          `yaml:"paths,flow"`
	Excludes       []string          `yaml:"excludes,omitempty,flow"`
	OneFileSystem  bool              `yaml:"one_file_system,omitempty"`
	Schedule       scheduleText      `yaml:"schedule"`
	TimeZone       string            `yaml:"time_zone,omitempty"`
	CatchUpWindow  string            `yaml:"catch_up_window,omitempty"`
	MaxFullAge     string            `yaml:"max_full_age,omitempty"`
	MaxDiffAge     string            `yaml:"max_differential_age,omitempty"`
	Pool           string            `yaml:"pool,omitempty"`
	PoolFull       string            `yaml:"pool_full,omitempty"`
	PoolDiff       string            `yaml:"pool_differential,omitempty"`
	PoolIncr       string            `yaml:"pool_incremental,omitempty"`
	Priority       int               `yaml:"priority,omitempty"`
	MaxChain       int               `yaml:"max_chain,omitempty"`
	RPO            string            `yaml:"rpo,omitempty"`
	Keep           *fileKeep         `yaml:"keep,omitempty,flow"`
	KeepFull       *fileKeep         `yaml:"keep_full,omitempty,flow"`
	KeepDiff       *fileKeep         `yaml:"keep_differential,omitempty,flow"`
	KeepIncr       *fileKeep         `yaml:"keep_incremental,omitempty,flow"`
	Before         []fileStep        `yaml:"before,omitempty"`
	After          []fileStep        `yaml:"after,omitempty"`
	CommandSources []fileSource      `yaml:"command_sources,omitempty"`
}

// scheduleText is a schedule written as one text (a YAML block) or as a
// list of rules, one an item.
type scheduleText string

func (s *scheduleText) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*s = scheduleText(n.Value)
		return nil
	case yaml.SequenceNode:
		var rules []string
		if err := n.Decode(&rules); err != nil {
			return err
		}
		*s = scheduleText(strings.Join(rules, "\n"))
		return nil
	}
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: schedule: give a text, or a list of rules", n.Line)}}
}

func (s scheduleText) MarshalYAML() (any, error) {
	if !strings.Contains(string(s), "\n") {
		return string(s), nil
	}
	return &yaml.Node{Kind: yaml.ScalarNode, Style: yaml.LiteralStyle, Value: strings.TrimRight(string(s), "\n") + "\n"}, nil
}

type fileKeep struct {
	Within  string    `yaml:"within,omitempty"`
	Last    keepCount `yaml:"last,omitempty"`
	Hourly  keepCount `yaml:"hourly,omitempty"`
	Daily   keepCount `yaml:"daily,omitempty"`
	Weekly  keepCount `yaml:"weekly,omitempty"`
	Monthly keepCount `yaml:"monthly,omitempty"`
	Yearly  keepCount `yaml:"yearly,omitempty"`
}

// keepCount is a count as written: a number, or unlimited. It is checked
// where the rest of the policy is, so its error names the field.
type keepCount string

func (c keepCount) MarshalYAML() (any, error) {
	if n, err := strconv.Atoi(string(c)); err == nil {
		return n, nil
	}
	return string(c), nil
}

type fileStep struct {
	Command string `yaml:"command"`
	Timeout string `yaml:"timeout,omitempty"`
	// OnFailure is fail or warn; empty is fail before a backup, warn after.
	OnFailure string `yaml:"on_failure,omitempty"`
}

type fileSource struct {
	Path    string `yaml:"path"`
	Command string `yaml:"command"`
	Timeout string `yaml:"timeout,omitempty"`
}

// policyFileError is a policy file that cannot be read: where, and what.
type policyFileError struct {
	File   string
	Line   int
	Policy string
	Field  string
	Msg    string
}

func (e *policyFileError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Policy != "" {
		fmt.Fprintf(&b, "policy %s: ", e.Policy)
	}
	if e.Field != "" {
		fmt.Fprintf(&b, "%s: ", e.Field)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// maxPolicyFile bounds what a policy file may hold: a few thousand
// policies fit in a megabyte; more is a mistake, not a file.
const maxPolicyFile = 4 << 20

var (
	yamlLine     = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	unknownField = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
	// cannot unmarshal !!str `web` into []main.filePolicy
	cannotUnmarshal = regexp.MustCompile("^cannot unmarshal (.*) into (\\S+)$")
)

// yamlTypeNames say in a policy file's words what the YAML package's
// errors name by Go type.
var yamlTypeNames = map[string]string{
	"main.policyFile": "a mapping with 'policies:'", "[]main.filePolicy": "a list of policies", "main.filePolicy": "a policy",
	"main.fileKeep": "keep rules ({daily: 7, ...})", "*main.fileKeep": "keep rules ({daily: 7, ...})",
	"[]main.fileStep": "a list of commands", "main.fileStep": "a command ({command: ..., timeout: ...})",
	"[]main.fileSource": "a list of command sources", "main.fileSource": "a command source ({path: ..., command: ...})",
	"main.keepCount": "a count", "map[string]string": "labels ({KEY: VALUE})", "[]string": "a list", "string": "a text",
	"int": "a number", "bool": "true or false",
}

// parsePolicyFile reads a policy file named name: every policy, or the first
// error, which names the file, the line when there is one, the policy and
// the field.
func parsePolicyFile(name string, data []byte) ([]wire.Policy, error) {
	fail := func(line int, policy, field, format string, args ...any) error {
		return &policyFileError{File: name, Line: line, Policy: policy, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	if len(data) > maxPolicyFile {
		return nil, fail(0, "", "", "%d bytes is more than a policy file may hold (%d)", len(data), maxPolicyFile)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(name, nil, err)
	}
	items := policyNodes(&root)
	var file policyFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fail(0, "", "", "the file is empty: write 'policies:' and a list of policies (see 'cairn policy --help')")
		}
		return nil, yamlError(name, items, err)
	}
	var rest yaml.Node
	if err := dec.Decode(&rest); !errors.Is(err, io.EOF) {
		return nil, fail(0, "", "", "the file holds more than one YAML document: put every policy in the one list 'policies:'")
	}
	if len(file.Policies) == 0 {
		return nil, fail(0, "", "policies", "no policy: write 'policies:' and a list of policies (to delete them all, use 'cairn policy delete')")
	}
	seen := map[string]int{}
	out := make([]wire.Policy, 0, len(file.Policies))
	for i := range file.Policies {
		fp := &file.Policies[i]
		var node *yaml.Node
		if i < len(items) {
			node = items[i]
		}
		line := func(field string) int { return fieldLine(node, field) }
		if fp.Name == "" {
			return nil, fail(line(""), fmt.Sprintf("#%d", i+1), "name", "every policy needs a name")
		}
		if first, dup := seen[fp.Name]; dup {
			return nil, fail(line("name"), fp.Name, "name", "the file has this policy twice (line %d too)", first)
		}
		seen[fp.Name] = line("name")
		p, err := fp.policy()
		if err != nil {
			var fe *fieldError
			if errors.As(err, &fe) {
				return nil, fail(line(fe.field), fp.Name, fe.field, "%s", fe.msg)
			}
			return nil, fail(line(""), fp.Name, "", "%v", err)
		}
		out = append(out, p)
	}
	return out, nil
}

// policyNodes are the items of the list 'policies:' in a parsed file.
func policyNodes(root *yaml.Node) []*yaml.Node {
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 {
		return nil
	}
	m := root.Content[0]
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "policies" && m.Content[i+1].Kind == yaml.SequenceNode {
			return m.Content[i+1].Content
		}
	}
	return nil
}

// fieldLine is the line of field ("keep_full.monthly") in a policy's node,
// or of the policy itself when the field is not written there.
func fieldLine(n *yaml.Node, field string) int {
	if n == nil {
		return 0
	}
	line := n.Line
	for _, part := range strings.Split(field, ".") {
		if part == "" || n.Kind != yaml.MappingNode {
			break
		}
		found := false
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == part {
				line, n, found = n.Content[i].Line, n.Content[i+1], true
				break
			}
		}
		if !found {
			break
		}
	}
	return line
}

// yamlError turns the YAML package's error into one that names the file,
// and the policy around the line it gives.
func yamlError(name string, items []*yaml.Node, err error) error {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	m := yamlLine.FindStringSubmatch(msg)
	if m == nil {
		return &policyFileError{File: name, Msg: strings.TrimPrefix(msg, "yaml: ")}
	}
	line, _ := strconv.Atoi(m[1])
	policy := ""
	for i, it := range items {
		if it.Line <= line {
			policy = fmt.Sprintf("#%d", i+1)
			if v := mapValue(it, "name"); v != "" {
				policy = v
			}
		}
	}
	what := m[2]
	if f := unknownField.FindStringSubmatch(what); f != nil {
		what = fmt.Sprintf("field %s is not known: see the fields a policy takes in 'cairn policy --help'", f[1])
	}
	if m := cannotUnmarshal.FindStringSubmatch(what); m != nil {
		if want, ok := yamlTypeNames[m[2]]; ok {
			what = fmt.Sprintf("%s where %s belongs", m[1], want)
		}
	}
	return &policyFileError{File: name, Line: line, Policy: policy, Msg: what}
}

func mapValue(n *yaml.Node, key string) string {
	if n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key && n.Content[i+1].Kind == yaml.ScalarNode {
			return n.Content[i+1].Value
		}
	}
	return ""
}

// fieldError is a bad value of one field of a policy.
type fieldError struct {
	field, msg string
}

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

func badField(field, format string, args ...any) error {
	return &fieldError{field: field, msg: fmt.Sprintf(format, args...)}
}

// policy converts a policy as written to the wire's.
func (fp *filePolicy) policy() (wire.Policy, error) {
	p := wire.Policy{
		Name: fp.Name, Description: fp.Description, Disabled: fp.Disabled, Clients: fp.Clients,
		ClientLabels: fp.Labels, Excludes: fp.Excludes, OneFileSystem: fp.OneFileSystem,
		Schedule: strings.TrimRight(string(fp.Schedule), "\n\t "), TimeZone: fp.TimeZone, Pool: fp.Pool, Priority: fp.Priority, MaxChain: fp.MaxChain,
	}
	for _, x := range fp.Paths {
		p.Paths = append(p.Paths, cleanPolicyPath(x))
	}
	for _, d := range []struct {
		field string
		text  string
		to    *time.Duration
	}{{"catch_up_window", fp.CatchUpWindow, &p.CatchUpWindow}, {"max_full_age", fp.MaxFullAge, &p.MaxFullAge},
		{"max_differential_age", fp.MaxDiffAge, &p.MaxDifferentialAge}, {"rpo", fp.RPO, &p.RPO}} {
		if d.text == "" {
			continue
		}
		v, err := parseAge(d.text)
		if err != nil {
			return p, badField(d.field, "%v", err)
		}
		*d.to = v
	}
	for level, pool := range map[string]string{"full": fp.PoolFull, "differential": fp.PoolDiff, "incremental": fp.PoolIncr} {
		if pool != "" {
			if p.LevelPools == nil {
				p.LevelPools = map[string]string{}
			}
			p.LevelPools[level] = pool
		}
	}
	for _, k := range []struct {
		field, level string
		keep         *fileKeep
	}{{"keep", "", fp.Keep}, {"keep_full", "full", fp.KeepFull}, {"keep_differential", "differential", fp.KeepDiff}, {"keep_incremental", "incremental", fp.KeepIncr}} {
		if k.keep == nil {
			continue
		}
		rules, err := k.keep.rules(k.field)
		if err != nil {
			return p, err
		}
		if rules == (wire.KeepRules{}) {
			continue // keep_full: {} keeps as much as no line at all
		}
		if k.level == "" {
			p.Retention.All = rules
			continue
		}
		if p.Retention.Levels == nil {
			p.Retention.Levels = map[string]wire.KeepRules{}
		}
		p.Retention.Levels[k.level] = rules
	}
	var app wire.Application
	for _, st := range []struct {
		field  string
		steps  []fileStep
		fail   bool
		append *[]wire.AppStep
	}{{"before", fp.Before, true, &app.Before}, {"after", fp.After, false, &app.After}} {
		for i, s := range st.steps {
			field := fmt.Sprintf("%s.%d", st.field, i+1)
			step := wire.AppStep{Command: s.Command, FailJob: st.fail}
			switch s.OnFailure {
			case "":
			case "fail":
				step.FailJob = true
			case "warn":
				step.FailJob = false
			default:
				return p, badField(field+".on_failure", "%q: give fail or warn", s.OnFailure)
			}
			if s.Timeout != "" {
				d, err := parseAge(s.Timeout)
				if err != nil {
					return p, badField(field+".timeout", "%v", err)
				}
				step.Timeout = d
			}
			*st.append = append(*st.append, step)
		}
	}
	for i, s := range fp.CommandSources {
		src := wire.CommandSource{Path: fileindex.Path(s.Path), Command: s.Command}
		if s.Timeout != "" {
			d, err := parseAge(s.Timeout)
			if err != nil {
				return p, badField(fmt.Sprintf("command_sources.%d.timeout", i+1), "%v", err)
			}
			src.Timeout = d
		}
		app.Sources = append(app.Sources, src)
	}
	if len(app.Before)+len(app.After)+len(app.Sources) > 0 {
		p.Application = &app
	}
	return p, nil
}

func (k *fileKeep) rules(field string) (wire.KeepRules, error) {
	var r wire.KeepRules
	if k.Within != "" {
		d, err := parseAge(k.Within)
		if err != nil {
			return r, badField(field+".within", "%v", err)
		}
		r.Within = d
	}
	for _, c := range []struct {
		name string
		text keepCount
		to   *int
	}{{"last", k.Last, &r.Last}, {"hourly", k.Hourly, &r.Hourly}, {"daily", k.Daily, &r.Daily},
		{"weekly", k.Weekly, &r.Weekly}, {"monthly", k.Monthly, &r.Monthly}, {"yearly", k.Yearly, &r.Yearly}} {
		if c.text == "" {
			continue
		}
		n, err := parseCount(string(c.text))
		if err != nil {
			return r, badField(field+"."+c.name, "%v", err)
		}
		*c.to = n
	}
	return r, nil
}

// filePolicyOf is p as a policy file writes it ('cairn policy show').
func filePolicyOf(p wire.Policy) filePolicy {
	fp := filePolicy{
		Name: p.Name, Description: p.Description, Disabled: p.Disabled, Clients: p.Clients, Labels: p.ClientLabels,
		Paths: p.Paths, Excludes: p.Excludes, OneFileSystem: p.OneFileSystem, Schedule: scheduleText(p.Schedule),
		TimeZone: p.TimeZone, CatchUpWindow: formatAge(p.CatchUpWindow), MaxFullAge: formatAge(p.MaxFullAge),
		MaxDiffAge: formatAge(p.MaxDifferentialAge), Pool: p.Pool, PoolFull: p.LevelPools["full"],
		PoolDiff: p.LevelPools["differential"], PoolIncr: p.LevelPools["incremental"], Priority: p.Priority, MaxChain: p.MaxChain, RPO: formatAge(p.RPO),
		Keep: fileKeepOf(p.Retention.All), KeepFull: fileKeepOf(p.Retention.Levels["full"]),
		KeepDiff: fileKeepOf(p.Retention.Levels["differential"]), KeepIncr: fileKeepOf(p.Retention.Levels["incremental"]),
	}
	if a := p.Application; a != nil {
		for _, st := range []struct {
			steps []wire.AppStep
			def   bool
			to    *[]fileStep
		}{{a.Before, true, &fp.Before}, {a.After, false, &fp.After}} {
			for _, s := range st.steps {
				fs := fileStep{Command: s.Command, Timeout: formatAge(s.Timeout)}
				if s.FailJob != st.def {
					fs.OnFailure = map[bool]string{true: "fail", false: "warn"}[s.FailJob]
				}
				*st.to = append(*st.to, fs)
			}
		}
		for _, s := range a.Sources {
			fp.CommandSources = append(fp.CommandSources, fileSource{Path: string(s.Path), Command: s.Command, Timeout: formatAge(s.Timeout)})
		}
	}
	return fp
}

func fileKeepOf(r wire.KeepRules) *fileKeep {
	if r == (wire.KeepRules{}) {
		return nil
	}
	count := func(n int) keepCount {
		switch n {
		case 0:
			return ""
		case -1:
			return "unlimited"
		}
		return keepCount(strconv.Itoa(n))
	}
	return &fileKeep{Within: formatAge(r.Within), Last: count(r.Last), Hourly: count(r.Hourly), Daily: count(r.Daily),
		Weekly: count(r.Weekly), Monthly: count(r.Monthly), Yearly: count(r.Yearly)}
}

// cleanPolicyPath cleans an absolute path as the catalog stores it ("/srv/"
// is "/srv"); a relative one is left for the catalog to refuse.
func cleanPolicyPath(p string) string {
	if strings.HasPrefix(p, "/") {
		return path.Clean(p)
	}
	return p
}

// parseCount reads a keep rule's count: a number, or unlimited.
func parseCount(s string) (int, error) {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "unlimited") {
		return -1, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a count: give a number of periods (0 or more), or unlimited", s)
	}
	return n, nil
}

var ageRE = regexp.MustCompile(`^(\d+)(w|d|h|m|s)`)

// parseAge reads a duration as a policy is written: Go's ("26h", "90m")
// and days and weeks ("35d", "2w", "1d12h").
func parseAge(s string) (time.Duration, error) {
	in := strings.TrimSpace(s)
	if d, err := time.ParseDuration(in); err == nil {
		if d < 0 {
			return 0, fmt.Errorf("%q is negative: give a positive duration", s)
		}
		return d, nil
	}
	var total time.Duration
	rest := in
	for rest != "" {
		m := ageRE.FindStringSubmatch(rest)
		if m == nil {
			return 0, fmt.Errorf("%q is not a duration: use a number with a unit, w, d, h, m or s (\"14d\", \"26h\", \"1d12h\")", s)
		}
		n, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil || n > 100000 {
			return 0, fmt.Errorf("%q is too long a duration", s)
		}
		unit := map[string]time.Duration{"w": 7 * 24 * time.Hour, "d": 24 * time.Hour, "h": time.Hour, "m": time.Minute, "s": time.Second}[m[2]]
		total += time.Duration(n) * unit
		rest = rest[len(m[0]):]
	}
	if in == "" {
		return 0, fmt.Errorf("an empty duration: use a number with a unit (\"14d\")")
	}
	return total, nil
}

// formatAge writes a duration the way parseAge reads it: whole days as
// days ("14d"), anything else as Go writes it ("26h", "90m"); "" for zero.
func formatAge(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d == 0:
		return ""
	case d%day == 0:
		return fmt.Sprintf("%dd", d/day)
	}
	return configfile.FormatDuration(d)
}

// marshalPolicies writes policies as a policy file.
func marshalPolicies(ps []wire.Policy) ([]byte, error) {
	var f policyFile
	for _, p := range slices.SortedFunc(slices.Values(ps), func(a, b wire.Policy) int { return strings.Compare(a.Name, b.Name) }) {
		f.Policies = append(f.Policies, filePolicyOf(p))
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&f); err != nil {
		return nil, err
	}
	return b.Bytes(), enc.Close()
}
