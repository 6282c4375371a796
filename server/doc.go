// Package server is the backup server role: a member of the Raft group that
// holds the catalog (package catalog, replicated by package server/cluster),
// the admin API on NATS, and, on the leader, the job orchestrator (package
// server/orchestrator, whose Go API the NATS handlers call). DESIGN.md has
// the structs, goroutines, locks and the clock.
//
// The orchestrator never touches bulk data. For a backup it records the job,
// picks the storage node that serves the pool, signs a ticket and orders the
// agent to stream to that node; the node asks for volumes and the pool's key
// as it writes, sends the session's file index in segments, and commits the
// session once it is durable. A restore is the reverse: the server plans which
// sessions and blocks hold the chosen paths and hands the plan out page by
// page; the agent forwards it to the node over the data port.
//
// Leadership (leadership.go) follows Raft's notifications, not a poll. A
// server that wins an election runs a barrier first, so the catalog it reads
// holds every write of the leaders before it, and only then subscribes the
// group's leader subject, adopts the running jobs and dispatches; until then
// it forwards like a follower. Every decision (dispatcher, watchdog,
// adoption) runs under the term's context, which ends as soon as Raft says
// the leadership is lost. Volume grants (grants.go) are serialized per pool,
// per library for tape, across their Raft round trips. Every goroutine that
// answers a request belongs to the server's wire.Requests: Close refuses new
// ones and waits for those running before it closes Raft and the catalog.
//
// Bad input makes no job (orchestrator/jobs.go, checkOrder): what the servers can check
// they check, and what only the client knows (that a path exists, that a
// restore target is empty) they ask its agent (backup.check,
// restore.check) before they record the job. So a request refused as bad
// input is an error to the caller and nothing else: no failed job in the
// list or in cairn_jobs_total. An agent that is offline or does not
// answer is not asked; its job is made and waits, and the order checks
// again when it is sent (a job that fails then was accepted, and counts).
//
// Paging (orchestrator/plan.go, api.go): every answer that grows with the data — a
// restore plan, the base tree of an incremental, tree.list, job.list, a
// job's log, backup.list, volume.list, client.list — is cut by its encoded
// size, an eighth under the NATS connection's max_payload and at most a MiB,
// never by a count of entries: one entry ranges from tens of bytes to
// several KiB (a 4,000-byte path). A page holds at least one entry, so an
// entry bigger than a page goes out alone (and, bigger than a message, comes
// back as a message_too_large error rather than never). A restore plan's
// pages are numbered and come out the same every time, so a retried cursor
// and a new leader replaying to the storage node's cursor get the same
// page; the servers of a group therefore need the same max_payload. Lists
// page with a cursor the client holds (the last name, id, path or log
// line), which any member can answer.
//
// Tape (tape.go): a storage node owns its libraries and alone drives their
// changers and drives; the servers keep the catalog's view of the
// cartridges (volume, pool, state, location and its history) and route an
// operator's library.status, library.move and media.label to the owning
// node. A label is recorded only after the node wrote and read it back. A
// backup to a tape pool is granted a tape of the pool in the node's library
// (one already in a drive first), else a Scratch tape, else an error that
// says what would help, which the node shows as the job's waiting reason.
// Restore plans give tape reads the tape's part starts and are ordered so
// that each tape is needed once.
//
// Membership (membership.go): a server forms a group only with --bootstrap,
// answers roles only while it is a caught-up voter of its group, joins as a
// checked non-voter that is promoted once it caught up, and tells servers
// of another group on the same NATS apart by the group's id in the
// catalog. Groups (groups.go): a request names its group
// (wire.GroupHeader); a server answers its own group's, hands another
// group's on to that group's servers and relays their answer, so a group's
// roles are only ever answered from their group's catalog, and refuses,
// naming both groups, a request of a group none of whose servers runs on
// the NATS, and one that names no group while it hears another group.
//
// Secrets (kek.go, secrets.go): every member holds the group's
// key-encryption key and ticket signing key, never in the catalog.
// 'cairn cluster rotate-secrets' replaces both without a stop: each member
// reads the new secrets from a file of its own and keeps them aside, the
// leader refuses unless every member read the same, then rewraps every data
// key and commits the new wrapped keys with the new KEK's fingerprint in one
// catalog command; each member then uses the new keys as soon as its
// catalog holds that command, and writes them where it reads its keys at
// start.
//
// Starts (orchestrator/starts.go): every backup, restore, tape label and library move
// carries the client's request id (wire.Start). A backup or restore is
// created pending under it and accepted just before the answer goes out;
// only an accepted job is dispatched, and the leader voids a job left
// pending past StartConfirmTimeout. The answer is "failed" only when no
// accept was proposed and nothing else can accept the job; when the create
// or the accept may be in the Raft log unseen (leadership lost, the catalog
// stopped, no answer in time), it is outcome_unknown, and a repeat of the
// request (same id) answers the same job, accepting it if still pending. A
// repeat waits for a Raft barrier before it reads the request index, and
// the tries of one id run one at a time on a server. A label's volume id
// is made from its request id; the owning storage node carries out a label
// or move once per request id. catalog/DESIGN.md, "Starts", has the
// argument.
//
// Disk space (space.go): below MinFreeBytes on the catalog's or the Raft
// log's filesystem the leader starts nothing new and says the disk is full,
// naming the server and the directory; below CatalogFloorBytes the catalog
// stops applying the log before a commit hits the wall. A member whose
// catalog stopped proposes nothing, hands the leadership over, leaves reads
// to the leader, reports itself in status, cluster status and metrics, and
// resumes by itself once there is room.
//
// Liveness is not replicated: storage nodes and agents heartbeat to every
// server. A backup whose node or agent falls silent goes back to the queue
// with the reason (a restore fails with it). A stopping node or agent says
// so in its heartbeat and gets no job; what it hands back (handed_back) is
// requeued like a node lost.
//
// Agent instances (agents.go): every agent process draws an id at start
// and sends it, with its host and pid, in its registration and heartbeats.
// Each server keeps the processes heard from under a client name for a
// liveness timeout. A new process whose predecessor fell silent first is a
// restart: the leader requeues the job the old process ran at once. Two
// processes each heard from after the other first was are a duplicate (a
// cloned machine, a copied credential): every job of that client would
// reach both, so the leader tells both agents, fails the client's running
// jobs and refuses new ones with duplicate_agent, naming both hosts, until
// one is silent for the liveness timeout.
//
// Whatever ends a running attempt (a silent node or agent, a stall, a
// timeout, a report) orders its storage node and its agent to stop that
// attempt (wire.CancelJob), so that what the caller was told failed does not
// go on: the node gives its drive back, the agent writes nothing more.
// A restore ends failed when any entry it asked for was lost, and says how
// many it restored and lost; its log names the lost ones.
//
// Cancel (orchestrator/cancel.go): job.cancel records the cancel in the catalog first
// (catalog.OpCancelJob). A queued job ends there. A running one is stopped
// by the leader's loop, which finds running jobs whose cancel the catalog
// holds, orders their node and agent to stop the attempt and ends them as
// canceled; a leader killed in between leaves the cancel to the next one.
//
// Expiry (expiry.go, backups.go): every expiry_interval of its clock the
// leader plans with package retention, for each client and file set a
// policy's retention covers (two policies over one file set keep what
// either keeps; a disabled policy's retention still applies), and commits
// the expiries in batches of catalog.OpExpireBackups, which check holds,
// dependents and running restores again as they apply. Then it orders each
// emptied disk volume's node to delete the file and only after the answer
// forgets the volume (storagenode/DESIGN.md, "Deleting volumes"). prune,
// backup.delete, hold and release go to the leader; backup.list and
// backup.show say what the pass would expire of the backups they show.
// Once a day the pass also prunes the jobs that ended more than
// job_history ago and have no backup in the catalog (catalog.JobsPrune).
package server
