// Package agent is the client role: it walks the client's files into the
// records of a backup stream and writes restored records back to disk.
//
// # Backup
//
// Walk visits the backup's paths depth first, each directory's names in
// byte order, which is the file index order (fileindex.Compare), so the
// entries come out sorted across all roots without ever sorting the whole
// tree. It reads entries with statx, whose attributes tell the nodump flag
// without opening anything; the inode flags (chattr) of a directory come
// from the descriptor that reads its names, those of a file from the one
// that reads its content. Everything of an entry is read by its name in
// the directory the walk holds open, never by its full path: a path may be
// longer than PATH_MAX, and one resolved again from the root would follow
// a symlink a user put in place of a directory the walk had passed
// (xattr.go). Sockets, and entries with the nodump flag when
// asked (WalkOptions.SkipNodump), are left out and said so, apart from
// warnings; an exclude pattern that left nothing out is a warning. Changes joins that walk with the index of the level's base backup,
// both in index order, in one streaming pass: what differs is sent, what is
// equal is not, and what the base has and the walk lacks becomes a
// tombstone. Source turns the result into the stream records of package
// media/volume (a FileHeader, Data records and a FileEnd per entry), in
// batches of whole records of about BatchSize bytes, handed in order to a
// goroutine that sends them (TLS and the socket) while the next batch is
// read and hashed, two batches in all. Small files (below chunk.Threshold,
// without holes) are opened, read and hashed by readers a bounded
// distance ahead of the stream, several at a time, so that one file's wait
// for the disk does not hold the next (readers.go); the stream is the one
// Run's goroutine would make alone, entry for entry. A full backup also
// has a scout (prefetch.go): a second walk, in the same order, that asks
// the kernel for the small files' content up to a page-cache budget ahead
// of the bytes the stream has read, so the small files after a stretch of
// large ones come from the disk while those are compressed. Memory stays flat
// whatever the size of the tree: only the hard links still waiting for
// their other names are remembered, and what the readers hold is bounded
// (aheadFiles, aheadBytes, and the descriptors of the directories their
// queued files lie in).
//
// # Application steps and command sources
//
// A backup order may carry commands (wire.Application): before-steps and
// after-steps run on the client around the reading of the files, and
// command sources, whose standard output is stored as a file of the
// backup. application.go says in which order they run and why the
// after-steps run whatever happened; command.go how a command runs.
//
// The agent runs a command only when its own configuration allows it
// (CommandPolicy: allowed_command_dirs, allowed_commands; nothing by
// default), since the servers that ask are not trusted with root on every
// client. A command runs without a shell, split into arguments by
// SplitCommand, which refuses what only a shell would understand (a pipe,
// a redirection, a variable): an allowed directory vouches for a program,
// not for whatever a shell makes of the rest of the line. A line listed
// verbatim in allowed_commands runs with /bin/sh -c when
// allow_shell_commands is set. Each command runs in a process group of its
// own, from /, with the agent's environment and the job's (CAIRN_JOB_ID,
// CAIRN_JOB_LEVEL, CAIRN_CLIENT, CAIRN_STEP, and for an after-step
// CAIRN_JOB_STATUS and CAIRN_JOB_ERROR); its timeout, or the job's end,
// sends the group SIGTERM and SIGKILL some seconds later. The last lines
// of its output, bounded in number and length, go to the job log.
//
// A command source's output goes into a file without a name (O_TMPFILE) in
// the agent's spool_dir, not through memory, and is sent once the command
// has ended: the stream gives a file's size in its FileHeader before the
// content (media/volume/FORMAT.md), and only then is its exit status
// known, so a dump that fails is never sent at all; the backup fails and
// its session is rolled back. The file is stored with mode 0600, owner
// root and the command's start as its times, at its place in index order
// among the walked entries; its path must lie outside the walked paths.
// Output of chunk.Threshold or more goes by blocks, as a large walked file
// does, against the block list of the version of its path in the base
// (which the walk passes by, the path lying outside it): a dump that
// changed a little sends the blocks around its changes. Since the whole
// output is spooled first, the blocks are cut only once the command
// succeeded, and a failed command leaves no version at all.
//
// # Restore
//
// Restorer consumes the records of one or several sessions (a chain restore
// reads its full first, then incrementals) and recreates each entry under a
// target directory, at the target plus the entry's original absolute path.
// File content goes into a temporary name beside the final one and is renamed
// into place only once its digest matches the FileEnd's, so a damaged file
// never looks restored. A file with holes is read by its data regions and
// its digest covers those and their map (fileindex.HashSparseSHA256), so
// that neither side spends time on its holes; every other file's is the
// SHA-256 of its content. What depends on later entries, hard links and the
// modes and times of directories, is applied by Finish.
//
// A restore runs as root where other users may write too, so it never
// resolves a name it does not hold: directories are walked one component at
// a time without following symlinks, and every change of owner, mode, times
// or xattrs goes to a descriptor of the inode the restore created (the
// comment at the top of restore.go says why and how). A large file
// assembled from the reads of several sessions waits unnamed, its
// descriptor held, so an agent killed meanwhile leaves nothing in the
// target; past a quarter of the descriptors the process may open it waits
// under a temporary name, the one name the restore opens again, and is
// written into only while it still is the restore's (reopenTemp). Device nodes are
// created only when RestoreOptions.Devices asks for them. An entry refused or
// not restored is counted in RestoreStats.Refused, apart from damage, so the
// job cannot end as a plain success.
//
// A restore accounts for every entry it asked the storage node for: it is
// restored, or named lost (by the node, or by the agent when the node left
// it out), and the job report says how many of each. Once the servers end
// a restore (a cancel order, or their answer to an agent whose restore was
// held up) the Restorer admits no more records: nothing more is written to
// the target.
//
// Everything here works on real file descriptors of a Linux filesystem
// (openat, fstatat, SEEK_DATA, xattrs); the NATS service that drives it lives
// in other files of this package.
//
// The service (service.go) draws an instance id when the process starts and
// sends it, with the host name and pid, in its registration and heartbeats:
// the servers tell a restarted agent from a second one under the same name,
// and tell both of a duplicate (each logs an error naming the other). A
// stopping agent (Drain, on SIGTERM) takes no new order and hands its
// running jobs back (wire.CodeHandedBack): a backup starts over when the
// agent is back; a restore fails saying how far it got.
//
// The agent names the group of servers it belongs to in every request,
// heartbeat, progress report and order it takes (wire.GroupHeader): its
// group setting, or the group its first registration answered, kept until
// it stops. A first registration that names no group is refused while
// servers of several groups share the NATS: there the agent needs --group.
package agent
