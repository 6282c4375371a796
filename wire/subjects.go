package wire

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Version is the envelope version this program speaks.
const Version = 1

const (
	apiPrefix       = "cairn.api."
	escrowPrefix    = "cairn.escrow."
	nodePrefix      = "cairn.node."
	agentPrefix     = "cairn.agent."
	fromNodePrefix  = "cairn.srv.node."
	fromAgentPrefix = "cairn.srv.agent."
	eventPrefix     = "cairn.evt."
	jobEventPrefix  = eventPrefix + "job."
	beatPrefix      = "cairn.beat."
	serverPrefix    = "cairn.server."
	leaderPrefix    = "cairn.leader."
	groupPrefix     = "cairn.group."
)

// GroupHeader is the NATS header in which a request to the servers names
// the group it is for: the group's id, which its servers record in their
// catalog when the group forms (cairn cluster status shows it). Storage
// nodes and agents learn it from their first registration, or are told
// (group in their config); admin commands take --group or CAIRN_GROUP.
// Servers of one group answer only requests of their own group: one of
// another group's is handed to that group's servers (GroupSubject), and
// one that names no group is refused while servers of another group share
// the NATS. See the package doc, "Groups".
const GroupHeader = "Cairn-Group"

// ServerQueue is the queue group the servers answer in, so that each request
// reaches one of them.
const ServerQueue = "cairn-servers"

// escrowOps are the admin operations that hand out every data key in the
// clear, or replace the keys every data key is wrapped with. They live
// below cairn.escrow. rather than cairn.api., so that a NATS
// permission can grant the rest of the admin API without them: an admin
// credential that runs backups and restores need not be able to read every
// volume.
var escrowOps = map[string]bool{OpKeyExport: true, OpSecretsRotate: true}

// APISubject is the subject of an admin operation such as "job.list":
// cairn.api.<op>, or cairn.escrow.<op> for the key escrow operations.
func APISubject(op string) string {
	if escrowOps[op] {
		return escrowPrefix + op
	}
	return apiPrefix + op
}

// APIWildcard matches every admin operation but the key escrow ones.
const APIWildcard = apiPrefix + ">"

// EscrowWildcard matches the key escrow operations (key export), which only
// a key admin's credential may publish.
const EscrowWildcard = escrowPrefix + ">"

// NodeSubject is the subject of an order to storage node id.
func NodeSubject(id, op string) string { return nodePrefix + id + "." + op }

// AgentSubject is the subject of an order to the agent of client.
func AgentSubject(client, op string) string { return agentPrefix + client + "." + op }

// FromNodeSubject is the subject a storage node uses to reach the servers.
func FromNodeSubject(id, op string) string { return fromNodePrefix + id + "." + op }

// FromNodeWildcard matches every storage node's requests.
const FromNodeWildcard = fromNodePrefix + "*.>"

// FromAgentSubject is the subject an agent uses to reach the servers.
func FromAgentSubject(client, op string) string { return fromAgentPrefix + client + "." + op }

// FromAgentWildcard matches every agent's requests.
const FromAgentWildcard = fromAgentPrefix + "*.>"

// NodeBeatSubject carries a storage node's heartbeats. Heartbeats and
// progress reach every server (no queue group), so whichever becomes leader
// already knows who is alive.
func NodeBeatSubject(id string) string { return beatPrefix + "node." + id + ".alive" }

// NodeProgressSubject carries the progress of the jobs a storage node runs
// without an agent (a synthetic full).
func NodeProgressSubject(id string) string { return beatPrefix + "node." + id + ".progress" }

// AgentBeatSubject carries an agent's heartbeats.
func AgentBeatSubject(client string) string { return beatPrefix + "agent." + client + ".alive" }

// AgentProgressSubject carries the progress of an agent's running jobs.
func AgentProgressSubject(client string) string { return beatPrefix + "agent." + client + ".progress" }

