// Package fileindex is the index of file versions that a backup holds: one
// Entry per path, kept in index order, grouped into immutable compressed
// segments.
//
// The same encoding travels three ways: inside a session's data stream (the
// FileHeader record the agent sends), in the session trailer on the volume
// (so a catalog can be rebuilt from media alone), and in the catalog, where
// Raft commands carry whole segments instead of one command per file.
//
// # Index order
//
// Paths are compared component by component, which is the same as comparing
// the strings with '/' sorting below every other byte. A depth-first walk that
// visits the entries of each directory in byte order therefore produces index
// order, and the entries below a directory are contiguous, so listing one
// directory or restoring one subtree is a range read.
//
// # Chains
//
// A full backup's index holds every path that existed. An incremental or
// differential holds only what changed since its base, plus a TypeDeleted
// tombstone for each path that disappeared. The tree at a backup is the Merge
// of its chain, oldest first: the newest entry for a path wins and a
// tombstone removes the path.
//
// # Paths as people and programs see them
//
// A path is bytes, not text. Path carries one through JSON losslessly, and
// Escape and Unescape are its one printed form. An Exclude is a backup's
// exclude pattern, which the server checks a request's with and the agent's
// walk matches entries against.
//
// The binary encodings here are part of the volume format (media/volume/FORMAT.md)
// and must stay readable by every later version: new fields get new tags, and
// decoders skip tags they do not know.
package fileindex
