// Package wire is the control plane's language: the NATS subjects every role
// uses, the versioned JSON envelope every request, reply and event travels
// in, the catalog of error codes with their hints, and the message types.
//
// # Subjects
//
//	cairn.api.<op>                  admin requests, answered by the servers
//	cairn.escrow.<op>               key export: admin requests only a key admin may make
//	cairn.node.<node>.<op>          orders to one storage node
//	cairn.agent.<client>.<op>       orders to one agent
//	cairn.srv.node.<node>.<op>      a storage node's requests and reports to the servers
//	cairn.srv.agent.<client>.<op>   an agent's requests and reports to the servers
//	cairn.evt.job.<id>              a job's progress and state events
//
// Each role's credential can thus be confined to its own subjects: an agent
// publishes only below cairn.srv.agent.<itself> and subscribes only below
// cairn.agent.<itself>.
//
// # Groups
//
// Servers of several Raft groups may share one NATS, and every server
// answers the subjects above in one queue group (ServerQueue), so a request
// reaches a server of any group. A request therefore names its group in
// the NATS header GroupHeader (RequestIn, RequestRetryIn), and the servers
// answer only their own: one of another group is handed on to that group's
// servers on cairn.group.<group>.<subject> (GroupSubject), and refused with
// wrong_group, naming both groups, when none of them answers there. A
// request that names no group is answered while one group alone runs on
// the NATS, and refused with wrong_group, naming every group, while a
// server hears servers of another (their beats on cairn.beat.server.>).
// Storage nodes and agents name their group in their heartbeats and
// progress too, and refuse orders of another group (ServeOrders); a job
// event names the group whose job it is (job ids are each group's own). The
// group is a header, not a subject token, so that NATS permissions stay
// those of RoleSubjects, and a role that does not know its group yet
// still reaches the servers: it learns the group from its first
// registration's answer, or is told it (--group). An agent and a storage
// node keep it in a Group, and register and beat in KeepRegistered.
//
// # Envelope
//
// Every message is {"v":1,"body":{...}}; a reply is {"v":1,"body":{...}} or
// {"v":1,"error":{"code":...,"message":...,"hint":...}}. A receiver answers a
// message it cannot decode, of a version it does not speak, or for an
// operation it does not know, with an error reply; it never crashes.
//
// # Paths
//
// A file name on Linux is any bytes, and a JSON string holds only Unicode:
// encoding/json would turn each byte that is not UTF-8 into U+FFFD, and a
// name like café in Latin-1 could then be neither told apart nor asked for
// again. Every path a message carries (listings, restore paths and plans,
// paging cursors, index segment bounds, damaged entries) is a
// fileindex.Path, a JSON string with each such byte as a lone surrogate
// escape ("\udce9"), which reads back to exactly the bytes. A path quoted in
// a job log line or an error message is text: its writer escapes it with
// fileindex.Escape, as the CLI prints names.
//
// # Size
//
// A message must fit the NATS servers' max_payload (1 MiB by default).
// Request and Publish refuse a larger one before it is sent, and a reply too
// large to send is answered with a message_too_large error instead, so a
// caller learns it at once rather than waiting out its timeout. Answers that
// grow with the data come in pages (see package server).
package wire