// ServerBeatSubject carries a server's announcement of itself, which every
// other server hears: how servers of another group on the same NATS, and
// servers that wait to be joined, are seen.
func ServerBeatSubject(name string) string { return beatPrefix + KindServer + "." + name + ".alive" }

// BeatWildcard matches every heartbeat and progress report.
const BeatWildcard = beatPrefix + ">"

// Role kinds, as they appear in beat subjects, inbox prefixes and NATS
// user names.
const (
	KindServer = "server"
	KindNode   = "node"
	KindAgent  = "agent"
	KindAdmin  = "admin"
)

// Inbox is the reply-subject prefix of a role's NATS connection:
// _INBOX.<kind>.<name>, for an admin _INBOX.admin.<admin name>. Each role
// and each admin gets its own so that NATS permissions can let it read its
// own replies and no one else's (an admin's replies hold key exports and
// every client's file names); nats.go's default, _INBOX.<random>, cannot
// be confined.
func Inbox(kind, name string) string {
	if name == "" {
		return "_INBOX." + kind
	}
	return "_INBOX." + kind + "." + name
}

// Subjects of one role's credential: what the NATS server should let it
// publish and subscribe to. Both are the whole of what the role uses, so a
// permission list built from them is exact (see natsauth.PermissionsOf).
//
//	agent c:  publishes cairn.srv.agent.c.> and cairn.beat.agent.c.>,
//	          subscribes cairn.agent.c.> and _INBOX.agent.c.>
//	node n:   publishes cairn.srv.node.n.> and cairn.beat.node.n.>,
//	          subscribes cairn.node.n.> and _INBOX.node.n.>
//	admin a:  publishes cairn.api.>, subscribes _INBOX.admin.a.> and cairn.evt.>
//	          (a key admin also publishes cairn.escrow.>: see KeyAdminPublish)
func RoleSubjects(kind, name string) (publish, subscribe []string) {
	switch kind {
	case KindAgent:
		return []string{fromAgentPrefix + name + ".>", beatPrefix + "agent." + name + ".>"},
			[]string{agentPrefix + name + ".>", Inbox(KindAgent, name) + ".>"}
	case KindNode:
		return []string{fromNodePrefix + name + ".>", beatPrefix + "node." + name + ".>"},
			[]string{nodePrefix + name + ".>", Inbox(KindNode, name) + ".>"}
	case KindAdmin:
		return []string{APIWildcard}, []string{Inbox(KindAdmin, name) + ".>", eventPrefix + ">"}
	}
	// The servers answer everyone, forward to each other and hear every
	// heartbeat.
	return []string{">"}, []string{">"}
}

// KeyAdminPublish is what a key admin may publish beyond an admin's
// RoleSubjects: the key escrow operations.
var KeyAdminPublish = []string{EscrowWildcard}

// denialHint says what to do about a subject NATS refused a credential
// (what is "publish to" or "subscribe to"); empty for the catalog's hint.
func denialHint(what, subject string) string {
	switch {
	case strings.HasPrefix(subject, escrowPrefix):
		return "key export needs a key admin's credential: 'cairn cert nats-config --key-admins NAME' makes one"
	case what == "subscribe to" && strings.HasPrefix(subject, Inbox(KindAdmin, "")+"."):
		return "the admin name does not match the credential: pass --nats-admin NAME, the name 'cairn cert nats-config --admins' gave it (its seed file is admin-NAME.nk)"
	}
	return ""
}

// SplitBeat splits a beat subject into kind ("node", "agent"), name and what
// ("alive", "progress").
func SplitBeat(subject string) (kind, name, what string, ok bool) {
	if len(subject) <= len(beatPrefix) || subject[:len(beatPrefix)] != beatPrefix {
		return "", "", "", false
	}
	parts := strings.Split(subject[len(beatPrefix):], ".")
	if len(parts) != 3 {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

// ServerSubject reaches one server of the group by name, for cluster status
// and reachability checks.
func ServerSubject(name, op string) string { return serverPrefix + name + "." + op }

// ReadIndexSubject is what a follower asks of its group's leader, through
// LeaderSubject, before a read of its own catalog: the leader's applied
// index (ReadIndexResp). Only servers may publish to leader subjects.
const ReadIndexSubject = serverPrefix + "readindex"

// ReadIndexResp is the leader's applied index: every write acknowledged
// before it was asked is at or below it.
type ReadIndexResp struct {
	Applied uint64 `json:"applied"`
}

// LeaderSubject is where a follower of group forwards a request that only
// the leader may answer; only the group's current leader subscribes to it.
// The group's id is in the subject so that the leader of another group on
// the same NATS never receives it.
func LeaderSubject(group, subject string) string { return leaderPrefix + group + "." + subject }

// LeaderWildcard matches every request forwarded to group's leader.
func LeaderWildcard(group string) string { return leaderPrefix + group + ".>" }

// TrimLeader returns the original subject of a request forwarded to
// group's leader.
func TrimLeader(group, subject string) (string, bool) {
	p := leaderPrefix + group + "."
	if group != "" && len(subject) > len(p) && subject[:len(p)] == p {
		return subject[len(p):], true
	}
	return "", false
}

// GroupSubject is where a server hands a request of another group on to
// that group's servers, any member of which answers it as if it came
// directly (subject is the request's own subject). Only the group's
// members subscribe to it, so nothing answers here when no server of that
// group runs on this NATS.
func GroupSubject(group, subject string) string { return groupPrefix + group + "." + subject }

// GroupWildcard matches every request handed on to group's servers.
func GroupWildcard(group string) string { return groupPrefix + group + ".>" }

// TrimGroup returns the original subject of a request handed on to
// group's servers.
func TrimGroup(group, subject string) (string, bool) {
	p := groupPrefix + group + "."
	if group != "" && len(subject) > len(p) && subject[:len(p)] == p {
		return subject[len(p):], true
	}
	return "", false
}

// JobEventSubject carries the progress and state events of one job.
func JobEventSubject(id uint64) string { return jobEventPrefix + strconv.FormatUint(id, 10) }

// SplitFrom splits a subject below cairn.srv.node. or cairn.srv.agent. into
// the sender's name and the operation.
func SplitFrom(subject string) (name, op string, ok bool) {
	for _, p := range []string{fromNodePrefix, fromAgentPrefix} {
		if len(subject) > len(p) && subject[:len(p)] == p {
			rest := subject[len(p):]
			for i := 0; i < len(rest); i++ {
				if rest[i] == '.' {
					return rest[:i], rest[i+1:], i > 0 && i < len(rest)-1
				}
			}
		}
	}
	return "", "", false
}

// TrimAPI returns the operation of an admin subject. An operation is found
// only on its own subject: key.export below cairn.api. is no operation,
// or a credential allowed cairn.api.> could export keys around the escrow
// permission.
func TrimAPI(subject string) (string, bool) {
	for _, p := range []string{apiPrefix, escrowPrefix} {
		if len(subject) > len(p) && subject[:len(p)] == p {
			op := subject[len(p):]
			return op, APISubject(op) == subject
		}
	}
	return "", false
}

// IsAPISubject reports whether subject is below cairn.api. or
// cairn.escrow., the subjects the admin API is served on.
func IsAPISubject(subject string) bool {
	return strings.HasPrefix(subject, apiPrefix) || strings.HasPrefix(subject, escrowPrefix)
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`)

// ValidateName checks a client, storage node or pool name: it becomes a
// subject token, so dots, spaces and wildcards are not allowed.
func ValidateName(kind, name string) error {
	if !nameRE.MatchString(name) {
		return Errorf(CodeInvalidArgument, "use letters, digits, '-' and '_' (at most 63, starting with a letter or digit)",
			"%s name %q is not valid", kind, name)
	}
	return nil
}

// Describe names a subject for error messages.
func Describe(subject string) string { return fmt.Sprintf("subject %q", subject) }
